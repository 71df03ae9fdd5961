"""Gaussian expectations of every registered activation: what the infinite-width kernels
need of phi (docs/design.md, infinite-width kernels).

For a pair (u, v) ~ N(0, [[s11, s12], [s12, s22]]), each activation has

- ``<act>_moments(S11, S12, S22, symmetric)``: E[phi(u) phi(v)] and E[phi'(u) phi'(v)] for
  every pair of a kernel matrix, S11 (n1,) and S22 (n2,) the variances of the rows and
  columns, S12 (n1, n2) the covariances; `symmetric` says that S12 is a square symmetric
  matrix with S11 = S22 = its diagonal, so only its upper triangle is computed;
- ``<act>_variance(S)``: E[phi(u)^2] and E[phi(u)] for u ~ N(0, S[i]), S (n,).

Closed forms where they exist (identity, erf, sin, relu). Otherwise the Mehler expansion
E[phi(u) phi(v)] = sum_k rho^k alpha_k(s11) alpha_k(s22), rho = s12 / sqrt(s11 s22), whose
Hermite coefficients alpha_k(s) = E[phi(sqrt(s) xi) He_k(xi)] / sqrt(k!) come from one
Gauss-Hermite rule per row (not per pair): a pair costs a dot product of K terms instead of
the K^2 activations of a two-dimensional rule on the pair's Cholesky factor. Each row keeps
the coefficients until the squares of the rest sum to less than TAIL of sum_k alpha_k^2
(= E[phi^2]), so by Cauchy-Schwarz a pair's truncation error is below TAIL times
sqrt(E[phi(u)^2] E[phi(v)^2]) for every |rho| <= 1, even at rho = 1 where the series
converges slowest, as long as MAX_TERMS suffice: for tanh, whose coefficients decay slowest
of all (its poles at +-i pi/2 bound them), up to pre-activation variance 2 (tests/ops
check 1e-10 relative there; at variance 4 the derivative's series is cut at 3e-10). Kernels
that cancel to near zero are accurate relative to that scale, not to themselves.

All functions are numba-jitted with the project's decorator; the generated modules call the
per-activation entries by name. The loops that take an activation's scalar functions as
arguments are not cached on disk (numba cannot reload a signature holding a function, see
dagc.backend.jit); the entries that call them are, with the loop compiled in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..backend.jit import jit, jit_uncached
from . import activations as act
from . import gaussian_closed as closed

RULE_NODES = 400  # the Gauss-Hermite rule of the coefficients: exact up to degree 799, which
# leaves degree 480 for phi itself beside the Hermite polynomials up to MAX_TERMS
VARIANCE_NODES = 240  # the rule of E[phi^2] and E[phi] alone: below 1e-11 up to variance 2
MAX_TERMS = 320  # Hermite coefficients kept at most per row
TAIL = 1e-11  # relative size of the dropped coefficients (see the module docstring)


@dataclass(frozen=True)
class GaussianExpectation:
    """One activation's Gaussian expectations (numba dispatchers, signatures in the module
    docstring) and whether they are closed forms."""

    name: str
    moments: Callable
    variance: Callable
    closed_form: bool


# --------------------------------------------------------------------------------------------
# The Gauss-Hermite rule, computed in compiled code: numba cannot cache a function that reads
# a global array of this size


@jit
def gauss_hermite(n):
    """Nodes and weights of the n-point Gauss-Hermite rule for the standard normal density
    (weights summing to 1), in ascending order. The roots of He_n are located by bisection on
    the Sturm counts of the Jacobi matrix of the recurrence (Golub-Welsch, without its
    eigensolver) and polished by Newton's method on the orthonormal physicists' recurrence,
    whose derivative also gives the weights to full relative accuracy. No LAPACK call, so no
    BLAS thread pool to wait on however busy the machine: the limit kernels compute the rule
    on every call."""
    positive = n - n // 2  # the rule is symmetric: the roots from the middle up
    roots = _bisect_roots(n, n // 2, positive)
    x = np.empty(n)
    w = np.empty(n)
    for i in range(positive):
        k = n // 2 + i
        z = roots[i] / math.sqrt(2.0)  # physicists' scale
        derivative = 1.0
        for _ in range(10):
            p1 = 0.7511255444649425  # pi^(-1/4): the orthonormal H_0
            p2 = 0.0
            for j in range(1, n + 1):
                p3 = p2
                p2 = p1
                p1 = z * math.sqrt(2.0 / j) * p2 - math.sqrt((j - 1.0) / j) * p3
            derivative = math.sqrt(2.0 * n) * p2
            step = p1 / derivative
            z -= step
            if abs(step) <= 1e-15 * max(1.0, abs(z)):
                break
        x[k] = z
        x[n - 1 - k] = -z
        w[k] = w[n - 1 - k] = 2.0 / (derivative * derivative)
    return x * math.sqrt(2.0), w / math.sqrt(math.pi)


@jit
def _bisect_roots(n, first, count):
    """Roots first .. first + count - 1 (ascending) of He_n to about 1e-6, close enough for
    Newton: bisection on the number of eigenvalues below t of its Jacobi matrix (zero
    diagonal, off-diagonal sqrt(1..n-1)), the negative pivots of J - t I. All roots bisect
    together, so the pivots' divisions, a dependent chain per root, run side by side.
    Every root lies in (-2 sqrt(n), 2 sqrt(n))."""
    low = np.full(count, -2.0 * math.sqrt(n))
    high = np.full(count, 2.0 * math.sqrt(n))
    t = np.empty(count)
    pivot = np.empty(count)
    below = np.empty(count, np.int64)
    for _ in range(26):
        for i in range(count):
            t[i] = 0.5 * (low[i] + high[i])
            pivot[i] = -t[i]
            below[i] = 0
        for j in range(1, n + 1):
            for i in range(count):
                if j > 1:
                    pivot[i] = -t[i] - (j - 1.0) / pivot[i]
                if pivot[i] == 0.0:
                    pivot[i] = -1e-300
                below[i] += pivot[i] < 0.0
        for i in range(count):
            if below[i] > first + i:
                high[i] = t[i]
            else:
                low[i] = t[i]
    return 0.5 * (low + high)


# --------------------------------------------------------------------------------------------
# Hermite coefficients and the Mehler series (activations without a closed form)


@jit_uncached
def hermite_coefficients(S, value, first, nodes, weights):
    """Per row i: the normalized Hermite coefficients of phi and phi' at variance S[i], (n,
    MAX_TERMS) each, and how many of them the row needs (the larger count of the two). Rows
    of equal variance share one computation (inputs on a sphere give one variance per block)."""
    n = S.shape[0]
    A = np.zeros((n, MAX_TERMS))
    D = np.zeros((n, MAX_TERMS))
    terms = np.ones(n, np.int64)
    order = np.argsort(S, kind="mergesort")  # numba's quicksort is quadratic on equal keys
    for p in range(n):
        i = order[p]
        if p > 0 and S[i] == S[order[p - 1]]:
            A[i] = A[order[p - 1]]
            D[i] = D[order[p - 1]]
            terms[i] = terms[order[p - 1]]
            continue
        _coefficients_at(S[i], nodes, weights, value, first, A[i], D[i])
        terms[i] = max(_needed_terms(A[i]), _needed_terms(D[i]))
    return A, D, terms


@jit_uncached
def _coefficients_at(variance, nodes, weights, value, first, a, d):
    """The coefficients of phi and phi' at one variance, into a and d (MAX_TERMS,)."""
    m = nodes.shape[0]
    sigma = math.sqrt(max(variance, 0.0))
    f = np.empty(m)
    g = np.empty(m)
    for k in range(m):
        t = sigma * nodes[k]
        y = value(t)
        f[k] = weights[k] * y
        g[k] = weights[k] * first(t, y)
    previous = np.zeros(m)
    h = np.ones(m)
    for k in range(MAX_TERMS):
        sa = 0.0
        sd = 0.0
        for q in range(m):
            sa += f[q] * h[q]
            sd += g[q] * h[q]
        a[k] = sa
        d[k] = sd
        scale = 1.0 / math.sqrt(k + 1.0)
        root = math.sqrt(float(k))
        for q in range(m):  # He_{k+1} / sqrt((k+1)!) from the two before it
            following = (nodes[q] * h[q] - root * previous[q]) * scale
            previous[q] = h[q]
            h[q] = following


