"""Tests of dagc.linalg.spectrum on explicit symmetric matrices: top eigenpairs with signs,
Hutchinson's trace and its stated error, Lanczos quadrature's exact moments, the smoothed
density's mass."""

from __future__ import annotations

import numpy as np
import pytest

from dagc.errors import DagcError
from dagc.linalg import spectrum


def _symmetric(size: int, seed: int = 0) -> np.ndarray:
    A = np.random.default_rng(seed).standard_normal((size, size))
    return (A + A.T) / 2


@pytest.mark.parametrize("size", [4, 60])  # dense below 3k + 2, ARPACK above
def test_top_eigenpairs_are_the_largest_magnitudes_with_signs(size):
    A = _symmetric(size)
    exact = np.linalg.eigvalsh(A)
    exact = exact[np.argsort(-np.abs(exact))]
    values, vectors = spectrum.top_eigenpairs(lambda v: A @ v, size, 3 if size > 4 else 1,
                                              np.ones(size), 1e-12)
    assert np.allclose(values, exact[:len(values)], rtol=1e-10)
    assert np.allclose(A @ vectors, vectors * values, atol=1e-8)
    assert np.allclose(np.linalg.norm(vectors, axis=0), 1.0)


def test_top_eigenpairs_rejects_a_bad_k():
    with pytest.raises(DagcError, match="k: expected"):
        spectrum.top_eigenpairs(lambda v: v, 5, 0, np.ones(5), 1e-8)


def test_hutchinson_trace_is_within_its_stated_error():
    A = _symmetric(200, seed=1) + 0.5 * np.eye(200)
    misses = 0
    for seed in range(20):
        estimate, error = spectrum.hutchinson_trace(lambda v: A @ v, 200, 30,
                                                    np.random.default_rng(seed))
        assert error > 0
        misses += abs(estimate - np.trace(A)) > 3 * error
    assert misses <= 2  # 3 standard errors: about 0.3% of runs miss, for a normal mean


def test_hutchinson_trace_of_a_diagonal_is_exact():
    # Rademacher probes: z^T D z = tr(D) for every probe, so the spread is 0.
    d = np.arange(1.0, 11.0)
    estimate, error = spectrum.hutchinson_trace(lambda v: d * v, 10, 5,
                                                np.random.default_rng(0))
    assert estimate == pytest.approx(d.sum(), rel=1e-14) and error == pytest.approx(0, abs=1e-12)


def test_lanczos_quadrature_reproduces_the_moments_of_its_start():
    A = _symmetric(80, seed=2)
    q = np.random.default_rng(3).standard_normal(80)
    steps = 6
    nodes, weights = spectrum.quadrature(*spectrum.lanczos_tridiagonal(lambda v: A @ v, q,
                                                                       steps))
    unit = q / np.linalg.norm(q)
    assert weights.sum() == pytest.approx(1.0, rel=1e-13)
    for power in range(2 * steps):  # exact for degrees below 2 steps
        exact = unit @ np.linalg.matrix_power(A, power) @ unit
        assert weights @ nodes**power == pytest.approx(exact, rel=1e-9, abs=1e-9), power


def test_full_lanczos_gives_the_whole_spectrum():
    A = _symmetric(12, seed=4)
    nodes, _ = spectrum.quadrature(*spectrum.lanczos_tridiagonal(lambda v: A @ v,
                                                                 np.ones(12), 12))
    assert np.allclose(np.sort(nodes), np.linalg.eigvalsh(A), atol=1e-10)


def test_lanczos_stops_on_an_invariant_subspace():
    A = np.diag([1.0, 2.0, 3.0, 0.0, 0.0])
    alpha, beta = spectrum.lanczos_tridiagonal(lambda v: A @ v, np.array([1.0, 1, 0, 0, 0]), 5)
    assert len(alpha) == 2 and len(beta) == 1
    nodes, weights = spectrum.quadrature(alpha, beta)
    assert np.allclose(np.sort(nodes), [1.0, 2.0]) and np.allclose(weights, [0.5, 0.5])


def test_smoothed_density_integrates_to_the_weights():
    nodes, weights = np.array([-1.0, 0.5, 2.0]), np.array([0.2, 0.3, 0.5])
    grid = np.linspace(-6, 7, 20001)
    density = spectrum.smoothed_density(nodes, weights, grid, 0.3)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, rel=1e-8)
    with pytest.raises(DagcError, match="width"):
        spectrum.smoothed_density(nodes, weights, grid, 0.0)
