"""What a sweep measures in one cell (design.md section 5): Hessian spectral norms, gradient
norms, linearization errors and the change of the NTK during training, for one compiled
network at one seed.

Every random draw comes from a numpy Generator seeded with ``[seed, purpose]``, where
``purpose`` is a fixed constant per use (inputs, Lanczos start, ball points, directions,
training set, teacher). Draws for different purposes are therefore independent streams, and
the same ``measure(net, metric, seed, options)`` call returns bit-identical numbers in any
process (given the same BLAS and thread count).

Conventions shared by every metric:

- ``w0 = net.init(seed)`` (i.i.d. N(0, 1), NTK parameterization);
- inputs are ``options.inputs`` points uniform on the sphere of radius ``sqrt(n_in)`` (so each
  coordinate has unit mean square, like the paper's normalized data);
- a network with several outputs is measured output by output; statistics run over all
  (input, output) pairs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numba import njit
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from .errors import DagcError
from .linalg.ritz import extreme_ritz_rows
from .runtime import CompiledNet

__all__ = [
    "METRICS", "Options", "measure", "hessian_norm", "hessian_norms", "lanczos_norms",
    "gradient_norms",
    "linearization_errors", "gradient_direction_errors", "ntk_matrix", "train", "TrainResult",
    "sphere_points",
    "unit_vector", "generator", "sweep_inputs", "dense_hessian", "regression_set",
]

METRICS = ("hessian", "hessian_ball", "gradient", "linearization", "ntk_change")

# One stream per purpose: changing how many points one metric draws never shifts another
# metric's draws. Never renumber these: stored results depend on them.
_PURPOSES = {
    "inputs": 1,
    "lanczos": 2,
    "ball": 3,
    "directions": 4,
    "train_inputs": 5,
    "teacher": 6,
}

# Below this many parameters a dense eigendecomposition is cheaper than a Krylov method (and
# ARPACK needs k < ncv <= P anyway).
_DENSE_LIMIT = 16

# ARPACK's Lanczos basis size. Each restart re-orthogonalizes against the whole basis, which
# reads ncv * P floats per step: at P ~ 2e6 that costs as much as an HVP. 20 (scipy's
# default for k=1) converges the extreme pair of a +/- spectrum in one or two restarts.
_NCV = 20

# ARPACK restarts before giving up (scipy's default, 10 P, is unbounded in practice).
_MAX_RESTARTS = 1000

# Lanczos steps before giving up; 35-60 suffice for tol=1e-6 on the bundled networks.
_MAX_STEPS = 1000

HESSIAN_METHODS = ("lanczos", "arpack")

# The teacher of ntk_change: a random one-hidden-layer tanh network with this many features.
_TEACHER_FEATURES = 32


# --------------------------------------------------------------------------------------------
# Argument checks


def _check_int(value, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DagcError(f"{name}: expected an integer >= {minimum}, got {value!r}")


def _check_tol(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0:
        raise DagcError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def _check_method(value, name: str) -> None:
    if value not in HESSIAN_METHODS:
        raise DagcError(f"{name}: unknown Hessian-norm method {value!r}; known: "
                        f"{', '.join(HESSIAN_METHODS)}")


def _check_seed(seed) -> None:
    _check_int(seed, "seed", minimum=0)


def _vector(value, name: str, size: int) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype != np.float64 \
            or value.shape != (size,):
        shape = getattr(value, "shape", None)
        dtype = getattr(value, "dtype", type(value).__name__)
        raise DagcError(f"{name}: expected a float64 array of shape ({size},), got "
                        f"shape {shape} dtype {dtype}")
    return np.ascontiguousarray(value)


def _matrix(value, name: str, columns: int) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype != np.float64 or value.ndim != 2 \
            or value.shape[1] != columns or value.shape[0] == 0:
        shape = getattr(value, "shape", None)
        dtype = getattr(value, "dtype", type(value).__name__)
        raise DagcError(f"{name}: expected a float64 array of shape (n, {columns}) with n >= 1, "
                        f"got shape {shape} dtype {dtype}")
    return np.ascontiguousarray(value)


@dataclass(frozen=True)
class Options:
    """Everything that changes a measurement; a sweep stores ``dataclasses.asdict(options)``
    with each result, so two results are comparable exactly when their options are equal.

    Attributes:
        inputs: number of inputs x, uniform on the sphere of radius sqrt(n_in).
        radius: R, the radius of the ball (``hessian_ball``) and the step length
            (``linearization``) around w0.
        ball_points: random points w0 + R u, ||u|| = 1, for ``hessian_ball``.
        directions: random unit directions u for ``linearization``.
        train_size: size of the synthetic regression set of ``ntk_change``.
        loss_drop: ``ntk_change`` trains until the loss falls by this factor (> 1) ...
        max_steps: ... or for at most this many gradient-descent steps.
        tol: relative tolerance of the Hessian norm (see `hessian_norm`; 0 means machine
            precision).
        hessian_method: how `hessian_norm` runs Lanczos: "lanczos" or "arpack".
    """

    inputs: int = 4
    radius: float = 1.0
    ball_points: int = 4
    directions: int = 4
    train_size: int = 16
    loss_drop: float = 10.0
    max_steps: int = 2000
    tol: float = 1e-6
    hessian_method: str = "lanczos"

    def __post_init__(self) -> None:
        _check_method(self.hessian_method, "options.hessian_method")
        for name in ("inputs", "ball_points", "directions", "train_size"):
            _check_int(getattr(self, name), f"options.{name}", minimum=1)
        _check_int(self.max_steps, "options.max_steps", minimum=0)
        # Store floats as floats, so Options(radius=1) and Options(radius=1.0) serialize alike.
        for name, low, strict in (("radius", 0.0, True), ("loss_drop", 1.0, True),
                                  ("tol", 0.0, False)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer,
                                                                 np.floating)):
                raise DagcError(f"options.{name}: expected a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value) or value < low or (strict and value == low):
                relation = ">" if strict else ">="
                raise DagcError(f"options.{name}: expected a finite number {relation} {low:g}, "
                                f"got {value!r}")
            object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Options:
        """Inverse of ``dataclasses.asdict``; unknown keys are an error (a store written by a
        newer dagc must not be silently reinterpreted)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DagcError(f"options: unknown field(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known))}")
        return cls(**values)


