"""Largest |eigenvalue| of symmetric operators: batched Lanczos on many operators in lockstep,
scipy's ARPACK on one operator as an independent cross-check, and Lanczos on one operator
that also returns the eigenvector (`lanczos_top_pair`, for a projected ascent's many
warm-started solves).

Why Lanczos and never power iteration: the spectrum of a network's Hessian comes in near +/-
pairs, where power iteration stalls (its rate is |lambda_2 / lambda_1| ~ 1) while Lanczos
converges to both ends of the spectrum at once (docs/design.md, "The factored Hessian").

Both functions know nothing about networks: they see an operator (``apply``/``select`` for
Lanczos, a matvec for ARPACK). `dagc.metrics.curvature` builds the operators from a
`CompiledNet`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Protocol

import numpy as np
from numba import njit
from scipy.linalg import eigh_tridiagonal
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from ..errors import DagcError
from .ritz import extreme_ritz_rows

__all__ = ["BatchedOperator", "lanczos_norms", "lanczos_top_pair", "LanczosBasis", "arpack_norm",
           "MAX_STEPS"]

# Lanczos steps before giving up; 35-60 suffice for tol=1e-6 on the bundled networks.
MAX_STEPS = 1000

# ARPACK's Lanczos basis size. Each restart re-orthogonalizes against the whole basis, which
# reads ncv * P floats per step: at large P that costs as much as an HVP. 20 (scipy's default
# for k=1) converges the extreme pair of a +/- spectrum in one or two restarts.
_NCV = 20

# ARPACK restarts before giving up (scipy's default, 10 P, is unbounded in practice).
_MAX_RESTARTS = 1000


class BatchedOperator(Protocol):
    """What `lanczos_norms` needs: one self-adjoint operator per row of a batch."""

    def apply(self, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H C, G C) for a batch C (rows, r): the operator and the Gram matrix of the inner
        product <x, y> = x . G y in which H is self-adjoint (G = I for a plain symmetric
        matrix; G C may then be C itself)."""

    def select(self, keep: np.ndarray) -> BatchedOperator:
        """The operator of the rows ``keep`` (a boolean mask)."""


def lanczos_norms(operator: BatchedOperator, C0: np.ndarray, tol: float,
                  max_steps: int = MAX_STEPS) -> np.ndarray:
    """Largest |eigenvalue| of each row's operator, by Lanczos on all rows in lockstep.

    C0 (rows, r) holds the start vectors. Converged rows leave the batch. A row stops when
    the Ritz values at *both* ends of its spectrum have residual bounds below ``tol`` times
    its largest |Ritz value| (so neither end of a +/- pair can still overtake the other).

    No re-orthogonalization: the loss of orthogonality only sets in as a Ritz value converges
    (Paige), and the loop stops there; the extreme Ritz values are monotone in the step count
    regardless. The vectors are kept unnormalized (H and G are linear), so that the norm
    |r|_G^2 = r . G r of a new vector comes from the same operator call as its H r.

    Raises `DagcError` when a product of the operator is not finite: a norm is never computed
    from non-finite numbers.
    """
    return _lanczos(operator, C0, tol, max_steps)[0]


def lanczos_top_pair(matvec: Callable[[np.ndarray], np.ndarray], v0: np.ndarray, tol: float,
                     max_steps: int = MAX_STEPS, basis: LanczosBasis | None = None
                     ) -> tuple[float, np.ndarray, np.ndarray]:
    """(lambda, v, warm): the eigenvalue of largest magnitude, with its sign, of the symmetric
    operator ``matvec`` on R^n, its unit eigenvector, and v + u with u the unit Ritz vector of
    the spectrum's other end: the start for a nearby operator, whose Krylov space then holds
    both ends after two steps (a start near v alone still needs tens of steps to find the
    other end, which the stopping rule waits for), by Lanczos from ``v0``.

    `lanczos_norms` on this one operator (its recurrence and stopping rule: both ends
    converged to ``tol``, so the other end of a +/- pair cannot still overtake), keeping the
    Lanczos vectors (steps x n floats) for the Ritz vector. Where ARPACK builds and
    re-orthogonalizes a 20-vector basis and post-processes it per call whatever its start,
    this costs one operator call and one fused pass over a few vectors per step, and a start
    near the answer (the eigenvector of a nearby operator) stops it in a few steps. Pass the
    same ``basis`` to repeated calls to reuse its memory.
    """
    basis = LanczosBasis(len(v0)) if basis is None else basis
    basis.clear()
    _, alphas, betas = _lanczos(_OneOperator(matvec), v0[None, :], tol,
                                min(max_steps, len(v0)),  # n steps span R^n: exact
                                on_vectors=lambda q: basis.append(q[0]))
    k = basis.count
    if k == 0:
        raise DagcError("lanczos_top_pair: the start vector is 0")
    values, S = eigh_tridiagonal(alphas[0, :k], betas[0, :k - 1])  # k x k: tens of rows
    end = 0 if abs(values[0]) > abs(values[-1]) else k - 1
    v, u = (S[:, [end, k - 1 - end]].T @ basis.vectors[:k])
    v /= np.linalg.norm(v)
    return float(values[end]), v, v + u / np.linalg.norm(u)