@jit
def _needed_terms(c):
    """The fewest leading coefficients whose dropped squares sum to at most TAIL of all."""
    total = 0.0
    for k in range(c.shape[0]):
        total += c[k] * c[k]
    tail = 0.0
    for k in range(c.shape[0] - 1, -1, -1):
        tail += c[k] * c[k]
        if tail > TAIL * total:
            return k + 1
    return 1


@jit
def _correlation(s11, s12, s22):
    """s12 / sqrt(s11 s22) clipped to [-1, 1] (rounding); 0 for a degenerate variable, whose
    coefficients beyond the first vanish anyway."""
    if s11 <= 0.0 or s22 <= 0.0:
        return 0.0
    return min(1.0, max(-1.0, s12 / math.sqrt(s11 * s22)))


@jit_uncached
def mehler_moments(S11, S12, S22, symmetric, value, first):
    """E[phi(u) phi(v)] and E[phi'(u) phi'(v)] (n1, n2) by the Mehler series."""
    nodes, weights = gauss_hermite(RULE_NODES)
    A1, D1, t1 = hermite_coefficients(S11, value, first, nodes, weights)
    if symmetric:
        A2, D2, t2 = A1, D1, t1
    else:
        A2, D2, t2 = hermite_coefficients(S22, value, first, nodes, weights)
    n1, n2 = S12.shape
    # Coefficient k of every column side by side, so that the series runs over a row at once
    # (one vectorized loop per term, not one dependent chain per pair).
    most = t2.max()
    A2k = np.ascontiguousarray(A2[:, :most].T)
    D2k = np.ascontiguousarray(D2[:, :most].T)
    C = np.empty((n1, n2))
    E = np.empty((n1, n2))
    for i in range(n1):
        start = i if symmetric else 0
        rho = np.empty(n2 - start)
        for j in range(start, n2):
            rho[j - start] = _correlation(S11[i], S12[i, j], S22[j])
        c = np.zeros(n2 - start)
        e = np.zeros(n2 - start)
        for k in range(max(t1[i], most) - 1, -1, -1):  # Horner, from the last term
            a = A1[i, k]
            d = D1[i, k]
            if k < most:
                for j in range(n2 - start):
                    c[j] = c[j] * rho[j] + a * A2k[k, start + j]
                    e[j] = e[j] * rho[j] + d * D2k[k, start + j]
            else:  # the columns' coefficients are all below the tail here
                for j in range(n2 - start):
                    c[j] = c[j] * rho[j]
                    e[j] = e[j] * rho[j]
        C[i, start:] = c
        E[i, start:] = e
    if symmetric:
        _mirror(C)
        _mirror(E)
    return C, E