def measure(net: CompiledNet, metric: str, seed: int,
            options: Options = Options()) -> dict[str, float]:
    """Measure one sweep cell: ``metric`` of ``net`` at ``w0 = net.init(seed)``.

    Returns a dict of floats whose ``"value"`` is the statistic fitted against width:

    - ``hessian``: mean over inputs and outputs of the Hessian spectral norm ||H_f(w0; x)||
      (Lanczos, see `hessian_norms`); extras ``mean`` (= value) and ``max``.
    - ``hessian_ball``: max of ||H_f(w; x)|| over ``ball_points`` random w = w0 + R u with
      ||u|| = 1, and over inputs and outputs; extras ``max`` (= value) and ``mean``.
    - ``gradient``: mean of ||grad_w f(w0; x)||; extras ``mean`` (= value), ``max``.
    - ``linearization``: mean of |f(w0 + R u) - f(w0) - R grad f(w0; x) . u| over random unit
      directions u, inputs and outputs; extras ``mean`` (= value), ``max``.
    - ``ntk_change``: ||K_T - K_0||_F / ||K_0||_F after full-batch gradient descent on a
      synthetic regression set (see `train`); extras ``weight_change`` = ||w_T - w_0||,
      ``steps``, ``loss_ratio`` = L_T / L_0, ``converged`` (1.0 when the loss fell by
      ``loss_drop``), ``min_eig_change`` = |lambda_min(K_T) - lambda_min(K_0)| /
      lambda_min(K_0), ``eta`` (the step size).

    Raises `DagcError` for an unknown metric, a bad seed or bad options.
    """
    if not isinstance(net, CompiledNet):
        raise DagcError(f"net: expected a CompiledNet, got {type(net).__name__}")
    if metric not in METRICS:
        raise DagcError(f"metric: unknown metric {metric!r}; known: {', '.join(METRICS)}")
    _check_seed(seed)
    if not isinstance(options, Options):
        raise DagcError(f"options: expected dagc.measure.Options, got {type(options).__name__}")
    return _MEASURES[metric](net, seed, options)


