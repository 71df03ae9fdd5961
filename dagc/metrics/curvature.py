"""Curvature metrics: the spectral norm of the Hessian of the output with respect to the
weights, at w0 (``hessian``) and over a ball around it (``hessian_ball``, by projected
ascent); the same for the pre-activations of hidden neurons (``hessian_hidden``, Theorem 3.8)
and of the outputs (``hessian_preact``).

Transition to linearity (docs/design.md) is the statement that ||H_f(w; x)|| = O~(m^-1/2)
uniformly over a ball of fixed radius around w0, while the gradient stays O(1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import DagcError
from ..linalg.lanczos import LanczosBasis, arpack_norm, lanczos_norms, lanczos_top_pair
from ..linalg.spectrum import Matvec
from ..runtime import CompiledNet, FactoredHessian
from .inputs import generator, sweep_inputs, unit_vector
from .options import (
    TRAVEL,
    Options,
    check_int,
    check_matrix,
    check_method,
    check_number,
    check_seed,
    check_tol,
    check_vector,
)
from .registry import Metric, register

__all__ = ["hessian_norm", "hessian_norms", "dense_hessian", "hessian_operator", "top_curvature",
           "eigenvalue_gradient", "project_to_ball", "BallAscent", "ball_ascent", "ball_radius",
           "hidden_blocks", "hidden_hessian_norms", "preactivation_norms"]

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
    return _factored_norms(net.factored_hessian(w, X, outputs), rng, tol)


def _factored_norms(operator: FactoredHessian, rng: np.random.Generator,
                    tol: float) -> np.ndarray:
    """Lanczos norms of every row of ``operator``, all rows from one start drawn from rng."""
    start = np.tile(rng.standard_normal(operator.size), (operator.rows, 1))
    return lanczos_norms(operator, start, tol)


def _arpack_norm(net: CompiledNet, w: np.ndarray, x: np.ndarray, output: int,
                 v0: np.ndarray, tol: float) -> float:
    out = np.empty(net.n_params)  # ARPACK copies each result into its work array: one buffer

    def matvec(v: np.ndarray) -> np.ndarray:
        return net.hvp(w, x, np.ascontiguousarray(v.reshape(-1)), output, out=out)

    return arpack_norm(matvec, net.n_params, v0, tol)


# --------------------------------------------------------------------------------------------
# The supremum over the ball: projected ascent on the top eigenvalue

# Central-difference step of v^T (dH/dw) v along a unit v: the truncation error
# h^2 |d^4 f| / 6 and the rounding error eps |H v| / h balance near eps^(1/3) ~ 6e-6 on
# weights of order one; 1e-5 keeps both near 1e-10 relative.
THIRD_DERIVATIVE_STEP = 1e-5

# The ascent's first step length, as a fraction of R; halved after every rejected step.
_FIRST_STEP = 0.5

# Relative tolerance of the eigenpairs the ascent compares and follows (its trial points and
# starts; never looser than the caller's tol). Each start's end point is evaluated again at
# the caller's tol, and only those values are reported: a looser inner tolerance only
# decides near-ties between trial steps, well inside the ascent's own step-halving
# granularity, and makes each trial's Lanczos run several times shorter.
ASCENT_TOL = 1e-3


def hessian_operator(net: CompiledNet, w: np.ndarray, x: np.ndarray, output: int = 0,
                     indices: np.ndarray | None = None) -> tuple[Matvec, int]:
    """(matvec, size): the Hessian of output ``output`` at (w, x), or its principal submatrix
    on ``indices`` (see `dagc.metrics.spectra.parameter_indices`)."""
    w = check_vector(w, "w", net.n_params)
    x = check_vector(x, "x", net.n_in)
    out = np.empty(net.n_params)
    if indices is None:
        return (lambda v: net.hvp(w, x, np.ascontiguousarray(v.reshape(-1)), output,
                                  out=out).copy()), net.n_params
    full = np.zeros(net.n_params)

    def restricted(v: np.ndarray) -> np.ndarray:
        full[indices] = v.reshape(-1)
        return net.hvp(w, x, full, output, out=out)[indices]

    return restricted, len(indices)


def top_curvature(net: CompiledNet, w: np.ndarray, x: np.ndarray, output: int, tol: float,
                  v0: np.ndarray) -> tuple[float, np.ndarray]:
    """(lambda, v): the Hessian's eigenvalue of largest magnitude, with its sign, and its unit
    eigenvector, at (w, x) for output ``output`` (`dagc.linalg.lanczos.lanczos_top_pair` on
    HVPs from the start ``v0``; ``tol`` as in `hessian_norms`)."""
    return _top_curvature(net, w, x, output, tol, v0, None)[:2]


def _top_curvature(net: CompiledNet, w: np.ndarray, x: np.ndarray, output: int, tol: float,
                   v0: np.ndarray, basis: LanczosBasis | None
                   ) -> tuple[float, np.ndarray, np.ndarray]:
    """`top_curvature` and the warm start for a nearby point (`lanczos_top_pair`)."""
    w = check_vector(w, "w", net.n_params)
    x = check_vector(x, "x", net.n_in)
    out = np.empty(net.n_params)  # Lanczos reads each product before asking for the next
    return lanczos_top_pair(lambda v: net.hvp(w, x, v, output, out=out), v0, tol,
                            basis=basis)


def eigenvalue_gradient(net: CompiledNet, w: np.ndarray, x: np.ndarray, output: int,
                        v: np.ndarray) -> np.ndarray:
    """d lambda / dw = v^T (dH/dw) v for a simple eigenvalue lambda of H(w) with unit
    eigenvector v, as the central difference (H(w + h v) v - H(w - h v) v) / (2 h) of two
    HVPs (the third derivatives commute, so the derivative of H v along v is this gradient),
    h = `THIRD_DERIVATIVE_STEP`."""
    h = THIRD_DERIVATIVE_STEP
    return (net.hvp(w + h * v, x, v, output) - net.hvp(w - h * v, x, v, output)) / (2 * h)


def project_to_ball(w: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """The nearest point to w in the ball ||w - center|| <= radius."""
    offset = w - center
    distance = float(np.linalg.norm(offset))
    if distance <= radius:
        return w
    return center + offset * (radius / distance)


@dataclass(frozen=True)
class BallAscent:
    """Outcome of `ball_ascent`: the best |lambda_top| found, where (``w``), and
    |lambda_top(H(w0))| (``at_center``)."""

    value: float
    w: np.ndarray
    at_center: float


def ball_ascent(net: CompiledNet, w0: np.ndarray, x: np.ndarray, output: int = 0,
                radius: float = 1.0, steps: int = 8, tol: float = 1e-6,
                seed: int = 0) -> BallAscent:
    """sup ||H_{f_o}(w; x)|| over ||w - w0|| <= R, searched by projected gradient ascent on
    |lambda_top(H(w))| from five starts: w0, w0 +- R v (v the top eigenvector at w0) and
    w0 +- R g / |g| (g the gradient of the output).

    Step rule: from each start, a step of length eta along the normalized gradient of
    |lambda_top| (`eigenvalue_gradient`), projected back onto the ball; a step is kept only
    when |lambda_top| grows, else eta halves. eta starts at R / 2; ``steps`` trial steps per
    start. The steps compare eigenvalues at `ASCENT_TOL` (or ``tol`` if looser); each start's
    end point is evaluated again at ``tol``, and the result is the largest of those and
    |lambda_top(H(w0))|: never below the value at w0, and every point where |lambda_top| is
    evaluated lies in the ball (the central differences reach THIRD_DERIVATIVE_STEP beyond
    it). R = 0 (training that does not move, for R = travel) gives back |lambda_top(H(w0))|.
    """
    w0 = check_vector(w0, "w0", net.n_params)
    x = check_vector(x, "x", net.n_in)
    check_int(steps, "steps", minimum=0)
    radius = check_number(radius, "radius", 0.0, strict=False)
    tol = max(check_tol(tol, "tol"), 10 * np.finfo(np.float64).eps)
    basis = LanczosBasis(net.n_params)  # shared by the ascent's many eigenpair runs

    def top(w: np.ndarray, tol: float, v0: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        return _top_curvature(net, w, x, output, tol, v0, basis)

    def ascent(w: np.ndarray, v: np.ndarray) -> np.ndarray:
        return eigenvalue_gradient(net, w, x, output, v)

    lam, v, warm = top(w0, tol, generator(seed, "lanczos").standard_normal(net.n_params))
    g = net.jacobian(w0, x[None, :])[0, output]
    g_norm = float(np.linalg.norm(g))
    directions = [v, -v] + ([g / g_norm, -g / g_norm] if g_norm > 0 else [])
    inner = max(tol, ASCENT_TOL)
    starts = [(w0, (lam, v, warm))] + [
        (start, top(start, inner, warm))
        for start in (project_to_ball(w0 + radius * u, w0, radius) for u in directions)]
    best = (abs(lam), w0)
    for start, pair in starts:
        end, end_warm = _ascend(lambda w, v0: top(w, inner, v0), ascent, w0, start, pair,
                                radius, steps)
        found = abs(top(end, tol, end_warm)[0])
        best = max(best, (found, end), key=lambda result: result[0])
    return BallAscent(best[0], best[1], abs(lam))


def _ascend(top: Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray, np.ndarray]],
            ascent: Callable[[np.ndarray, np.ndarray], np.ndarray], w0: np.ndarray,
            w: np.ndarray, pair: tuple[float, np.ndarray, np.ndarray], radius: float,
            steps: int) -> tuple[np.ndarray, np.ndarray]:
    """`ball_ascent` from one start w, whose top eigenpair and warm start are ``pair``;
    ``top(w, v0)``: the same at w from the start v0, ``ascent(w, v)``: the gradient of the
    eigenvalue. Returns the point of the largest |lambda_top| found and its warm start."""
    lam, v, warm = pair
    eta = _FIRST_STEP * radius
    for _ in range(steps):
        direction = np.sign(lam) * ascent(w, v)
        length = float(np.linalg.norm(direction))
        if not length > 0:
            break
        trial = project_to_ball(w + (eta / length) * direction, w0, radius)
        trial_lam, trial_v, trial_warm = top(trial, warm)
        if abs(trial_lam) > abs(lam):
            w, lam, v, warm = trial, trial_lam, trial_v, trial_warm
        else:
            eta /= 2
    return w, warm


# --------------------------------------------------------------------------------------------
# Pre-activation Hessians (Theorem 3.8)


def hidden_blocks(net: CompiledNet) -> list[str]:
    """The hidden blocks Theorem 3.8 covers: computed, not outputs, outside layers 0 and 1."""
    return [b.name for b in net.ir.blocks
            if not b.is_input and not b.is_output and b.layer >= 2]


def preactivation_norms(net: CompiledNet, w: np.ndarray, X: np.ndarray, blocks: list[str],
                        neurons: np.ndarray, tol: float = 1e-6, seed: int = 0) -> np.ndarray:
    """||H_{z}(w; x)|| for the pre-activation z of neuron ``neurons[j]`` of block
    ``blocks[j]``, at every row x of X: shape (n, len(blocks)), all by batched Lanczos on
    `CompiledNet.preactivation_hessian`."""
    X = check_matrix(X, "X", net.n_in)
    w = check_vector(w, "w", net.n_params)
    tol = max(check_tol(tol, "tol"), 10 * np.finfo(np.float64).eps)
    rows = np.repeat(X, len(blocks), axis=0)
    operator = net.preactivation_hessian(w, rows, list(blocks) * len(X),
                                         np.tile(np.asarray(neurons, np.int64), len(X)))
    norms = _factored_norms(operator, generator(seed, "lanczos"), tol)
    return norms.reshape(len(X), len(blocks))


def hidden_hessian_norms(net: CompiledNet, w: np.ndarray, X: np.ndarray, per_block: int = 4,
                         tol: float = 1e-6, seed: int = 0) -> dict[str, np.ndarray]:
    """{block: (n, k) norms of the Hessians of k sampled neurons' pre-activations at the rows
    of X} for every block of `hidden_blocks`; k = min(per_block, the block's size), the
    neurons drawn without replacement from ``generator(seed, "hidden_neurons")``."""
    check_int(per_block, "per_block", minimum=1)
    names = hidden_blocks(net)
    if not names:
        raise DagcError(f"hessian_hidden: {net.name} has no hidden block outside layers 0 "
                        "and 1")
    rng = generator(seed, "hidden_neurons")
    sizes = {b.name: int(b.size) for b in net.ir.blocks}
    sampled = [(name, np.sort(rng.choice(sizes[name], min(per_block, sizes[name]),
                                         replace=False))) for name in names]
    blocks = [name for name, chosen in sampled for _ in chosen]
    neurons = np.concatenate([chosen for _, chosen in sampled])
    norms = preactivation_norms(net, w, X, blocks, neurons, tol, seed)
    columns = np.cumsum([0] + [len(chosen) for _, chosen in sampled])
    return {name: norms[:, columns[k]:columns[k + 1]] for k, (name, _) in enumerate(sampled)}


def output_preactivation_norms(net: CompiledNet, w: np.ndarray, X: np.ndarray,
                               tol: float = 1e-6, seed: int = 0) -> np.ndarray:
    """||H_{z_o}(w; x)|| for the pre-activation z_o of every output o (before the output's
    activation; the output itself when that is the identity): shape (n, n_out)."""
    blocks, neurons = [], []
    for block in net.ir.outputs:  # column order
        blocks += [block.name] * int(block.size)
        neurons += range(int(block.size))
    return preactivation_norms(net, w, X, blocks, np.array(neurons), tol, seed)


# --------------------------------------------------------------------------------------------
# The metrics


def ball_radius(net: CompiledNet, seed: int, options: Options) -> float:
    """The radius R of a cell: ``options.radius``, or for ``"travel"`` the distance gradient
    descent travels from w0 = net.init(seed) under the cell's training options
    (`dagc.metrics.training.travel_distance`, ntk_change's weight_change)."""
    if options.radius == TRAVEL:
        # Imported here: importing the training family at the top would register its
        # metrics before this family's, and the registry's order is the docs' and the CLI's.
        from .training import travel_distance
        return travel_distance(net, seed, options)
    return options.radius


def _measure_hessian(net: CompiledNet, seed: int, options: Options) -> dict[str, float]:
    norms = hessian_norms(net, net.init(seed), sweep_inputs(net, seed, options.inputs),
                          tol=options.tol, method=options.hessian_method, seed=seed)
    return {"value": float(norms.mean()), "mean": float(norms.mean()), "max": float(norms.max())}


def _measure_hessian_ball(net: CompiledNet, seed: int, options: Options) -> dict[str, float]:
    w0 = net.init(seed)
    X = sweep_inputs(net, seed, options.inputs)
    radius = ball_radius(net, seed, options)
    rng = generator(seed, "ball")
    random = np.array([hessian_norms(net, w0 + radius * unit_vector(rng, net.n_params),
                                     X, tol=options.tol, method=options.hessian_method,
                                     seed=seed)
                       for _ in range(options.ball_points)])
    ascents = [ball_ascent(net, w0, x, o, radius, options.ascent_steps, options.tol, seed)
               for x in X for o in range(net.n_out)]
    found = np.array([a.value for a in ascents])
    best, random_max = max(float(found.max()), float(random.max())), float(random.max())
    return {"value": best, "ascent_mean": float(found.mean()),
            "at_w0": float(np.mean([a.at_center for a in ascents])),
            "gain": best / random_max if random_max > 0 else 1.0, "max": random_max,
            "mean": float(random.mean()), "radius": radius}


def _measure_hessian_hidden(net: CompiledNet, seed: int, options: Options) -> dict[str, float]:
    per_block = hidden_hessian_norms(net, net.init(seed), sweep_inputs(net, seed, options.inputs),
                                     options.hidden_neurons, options.tol, seed)
    means = {name: float(norms.mean()) for name, norms in per_block.items()}
    deepest = max(means, key=lambda name: net.layers[name])
    shallowest = min(means, key=lambda name: net.layers[name])
    return {"value": max(means.values()),
            "mean": float(np.mean(np.concatenate([n.ravel() for n in per_block.values()]))),
            "deepest": means[deepest], "shallowest": means[shallowest],
            "blocks": float(len(means))}


def _measure_hessian_preact(net: CompiledNet, seed: int, options: Options) -> dict[str, float]:
    norms = output_preactivation_norms(net, net.init(seed),
                                       sweep_inputs(net, seed, options.inputs), options.tol, seed)
    return {"value": float(norms.mean()), "mean": float(norms.mean()), "max": float(norms.max())}


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
    reads=("inputs", "radius", "ball_points", "ascent_steps", "tol", "hessian_method"),
    definition="sup of ||H_{f_o}(w; x)|| over ||w - w0|| <= R found by projected ascent on "
               "|lambda_top| from five starts (w0, w0 +- R v_top, w0 +- R g / |g|) and by "
               "ball_points random points w0 + R u, maximized over inputs x and outputs o",
    label="sup ||H_f(w)||, ||w - w0|| <= R",
    expected_slope=-0.5,
    slope_reason=_HESSIAN_SLOPE + " Random points alone find little more than ||H(w0)|| (in "
                 "P >> 1 dimensions a random direction is nearly orthogonal to every "
                 "structured one); the ascent finds a larger supremum, which still decays.",
    fields={"value": "the largest norm found: max of the ascent's and the random points'",
            "ascent_mean": "mean over inputs and outputs of the ascent's best norm",
            "at_w0": "mean over inputs and outputs of ||H_{f_o}(w0; x)|| (Lanczos with its "
                     "eigenvector, the ascent's first start)",
            "gain": "value / max: the ascent's gain over the random points (1 when both "
                    "are 0)",
            "max": "max over random points, inputs and outputs",
            "mean": "mean over random points, inputs and outputs",
            "radius": "R, the number: the radius option, or for travel the distance "
                      "ntk_change's training travels (its weight_change)"},
))