@jit_uncached
def quadrature_variance(S, value):
    """E[phi(u)^2] and E[phi(u)] for u ~ N(0, S[i]), by the one-dimensional rule."""
    n = S.shape[0]
    second = np.empty(n)
    mean = np.empty(n)
    nodes, weights = gauss_hermite(VARIANCE_NODES)
    for i in range(n):
        sigma = math.sqrt(max(S[i], 0.0))
        s2 = 0.0
        s1 = 0.0
        for a in range(nodes.shape[0]):
            y = value(sigma * nodes[a])
            s1 += weights[a] * y
            s2 += weights[a] * y * y
        second[i] = s2
        mean[i] = s1
    return second, mean


@jit
def _mirror(M):
    """Copy the upper triangle of a square matrix onto its lower one."""
    for i in range(M.shape[0]):
        for j in range(i):
            M[i, j] = M[j, i]


# --------------------------------------------------------------------------------------------
# Closed forms: the loops over a kernel matrix (the scalar forms are in gaussian_closed)


@jit_uncached
def closed_moments(S11, S12, S22, symmetric, pair):
    """Both moments (n1, n2) from an activation's scalar closed form `pair`."""
    n1, n2 = S12.shape
    C = np.empty((n1, n2))
    E = np.empty((n1, n2))
    for i in range(n1):
        for j in range(i if symmetric else 0, n2):
            C[i, j], E[i, j] = pair(S11[i], S12[i, j], S22[j])
    if symmetric:
        _mirror(C)
        _mirror(E)
    return C, E


