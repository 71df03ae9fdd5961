"""The extreme Ritz values of Lanczos runs: the two end eigenvalues of each run's tridiagonal
matrix, with the last components of their eigenvectors (what Lanczos's error bound needs).

Batched Lanczos (`dagc.linalg.lanczos.lanczos_norms`) asks for these after every step for
every row still running, so they are one compiled call for the whole batch: LAPACK called per
row and end from Python costs several times more, at small widths more than the batched HVP
itself.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy.linalg import lapack

__all__ = ["extreme_ritz", "extreme_ritz_rows"]

# Laguerre takes 4-10 iterations on a Lanczos tridiagonal until its top Ritz value converges;
# past that (ghost copies: a near-double root) it slows to linear, and LAPACK takes over.
_MAX_ITERATIONS = 40

# The last component s comes from the pivots with a relative error of about eps / s^2 (it
# differs from nearly equal numbers once a Ritz value has converged): below this, LAPACK's
# eigenvectors decide whether a row has converged.
_SMALLEST_ACCURATE_S = 1e-5


def extreme_ritz_rows(D: np.ndarray, E: np.ndarray, rows: np.ndarray, k: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(low, s_low, high, s_high) for the rows ``rows`` of a batch of tridiagonals: row r has
    the diagonal D[r, :k] and the off-diagonal E[r, :k - 1]. low and high are its smallest and
    largest eigenvalue, s_low and s_high the last components (in absolute value) of their
    unit eigenvectors. Rows whose Ritz values have nearly converged, and rows where the
    compiled iteration fails, go to LAPACK."""
    low, s_low, high, s_high, ok = _ends(D, E, rows, k)
    for i in np.flatnonzero(~ok):
        low[i], s_low[i], high[i], s_high[i] = extreme_ritz(D[rows[i], :k], E[rows[i], :k - 1])
    return low, s_low, high, s_high


def extreme_ritz(d: np.ndarray, e: np.ndarray) -> tuple[float, float, float, float]:
    """Smallest and largest eigenvalue of the tridiagonal matrix (d, e), each with the last
    component of its unit eigenvector: (low, s_low, high, s_high), by LAPACK."""
    k = len(d)
    if k == 1:
        return d[0], 1.0, d[0], 1.0
    # MRRR for the two ends only; dstemr's e has k entries (the last unused) and is
    # overwritten: a fresh copy per call.
    _, low, z_low, info_low = lapack.dstemr(d, np.append(e, 0.0), 2, 0.0, 0.0, 1, 1)
    _, high, z_high, info_high = lapack.dstemr(d, np.append(e, 0.0), 2, 0.0, 0.0, k, k)
    if info_low or info_high:  # MRRR gave up (rare): the full QR eigensolver always works
        theta, S, _ = lapack.dstev(d, e, compute_v=1)
        return theta[0], abs(S[-1, 0]), theta[-1], abs(S[-1, -1])
    return low[0], abs(z_low[-1, 0]), high[0], abs(z_high[-1, 0])


@njit(cache=True, error_model="numpy")
def _ends(D, E, rows, k):  # pragma: no cover (compiled)
    """`extreme_ritz_rows` without LAPACK, and whether each row's values can be trusted."""
    n = len(rows)
    low, s_low = np.empty(n), np.empty(n)
    high, s_high = np.empty(n), np.empty(n)
    ok = np.ones(n, np.bool_)
    for i in range(n):
        d = D[rows[i], :k]
        e = E[rows[i], :max(k - 1, 0)]
        top, s_top, found_top = _largest(d, e, 1.0)
        bottom, s_bottom, found_bottom = _largest(d, e, -1.0)
        high[i], s_high[i], low[i], s_low[i] = top, s_top, -bottom, s_bottom
        ok[i] = found_top and found_bottom and max(s_top, s_bottom) >= _SMALLEST_ACCURATE_S
    return low, s_low, high, s_high, ok


@njit(cache=True, error_model="numpy")
def _largest(d, e, sign):  # pragma: no cover (compiled)
    """The largest eigenvalue of the tridiagonal (sign * d, e), the last component of its unit
    eigenvector, and whether the iteration converged.

    Laguerre's method on the characteristic polynomial q(x) = det(x - T), from Gershgorin's
    upper bound: for a polynomial with only real roots it decreases monotonically to the
    largest root, with cubic convergence. q is never formed: q = prod_j rho_j with the pivots
    rho_j = x - d_j - e_{j-1}^2 / rho_{j-1} of x - T (all positive right of the spectrum), so
    q'/q = sum rho_j'/rho_j and so on.
    """
    k = len(d)
    x = -np.inf  # Gershgorin: the spectrum lies below x, and |T| <= scale
    scale = 0.0
    for j in range(k):
        radius = (abs(e[j - 1]) if j > 0 else 0.0) + (abs(e[j]) if j < k - 1 else 0.0)
        x = max(x, sign * d[j] + radius)
        scale = max(scale, abs(d[j]) + radius)
    tiny = np.finfo(np.float64).tiny
    if scale == 0.0:  # T = 0
        return 0.0, 1.0 if k == 1 else 0.0, True
    x += 4 * np.finfo(np.float64).eps * scale  # strictly right of the spectrum, despite rounding
    for _ in range(_MAX_ITERATIONS):
        rho, drho, ddrho = x - sign * d[0], 1.0, 0.0
        G = H = leading = inv = 0.0
        for j in range(k):
            if j > 0:  # one division per pivot: the recurrences share 1/rho_{j-1}
                b = e[j - 1] * e[j - 1]
                b_inv2 = b * inv * inv
                ddrho = b_inv2 * (ddrho - 2.0 * drho * drho * inv)
                drho = 1.0 + b_inv2 * drho
                rho = x - sign * d[j] - b * inv
            if rho == 0.0:  # x is an eigenvalue of T_j: of T itself when j = k - 1
                rho = tiny
            inv = 1.0 / rho
            ratio = drho * inv
            leading = G  # the sum over j < k, after the loop
            G += ratio
            H += ratio * ratio - ddrho * inv
        if rho == tiny:  # on the root
            return x, _last_component(rho, drho, leading), True
        # Left of the root (by rounding), G < 0 and the step goes right: the sign of G.
        root = np.sqrt(max((k - 1) * (k * H - G * G), 0.0))
        step = k / (G + root if G >= 0.0 else G - root)
        if not np.isfinite(step):
            return x, 0.0, False
        if abs(step) <= 2 * np.finfo(np.float64).eps * scale:
            return x - step, _last_component(rho, drho, leading), True
        x -= step
    return x, 0.0, False


@njit(cache=True, error_model="numpy")
def _last_component(rho, drho, leading):  # pragma: no cover (compiled)
    """|s| for the last component s of the unit eigenvector at a root of q = q_{k-1} rho_k:
    s^2 = q_{k-1}/q' = 1/(rho_k' + rho_k q_{k-1}'/q_{k-1}), with ``leading`` = q_{k-1}'/q_{k-1}.
    (Not just 1/rho_k': an eigenvalue of a leading block that decouples has s = 0.)"""
    return np.sqrt(1.0 / abs(drho + rho * leading))
