"""Spectra of symmetric operators given only as matrix-vector products: the top eigenpairs
(ARPACK), a trace estimate (Hutchinson) and the Lanczos tridiagonals of stochastic Lanczos
quadrature (the spectral density).

Like `dagc.linalg.lanczos`, nothing here knows about networks: every function sees a
``matvec`` on R^size. `dagc.metrics.spectra` builds the operators (a network's Hessian, one
block's or one connection's part of it, the loss Hessian) from a `CompiledNet`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy.linalg import eigh_tridiagonal
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from ..errors import DagcError

__all__ = ["Matvec", "top_eigenpairs", "hutchinson_trace", "lanczos_tridiagonal",
           "quadrature", "smoothed_density"]

Matvec = Callable[[np.ndarray], np.ndarray]

# ARPACK restarts before giving up (as in dagc.linalg.lanczos.arpack_norm).
_MAX_RESTARTS = 1000


def top_eigenpairs(matvec: Matvec, size: int, k: int, v0: np.ndarray, tol: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` eigenvalues of largest magnitude, with their signs, and their unit
    eigenvectors: (values (k,), vectors (size, k)), ordered by decreasing |value|.

    ARPACK (``eigsh``, ``which="LM"``) from the start vector ``v0``; below 3 k + 2 dimensions
    the operator is formed densely (ARPACK needs k < ncv < size). For k = 1 repeated on
    nearby operators (a projected ascent), `dagc.linalg.lanczos.lanczos_top_pair` is far
    cheaper.
    """
    if not 1 <= k <= size:
        raise DagcError(f"k: expected an integer in [1, {size}], got {k!r}")
    if size <= 3 * k + 2:
        dense = np.column_stack([matvec(column) for column in np.eye(size)])
        values, vectors = np.linalg.eigh((dense + dense.T) / 2)
    elif not np.any(matvec(v0)):
        # H v0 = 0 (a model linear in w): ARPACK refuses a Krylov space that ends at once.
        # For a random v0 the operator is then 0 with probability one.
        values = np.zeros(k)
        vectors = np.linalg.qr(np.column_stack([v0, np.eye(size, k - 1)]))[0]
    else:
        operator = LinearOperator((size, size), matvec=matvec, dtype=np.float64)
        ncv = min(size - 1, max(2 * k + 1, 20))
        try:
            values, vectors = eigsh(operator, k=k, which="LM", v0=v0, ncv=ncv, tol=tol,
                                    maxiter=_MAX_RESTARTS)
        except ArpackNoConvergence as error:
            if len(error.eigenvalues) < k:
                raise DagcError(f"top_eigenpairs: ARPACK did not converge ({error})") from error
            warnings.warn(f"top_eigenpairs: ARPACK did not reach tol={tol:g}; using the best "
                          "Ritz pairs", RuntimeWarning, stacklevel=2)
            values, vectors = error.eigenvalues, error.eigenvectors
    if not np.all(np.isfinite(values)):
        raise DagcError("top_eigenpairs: the operator's products are not finite")
    order = np.argsort(-np.abs(values), kind="stable")[:k]
    return values[order], vectors[:, order]


def hutchinson_trace(matvec: Matvec, size: int, samples: int, rng: np.random.Generator
                     ) -> tuple[float, float]:
    """(estimate, standard error) of tr(A) from ``samples`` Rademacher probes z:
    the mean of z^T A z, and its sample standard deviation over sqrt(samples).

    Unbiased; the variance of one probe is 2 (|A|_F^2 - sum_i A_ii^2), so the error falls
    like samples^-1/2. The standard error is the stated error: the estimate lies within two
    of them of tr(A) with probability about 0.95 once samples is a few tens (0 for a single
    probe: no spread to measure).
    """
    if samples < 1:
        raise DagcError(f"samples: expected an integer >= 1, got {samples!r}")
    values = np.empty(samples)
    for s in range(samples):
        z = rng.choice(np.array([-1.0, 1.0]), size=size)
        values[s] = z @ matvec(z)
    spread = values.std(ddof=1) / np.sqrt(samples) if samples > 1 else 0.0
    return float(values.mean()), float(spread)


def lanczos_tridiagonal(matvec: Matvec, v0: np.ndarray, steps: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(alpha (k,), beta (k - 1,)): the tridiagonal of ``steps`` Lanczos steps from ``v0``,
    k <= steps (fewer when the Krylov space becomes invariant).

    Full re-orthogonalization against every earlier vector (twice, classical Gram-Schmidt):
    the quadrature weights of a density need the basis orthogonal, unlike a norm's extreme
    Ritz values (see `dagc.linalg.lanczos`). It keeps ``steps`` vectors of ``size`` floats.
    """
    Q = np.zeros((steps, len(v0)))
    alpha, beta = np.zeros(steps), np.zeros(max(steps - 1, 0))
    q = v0 / np.linalg.norm(v0)
    for j in range(steps):
        Q[j] = q
        r = matvec(q)
        alpha[j] = q @ r
        for _ in range(2):
            r -= Q[:j + 1].T @ (Q[:j + 1] @ r)
        if j == steps - 1:
            break
        norm = np.linalg.norm(r)
        if not np.isfinite(norm):
            raise DagcError("lanczos_tridiagonal: the operator's products are not finite")
        if norm <= 1e-12 * max(np.abs(alpha[:j + 1]).max(), np.finfo(float).tiny):
            return alpha[:j + 1], beta[:j]  # invariant subspace: the quadrature is exact
        beta[j] = norm
        q = r / norm
    return alpha, beta


def quadrature(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauss quadrature of a Lanczos run: nodes (the Ritz values) and weights (squared first
    components of their eigenvectors, summing to 1). For the run's unit start q,
    sum_k weights_k g(nodes_k) = q^T g(A) q exactly for polynomials g of degree < 2 k."""
    if len(alpha) == 1:
        return alpha.copy(), np.ones(1)
    nodes, vectors = eigh_tridiagonal(alpha, beta)
    return nodes, vectors[0] ** 2


def smoothed_density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray,
                     width: float) -> np.ndarray:
    """The quadrature's spectral measure smoothed by a Gaussian of standard deviation
    ``width``, evaluated on ``grid``: a density that integrates to sum(weights)."""
    if not width > 0:
        raise DagcError(f"width: expected a number > 0, got {width!r}")
    kernel = np.exp(-0.5 * ((grid[:, None] - nodes[None, :]) / width) ** 2)
    return kernel @ weights / (width * np.sqrt(2 * np.pi))
