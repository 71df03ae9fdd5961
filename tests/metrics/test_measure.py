"""Tests of dagc.measure: every metric against an independent computation (dense Hessian,
closed form, Jacobian, direct evaluation), the width trends the paper predicts, determinism
and argument checking."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import dagc
from dagc import measure as M
from dagc import runtime
from dagc.errors import DagcError
from dagc.frontend import spec

BUNDLED = ("mlp3", "densenet3", "sparse3", "softout")


@pytest.fixture(scope="module")
def mlp3_small():
    return dagc.compile("mlp3", width=8)


@pytest.fixture(scope="module")
def tiny():
    """f(x) = s2 * sum_j v_j tanh(s1 * W_j . x), s1 = 1/sqrt(3), s2 = 1/sqrt(5)."""
    text = textwrap.dedent("""\
        name: tiny_closed_form
        width: 5
        inputs: {x: 3}
        blocks:
          h: {size: width, act: tanh, from: [x]}
          out: {size: 1, from: [h]}
        """)
    return runtime.compile_spec(spec.parse(text), jit=False)


@pytest.fixture(scope="module")
def two_outputs():
    """Several outputs, a bias, two activations and a skip from the input."""
    text = textwrap.dedent("""\
        name: tiny_two_outputs
        width: 4
        inputs: {x: 3}
        blocks:
          h1: {size: width, act: tanh, from: [x]}
          h2: {size: width, act: sin, from: [x, h1], bias: true}
          out: {size: 2, from: [h1, h2]}
        """)
    return runtime.compile_spec(spec.parse(text), jit=False)


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
    d, m = 3, 5
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


class _Diagonal:
    """Rows of diagonal operators, self-adjoint in the inner product x . (weights * y)."""

    def __init__(self, diagonals, weights):
        self.diagonals, self.weights = diagonals, weights

    def apply(self, C):
        return self.diagonals * C, self.weights * C

    def select(self, keep):
        return _Diagonal(self.diagonals[keep], self.weights[keep])


def test_lanczos_finds_the_larger_end_of_a_plus_minus_pair():
    # A +/- pair 1e-4 apart and the larger one negative: power iteration's rate would be
    # 0.9999; Lanczos must return |-1| to within tol. Row 1: the same spectrum scaled by 3
    # in a weighted inner product (a diagonal operator is self-adjoint in any diagonal one).
    # Row 2: the zero operator.
    rng = np.random.default_rng(0)
    diagonal = np.concatenate([[-1.0, 0.9999], rng.uniform(-0.5, 0.5, 998)])
    diagonals = np.array([diagonal, 3 * diagonal, 0 * diagonal])
    weights = np.array([np.ones(1000), rng.uniform(0.5, 2.0, 1000), np.ones(1000)])
    start = np.tile(rng.standard_normal(1000), (3, 1))
    norms = M.lanczos_norms(_Diagonal(diagonals, weights), start, 1e-8)
    np.testing.assert_allclose(norms, [1.0, 3.0, 0.0], rtol=1e-8)


class _Symmetric:
    """Plain symmetric matrices, one per row, whose Gram matrix is the identity: apply returns
    its input itself as G C, which Lanczos must not overwrite while it still reads it."""

    def __init__(self, matrices):
        self.matrices = matrices

    def apply(self, C):
        return np.einsum("rij,rj->ri", self.matrices, C), C

    def select(self, keep):
        return _Symmetric(self.matrices[keep])


def test_lanczos_on_an_operator_that_returns_its_input_as_the_gram_product():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((3, 60, 60))
    A = A + A.transpose(0, 2, 1)
    u, t = rng.standard_normal((2, 60))
    A[1] = np.outer(u, u) - 0.5 * np.outer(t, t)  # rank 2: done within 3 steps, the batch shrinks
    start = np.tile(rng.standard_normal(60), (3, 1))
    norms = M.lanczos_norms(_Symmetric(A), start, 1e-10)
    np.testing.assert_allclose(norms, np.abs(np.linalg.eigvalsh(A)).max(axis=1), rtol=1e-9)


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


def test_hessian_metric_is_mean_and_max_over_inputs(mlp3_small):
    options = M.Options(inputs=3)
    result = M.measure(mlp3_small, "hessian", 5, options)
    norms = [_dense_norm(mlp3_small, mlp3_small.init(5), x)
             for x in M.sweep_inputs(mlp3_small, 5, 3)]
    assert result["value"] == result["mean"] == pytest.approx(np.mean(norms), rel=1e-6)
    assert result["max"] == pytest.approx(max(norms), rel=1e-6)


def test_hessian_ball(mlp3_small):
    net, seed = mlp3_small, 2
    options = M.Options(inputs=2, ball_points=3, radius=0.5)
    result = M.measure(net, "hessian_ball", seed, options)
    w0, X = net.init(seed), M.sweep_inputs(net, seed, 2)
    rng = M.generator(seed, "ball")
    points = [w0 + 0.5 * M.unit_vector(rng, net.n_params) for _ in range(3)]
    assert all(np.linalg.norm(p - w0) == pytest.approx(0.5) for p in points)
    norms = [_dense_norm(net, p, x) for p in points for x in X]
    assert result["value"] == result["max"] == pytest.approx(max(norms), rel=1e-6)
    # A vanishing ball gives back the Hessian norm at w0.
    tiny_ball = M.measure(net, "hessian_ball", seed, dataclasses.replace(options, radius=1e-9))
    at_w0 = M.measure(net, "hessian", seed, options)
    assert tiny_ball["value"] == pytest.approx(at_w0["max"], rel=1e-6)


# ------------------------------------------------------------------------------------------
# gradient and linearization


@pytest.mark.parametrize("arch", ["mlp3", "sparse3"])
def test_gradient_matches_jacobian(arch):
    net = dagc.compile(arch, width=8)
    result = M.measure(net, "gradient", 4, M.Options(inputs=5))
    J = net.jacobian(net.init(4), M.sweep_inputs(net, 4, 5))
    norms = np.linalg.norm(J, axis=2)
    assert result["value"] == pytest.approx(norms.mean(), rel=1e-12)
    assert result["max"] == pytest.approx(norms.max(), rel=1e-12)


def test_linearization_matches_direct_evaluation(mlp3_small):
    net, seed, R = mlp3_small, 1, 0.7
    result = M.measure(net, "linearization", seed, M.Options(radius=R, directions=3, inputs=2))
    w0, X = net.init(seed), M.sweep_inputs(net, seed, 2)
    J = net.jacobian(w0, X)[:, 0, :]
    rng = M.generator(seed, "directions")
    errors = []
    for _ in range(3):
        u = M.unit_vector(rng, net.n_params)
        errors.append(np.abs(net.forward(w0 + R * u, X)[:, 0] - net.forward(w0, X)[:, 0]
                             - R * J @ u))
    assert result["random_mean"] == pytest.approx(np.mean(errors), rel=1e-10)
    assert result["random_max"] == pytest.approx(np.max(errors), rel=1e-10)
    along = []
    for x, g in zip(X, J, strict=True):
        u = g / np.linalg.norm(g)
        f = net.forward(w0 + R * u, x[None])[0, 0] - net.forward(w0, x[None])[0, 0]
        along.append(abs(f - R * np.linalg.norm(g)))
    assert result["gradient_direction"] == pytest.approx(np.mean(along), rel=1e-10)
    worst = np.maximum(np.max(errors, axis=0), along)
    assert result["value"] == pytest.approx(np.mean(worst), rel=1e-10)
    # Gradient descent's direction bends the function far more than a random one does.
    assert result["gradient_direction"] > 10 * result["random_mean"]


def test_linearization_error_scales_like_radius_squared(mlp3_small):
    values = [M.measure(mlp3_small, "linearization", 0, M.Options(radius=R))["value"]
              for R in (1e-2, 1e-3)]
    assert values[0] / values[1] == pytest.approx(100.0, rel=0.05)


# ------------------------------------------------------------------------------------------
# ntk_change


def test_ntk_matrix_flattens_several_outputs(two_outputs):
    net = two_outputs
    w = net.init(0)
    X = M.sweep_inputs(net, 0, 3)
    J = net.jacobian(w, X).reshape(3 * net.n_out, net.n_params)
    np.testing.assert_allclose(M.ntk_matrix(net, w, X), J @ J.T, rtol=1e-12, atol=1e-12)


def test_ntk_change_trains_and_shrinks_with_width():
    options = M.Options()
    results = {}
    for width in (16, 256):
        net = dagc.compile("mlp3", width=width)
        r = results[width] = M.measure(net, "ntk_change", 0, options)
        assert r["converged"] == 1.0
        assert r["loss_ratio"] <= 1 / options.loss_drop
        assert 1 <= r["steps"] <= options.max_steps
        assert r["value"] > 0 and r["weight_change"] > 0
    # Transition to linearity: the relative NTK change decays like width^-1/2 (a factor 4
    # here), while the weights move by O(1) at every width.
    assert results[256]["value"] < 0.5 * results[16]["value"]
    assert results[256]["min_eig_change"] < results[16]["min_eig_change"]
    assert 1 / 3 < results[256]["weight_change"] / results[16]["weight_change"] < 3


def test_train_follows_gradient_descent(tiny):
    X, Y = M.regression_set(tiny, 0, 6)
    assert np.sqrt(np.mean(Y**2)) == pytest.approx(1.0)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), math.sqrt(tiny.n_in))
    w0 = tiny.init(0)
    one = M.train(tiny, w0, X, Y, loss_drop=1e9, max_steps=1)
    K0 = M.ntk_matrix(tiny, w0, X)
    assert one.eta == pytest.approx(1 / np.linalg.eigvalsh(K0 / 6)[-1])
    J = tiny.jacobian(w0, X)[:, 0, :]
    residual = tiny.forward(w0, X) - Y
    np.testing.assert_allclose(one.w, w0 - one.eta * J.T @ residual[:, 0] / 6, atol=1e-13)
    assert one.steps == 1 and one.loss < one.loss0


# ------------------------------------------------------------------------------------------
# several outputs, determinism, validation


def test_several_outputs(two_outputs):
    net = two_outputs
    w = net.init(1)
    X = M.sweep_inputs(net, 1, 2)
    norms = M.hessian_norms(net, w, X)
    assert norms.shape == (2, 2)
    for i, x in enumerate(X):
        for o in range(2):
            assert norms[i, o] == pytest.approx(_dense_norm(net, w, x, o), rel=1e-6)
    for metric in M.METRICS:
        result = M.measure(net, metric, 1)
        assert all(isinstance(v, float) and math.isfinite(v) for v in result.values()), metric


def test_same_call_is_bit_identical(mlp3_small):
    for metric in M.METRICS:
        first = M.measure(mlp3_small, metric, 11)
        second = M.measure(mlp3_small, metric, 11)
        assert {k: v.hex() for k, v in first.items()} == {k: v.hex() for k, v in second.items()}
    assert M.measure(mlp3_small, "hessian", 12) != M.measure(mlp3_small, "hessian", 11)


def test_bit_identical_in_another_process(mlp3_small):
    script = textwrap.dedent("""\
        import dagc
        from dagc import measure as M
        net = dagc.compile("mlp3", width=8)
        print(net.module.__file__)
        for metric in M.METRICS:
            print(metric, sorted((k, v.hex()) for k, v in M.measure(net, metric, 11).items()))
        """)
    here = f"{mlp3_small.module.__file__}\n" + "".join(
        f"{metric} {sorted((k, v.hex()) for k, v in M.measure(mlp3_small, metric, 11).items())}\n"
        for metric in M.METRICS)
    there = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True, timeout=300).stdout
    if there.split("\n", 1)[0] != here.split("\n", 1)[0]:
        pytest.skip("the generated module changed (templates edited) during the test run")
    assert there == here


def test_options_round_trip_and_validation():
    options = M.Options(radius=2, tol=0)
    assert isinstance(options.radius, float) and options.radius == 2.0
    stored = dataclasses.asdict(options)
    assert M.Options.from_dict(stored) == options
    with pytest.raises(DagcError, match="unknown field"):
        M.Options.from_dict({**stored, "extra": 1})
    bad = [dict(inputs=0), dict(inputs=2.0), dict(ball_points=True), dict(radius=0.0),
           dict(radius=float("nan")), dict(loss_drop=1.0), dict(max_steps=-1), dict(tol=-1e-3),
           dict(hessian_method="power")]
    for kwargs in bad:
        with pytest.raises(DagcError, match=f"options.{next(iter(kwargs))}"):
            M.Options(**kwargs)


def test_measure_argument_errors(mlp3_small):
    with pytest.raises(DagcError, match="unknown metric 'hesian'.*hessian, hessian_ball"):
        M.measure(mlp3_small, "hesian", 0)
    for seed in (-1, 1.5, True):
        with pytest.raises(DagcError, match="seed"):
            M.measure(mlp3_small, "gradient", seed)
    with pytest.raises(DagcError, match="options"):
        M.measure(mlp3_small, "gradient", 0, {"inputs": 4})
    with pytest.raises(DagcError, match="net"):
        M.measure("mlp3", "gradient", 0)
    w = mlp3_small.init(0)
    with pytest.raises(DagcError, match="output"):
        M.hessian_norm(mlp3_small, w, np.ones(16), output=1)
    with pytest.raises(DagcError, match="x"):
        M.hessian_norm(mlp3_small, w, np.ones(15))
    with pytest.raises(DagcError, match="seed"):
        M.hessian_norm(mlp3_small, w, np.ones(16), seed=-1)
    with pytest.raises(DagcError, match="outputs"):
        mlp3_small.factored_hessian(w, np.ones((2, 16)), np.array([0, 1]))
    operator = mlp3_small.factored_hessian(w, np.ones((2, 16)))
    with pytest.raises(DagcError, match="C: expected shape"):
        operator.apply(np.ones((1, operator.size)))
