"""Tests of dagc.metrics.first_order: the gradient metric against the Jacobian, the
linearization errors against direct evaluation and their R^2 scaling, and non-finite
arguments."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import compiled

import dagc
from dagc import measure as M
from dagc.errors import DagcError


@pytest.fixture(scope="module")
def mlp3_small():
    return compiled("mlp3", 8)


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
    top = []
    for x, g in zip(X, J, strict=True):
        values, vectors = np.linalg.eigh(M.dense_hessian(net, w0, x))
        v = vectors[:, np.argmax(np.abs(values))]
        top.append(max(abs(net.forward(w0 + s * R * v, x[None])[0, 0]
                           - net.forward(w0, x[None])[0, 0] - s * R * g @ v) for s in (1, -1)))
        # Corollary 3.7's second-order error, attained up to O(R^3)
        assert top[-1] == pytest.approx(R**2 / 2 * np.abs(values).max(), rel=0.5)
    assert result["top_eigenvector"] == pytest.approx(np.mean(top), rel=1e-6)
    worst = np.maximum(np.maximum(np.max(errors, axis=0), along), top)
    assert result["value"] == pytest.approx(np.mean(worst), rel=1e-6)
    # Gradient descent's direction bends the function far more than a random one does, and
    # the top eigenvector more still.
    assert result["gradient_direction"] > 10 * result["random_mean"]
    assert result["top_eigenvector"] > result["gradient_direction"]


def test_linearization_error_scales_like_radius_squared(mlp3_small):
    values = [M.measure(mlp3_small, "linearization", 0, M.Options(radius=R))["value"]
              for R in (1e-2, 1e-3)]
    assert values[0] / values[1] == pytest.approx(100.0, rel=0.05)



def test_non_finite_arguments_raise(mlp3_small):
    net = mlp3_small
    w, X = net.init(0), M.sweep_inputs(net, 0, 2)
    w_bad, X_bad = w.copy(), X.copy()
    w_bad[0], X_bad[1, 2] = np.nan, np.inf
    for name, args in (("w", (w_bad, X)), ("X", (w, X_bad))):
        with pytest.raises(DagcError, match=f"^{name}: contains NaN or inf"):
            M.gradient_norms(net, *args)
        with pytest.raises(DagcError, match=f"^{name}: contains NaN or inf"):
            M.linearization_errors(net, *args, 1.0, 2, M.generator(0, "directions"))
        with pytest.raises(DagcError, match=f"^{name}: contains NaN or inf"):
            M.gradient_direction_errors(net, *args, 1.0)
    with pytest.raises(DagcError, match="^radius"):
        M.linearization_errors(net, w, X, float("nan"), 2, M.generator(0, "directions"))
