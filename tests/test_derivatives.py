"""Oracle tests of every bundled architecture's compiled (numba) passes.

Forward, Jacobian, VJP, HVP (every output) and NTK are checked against the independent PyTorch
reference in `reference.py` to 1e-9 relative error, and against central finite differences;
the Hessian assembled from P HVPs must be symmetric and have the torch Hessian's spectral norm.
Each architecture is compiled once per session (the module is shared by every width).
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from reference import Reference

import dagc
from dagc.frontend.spec import bundled_names

# Beside the bundled architectures, one "kitchen sink" exercises under numba what they do not:
# two input groups, three output blocks (one non-linear, one in layer 1), biases, sparse
# connections from inputs, add-skips (one from an input) and all eight activations.
KITCHEN_SINK = """\
name: kitchen_sink
width: 8
inputs: {x: 5, u: width}
blocks:
  h1:  {size: width, act: tanh, from: [x, {block: u, fan_in: 3}], bias: true, add: [u]}
  h2:  {size: width, act: gelu, from: [{block: h1, fan_in: width/2}, x], add: [h1]}
  h3:  {size: width/2, act: sigmoid, from: [h2, u]}
  h4:  {size: width/2, act: erf, from: [{block: h2, fan_in: 2}, h3], bias: true, add: [h3]}
  h5:  {size: 3, act: sin, from: [h4, x]}
  h6:  {size: 3, act: relu, from: [h5, h1], add: [h5]}
  out: {size: 2, from: [h6, {block: h4, fan_in: 2}], bias: true}
  aux: {size: 3, act: softplus, from: [h5, h1], add: [h6]}
  lin: {size: 1, from: [{block: x, fan_in: 2}]}
