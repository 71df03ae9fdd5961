"""dagc.linalg.lanczos.lanczos_top_pair: the eigenvalue of largest magnitude with its sign and
eigenvector, against dense eigh; the warm start it returns; degenerate operators."""

from __future__ import annotations

import numpy as np
import pytest

from dagc.errors import DagcError
from dagc.linalg.lanczos import LanczosBasis, lanczos_top_pair


def _counted(A):
    calls = [0]

    def matvec(v):
        calls[0] += 1
        return A @ v
    return matvec, calls


@pytest.mark.parametrize("size", [1, 2, 5, 80])
def test_top_pair_is_dense_eighs_largest_magnitude_with_its_sign(size):
    rng = np.random.default_rng(size)
    A = rng.standard_normal((size, size))
    A = A + A.T
    values, vectors = np.linalg.eigh(A)
    top = np.argmax(np.abs(values))
    lam, v, _ = lanczos_top_pair(lambda x: A @ x, rng.standard_normal(size), 1e-10)
    assert lam == pytest.approx(values[top], rel=1e-9)
    assert abs(v @ vectors[:, top]) == pytest.approx(1.0, abs=1e-9)
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-12)


def test_the_other_end_of_a_near_pair_is_not_missed():
    # +/- pair: the negative end is larger by 1e-3; a start mostly on the positive one
    d = np.linspace(-1.001, 1.0, 400)
    start = np.full(400, 1e-3)
    start[-1] = 1.0
    lam, v, _ = lanczos_top_pair(lambda x: d * x, start, 1e-8)
    assert lam == pytest.approx(-1.001, rel=1e-8)
    assert abs(v[0]) == pytest.approx(1.0, abs=1e-6)


def test_the_warm_start_finds_a_nearby_operators_pair_in_fewer_steps():
    rng = np.random.default_rng(3)
    Q = np.linalg.qr(rng.standard_normal((300, 300)))[0]
    spectrum = np.concatenate([[1.0, -0.95], rng.uniform(-0.9, 0.9, 298)])
    A = (Q * spectrum) @ Q.T
    nearby = A + 1e-3 * (lambda B: B + B.T)(rng.standard_normal((300, 300))) / 300
    _, _, warm = lanczos_top_pair(lambda x: A @ x, rng.standard_normal(300), 1e-3)
    cold_matvec, cold = _counted(nearby)
    warm_matvec, warmed = _counted(nearby)
    cold_lam = lanczos_top_pair(cold_matvec, rng.standard_normal(300), 1e-6)[0]
    warm_lam = lanczos_top_pair(warm_matvec, warm, 1e-6, basis=LanczosBasis(300))[0]
    assert warm_lam == pytest.approx(cold_lam, rel=1e-6)
    assert warmed[0] < 0.6 * cold[0]


def test_zero_operator_and_zero_start():
    lam, v, _ = lanczos_top_pair(lambda x: 0 * x, np.ones(5), 1e-8)
    assert lam == 0.0 and np.linalg.norm(v) == pytest.approx(1.0)
    with pytest.raises(DagcError, match="start vector is 0"):
        lanczos_top_pair(lambda x: x, np.zeros(5), 1e-8)


def test_a_non_finite_product_raises():
    with pytest.raises(DagcError, match="not finite"):
        lanczos_top_pair(lambda x: x * np.nan, np.ones(5), 1e-8)
