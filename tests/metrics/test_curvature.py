"""Tests of dagc.metrics.curvature: Hessian norms against dense eigendecompositions and a
closed form, the factored operator's spectrum, the hessian and hessian_ball metrics, and
non-finite arguments, which raise instead of giving a number."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from conftest import BUNDLED, compiled
from reference import Reference

import dagc
from dagc import measure as M
from dagc import runtime
from dagc.errors import DagcError
from dagc.frontend import spec


@pytest.fixture(scope="module")
def mlp3_small():
    return compiled("mlp3", 8)


def _dense_norm(net, w, x, output=0):
    H = M.dense_hessian(net, w, x, output)
    assert np.allclose(H, H.T, rtol=0, atol=1e-12 * max(1.0, np.abs(H).max()))
    return float(np.abs(np.linalg.eigvalsh((H + H.T) / 2)).max())


# ------------------------------------------------------------------------------------------
# hessian


@pytest.mark.parametrize("arch", BUNDLED)
def test_hessian_norm_matches_dense_eigendecomposition(arch):
    net = dagc.compile(arch, width=8)
    w = net.init(3)
    for x in M.sweep_inputs(net, 3, 2):
        reference = _dense_norm(net, w, x)
        for method in M.HESSIAN_METHODS:
            value = M.hessian_norm(net, w, x, tol=1e-6, method=method)
            assert value == pytest.approx(reference, rel=1e-6), method
        assert M.hessian_norm(net, w, x, tol=1e-13) == pytest.approx(reference, rel=1e-11)


def test_hessian_closed_form(tiny):
    d, m = 3, 4
    s1, s2 = 1 / math.sqrt(d), 1 / math.sqrt(m)
    rng = np.random.default_rng(7)
    for _ in range(3):
        w = rng.standard_normal(tiny.n_params)
        x = rng.standard_normal(d)
        W, v = w[:m * d].reshape(m, d), w[m * d:]
        z = s1 * W @ x
        t1 = 1 - np.tanh(z) ** 2             # tanh'
        t2 = -2 * np.tanh(z) * t1            # tanh''
        H = np.zeros((tiny.n_params, tiny.n_params))
        for j in range(m):
            rows = slice(j * d, (j + 1) * d)  # W_j, row-major (docs/design.md, Parameter layout)
            H[rows, rows] = s2 * v[j] * t2[j] * s1**2 * np.outer(x, x)
            H[rows, m * d + j] = H[m * d + j, rows] = s2 * t1[j] * s1 * x
        np.testing.assert_allclose(M.dense_hessian(tiny, w, x), H, rtol=0, atol=1e-14)
        exact = np.abs(np.linalg.eigvalsh(H)).max()
        assert M.hessian_norm(tiny, w, x, tol=1e-12) == pytest.approx(exact, rel=1e-10)


@pytest.mark.parametrize("arch", ["densenet3", "resnet3", "sparse3", "randdag", "two_outputs"])
def test_factored_hessian_has_the_nonzero_spectrum_of_the_hessian(arch, two_outputs):
    # The operator on coordinates, assembled column by column, against the dense Hessian:
    # G T is symmetric (T is self-adjoint for C . G C), G = U^T U is positive semidefinite,
    # and the pencil (G T, G) on the range of G has exactly the nonzero eigenvalues of H.
    net = two_outputs if arch == "two_outputs" else dagc.compile(arch, width=8)
    w = net.init(2)
    X = M.sweep_inputs(net, 2, 2)
    outputs = np.array([0, net.n_out - 1])
    operator = net.factored_hessian(w, X, outputs)
    assert operator.size < net.n_params
    for row in range(2):
        columns = np.zeros((operator.size, 2, operator.size))
        columns[:, row, :] = np.eye(operator.size)
        T, G = (np.array(part)[:, row, :].T
                for part in zip(*(operator.apply(c) for c in columns), strict=True))
        A = G @ T
        np.testing.assert_allclose(A, A.T, rtol=0, atol=1e-13 * np.abs(A).max())
        gram, basis = np.linalg.eigh(G)
        assert gram.min() > -1e-12 * gram.max()
        basis = basis[:, gram > 1e-10 * gram.max()] / np.sqrt(gram[gram > 1e-10 * gram.max()])
        factored = np.linalg.eigvalsh(basis.T @ A @ basis)
        dense = np.linalg.eigvalsh(M.dense_hessian(net, w, X[row], int(outputs[row])))
        scale = np.abs(dense).max()
        assert scale > 0
        factored, dense = (np.sort(v[np.abs(v) > 1e-9 * scale]) for v in (factored, dense))
        np.testing.assert_allclose(factored, dense, rtol=0, atol=1e-12 * scale)


def test_batched_norms_are_the_single_norms(mlp3_small):
    # Rows are independent: a batch of inputs and outputs gives each row's own norm.
    w = mlp3_small.init(4)
    X = M.sweep_inputs(mlp3_small, 4, 5)
    batched = M.hessian_norms(mlp3_small, w, X, tol=1e-12)
    single = [M.hessian_norm(mlp3_small, w, x, tol=1e-12) for x in X]
    np.testing.assert_allclose(batched[:, 0], single, rtol=1e-11)


def test_linear_model_has_zero_hessian():
    # One layer with identity output: f is linear in w, the Krylov space is {0} after one
    # step, and the linearization is exact.
    text = "name: linear_only\ninputs: {x: 20}\nblocks:\n  out: {size: 1, from: [x]}\n"
    net = runtime.compile_spec(spec.parse(text), jit=False)
    assert net.n_params == 20
    assert M.measure(net, "hessian", 0)["value"] == 0.0
    assert M.measure(net, "linearization", 0)["value"] < 1e-15
    ball = M.measure(net, "hessian_ball", 0, M.Options(ascent_steps=2))
    assert ball["value"] == 0.0 and ball["gain"] == 1.0


def test_hessian_metric_is_mean_and_max_over_inputs(mlp3_small):
    options = M.Options(inputs=3)
    result = M.measure(mlp3_small, "hessian", 5, options)
    norms = [_dense_norm(mlp3_small, mlp3_small.init(5), x)
             for x in M.sweep_inputs(mlp3_small, 5, 3)]
    assert result["value"] == result["mean"] == pytest.approx(np.mean(norms), rel=1e-6)
    assert result["max"] == pytest.approx(max(norms), rel=1e-6)


def test_hessian_ball(mlp3_small):
    net, seed = mlp3_small, 2
    options = M.Options(inputs=2, ball_points=3, radius=0.5, ascent_steps=2)
    result = M.measure(net, "hessian_ball", seed, options)
    w0, X = net.init(seed), M.sweep_inputs(net, seed, 2)
    rng = M.generator(seed, "ball")
    points = [w0 + 0.5 * M.unit_vector(rng, net.n_params) for _ in range(3)]
    assert all(np.linalg.norm(p - w0) == pytest.approx(0.5) for p in points)
    norms = [_dense_norm(net, p, x) for p in points for x in X]
    assert result["max"] == pytest.approx(max(norms), rel=1e-6)
    # The ascent starts at w0 and keeps only improvements: never below ||H(w0)||.
    assert result["value"] >= max(result["max"], result["ascent_mean"])
    assert result["ascent_mean"] >= result["at_w0"] * (1 - 1e-6)
    assert result["gain"] == pytest.approx(result["value"] / result["max"], rel=1e-12)
    assert result["radius"] == 0.5
    # A vanishing ball gives back the Hessian norm at w0.
    tiny_ball = M.measure(net, "hessian_ball", seed, dataclasses.replace(options, radius=1e-9))
    at_w0 = M.measure(net, "hessian", seed, options)
    assert tiny_ball["value"] == pytest.approx(at_w0["max"], rel=1e-6)


# ------------------------------------------------------------------------------------------
# the ascent over the ball


def test_eigenvalue_gradient_matches_the_derivative_of_dense_eigenvalues(mlp3_small):
    net = compiled("mlp3", 3)
    w, x = net.init(4), M.sweep_inputs(net, 4, 1)[0]
    lam, v = M.top_curvature(net, w, x, 0, 1e-12, np.ones(net.n_params))
    gradient = M.eigenvalue_gradient(net, w, x, 0, v)
    rng = np.random.default_rng(0)
    for _ in range(3):
        u = M.unit_vector(rng, net.n_params)
        h = 1e-4
        shifted = [np.linalg.eigvalsh(_symmetric(M.dense_hessian(net, w + s * h * u, x)))
                   for s in (1, -1)]
        # the same end of the spectrum as lam (a simple eigenvalue moves smoothly)
        pick = -1 if lam > 0 else 0
        finite = (shifted[0][pick] - shifted[1][pick]) / (2 * h)
        assert gradient @ u == pytest.approx(finite, rel=1e-5, abs=1e-8)


def _symmetric(H):
    return (H + H.T) / 2


@pytest.mark.parametrize("arch", ["mlp3", "resnet3"])
def test_ball_ascent_stays_in_the_ball_and_never_loses(arch):
    net = compiled(arch, 4)
    w0 = net.init(1)
    for x in M.sweep_inputs(net, 1, 2):
        for radius in (0.3, 2.0):
            result = M.ball_ascent(net, w0, x, 0, radius, steps=4, tol=1e-10)
            assert np.linalg.norm(result.w - w0) <= radius * (1 + 1e-12)
            assert result.at_center == pytest.approx(_dense_norm(net, w0, x), rel=1e-8)
            assert result.value >= result.at_center
            # the reported value is the norm at the reported point
            assert result.value == pytest.approx(_dense_norm(net, result.w, x), rel=1e-8)


def test_ball_ascent_finds_more_than_random_points():
    net = compiled("densenet3", 8)
    w0, x = net.init(0), M.sweep_inputs(net, 0, 1)[0]
    ascent = M.ball_ascent(net, w0, x, 0, 1.0, steps=8)
    rng = np.random.default_rng(1)
    random = max(M.hessian_norm(net, w0 + M.unit_vector(rng, net.n_params), x)
                 for _ in range(8))
    assert ascent.value > 1.2 * random


def test_project_to_ball():
    center = np.zeros(3)
    inside = np.array([0.1, 0.2, 0.0])
    assert M.project_to_ball(inside, center, 1.0) is inside
    outside = np.array([3.0, 4.0, 0.0])
    assert np.allclose(M.project_to_ball(outside, center, 1.0), [0.6, 0.8, 0.0])


# ------------------------------------------------------------------------------------------
# pre-activation Hessians (Theorem 3.8)


def _preactivation_reference(net, block):
    """PyTorch's model of `net` whose only output is block's pre-activation: the block's
    activation and add-skips removed (tests/reference.py's evaluation, unchanged)."""
    ref = Reference(net)
    ref.blocks = [dataclasses.replace(b, act="identity", add=(), is_output=True)
                  if b.name == block else b for b in ref.blocks]
    ref.outputs = [b for b in ref.blocks if b.name == block]
    return ref


@pytest.mark.parametrize("arch,width", [("densenet3", 3), ("resnet3", 3), ("sparse3", 4),
                                        ("softout", 3)])
def test_preactivation_hessians_match_pytorch(arch, width):
    net = compiled(arch, width)
    w, X = net.init(2), M.sweep_inputs(net, 2, 2)
    blocks = M.hidden_blocks(net) + [b.name for b in net.ir.outputs]
    neurons = np.array([net.ir.blocks[[b.name for b in net.ir.blocks].index(name)].size - 1
                        for name in blocks])
    norms = M.preactivation_norms(net, w, X, blocks, neurons, tol=1e-12)
    for j, (block, neuron) in enumerate(zip(blocks, neurons, strict=True)):
        ref = _preactivation_reference(net, block)
        for i, x in enumerate(X):
            H = ref.hessian(w, x, int(neuron))
            exact = float(np.abs(np.linalg.eigvalsh(_symmetric(H))).max())
            assert norms[i, j] == pytest.approx(exact, rel=1e-9, abs=1e-13), (block, i)


def test_hidden_blocks_and_samples(mlp3_small):
    net = mlp3_small
    assert M.hidden_blocks(net) == [name for name, layer in net.layers.items()
                                    if layer >= 2 and name != "out"]
    per_block = M.hidden_hessian_norms(net, net.init(0), M.sweep_inputs(net, 0, 3), 2)
    assert set(per_block) == set(M.hidden_blocks(net))
    assert all(norms.shape == (3, 2) and np.all(norms > 0) for norms in per_block.values())
    result = M.measure(net, "hessian_hidden", 0, M.Options(inputs=3, hidden_neurons=2))
    means = [float(n.mean()) for n in per_block.values()]
    assert result["value"] == pytest.approx(max(means), rel=1e-12)
    assert result["blocks"] == len(per_block)


def test_hessian_hidden_needs_a_deep_enough_network(two_outputs):
    with pytest.raises(DagcError, match="no hidden block outside layers 0 and 1"):
        M.measure(two_outputs, "hessian_hidden", 0)


def test_output_preactivation_is_the_output_when_linear(mlp3_small):
    net = mlp3_small
    w, X = net.init(1), M.sweep_inputs(net, 1, 2)
    assert np.allclose(M.output_preactivation_norms(net, w, X, tol=1e-12),
                       M.hessian_norms(net, w, X, tol=1e-12), rtol=1e-9)


def test_preactivation_hessian_argument_errors(mlp3_small):
    net = mlp3_small
    w, X = net.init(0), M.sweep_inputs(net, 0, 1)
    with pytest.raises(DagcError, match="blocks: expected 1 names"):
        net.preactivation_hessian(w, X, ["x"], np.array([0]))
    with pytest.raises(DagcError, match="neurons: expected"):
        net.preactivation_hessian(w, X, ["h2"], np.array([10**6]))


def test_several_outputs(two_outputs):
    net = two_outputs
    w = net.init(1)
    X = M.sweep_inputs(net, 1, 2)
    norms = M.hessian_norms(net, w, X)
    assert norms.shape == (2, 2)
    for i, x in enumerate(X):
        for o in range(2):
            assert norms[i, o] == pytest.approx(_dense_norm(net, w, x, o), rel=1e-6)


# ------------------------------------------------------------------------------------------
# non-finite arguments


@pytest.mark.parametrize("method", M.HESSIAN_METHODS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_or_input_raise(mlp3_small, method, bad):
    # hessian_norm used to return 0.0 for NaN (Lanczos) and ARPACK raised ArpackError.
    net = mlp3_small
    w, x = net.init(0), M.sweep_inputs(net, 0, 1)[0]
    w_bad, x_bad = w.copy(), x.copy()
    w_bad[7], x_bad[3] = bad, bad
    with pytest.raises(DagcError, match="^w: contains NaN or inf"):
        M.hessian_norm(net, w_bad, x, method=method)
    with pytest.raises(DagcError, match="^x: contains NaN or inf"):
        M.hessian_norm(net, w, x_bad, method=method)
    with pytest.raises(DagcError, match="^X: contains NaN or inf"):
        M.hessian_norms(net, w, np.array([x, x_bad]), method=method)
