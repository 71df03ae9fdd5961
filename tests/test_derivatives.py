"""Oracle tests of every bundled architecture's compiled (numba) passes.

Forward, Jacobian, VJP, HVP (every output) and NTK are checked against the independent PyTorch
reference in `reference.py` to 1e-9 relative error, and against central finite differences;
the Hessian assembled from P HVPs must be symmetric and have the torch Hessian's spectral norm.
Each architecture is compiled once per session (conftest.compiled; the module is shared by
every width).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import BUNDLED, assert_close, compiled
from reference import Reference

import dagc
from dagc.backend import kernels

NAMES = [*BUNDLED, "kitchen_sink"]  # kitchen_sink: what the bundled files do not exercise

# torch.func's internals warn about torch.jit.script; that is not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
WIDTH = 8  # small, and a multiple of 4 (sparse3 has fan_in width/4)
HESSIAN_WIDTH = 16  # P from ~300 to ~1300: dense Hessians are cheap
REFERENCE_RTOL = 1e-9
FD_RTOL = 1e-6
FD_EPS = 1e-6


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
    assert_close(Y, c.ref.forward(c.w, c.X), REFERENCE_RTOL, what=f"{name} forward")


@pytest.mark.parametrize("name", NAMES)
def test_jacobian_matches_reference(name):
    c = case(name)
    J = c.net.jacobian(c.w, c.X)
    assert J.shape == (len(c.X), c.net.n_out, c.net.n_params)
    assert_close(J, c.ref.jacobian(c.w, c.X), REFERENCE_RTOL, what=f"{name} jacobian")


@pytest.mark.parametrize("name", NAMES)
def test_vjp_matches_reference(name):
    c = case(name)
    g = c.net.vjp(c.w, c.X, c.C)
    assert g.shape == (c.net.n_params,)
    assert_close(g, c.ref.vjp(c.w, c.X, c.C), REFERENCE_RTOL, what=f"{name} vjp")
    # and it is the contraction of the Jacobian with C
    expected = np.einsum("ik,ikp->p", c.C, c.ref.jacobian(c.w, c.X))
    assert_close(g, expected, REFERENCE_RTOL, what=f"{name} vjp vs C.J")


@pytest.mark.parametrize("name", NAMES)
def test_hvp_matches_reference(name):
    c = case(name)
    for output in range(c.net.n_out):
        for x in c.X[:2]:
            Hv = c.net.hvp(c.w, x, c.v, output=output)
            assert Hv.shape == (c.net.n_params,)
            assert_close(Hv, c.ref.hvp(c.w, x, c.v, output), REFERENCE_RTOL,
                         what=f"{name} hvp output {output}")


@pytest.mark.parametrize("name", NAMES)
def test_hvp_out_buffer(name):
    c = case(name)
    out = np.full(c.net.n_params, np.nan)
    result = c.net.hvp(c.w, c.X[0], c.v, output=0, out=out)
    assert result is out or np.shares_memory(result, out)
    assert_close(out, c.net.hvp(c.w, c.X[0], c.v, output=0), 0.0, what=f"{name} hvp out=")
    # a stale buffer must not leak into the result
    out[:] = 1e300
    c.net.hvp(c.w, c.X[0], c.v, output=0, out=out)
    assert_close(out, c.ref.hvp(c.w, c.X[0], c.v, 0), REFERENCE_RTOL,
                 what=f"{name} hvp reused out")


@pytest.mark.parametrize("name", NAMES)
def test_ntk_matches_reference(name):
    c = case(name)
    K = c.net.ntk(c.w, c.X1, c.X2)
    expected = c.ref.ntk(c.w, c.X1, c.X2)
    assert K.shape == expected.shape
    assert_close(K, expected, REFERENCE_RTOL, what=f"{name} ntk")
    # X2 omitted: the Gram matrix of X1, symmetric positive semi-definite
    K11 = c.net.ntk(c.w, c.X1)
    assert_close(K11, c.ref.ntk(c.w, c.X1, c.X1), REFERENCE_RTOL, what=f"{name} ntk(X1)")
    if c.net.n_out == 1:
        assert_close(K11, K11.T, 1e-12, what=f"{name} ntk symmetry")
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
                 what=f"{name} jacobian vs finite differences")


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
                     what=f"{name} hvp vs finite differences of vjp, output {output}")


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
    assert_close(H, H.T, 1e-10, what=f"{name} Hessian symmetry")
    H_ref = c.ref.hessian(c.w, x)
    assert_close(H, H_ref, REFERENCE_RTOL, what=f"{name} Hessian")
    norm = np.abs(np.linalg.eigvalsh((H + H.T) / 2)).max()
    norm_ref = np.abs(np.linalg.eigh(H_ref)[0]).max()
    assert norm_ref > 0
    assert abs(norm - norm_ref) <= REFERENCE_RTOL * norm_ref, (norm, norm_ref)


def test_sparse_ntk_over_several_blocks():
    """The NTK of a sparse connection is accumulated a block of rows at a time (about
    kernels.NTK_BLOCK_ENTRIES entries); at width 384, sparse3's h1 -> h2 (384 rows of 192 entries)
    takes several blocks, the last one shorter."""
    net = compiled("sparse3", 384)
    rows_per_block = kernels.NTK_BLOCK_ENTRIES // 192
    assert 1 <= rows_per_block < 384 and 384 % rows_per_block
    ref = Reference(net)
    rng = np.random.default_rng(7)
    w = net.init(seed=5)
    X1 = rng.standard_normal((3, net.n_in))
    X2 = rng.standard_normal((2, net.n_in))
    assert_close(net.ntk(w, X1, X2), ref.ntk(w, X1, X2), REFERENCE_RTOL,
                 what="sparse3 ntk, width 384")


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
    assert_close(net.forward(w, X), ref.forward(w, X), REFERENCE_RTOL, what=f"{name} forward")
    assert_close(net.jacobian(w, X), ref.jacobian(w, X), REFERENCE_RTOL, what=f"{name} jacobian")
    for output in range(net.n_out):
        assert_close(net.hvp(w, X[0], v, output=output), ref.hvp(w, X[0], v, output),
                     REFERENCE_RTOL, what=f"{name} hvp")
    assert_close(net.ntk(w, X[:2], X[2:]), ref.ntk(w, X[:2], X[2:]), REFERENCE_RTOL,
                 what=f"{name} ntk")
