"""Spectra of a network's Hessians beyond the norm: top-k eigenvalues with signs, the trace,
the spectral density (stochastic Lanczos quadrature), each for the whole Hessian or its part
on one block's or one connection's parameters (per-layer curvature); and the Hessian of the
mean-squared loss over a batch, split into its Gauss-Newton and residual parts
(``loss_hessian``).

Every function here works on plain HVPs in R^P (`CompiledNet.hvp`): a restriction to a subset
S of the parameters is the principal submatrix H_SS, whose products are an HVP of a vector
supported on S, read back on S.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import DagcError
from ..linalg.spectrum import (
    Matvec,
    hutchinson_trace,
    lanczos_tridiagonal,
    quadrature,
    top_eigenpairs,
)
from ..runtime import CompiledNet
from .curvature import hessian_operator
from .inputs import generator, regression_set
from .options import Options, check_int, check_seed, check_tol, check_vector
from .registry import Metric, register
from .training import ntk_matrix

__all__ = ["parameter_indices", "hessian_eigs", "hessian_trace",
           "hessian_density", "loss_hessian_parts", "loss_hessian_norms"]


def parameter_indices(net: CompiledNet, block: str | None = None,
                      connection: tuple[str, str] | None = None) -> np.ndarray | None:
    """The indices into w of one block's parameters (every connection into it, and its bias)
    or of one connection (src, dst)'s; None (all of w) when neither is given."""
    if block is not None and connection is not None:
        raise DagcError("block, connection: give at most one restriction")
    if block is None and connection is None:
        return None
    if block is not None:
        pieces = [(o, s) for _, dst, _, o, s in net.layout if dst == block]
        what = f"block: {block!r} has no parameters; blocks with some: "
    else:
        pieces = [(o, s) for src, dst, _, o, s in net.layout if (src, dst) == tuple(connection)]
        what = f"connection: no connection {connection!r}; known: "
    if not pieces:
        known = sorted({str(dst) if block is not None else f"{src}->{dst}"
                        for src, dst, *_ in net.layout})
        raise DagcError(what + ", ".join(known))
    return np.concatenate([np.arange(o, o + int(np.prod(s))) for o, s in pieces])


def hessian_eigs(net: CompiledNet, w: np.ndarray, x: np.ndarray, k: int = 1, output: int = 0,
                 block: str | None = None, connection: tuple[str, str] | None = None,
                 tol: float = 1e-8, seed: int = 0) -> np.ndarray:
    """The ``k`` eigenvalues of largest magnitude of the Hessian of output ``output`` at
    (w, x), with their signs, by decreasing |value| (ARPACK on HVPs; optionally of the part
    on one block's or one connection's parameters)."""
    check_int(k, "k", minimum=1)
    matvec, size = hessian_operator(net, w, x, output,
                                    parameter_indices(net, block, connection))
    v0 = generator(seed, "lanczos").standard_normal(size)
    return top_eigenpairs(matvec, size, k, v0, check_tol(tol, "tol"))[0]


def hessian_trace(net: CompiledNet, w: np.ndarray, x: np.ndarray, output: int = 0,
                  samples: int = 64, block: str | None = None,
                  connection: tuple[str, str] | None = None, seed: int = 0
                  ) -> tuple[float, float]:
    """(estimate, standard error) of tr(H) for the Hessian of output ``output`` at (w, x),
    by Hutchinson's estimator with ``samples`` Rademacher probes
    (`dagc.linalg.spectrum.hutchinson_trace`); optionally of one block's or connection's
    part. The error falls like samples^-1/2; tr(H) is the P-fold average curvature that a
    random direction sees (``linearization``'s random directions)."""
    check_int(samples, "samples", minimum=1)
    check_seed(seed)
    matvec, size = hessian_operator(net, w, x, output,
                                    parameter_indices(net, block, connection))
    return hutchinson_trace(matvec, size, samples, generator(seed, "trace"))