"""
_KITCHEN_DIR = tempfile.TemporaryDirectory(prefix="dagc-kitchen-")
KITCHEN_PATH = Path(_KITCHEN_DIR.name) / "kitchen_sink.yaml"
KITCHEN_PATH.write_text(KITCHEN_SINK)
NAMES = [*bundled_names(), "kitchen_sink"]

# torch.func's internals warn about torch.jit.script; that is not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
WIDTH = 8  # small, and a multiple of 4 (sparse3 has fan_in width/4)
HESSIAN_WIDTH = 16  # P from ~300 to ~1300: dense Hessians are cheap
REFERENCE_RTOL = 1e-9
FD_RTOL = 1e-6
FD_EPS = 1e-6


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| over max |expected| (absolute below a tiny floor)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.all(np.isfinite(actual)), "non-finite values"
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-12)
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


def assert_close(actual, expected, rtol: float, what: str) -> None:
    err = relative_error(actual, expected)
    assert err <= rtol, f"{what}: relative error {err:.3e} > {rtol:.0e}"


@functools.cache
def compiled(name: str, width: int) -> dagc.CompiledNet:
    return dagc.compile(KITCHEN_PATH if name == "kitchen_sink" else name, width=width)


@dataclass
class Case:
    net: dagc.CompiledNet
    ref: Reference
    w: np.ndarray
    X: np.ndarray
    X1: np.ndarray
    X2: np.ndarray
    C: np.ndarray
    v: np.ndarray


@functools.cache
def case(name: str, width: int = WIDTH) -> Case:
    net = compiled(name, width)
    rng = np.random.default_rng(12345)
    return Case(
        net=net,
        ref=Reference(net),
        w=net.init(seed=3),
        X=rng.standard_normal((4, net.n_in)),
        X1=rng.standard_normal((3, net.n_in)),
        X2=rng.standard_normal((2, net.n_in)),
        C=rng.standard_normal((4, net.n_out)),
        v=rng.standard_normal(net.n_params),
    )


@pytest.mark.parametrize("name", NAMES)
def test_layout_partitions_the_parameters(name):
    net = case(name).net
    offset = 0
    for src, dst, kind, start, shape in net.layout:
        assert start == offset, (src, dst, start, offset)
        offset += int(np.prod(shape))
        if kind == "sparse":
            assert np.asarray(net.sources[(src, dst)]).shape == tuple(shape)
    assert offset == net.n_params
    assert net.init(seed=3).shape == (net.n_params,)


@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_reference(name):
    c = case(name)
    Y = c.net.forward(c.w, c.X)
    assert Y.shape == (len(c.X), c.net.n_out)
    assert_close(Y, c.ref.forward(c.w, c.X), REFERENCE_RTOL, f"{name} forward")


@pytest.mark.parametrize("name", NAMES)
def test_jacobian_matches_reference(name):
    c = case(name)
    J = c.net.jacobian(c.w, c.X)
    assert J.shape == (len(c.X), c.net.n_out, c.net.n_params)
    assert_close(J, c.ref.jacobian(c.w, c.X), REFERENCE_RTOL, f"{name} jacobian")


@pytest.mark.parametrize("name", NAMES)
def test_vjp_matches_reference(name):
    c = case(name)
    g = c.net.vjp(c.w, c.X, c.C)
    assert g.shape == (c.net.n_params,)
    assert_close(g, c.ref.vjp(c.w, c.X, c.C), REFERENCE_RTOL, f"{name} vjp")
    # and it is the contraction of the Jacobian with C
    expected = np.einsum("ik,ikp->p", c.C, c.ref.jacobian(c.w, c.X))
    assert_close(g, expected, REFERENCE_RTOL, f"{name} vjp vs C.J")


@pytest.mark.parametrize("name", NAMES)
def test_hvp_matches_reference(name):
    c = case(name)
    for output in range(c.net.n_out):
        for x in c.X[:2]:
            Hv = c.net.hvp(c.w, x, c.v, output=output)
            assert Hv.shape == (c.net.n_params,)
            assert_close(Hv, c.ref.hvp(c.w, x, c.v, output), REFERENCE_RTOL,
                         f"{name} hvp output {output}")


@pytest.mark.parametrize("name", NAMES)
def test_hvp_out_buffer(name):
    c = case(name)
    out = np.full(c.net.n_params, np.nan)
    result = c.net.hvp(c.w, c.X[0], c.v, output=0, out=out)
    assert result is out or np.shares_memory(result, out)
    assert_close(out, c.net.hvp(c.w, c.X[0], c.v, output=0), 0.0, f"{name} hvp out=")
    # a stale buffer must not leak into the result
    out[:] = 1e300
    c.net.hvp(c.w, c.X[0], c.v, output=0, out=out)
    assert_close(out, c.ref.hvp(c.w, c.X[0], c.v, 0), REFERENCE_RTOL, f"{name} hvp reused out")


@pytest.mark.parametrize("name", NAMES)
def test_ntk_matches_reference(name):
    c = case(name)
    K = c.net.ntk(c.w, c.X1, c.X2)
    expected = c.ref.ntk(c.w, c.X1, c.X2)
    assert K.shape == expected.shape
    assert_close(K, expected, REFERENCE_RTOL, f"{name} ntk")
    # X2 omitted: the Gram matrix of X1, symmetric positive semi-definite
    K11 = c.net.ntk(c.w, c.X1)
    assert_close(K11, c.ref.ntk(c.w, c.X1, c.X1), REFERENCE_RTOL, f"{name} ntk(X1)")
    if c.net.n_out == 1:
        assert_close(K11, K11.T, 1e-12, f"{name} ntk symmetry")
        assert np.linalg.eigvalsh(K11).min() >= -1e-9 * np.abs(K11).max()


def finite_difference_jacobian(net, w, X, eps=FD_EPS) -> np.ndarray:
    J = np.empty((len(X), net.n_out, net.n_params))
    for p in range(net.n_params):
        step = np.zeros_like(w)
        step[p] = eps
        J[:, :, p] = (net.forward(w + step, X) - net.forward(w - step, X)) / (2 * eps)
    return J


@pytest.mark.parametrize("name", NAMES)
def test_jacobian_matches_finite_differences(name):
    c = case(name)
    X = c.X[:2]
    assert_close(c.net.jacobian(c.w, X), finite_difference_jacobian(c.net, c.w, X), FD_RTOL,
                 f"{name} jacobian vs finite differences")


@pytest.mark.parametrize("name", NAMES)
def test_hvp_matches_finite_differences_of_vjp(name):
    c = case(name)
    net, w, x = c.net, c.w, c.X[0]
    v = c.v / np.linalg.norm(c.v)
    for output in range(net.n_out):
        C = np.zeros((1, net.n_out))
        C[0, output] = 1.0
        fd = (net.vjp(w + FD_EPS * v, x[None], C)
              - net.vjp(w - FD_EPS * v, x[None], C)) / (2 * FD_EPS)
        assert_close(net.hvp(w, x, v, output=output), fd, FD_RTOL,
                     f"{name} hvp vs finite differences of vjp, output {output}")


def dense_hessian(net, w, x, output=0) -> np.ndarray:
    """H[:, p] = H e_p from P Hessian-vector products."""
    H = np.empty((net.n_params, net.n_params))
    e = np.zeros(net.n_params)
    for p in range(net.n_params):
        e[p] = 1.0
        H[:, p] = net.hvp(w, x, e, output=output)
        e[p] = 0.0
    return H


@pytest.mark.parametrize("name", NAMES)
def test_hessian_symmetric_with_reference_spectral_norm(name):
    c = case(name, HESSIAN_WIDTH)
    assert 200 <= c.net.n_params <= 2000, c.net.n_params
    x = c.X[0]
    H = dense_hessian(c.net, c.w, x)
    assert_close(H, H.T, 1e-10, f"{name} Hessian symmetry")
    H_ref = c.ref.hessian(c.w, x)
    assert_close(H, H_ref, REFERENCE_RTOL, f"{name} Hessian")
    norm = np.abs(np.linalg.eigvalsh((H + H.T) / 2)).max()
    norm_ref = np.abs(np.linalg.eigh(H_ref)[0]).max()
    assert norm_ref > 0
    assert abs(norm - norm_ref) <= REFERENCE_RTOL * norm_ref, (norm, norm_ref)


def test_sparse_ntk_over_several_blocks():
    """The NTK of a sparse connection is accumulated a block of rows at a time (about
    NTK_BLOCK_ENTRIES entries); at width 384, sparse3's h1 -> h2 (384 rows of 192 entries)
    takes several blocks, the last one shorter."""
    net = compiled("sparse3", 384)
    rows_per_block = net.module.NTK_BLOCK_ENTRIES // 192
    assert 1 <= rows_per_block < 384 and 384 % rows_per_block
    ref = Reference(net)
    rng = np.random.default_rng(7)
    w = net.init(seed=5)
    X1 = rng.standard_normal((3, net.n_in))
    X2 = rng.standard_normal((2, net.n_in))
    assert_close(net.ntk(w, X1, X2), ref.ntk(w, X1, X2), REFERENCE_RTOL, "sparse3 ntk, width 384")


@pytest.mark.parametrize("name", NAMES)
def test_smallest_valid_width(name):
    """Blocks of one or two neurons and fan-ins of one, through the same compiled module."""
    for width in range(1, 9):
        try:
            net = compiled(name, width)
        except dagc.DagcError:  # a size or fan_in expression not a positive integer
            continue
        break
    else:
        raise AssertionError(f"{name}: no valid width below 9")
    ref = Reference(net)
    rng = np.random.default_rng(11)
    w = net.init(seed=4)
    X = rng.standard_normal((3, net.n_in))
    v = rng.standard_normal(net.n_params)
    assert_close(net.forward(w, X), ref.forward(w, X), REFERENCE_RTOL, f"{name} forward")
    assert_close(net.jacobian(w, X), ref.jacobian(w, X), REFERENCE_RTOL, f"{name} jacobian")
    for output in range(net.n_out):
        assert_close(net.hvp(w, X[0], v, output=output), ref.hvp(w, X[0], v, output),
                     REFERENCE_RTOL, f"{name} hvp")
    assert_close(net.ntk(w, X[:2], X[2:]), ref.ntk(w, X[:2], X[2:]), REFERENCE_RTOL,
                 f"{name} ntk")