# --------------------------------------------------------------------------------------------
# Random draws


def generator(seed: int, purpose: str) -> np.random.Generator:
    """The Generator `measure` uses for ``purpose`` (one of inputs, lanczos, ball, directions,
    train_inputs, teacher) at ``seed``: ``np.random.default_rng([seed, constant])``."""
    _check_seed(seed)
    if purpose not in _PURPOSES:
        raise DagcError(f"purpose: unknown {purpose!r}; known: {', '.join(_PURPOSES)}")
    return np.random.default_rng([seed, _PURPOSES[purpose]])


def sphere_points(rng: np.random.Generator, count: int, dim: int,
                  radius: float = 1.0) -> np.ndarray:
    """``count`` points uniform on the sphere of ``radius`` in R^dim, shape (count, dim)."""
    # A standard Gaussian is rotation invariant, so its direction is uniform on the sphere.
    points = rng.standard_normal((count, dim))
    points *= radius / np.linalg.norm(points, axis=1, keepdims=True)
    return points


def unit_vector(rng: np.random.Generator, dim: int) -> np.ndarray:
    """One point uniform on the unit sphere of R^dim, shape (dim,). Drawn one at a time so
    that a metric never holds more than one P-vector of directions."""
    return sphere_points(rng, 1, dim)[0]


def sweep_inputs(net: CompiledNet, seed: int, count: int) -> np.ndarray:
    """The inputs every metric except ``ntk_change`` uses: (count, n_in), uniform on the
    sphere of radius sqrt(n_in)."""
    return sphere_points(generator(seed, "inputs"), count, net.n_in, math.sqrt(net.n_in))


# --------------------------------------------------------------------------------------------
# Hessian spectral norm


def hessian_norm(net: CompiledNet, w: np.ndarray, x: np.ndarray, output: int = 0,
                 tol: float = 1e-6, method: str = "lanczos", seed: int = 0) -> float:
    """Spectral norm (largest |eigenvalue|) of the Hessian of output ``output`` with respect to
    the weights, at weights ``w`` (P,) and input ``x`` (n_in,). See `hessian_norms`."""
    x = _vector(x, "x", net.n_in)
    if isinstance(output, bool) or not isinstance(output, (int, np.integer)) \
            or not 0 <= output < net.n_out:
        raise DagcError(f"output: expected an integer in [0, {net.n_out}), got {output!r}")
    return float(_norms(net, w, x[None, :], np.array([output]), tol, method, seed)[0])


def hessian_norms(net: CompiledNet, w: np.ndarray, X: np.ndarray, tol: float = 1e-6,
                  method: str = "lanczos", seed: int = 0) -> np.ndarray:
    """Spectral norms of the Hessians of every output at every row of X (n, n_in): (n, n_out).

    A Krylov method: the spectrum of a network's Hessian comes in near +/- pairs, where
    power iteration stalls (its rate is |lambda_2 / lambda_1| ~ 1) but Lanczos converges to
    both ends of the spectrum at once. ``method``:

    - ``"lanczos"`` (default): Lanczos on `CompiledNet.factored_hessian`, all rows at once.
      Every H v lies in the span of a few vectors per neuron (r numbers instead of P), so the
      Krylov vectors have r entries, each step reads every weight matrix twice for the whole
      batch (matrix-matrix products), and the eigenvalues are those of the Hessian itself:
      nothing is approximated. Each row stops when the Ritz values at *both* ends of its
      spectrum have residual bounds below ``tol`` times its largest |Ritz value| (so neither
      end of a +/- pair can still overtake the other); ``tol=0`` means machine precision.
    - ``"arpack"``: scipy ``eigsh`` (implicitly restarted Lanczos, ``which="LM"``) on the
      plain HVP in R^P, one (input, output) at a time: an independent cross-check, several
      times slower.

    The start vector comes from ``generator(seed, "lanczos")``, so a call is reproducible.
    """
    X = _matrix(X, "X", net.n_in)
    outputs = np.tile(np.arange(net.n_out), len(X))
    norms = _norms(net, w, np.repeat(X, net.n_out, axis=0), outputs, tol, method, seed)
    return norms.reshape(len(X), net.n_out)