def hessian_density(net: CompiledNet, w: np.ndarray, x: np.ndarray, output: int = 0,
                    probes: int = 4, steps: int = 40, block: str | None = None,
                    connection: tuple[str, str] | None = None, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Spectral density of the Hessian of output ``output`` at (w, x) by stochastic Lanczos
    quadrature: (nodes, weights), ``probes`` Lanczos runs of ``steps`` steps from Gaussian
    starts, each run's Gauss quadrature weighted 1 / probes (weights sum to 1).

    sum_k weights_k g(nodes_k) estimates tr(g(H)) / size, exactly in expectation for
    polynomials of degree < 2 steps; `dagc.linalg.spectrum.smoothed_density` turns it into
    a curve. Optionally of one block's or connection's part.
    """
    check_int(probes, "probes", minimum=1)
    check_int(steps, "steps", minimum=1)
    check_seed(seed)
    matvec, size = hessian_operator(net, w, x, output,
                                    parameter_indices(net, block, connection))
    rng = generator(seed, "density")
    nodes, weights = [], []
    for _ in range(probes):
        run_nodes, run_weights = quadrature(
            *lanczos_tridiagonal(matvec, rng.standard_normal(size), min(steps, size)))
        nodes.append(run_nodes)
        weights.append(run_weights / probes)
    return np.concatenate(nodes), np.concatenate(weights)


# --------------------------------------------------------------------------------------------
# The loss Hessian


def loss_hessian_parts(net: CompiledNet, w: np.ndarray, X: np.ndarray, Y: np.ndarray
                       ) -> tuple[np.ndarray, Matvec, Matvec]:
    """The Hessian of L(w) = 1/(2n) sum_i |f(X[i]) - Y[i]|^2 in its two parts, as
    (J (n n_out, P), Gauss-Newton matvec J^T J v / n, residual matvec sum_io r_io H_io v / n)
    with r = f(X) - Y."""
    w = check_vector(w, "w", net.n_params)
    n = len(X)
    J = net.jacobian(w, X).reshape(n * net.n_out, net.n_params)
    residuals = net.forward(w, X) - Y
    out = np.empty(net.n_params)

    def gauss_newton(v: np.ndarray) -> np.ndarray:
        return J.T @ (J @ v.reshape(-1)) / n

    def residual(v: np.ndarray) -> np.ndarray:
        v = np.ascontiguousarray(v.reshape(-1))
        total = np.zeros(net.n_params)
        for i in range(n):
            for o in range(net.n_out):
                total += residuals[i, o] * net.hvp(w, X[i], v, o, out=out)
        return total / n

    return J, gauss_newton, residual


def loss_hessian_norms(net: CompiledNet, w: np.ndarray, X: np.ndarray, Y: np.ndarray,
                       tol: float = 1e-6, seed: int = 0) -> dict[str, float]:
    """Spectral norms of the mean-squared loss's Hessian over the batch (X, Y) and of its
    parts: {"gauss_newton": lambda_max(K) / n from the structured NTK K (J^T J / n and
    J J^T / n = K / n share their non-zero eigenvalues), "residual": ||sum_i r_i H_i|| / n,
    "full": ||J^T J / n + sum_i r_i H_i / n||}, the last two by ARPACK on HVPs."""
    tol = check_tol(tol, "tol")
    J, gauss_newton, residual = loss_hessian_parts(net, w, X, Y)
    K = ntk_matrix(net, w, X)
    rng = generator(seed, "lanczos")
    v0 = rng.standard_normal(net.n_params)

    def norm(matvec: Callable[[np.ndarray], np.ndarray]) -> float:
        return float(abs(top_eigenpairs(matvec, net.n_params, 1, v0, tol)[0][0]))

    return {"gauss_newton": float(np.linalg.eigvalsh(K)[-1] / len(X)),
            "residual": norm(residual),
            "full": norm(lambda v: gauss_newton(v) + residual(v))}


def _measure_loss_hessian(net: CompiledNet, seed: int, options: Options) -> dict[str, float]:
    # ntk_change's training set: train_size 0 means 2 n_in (see Options)
    X, Y = regression_set(net, seed, options.train_size or 2 * net.n_in)
    norms = loss_hessian_norms(net, net.init(seed), X, Y, tol=options.tol, seed=seed)
    return {"value": norms["full"], **norms}


register(Metric(
    name="loss_hessian",
    function=_measure_loss_hessian,
    reads=("train_size", "tol"),
    definition="spectral norm of the Hessian at w0 of the mean-squared loss "
               "L = 1/(2n) sum_i |f(x_i) - y_i|^2 over ntk_change's regression set, with its "
               "Gauss-Newton part J^T J / n and residual part sum_i r_i H_{f}(x_i) / n "
               "separately",
    label="||H_L(w0)||",
    expected_slope=0.0,
    slope_reason="The Gauss-Newton part's norm is lambda_max(K) / n, which converges to the "
                 "infinite-width kernel's as m grows; the residual part is a sum of output "
                 "Hessians with O(1) residuals, O~(m^-1/2) (Theorem 3.6). The loss Hessian "
                 "that sharpness and edge-of-stability work measures is the NTK's, plus a "
                 "vanishing correction.",
    fields={"value": "= full", "gauss_newton": "lambda_max(J^T J / n) = lambda_max(K) / n",
            "residual": "||sum_i sum_o r_io H_{f_o}(x_i)|| / n, r = f(X) - Y",
            "full": "||J^T J / n + sum_i sum_o r_io H_{f_o}(x_i) / n||"},
))