class LanczosBasis:
    """The Lanczos vectors of a run of `lanczos_top_pair`, in rows of a block that grows and
    is reused by later runs: memory touched for the first time costs a page fault per 4 KiB,
    more than the copy of the vector itself, at every step of every run otherwise."""

    def __init__(self, n: int):
        self.vectors = np.empty((0, n))
        self.count = 0

    def clear(self) -> None:
        self.count = 0

    def append(self, q: np.ndarray) -> None:
        if self.count == len(self.vectors):
            grown = np.empty((max(16, 2 * self.count), self.vectors.shape[1]))
            grown[:self.count] = self.vectors[:self.count]
            self.vectors = grown
        self.vectors[self.count] = q
        self.count += 1


class _OneOperator:
    """A symmetric ``matvec`` on R^n as a one-row `BatchedOperator` (G = I)."""

    def __init__(self, matvec: Callable[[np.ndarray], np.ndarray]):
        self.matvec = matvec

    def apply(self, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.matvec(C[0])[None, :], C

    def select(self, keep: np.ndarray) -> _OneOperator:
        return self


def _lanczos(operator: BatchedOperator, C0: np.ndarray, tol: float, max_steps: int,
             on_vectors: Callable[[np.ndarray], None] | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`lanczos_norms`, also returning each row's tridiagonal (alphas, betas: (rows,
    max_steps), filled as far as the row ran); ``on_vectors(Q)`` sees the unit Lanczos
    vectors Q (active rows, r) of every step."""
    norms = np.zeros(len(C0))
    active = np.arange(len(C0))  # the original rows still in the batch
    alphas = np.zeros((len(C0), max_steps))  # row i's tridiagonal, filled in lockstep
    betas = np.zeros((len(C0), max_steps))
    v = np.array(C0, dtype=np.float64)
    Hv, Gv = operator.apply(v)
    c = _row_lengths(v, Gv)
    # Checked before `c > 0` below, which would drop a NaN row as if its start had length 0.
    _check_finite(c, Hv)
    q_prev = np.zeros_like(v)
    spare = np.empty_like(v)  # three vectors rotate: no allocation per step
    beta = np.zeros(len(v))
    keep = c > 0.0  # a start of length 0 (U C0 = 0): nothing to measure, the norm is 0
    for step in range(max_steps):
        if not keep.all():
            active, operator = active[keep], operator.select(keep)
            v, Hv, Gv, c, q_prev, spare, beta = (
                x[keep] for x in (v, Hv, Gv, c, q_prev, spare, beta))
        if not len(active):
            return norms, alphas, betas
        # v stays intact: the operator may return it as G v (G = I)
        alpha = _three_term(v, Hv, Gv, c, q_prev, beta, q=spare)
        q, r, spare = spare, q_prev, v
        if on_vectors is not None:
            on_vectors(q)
        Hr, Gr = operator.apply(r)
        beta = _row_lengths(r, Gr)
        _check_finite(alpha, beta)
        alphas[active, step] = alpha
        low, s_low, high, s_high = extreme_ritz_rows(alphas, betas, active, step + 1)
        norms[active] = np.maximum(np.abs(low), np.abs(high))
        # |beta_k s_k| bounds the distance of a Ritz value to the spectrum (exactly in exact
        # arithmetic, up to O(eps |H|) in floating point, Paige 1980). A vanishing beta
        # (invariant Krylov subspace: a tiny or low-rank Hessian) passes the same test.
        keep = beta * np.maximum(s_low, s_high) > tol * norms[active]
        betas[active, step] = beta
        q_prev, v, Hv, Gv, c = q, r, Hr, Gr, beta
    if keep.any():
        warnings.warn(f"hessian_norm: Lanczos did not reach tol={tol:g} in {max_steps} steps; "
                      "using the largest Ritz value", RuntimeWarning, stacklevel=4)
    return norms, alphas, betas


def _check_finite(*arrays: np.ndarray) -> None:
    if not all(np.isfinite(a).all() for a in arrays):
        raise DagcError("hessian_norm: the Hessian-vector product is not finite")


def arpack_norm(matvec: Callable[[np.ndarray], np.ndarray], size: int, v0: np.ndarray,
                tol: float) -> float:
    """Largest |eigenvalue| of the symmetric operator ``matvec`` on R^size, by scipy's
    ``eigsh`` (implicitly restarted Lanczos, ``which="LM"``) from the start vector ``v0``.

    Raises `DagcError` when ARPACK finds no Ritz value at all or when it reports an error
    (a non-finite product reaches LAPACK and fails there; the caller checks its inputs first
    so that the message can name the argument).
    """
    operator = LinearOperator((size, size), matvec=matvec, dtype=np.float64)
    try:
        eigenvalues = eigsh(operator, k=1, which="LM", v0=v0, ncv=min(size, _NCV), tol=tol,
                            maxiter=_MAX_RESTARTS, return_eigenvectors=False)
    except ArpackNoConvergence as error:
        if len(error.eigenvalues) == 0:
            raise DagcError(f"hessian_norm: ARPACK did not converge ({error})") from error
        warnings.warn(f"hessian_norm: ARPACK did not reach tol={tol:g}; using the best "
                      "Ritz value", RuntimeWarning, stacklevel=3)
        eigenvalues = error.eigenvalues
    norm = float(np.max(np.abs(eigenvalues)))
    if not np.isfinite(norm):
        raise DagcError("hessian_norm: the Hessian-vector product is not finite")
    return norm


@njit(cache=True, error_model="numpy")
def _three_term(v, Hv, Gv, c, q_prev, beta, q):  # pragma: no cover (compiled)
    """One Lanczos recurrence for every row: q = v / c, and in place of q_prev
    r = H q - beta q_prev - alpha q with alpha = <q, H q - beta q_prev>. Paige's ordering:
    beta q_prev comes off before alpha is formed. Returns alpha."""
    alpha = np.empty(v.shape[0])
    for i in range(v.shape[0]):
        for j in range(v.shape[1]):
            q[i, j] = v[i, j] / c[i]
            q_prev[i, j] = Hv[i, j] / c[i] - beta[i] * q_prev[i, j]
        alpha[i] = _dot(Gv[i], q_prev[i], c[i])
        for j in range(v.shape[1]):
            q_prev[i, j] -= alpha[i] * q[i, j]
    return alpha


@njit(cache=True, error_model="numpy")
def _row_lengths(v, Gv):  # pragma: no cover (compiled)
    """|v_i|_G = sqrt(v_i . (G v)_i) for every row (0 where rounding makes it negative; NaN
    stays NaN, for the caller's finiteness check)."""
    out = np.empty(v.shape[0])
    for i in range(v.shape[0]):
        out[i] = np.sqrt(max(_dot(v[i], Gv[i], 1.0), 0.0))
    return out


@njit(cache=True, error_model="numpy")
def _dot(a, b, divisor):  # pragma: no cover (compiled)
    """(a / divisor) . b in a fixed summation order (four interleaved partial sums: fast
    without fastmath, and the same bits in every process, unlike a vectorized reduction
    whose order can depend on memory alignment)."""
    n = len(a)
    tail = n - n % 4
    s0 = s1 = s2 = s3 = 0.0
    for j in range(0, tail, 4):
        s0 += a[j] / divisor * b[j]
        s1 += a[j + 1] / divisor * b[j + 1]
        s2 += a[j + 2] / divisor * b[j + 2]
        s3 += a[j + 3] / divisor * b[j + 3]
    for j in range(tail, n):
        s0 += a[j] / divisor * b[j]
    return (s0 + s1) + (s2 + s3)