def _norms(net: CompiledNet, w, X: np.ndarray, outputs: np.ndarray, tol, method: str,
           seed: int) -> np.ndarray:
    """Hessian norm of output outputs[i] at X[i], for every row i."""
    w = _vector(w, "w", net.n_params)
    tol = max(_check_tol(tol, "tol"), 10 * np.finfo(np.float64).eps)  # 0: rounding's floor
    _check_method(method, "method")
    _check_seed(seed)
    rng = generator(seed, "lanczos")
    if net.n_params <= _DENSE_LIMIT:
        return np.array([np.abs(np.linalg.eigvalsh(dense_hessian(net, w, x, o))).max()
                         if net.n_params else 0.0 for x, o in zip(X, outputs, strict=True)])
    if method == "arpack":
        v0 = rng.standard_normal(net.n_params)
        return np.array([_arpack_norm(net, w, x, int(o), v0, tol)
                         for x, o in zip(X, outputs, strict=True)])
    operator = net.factored_hessian(w, X, outputs)
    start = np.tile(rng.standard_normal(operator.size), (operator.rows, 1))
    return lanczos_norms(operator, start, tol)


def lanczos_norms(operator, C0: np.ndarray, tol: float, max_steps: int = _MAX_STEPS
                  ) -> np.ndarray:
    """Largest |eigenvalue| of each row's operator, by Lanczos on all rows in lockstep.

    ``operator.apply(C)`` returns (HC, GC) for a batch C of vectors, one per row: the operator
    H and the Gram matrix G of the inner product <x, y> = x . G y in which H is
    self-adjoint (the identity for a plain symmetric matrix); ``operator.select(keep)`` is the
    operator of the rows ``keep``. Converged rows leave the batch. C0 (rows, r) holds the
    start vectors.

    No re-orthogonalization: the loss of orthogonality only sets in as a Ritz value converges
    (Paige), and the loop stops there; the extreme Ritz values are monotone in the step count
    regardless. The vectors are kept unnormalized (H and G are linear), so that the norm
    |r|_G^2 = r . G r of a new vector comes from the same operator call as its H r.
    """
    norms = np.zeros(len(C0))
    active = np.arange(len(C0))  # the original rows still in the batch
    alphas = np.zeros((len(C0), max_steps))  # row i's tridiagonal, filled in lockstep
    betas = np.zeros((len(C0), max_steps))
    v = np.array(C0, dtype=np.float64)
    Hv, Gv = operator.apply(v)
    c = _row_lengths(v, Gv)
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
            return norms
        # v stays intact: the operator may return it as G v (G = I)
        alpha = _three_term(v, Hv, Gv, c, q_prev, beta, q=spare)
        q, r, spare = spare, q_prev, v
        Hr, Gr = operator.apply(r)
        beta = _row_lengths(r, Gr)
        if not (np.isfinite(alpha).all() and np.isfinite(beta).all()):
            raise DagcError("hessian_norm: the Hessian-vector product is not finite")
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
                      "using the largest Ritz value", RuntimeWarning, stacklevel=3)
    return norms


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
    """|v_i|_G = sqrt(v_i . (G v)_i) for every row (0 where rounding makes it negative)."""
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