_PREACT_SLOPE = ("Theorem 3.8 of Zhu, Liu, Belkin (2022): the Hessian of a neuron's "
                 "pre-activation with respect to all weights is O~(m^-1/2) for every neuron "
                 "outside layers 0 and 1, whatever the activations after it.")

register(Metric(
    name="hessian_hidden",
    function=_measure_hessian_hidden,
    reads=("inputs", "hidden_neurons", "tol"),
    definition="largest over the hidden blocks outside layers 0 and 1 of the mean, over "
               "hidden_neurons sampled neurons and the inputs, of ||H_{z_v}(w0; x)||, "
               "z_v the neuron's pre-activation",
    label="max_B mean ||H_{z_v}(w0)||",
    expected_slope=-0.5,
    slope_reason=_PREACT_SLOPE,
    fields={"value": "the largest block mean", "mean": "mean over every sampled neuron and "
                                                        "input",
            "deepest": "the block mean of the deepest such block",
            "shallowest": "the block mean of the shallowest such block",
            "blocks": "how many blocks were sampled"},
))

register(Metric(
    name="hessian_preact",
    function=_measure_hessian_preact,
    reads=("inputs", "tol"),
    definition="mean over inputs x and outputs o of ||H_{z_o}(w0; x)||, z_o the output's "
               "pre-activation (the output itself when its activation is the identity)",
    label="||H_{z_out}(w0)||",
    expected_slope=-0.5,
    slope_reason=_PREACT_SLOPE + " With a non-linear output (softout) the output's own "
                 "Hessian keeps an O(1) term phi''(z) grad z grad z^T, while its "
                 "pre-activation's still decays.",
    fields={"value": "= mean", "mean": "mean over inputs and outputs",
            "max": "max over inputs and outputs"},
))
