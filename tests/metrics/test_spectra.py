"""Tests of dagc.metrics.spectra: top-k eigenvalues, traces and spectral densities of small
Hessians against dense eigendecompositions, restricted to one block or connection; the loss
Hessian and its two parts against a dense computation and PyTorch's Hessian of the loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import compiled
from reference import Reference

from dagc import measure as M
from dagc.errors import DagcError


@pytest.fixture(scope="module")
def small():
    """mlp3 at width 3: 69 parameters, dense Hessians are cheap."""
    return compiled("mlp3", 3)


def _dense(net, w, x, indices=None):
    H = M.dense_hessian(net, w, x)
    H = (H + H.T) / 2
    return H if indices is None else H[np.ix_(indices, indices)]


def _by_magnitude(values):
    return values[np.argsort(-np.abs(values))]


@pytest.mark.parametrize("restriction", [{}, {"block": "h2"}, {"connection": ("h1", "h2")}])
def test_hessian_eigs_match_dense_eigh(small, restriction):
    w, x = small.init(1), M.sweep_inputs(small, 1, 1)[0]
    H = _dense(small, w, x, M.parameter_indices(small, **restriction))
    exact = _by_magnitude(np.linalg.eigvalsh(H))
    values = M.hessian_eigs(small, w, x, 4, tol=1e-12, **restriction)
    assert np.allclose(values, exact[:4], rtol=1e-9, atol=1e-12)


def test_parameter_indices(small):
    pieces = {(src, dst): (offset, int(np.prod(shape)))
              for src, dst, _, offset, shape in small.layout}
    offset, size = pieces[("h1", "h2")]
    assert np.array_equal(M.parameter_indices(small, connection=("h1", "h2")),
                          np.arange(offset, offset + size))
    block = M.parameter_indices(small, block="h2")
    assert len(block) == sum(s for (_, dst), (_, s) in pieces.items() if dst == "h2")
    assert M.parameter_indices(small) is None
    with pytest.raises(DagcError, match="block: 'nope'"):
        M.parameter_indices(small, block="nope")
    with pytest.raises(DagcError, match="connection: no connection"):
        M.parameter_indices(small, connection=("h2", "h1"))
    with pytest.raises(DagcError, match="at most one"):
        M.parameter_indices(small, block="h2", connection=("h1", "h2"))


@pytest.mark.parametrize("restriction", [{}, {"block": "h3"}])
def test_hessian_trace_within_its_stated_error(small, restriction):
    w, x = small.init(2), M.sweep_inputs(small, 2, 1)[0]
    exact = np.trace(_dense(small, w, x, M.parameter_indices(small, **restriction)))
    estimate, error = M.hessian_trace(small, w, x, samples=400, **restriction)
    assert 0 < error < 0.5 * np.abs(np.linalg.eigvalsh(_dense(small, w, x))).sum()
    assert abs(estimate - exact) < 4 * error


def test_hessian_density_of_a_full_run_is_the_spectrum(small):
    # Lanczos with as many steps as parameters recovers every eigenvalue that the start
    # vector sees, each with weight (q . u)^2: the mean over probes of the spectral measure.
    w, x = small.init(3), M.sweep_inputs(small, 3, 1)[0]
    exact = np.linalg.eigvalsh(_dense(small, w, x))
    nodes, weights = M.hessian_density(small, w, x, probes=3, steps=small.n_params)
    assert weights.sum() == pytest.approx(1.0, rel=1e-12)
    assert np.all(weights >= 0)
    heavy = nodes[weights > 1e-8]
    assert np.all(np.min(np.abs(heavy[:, None] - exact[None, :]), axis=1) < 1e-8)
    # both ends of the spectrum carry weight
    assert heavy.max() == pytest.approx(exact.max(), abs=1e-8)
    assert heavy.min() == pytest.approx(exact.min(), abs=1e-8)


def test_hessian_density_moments_estimate_normalized_traces(small):
    w, x = small.init(4), M.sweep_inputs(small, 4, 1)[0]
    H = _dense(small, w, x)
    nodes, weights = M.hessian_density(small, w, x, probes=200, steps=8)
    second = weights @ nodes**2
    assert second == pytest.approx(np.trace(H @ H) / small.n_params, rel=0.2)


def test_hessian_density_of_a_connection(small):
    w, x = small.init(3), M.sweep_inputs(small, 3, 1)[0]
    indices = M.parameter_indices(small, connection=("h2", "h3"))
    exact = np.linalg.eigvalsh(_dense(small, w, x, indices))
    nodes, weights = M.hessian_density(small, w, x, probes=2, steps=len(indices),
                                       connection=("h2", "h3"))
    heavy = nodes[weights > 1e-8]
    assert np.all(np.min(np.abs(heavy[:, None] - exact[None, :]), axis=1) < 1e-8)


# ------------------------------------------------------------------------------------------
# the loss Hessian


def _torch_loss_hessian(net, w, X, Y):
    ref = Reference(net)
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)

    def loss(u):
        return ((ref._forward(u, Xt) - Yt) ** 2).sum() / (2 * len(X))

    return torch.func.hessian(loss)(torch.from_numpy(w)).numpy()


def test_loss_hessian_against_pytorch_and_its_parts_against_dense(small):
    w = small.init(5)
    X, Y = M.regression_set(small, 5, 6)
    exact = _torch_loss_hessian(small, w, X, Y)
    J = small.jacobian(w, X)[:, 0]
    gauss_newton = J.T @ J / len(X)
    residuals = small.forward(w, X)[:, 0] - Y[:, 0]
    residual = sum(r * _dense(small, w, x) for r, x in zip(residuals, X, strict=True)) / len(X)
    assert np.allclose(gauss_newton + residual, exact, rtol=1e-9, atol=1e-12)
    norms = M.loss_hessian_norms(small, w, X, Y, tol=1e-12)

    def norm(A):
        return float(np.abs(np.linalg.eigvalsh(A)).max())

    assert norms["full"] == pytest.approx(norm(exact), rel=1e-9)
    assert norms["gauss_newton"] == pytest.approx(norm(gauss_newton), rel=1e-9)
    assert norms["residual"] == pytest.approx(norm(residual), rel=1e-9)


def test_loss_hessian_metric(small):
    result = M.measure(small, "loss_hessian", 1, M.Options(train_size=5))
    X, Y = M.regression_set(small, 1, 5)
    expected = M.loss_hessian_norms(small, small.init(1), X, Y, tol=1e-6, seed=1)
    assert result["value"] == result["full"] == pytest.approx(expected["full"], rel=1e-5)
    # the parts bound the whole: ||A + B|| <= ||A|| + ||B||
    assert result["full"] <= result["gauss_newton"] + result["residual"] + 1e-9
    assert all(math.isfinite(v) and v > 0 for v in result.values())