def _arpack_norm(net: CompiledNet, w: np.ndarray, x: np.ndarray, output: int,
                 v0: np.ndarray, tol: float) -> float:
    P = net.n_params
    out = np.empty(P)  # ARPACK copies each result into its work array: one buffer serves all

    def matvec(v: np.ndarray) -> np.ndarray:
        return net.hvp(w, x, np.ascontiguousarray(v.reshape(-1)), output, out=out)

    operator = LinearOperator((P, P), matvec=matvec, dtype=np.float64)
    try:
        eigenvalues = eigsh(operator, k=1, which="LM", v0=v0, ncv=min(P, _NCV), tol=tol,
                            maxiter=_MAX_RESTARTS, return_eigenvectors=False)
    except ArpackNoConvergence as error:
        if len(error.eigenvalues) == 0:
            raise DagcError(f"hessian_norm: ARPACK did not converge ({error})") from error
        warnings.warn(f"hessian_norm: ARPACK did not reach tol={tol:g}; using the best "
                      "Ritz value", RuntimeWarning, stacklevel=3)
        eigenvalues = error.eigenvalues
    return float(np.max(np.abs(eigenvalues)))


def dense_hessian(net: CompiledNet, w: np.ndarray, x: np.ndarray, output: int = 0) -> np.ndarray:
    """The full (P, P) Hessian of one output at one input, column by column from HVPs with unit
    vectors. O(P) HVPs and P^2 memory: for tests and tiny networks only."""
    P = net.n_params
    H = np.empty((P, P))
    e = np.zeros(P)
    for j in range(P):
        e[j] = 1.0
        H[:, j] = net.hvp(w, x, e, output)
        e[j] = 0.0
    return H


# --------------------------------------------------------------------------------------------
# Gradients and linearization


def gradient_norms(net: CompiledNet, w: np.ndarray, X: np.ndarray) -> np.ndarray:
    """||grad_w f_o(w; x)|| for every row x of X and output o: shape (n, n_out)."""
    return np.linalg.norm(net.jacobian(w, _matrix(X, "X", net.n_in)), axis=2)


def linearization_errors(net: CompiledNet, w: np.ndarray, X: np.ndarray, radius: float,
                         directions: int, rng: np.random.Generator) -> np.ndarray:
    """|f(w + R u) - f(w) - R grad f(w; x) . u| for ``directions`` unit vectors u drawn one at
    a time from ``rng`` (see `unit_vector`): shape (directions, n, n_out)."""
    X = _matrix(X, "X", net.n_in)
    w = _vector(w, "w", net.n_params)
    f0 = net.forward(w, X)
    G = net.jacobian(w, X)  # (n, n_out, P), reused for every direction
    errors = np.empty((directions, len(X), net.n_out))
    for k in range(directions):
        u = unit_vector(rng, net.n_params)
        # Form f(w0 + R u) - f(w0) before subtracting the linear term: both are O(R), and the
        # remainder O(R^2) keeps its relative accuracy down to R ~ 1e-5.
        errors[k] = np.abs((net.forward(w + radius * u, X) - f0) - radius * (G @ u))
    return errors


def gradient_direction_errors(net: CompiledNet, w: np.ndarray, X: np.ndarray,
                              radius: float) -> np.ndarray:
    """|f(w + R u) - f(w) - R ||grad f||| along u = grad f(w; x) / ||grad f(w; x)||, the
    direction gradient descent moves in, for each input and output: shape (n, n_out).

    Random directions see the Hessian's average curvature, tr(H) / P; the gradient direction
    sees g^T H g / |g|^2, which governs how fast the NTK drifts during training.
    """
    X = _matrix(X, "X", net.n_in)
    w = _vector(w, "w", net.n_params)
    f0 = net.forward(w, X)
    G = net.jacobian(w, X)
    errors = np.empty((len(X), net.n_out))
    for i in range(len(X)):
        for o in range(net.n_out):
            norm = float(np.linalg.norm(G[i, o]))
            u = G[i, o] / norm if norm > 0 else G[i, o]
            step = net.forward(w + radius * u, X[i:i + 1])[0, o] - f0[i, o]
            errors[i, o] = abs(step - radius * norm)
    return errors


