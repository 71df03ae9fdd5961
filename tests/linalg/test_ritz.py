"""Tests of dagc.ritz: the compiled extreme Ritz values against LAPACK's dense tridiagonal
eigensolver, on random tridiagonals and on ones a Lanczos run produces."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import eigh_tridiagonal

from dagc.linalg import ritz

EPS = np.finfo(np.float64).eps


def _tridiagonals():
    rng = np.random.default_rng(0)
    for k in (1, 2, 3, 7, 40, 150):
        d, e = rng.standard_normal(k), rng.standard_normal(k - 1)
        yield f"random-{k}", d, e
        yield f"pairs-{k}", 0 * d, e  # zero diagonal: a +/- symmetric spectrum
        yield f"scaled-{k}", 1e6 * d, 1e6 * e
        yield f"decoupled-{k}", d, np.where(np.arange(k - 1) % 3 == 0, 0.0, e)
    yield from _lanczos_tridiagonals(rng)


def _lanczos_tridiagonals(rng):
    """Prefixes of the tridiagonal of a Lanczos run on a diagonal matrix with an isolated
    +/- pair above a bulk, up to (not beyond) the convergence of the pair."""
    spectrum = np.concatenate([rng.uniform(-1, 1, 3000), [3.0, -2.9]])
    v, v_prev, beta = rng.standard_normal(len(spectrum)), 0.0, 0.0
    v /= np.linalg.norm(v)
    alphas, betas = [], []
    for _ in range(30):
        r = spectrum * v - beta * v_prev
        alpha = r @ v
        r -= alpha * v
        beta = np.linalg.norm(r)
        alphas.append(alpha)
        betas.append(beta)
        v_prev, v = v, r / beta
    for k in (5, 15, 30):
        yield f"lanczos-{k}", np.array(alphas[:k]), np.array(betas[:k - 1])


CASES = list(_tridiagonals())


@pytest.mark.parametrize("name,d,e", CASES, ids=[c[0] for c in CASES])
def test_extreme_ritz_rows_match_a_dense_eigendecomposition(name, d, e):
    k = len(d)
    # Two rows of a batch, the row asked for second, with a padded off-diagonal as Lanczos
    # keeps it: nothing beyond column k - 1 of E may be read.
    D = np.stack([np.full(k + 2, np.nan), np.append(d, [np.nan, np.nan])])
    E = np.stack([np.full(k + 2, np.nan), np.append(e, [np.nan] * 3)])
    low, s_low, high, s_high = ritz.extreme_ritz_rows(D, E, np.array([1]), k)
    theta, Z = eigh_tridiagonal(d, e)
    scale = max(np.abs(theta).max(), 1e-300)
    assert abs(low[0] - theta[0]) <= 8 * EPS * scale
    assert abs(high[0] - theta[-1]) <= 8 * EPS * scale
    # An eigenvector is defined by its eigenvalue only where that eigenvalue is simple. A
    # small s loses digits (that of a nearly converged end: it only has to stay small); the
    # larger one, which decides Lanczos's stop, must be accurate.
    gaps = np.diff(theta) / scale
    simple_low, simple_high = k == 1 or gaps[0] > 1e-6, k == 1 or gaps[-1] > 1e-6
    if simple_low:
        assert s_low[0] == pytest.approx(abs(Z[-1, 0]), abs=1e-7)
    if simple_high:
        assert s_high[0] == pytest.approx(abs(Z[-1, -1]), abs=1e-7)
    if simple_low and simple_high:
        expected = max(abs(Z[-1, 0]), abs(Z[-1, -1]))
        assert max(s_low[0], s_high[0]) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_a_decoupled_leading_block_has_a_zero_last_component():
    # The largest eigenvalue (5) belongs to the first block, which does not reach the last
    # row: its eigenvector's last component is 0, although the pivots at 5 are all finite.
    d, e = np.array([5.0, 1.0, 2.0]), np.array([0.0, 0.5])
    _, _, high, s_high = ritz.extreme_ritz_rows(d[None], e[None], np.array([0]), 3)
    assert high[0] == 5.0
    assert s_high[0] == 0.0


def test_converged_rows_get_lapacks_values():
    # Below s = 1e-5 the pivots' s loses digits; such a row must come from LAPACK exactly.
    *_, (name, d, e) = _lanczos_tridiagonals(np.random.default_rng(0))
    expected = ritz.extreme_ritz(d, e)
    assert max(expected[1], expected[3]) < 1e-5
    got = ritz.extreme_ritz_rows(d[None], e[None], np.array([0]), len(d))
    assert [float(x[0]) for x in got] == [float(x) for x in expected]


def test_the_zero_matrix():
    zeros = np.zeros((1, 4))
    low, s_low, high, s_high = ritz.extreme_ritz_rows(zeros, zeros, np.array([0]), 4)
    assert (low[0], high[0]) == (0.0, 0.0)
    assert max(s_low[0], s_high[0]) <= 1.0