@jit_uncached
def closed_variance(S, pair, mean):
    """E[phi(u)^2] from the closed form at s11 = s12 = s22, and E[phi(u)] from `mean`."""
    n = S.shape[0]
    second = np.empty(n)
    first_moment = np.empty(n)
    for i in range(n):
        second[i] = pair(S[i], S[i], S[i])[0]
        first_moment[i] = mean(S[i])
    return second, first_moment


# --------------------------------------------------------------------------------------------
# The entries the generated modules call, one pair per activation


@jit
def identity_moments(S11, S12, S22, symmetric):
    return closed_moments(S11, S12, S22, symmetric, closed.identity_pair)


@jit
def identity_variance(S):
    return closed_variance(S, closed.identity_pair, closed.zero_mean)


@jit
def erf_moments(S11, S12, S22, symmetric):
    return closed_moments(S11, S12, S22, symmetric, closed.erf_pair)


@jit
def erf_variance(S):
    return closed_variance(S, closed.erf_pair, closed.zero_mean)


@jit
def sin_moments(S11, S12, S22, symmetric):
    return closed_moments(S11, S12, S22, symmetric, closed.sin_pair)


@jit
def sin_variance(S):
    return closed_variance(S, closed.sin_pair, closed.zero_mean)


@jit
def relu_moments(S11, S12, S22, symmetric):
    return closed_moments(S11, S12, S22, symmetric, closed.relu_pair)


@jit
def relu_variance(S):
    return closed_variance(S, closed.relu_pair, closed.relu_mean)


@jit
def tanh_moments(S11, S12, S22, symmetric):
    return mehler_moments(S11, S12, S22, symmetric, act.tanh, act.tanh_first)


@jit
def tanh_variance(S):
    second, _ = quadrature_variance(S, act.tanh)
    return second, np.zeros_like(S)  # odd: exactly zero, so skips add no mean terms


@jit
def sigmoid_moments(S11, S12, S22, symmetric):
    return mehler_moments(S11, S12, S22, symmetric, act.sigmoid, act.sigmoid_first)


@jit
def sigmoid_variance(S):
    return quadrature_variance(S, act.sigmoid)


@jit
def softplus_moments(S11, S12, S22, symmetric):
    return mehler_moments(S11, S12, S22, symmetric, act.softplus, act.softplus_first)


@jit
def softplus_variance(S):
    return quadrature_variance(S, act.softplus)


@jit
def gelu_moments(S11, S12, S22, symmetric):
    return mehler_moments(S11, S12, S22, symmetric, act.gelu, act.gelu_first)


@jit
def gelu_variance(S):
    return quadrature_variance(S, act.gelu)


GAUSSIAN: dict[str, GaussianExpectation] = {
    "identity": GaussianExpectation("identity", identity_moments, identity_variance, True),
    "tanh": GaussianExpectation("tanh", tanh_moments, tanh_variance, False),
    "sigmoid": GaussianExpectation("sigmoid", sigmoid_moments, sigmoid_variance, False),
    "softplus": GaussianExpectation("softplus", softplus_moments, softplus_variance, False),
    "erf": GaussianExpectation("erf", erf_moments, erf_variance, True),
    "gelu": GaussianExpectation("gelu", gelu_moments, gelu_variance, False),
    "sin": GaussianExpectation("sin", sin_moments, sin_variance, True),
    "relu": GaussianExpectation("relu", relu_moments, relu_variance, True),
}

if set(GAUSSIAN) != set(act.ACTIVATIONS):  # a new activation needs its expectations here
    raise ImportError("dagc.ops.gaussian: Gaussian expectations missing for "
                      f"{sorted(set(act.ACTIVATIONS) - set(GAUSSIAN))}")