# --------------------------------------------------------------------------------------------
# NTK change under training


def ntk_matrix(net: CompiledNet, w: np.ndarray, X: np.ndarray) -> np.ndarray:
    """The empirical NTK at the rows of X as one symmetric (n * n_out, n * n_out) matrix:
    entry (i * n_out + a, j * n_out + b) = grad f_a(x_i) . grad f_b(x_j)."""
    K = net.ntk(w, X)
    if net.n_out == 1:
        return K
    n, o = len(X), net.n_out
    return np.ascontiguousarray(K.transpose(0, 2, 1, 3).reshape(n * o, n * o))


@dataclass(frozen=True)
class TrainResult:
    """Outcome of `train`: final weights, step size, steps taken, initial and final loss."""

    w: np.ndarray
    eta: float
    steps: int
    loss0: float
    loss: float


def train(net: CompiledNet, w0: np.ndarray, X: np.ndarray, Y: np.ndarray, loss_drop: float,
          max_steps: int, K0: np.ndarray | None = None) -> TrainResult:
    """Full-batch gradient descent on L(w) = 1/(2n) sum_i ||f(w; x_i) - y_i||^2 from w0, with
    step eta = 1 / lambda_max(K0 / n), until L <= L(w0) / loss_drop or ``max_steps`` steps.

    eta = 1 / lambda_max is the largest step that is monotone for the linearized model (the
    top NTK mode is removed in one step; 2 / lambda_max would be the stability edge), and it
    makes the number of steps independent of width, so widths are compared at equal progress.
    Raises `DagcError` if the loss becomes non-finite.
    """
    n = len(X)
    if K0 is None:
        K0 = ntk_matrix(net, w0, X)
    lam_max = float(np.linalg.eigvalsh(K0 / n)[-1])
    if not lam_max > 0.0:
        raise DagcError(f"ntk_change: the NTK at w0 has no positive eigenvalue ({lam_max!r})")
    eta = 1.0 / lam_max
    w = w0.copy()
    grad = np.empty_like(w)
    # Each call gives the loss at w and, in grad, the gradient of the step that leaves w.
    outputs, _ = net.mse_gradient(w, X, Y, out=grad)
    loss0 = loss = 0.5 * float(np.sum((outputs - Y)**2)) / n
    target = loss0 / loss_drop
    steps = 0
    while loss > target and steps < max_steps:
        w -= eta * grad
        outputs, _ = net.mse_gradient(w, X, Y, out=grad)
        loss = 0.5 * float(np.sum((outputs - Y)**2)) / n
        steps += 1
        if not math.isfinite(loss):
            raise DagcError(f"ntk_change: gradient descent diverged at step {steps} "
                            f"(eta = {eta:.3g})")
    return TrainResult(w=w, eta=eta, steps=steps, loss0=loss0, loss=loss)


