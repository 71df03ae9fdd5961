"""Tests of dagc.linalg.lanczos on plain operators: the batched Lanczos norms against dense
eigenvalues (a +/- pair, a weighted inner product, the zero and low-rank operators), ARPACK's
norm, and a non-finite operator, which must raise rather than give a number."""

from __future__ import annotations

import numpy as np
import pytest

from dagc.errors import DagcError
from dagc.linalg.lanczos import arpack_norm, lanczos_norms


class _Diagonal:
    """Rows of diagonal operators, self-adjoint in the inner product x . (weights * y)."""

    def __init__(self, diagonals, weights):
        self.diagonals, self.weights = diagonals, weights

    def apply(self, C):
        return self.diagonals * C, self.weights * C

    def select(self, keep):
        return _Diagonal(self.diagonals[keep], self.weights[keep])


class _Symmetric:
    """Plain symmetric matrices, one per row, whose Gram matrix is the identity: apply returns
    its input itself as G C, which Lanczos must not overwrite while it still reads it."""

    def __init__(self, matrices):
        self.matrices = matrices

    def apply(self, C):
        return np.einsum("rij,rj->ri", self.matrices, C), C

    def select(self, keep):
        return _Symmetric(self.matrices[keep])


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
    norms = lanczos_norms(_Diagonal(diagonals, weights), start, 1e-8)
    np.testing.assert_allclose(norms, [1.0, 3.0, 0.0], rtol=1e-8)


def test_lanczos_on_an_operator_that_returns_its_input_as_the_gram_product():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((3, 60, 60))
    A = A + A.transpose(0, 2, 1)
    u, t = rng.standard_normal((2, 60))
    A[1] = np.outer(u, u) - 0.5 * np.outer(t, t)  # rank 2: done within 3 steps, the batch shrinks
    start = np.tile(rng.standard_normal(60), (3, 1))
    norms = lanczos_norms(_Symmetric(A), start, 1e-10)
    np.testing.assert_allclose(norms, np.abs(np.linalg.eigvalsh(A)).max(axis=1), rtol=1e-9)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_lanczos_raises_on_a_non_finite_operator(bad):
    # A NaN start length used to drop the row as if it were the zero operator: norm 0.0.
    rng = np.random.default_rng(2)
    A = rng.standard_normal((2, 30, 30))
    A = A + A.transpose(0, 2, 1)
    A[1, 3, 3] = bad
    start = np.tile(rng.standard_normal(30), (2, 1))
    with pytest.raises(DagcError, match="not finite"):
        lanczos_norms(_Symmetric(A), start, 1e-8)
    weights = np.ones((2, 30))
    weights[0, 5] = bad  # a non-finite Gram matrix too
    with pytest.raises(DagcError, match="not finite"):
        lanczos_norms(_Diagonal(np.ones((2, 30)), weights), start, 1e-8)


def test_arpack_norm_matches_the_dense_norm():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((80, 80))
    A = A + A.T
    norm = arpack_norm(lambda v: A @ v, 80, rng.standard_normal(80), 1e-10)
    assert norm == pytest.approx(np.abs(np.linalg.eigvalsh(A)).max(), rel=1e-9)
