"""Curvature metrics: the spectral norm of the Hessian of the output with respect to the
weights, at w0 (``hessian``) and over a ball around it (``hessian_ball``).

Transition to linearity (docs/design.md) is the statement that ||H_f(w; x)|| = O~(m^-1/2)
uniformly over a ball of fixed radius around w0, while the gradient stays O(1).
"""

from __future__ import annotations

import numpy as np

from ..errors import DagcError
from ..linalg.lanczos import arpack_norm, lanczos_norms
from ..runtime import CompiledNet
from .inputs import generator, sweep_inputs, unit_vector
from .options import (
    Options,
    check_matrix,
    check_method,
    check_seed,
    check_tol,
    check_vector,
)
from .registry import Metric, register

__all__ = ["hessian_norm", "hessian_norms", "dense_hessian"]

# Below this many parameters a dense eigendecomposition is cheaper than a Krylov method (and
# ARPACK needs k < ncv <= P anyway).
_DENSE_LIMIT = 16


def hessian_norm(net: CompiledNet, w: np.ndarray, x: np.ndarray, output: int = 0,
                 tol: float = 1e-6, method: str = "lanczos", seed: int = 0) -> float:
    """Spectral norm (largest |eigenvalue|) of the Hessian of output ``output`` with respect to
    the weights, at weights ``w`` (P,) and input ``x`` (n_in,). See `hessian_norms`."""
    x = check_vector(x, "x", net.n_in)
    if isinstance(output, bool) or not isinstance(output, (int, np.integer)) \
            or not 0 <= output < net.n_out:
        raise DagcError(f"output: expected an integer in [0, {net.n_out}), got {output!r}")
    return float(_norms(net, w, x[None, :], np.array([output]), tol, method, seed)[0])


def hessian_norms(net: CompiledNet, w: np.ndarray, X: np.ndarray, tol: float = 1e-6,
                  method: str = "lanczos", seed: int = 0) -> np.ndarray:
    """Spectral norms of the Hessians of every output at every row of X (n, n_in): (n, n_out).

    ``method``:

    - ``"lanczos"`` (default): Lanczos (`dagc.linalg.lanczos.lanczos_norms`) on
      `CompiledNet.factored_hessian`, all rows at once. Every H v lies in the span of a few
      vectors per neuron (r numbers instead of P), so the Krylov vectors have r entries, each
      step reads every weight matrix twice for the whole batch (matrix-matrix products), and
      the eigenvalues are those of the Hessian itself: nothing is approximated. ``tol`` is
      the relative residual bound at both ends of the spectrum; 0 means machine precision.
    - ``"arpack"``: scipy ``eigsh`` on the plain HVP in R^P, one (input, output) at a time:
      an independent cross-check, several times slower.

    The start vector comes from ``generator(seed, "lanczos")``, so a call is reproducible.
    NaN or inf in ``w`` or ``X`` is a `DagcError` naming the argument.
    """
    X = check_matrix(X, "X", net.n_in)
    outputs = np.tile(np.arange(net.n_out), len(X))
    norms = _norms(net, w, np.repeat(X, net.n_out, axis=0), outputs, tol, method, seed)
    return norms.reshape(len(X), net.n_out)


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


def _norms(net: CompiledNet, w, X: np.ndarray, outputs: np.ndarray, tol, method: str,
           seed: int) -> np.ndarray:
    """Hessian norm of output outputs[i] at X[i], for every row i."""
    w = check_vector(w, "w", net.n_params)
    tol = max(check_tol(tol, "tol"), 10 * np.finfo(np.float64).eps)  # 0: rounding's floor
    check_method(method, "method")
    check_seed(seed)
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


def _arpack_norm(net: CompiledNet, w: np.ndarray, x: np.ndarray, output: int,
                 v0: np.ndarray, tol: float) -> float:
    out = np.empty(net.n_params)  # ARPACK copies each result into its work array: one buffer

    def matvec(v: np.ndarray) -> np.ndarray:
        return net.hvp(w, x, np.ascontiguousarray(v.reshape(-1)), output, out=out)

    return arpack_norm(matvec, net.n_params, v0, tol)


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


_HESSIAN_SLOPE = ("Theorem 3.6 of Zhu, Liu, Belkin (2022): ||H_f(w)|| = O~(m^-1/2) uniformly "
                  "over a ball of fixed radius around w0, for a DAG whose output neurons are "
                  "linear; the bundled networks attain the bound.")

register(Metric(
    name="hessian",
    function=_measure_hessian,
    reads=("inputs", "tol", "hessian_method"),
    definition="mean over inputs x and outputs o of the Hessian spectral norm "
               "||H_{f_o}(w0; x)|| (largest |eigenvalue|, by Lanczos)",
    label="||H_f(w0)||",
    expected_slope=-0.5,
    slope_reason=_HESSIAN_SLOPE,
    fields={"value": "= mean", "mean": "mean of ||H_{f_o}(w0; x)|| over inputs and outputs",
            "max": "its maximum over inputs and outputs"},
))

register(Metric(
    name="hessian_ball",
    function=_measure_hessian_ball,
    reads=("inputs", "radius", "ball_points", "tol", "hessian_method"),
    definition="max of ||H_{f_o}(w; x)|| over ball_points random w = w0 + R u (||u|| = 1, "
               "one draw per point), inputs x and outputs o",
    label="max ||H_f(w)||, ||w - w0|| = R",
    expected_slope=-0.5,
    slope_reason=_HESSIAN_SLOPE + " In P >> 1 dimensions a random direction is nearly "
                 "orthogonal to every structured one, so random points find little more than "
                 "||H(w0)||: this slope tracks hessian's.",
    fields={"value": "= max", "max": "max over points, inputs and outputs",
            "mean": "mean over points, inputs and outputs"},
))
