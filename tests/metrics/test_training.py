"""Tests of dagc.metrics.training: the NTK matrix of several outputs, ntk_change's trend with
width, one step of `train` against gradient descent by hand, and non-finite arguments."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import compiled

import dagc
from dagc import measure as M
from dagc.errors import DagcError


@pytest.fixture(scope="module")
def tiny():
    """The catalog's tiny: f(x) = s2 * sum_j v_j tanh(s1 * W_j . x), s1 = 1/sqrt(3),
    s2 = 1/sqrt(4)."""
    return compiled("tiny", 4, jit=False)


@pytest.fixture(scope="module")
def two_outputs():
    """Two outputs, a bias and a sparse connection (the catalog's tiny_sparse)."""
    return compiled("tiny_sparse", 5, jit=False)


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
    # Transition to linearity: the relative NTK change decays (like 1/width, see
    # docs/metrics.md), while the weights move by O(1) at every width.
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



def test_train_raises_on_non_finite_arguments(tiny):
    # NaN targets used to reach LAPACK (LinAlgError) or train on silently.
    X, Y = M.regression_set(tiny, 0, 6)
    w0 = tiny.init(0)
    for name, index in (("w0", 0), ("X", 1), ("Y", 2), ("K0", 3)):
        args = [w0.copy(), X.copy(), Y.copy(), M.ntk_matrix(tiny, w0, X)]
        args[index].reshape(-1)[1] = np.nan
        with pytest.raises(DagcError, match=f"^{name}: contains NaN or inf"):
            M.train(tiny, *args[:3], loss_drop=10.0, max_steps=5, K0=args[3])