def regression_set(net: CompiledNet, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic regression set of ``ntk_change``: X (size, n_in) uniform on the sphere of
    radius sqrt(n_in), and targets Y (size, n_out) from a fixed random teacher.

    The teacher is a one-hidden-layer tanh network independent of ``net``: y = tanh(X A^T /
    sqrt(n_in)) B / sqrt(h) with A (h, n_in), B (h, n_out) i.i.d. N(0, 1), h = 32, then scaled
    so that the targets have unit root mean square over the set. Non-linear, so the data is
    not fitted by a linear model in x, and of order one like the network's outputs at init,
    so the initial loss is O(1) at every width.
    """
    X = sphere_points(generator(seed, "train_inputs"), size, net.n_in, math.sqrt(net.n_in))
    rng = generator(seed, "teacher")
    A = rng.standard_normal((_TEACHER_FEATURES, net.n_in))
    B = rng.standard_normal((_TEACHER_FEATURES, net.n_out))
    Y = np.tanh(X @ A.T / math.sqrt(net.n_in)) @ B / math.sqrt(_TEACHER_FEATURES)
    rms = math.sqrt(float(np.mean(Y**2)))
    return X, (Y / rms if rms > 0.0 else Y)


# --------------------------------------------------------------------------------------------
# The metrics


def _measure_hessian(net: CompiledNet, seed: int, options: Options) -> dict[str, float]:
    norms = hessian_norms(net, net.init(seed), sweep_inputs(net, seed, options.inputs),
                          tol=options.tol, method=options.hessian_method, seed=seed)
    return {"value": float(norms.mean()), "mean": float(norms.mean()), "max": float(norms.max())}


def _measure_hessian_ball(net: CompiledNet, seed: int, options: Options) -> dict[str, float]:
    w0 = net.init(seed)
    X = sweep_inputs(net, seed, options.inputs)
    rng = generator(seed, "ball")
    norms = np.array([hessian_norms(net, w0 + options.radius * unit_vector(rng, net.n_params),
                                    X, tol=options.tol, method=options.hessian_method,
                                    seed=seed)
                      for _ in range(options.ball_points)])
    return {"value": float(norms.max()), "max": float(norms.max()), "mean": float(norms.mean())}


def _measure_gradient(net: CompiledNet, seed: int, options: Options) -> dict[str, float]:
    norms = gradient_norms(net, net.init(seed), sweep_inputs(net, seed, options.inputs))
    return {"value": float(norms.mean()), "mean": float(norms.mean()), "max": float(norms.max())}


def _measure_linearization(net: CompiledNet, seed: int, options: Options) -> dict[str, float]:
    w, X = net.init(seed), sweep_inputs(net, seed, options.inputs)
    errors = linearization_errors(net, w, X, options.radius, options.directions,
                                  generator(seed, "directions"))
    along_gradient = gradient_direction_errors(net, w, X, options.radius)
    # The headline is the worst probed direction per input (the paper bounds the sup over the
    # ball); random directions alone see only the average curvature and decay much faster.
    worst = np.maximum(errors.max(axis=0), along_gradient)
    return {"value": float(worst.mean()), "random_mean": float(errors.mean()),
            "random_max": float(errors.max()), "gradient_direction": float(along_gradient.mean())}


def _measure_ntk_change(net: CompiledNet, seed: int, options: Options) -> dict[str, float]:
    w0 = net.init(seed)
    X, Y = regression_set(net, seed, options.train_size)
    K0 = ntk_matrix(net, w0, X)
    result = train(net, w0, X, Y, options.loss_drop, options.max_steps, K0=K0)
    KT = ntk_matrix(net, result.w, X)
    # The PL* argument of the paper needs lambda_min(K) to stay away from 0 during training;
    # its relative change is the quantity that matters, reported beside the Frobenius change.
    min0 = float(np.linalg.eigvalsh(K0)[0])
    minT = float(np.linalg.eigvalsh(KT)[0])
    return {
        "value": float(np.linalg.norm(KT - K0) / np.linalg.norm(K0)),
        "weight_change": float(np.linalg.norm(result.w - w0)),
        "steps": float(result.steps),
        "loss_ratio": result.loss / result.loss0 if result.loss0 > 0.0 else 0.0,
        "converged": float(result.loss <= result.loss0 / options.loss_drop),
        "min_eig_change": abs(minT - min0) / abs(min0) if min0 != 0.0 else math.inf,
        "eta": result.eta,
    }


_MEASURES = {
    "hessian": _measure_hessian,
    "hessian_ball": _measure_hessian_ball,
    "gradient": _measure_gradient,
    "linearization": _measure_linearization,
    "ntk_change": _measure_ntk_change,
}
