"""The spectral-density figure (issue 26; docs/metrics.md, Spectra): the Hessian spectrum of
one architecture's output at several widths, from `dagc.measure.hessian_density` (stochastic
Lanczos quadrature).

Two panels share the y axis (density, log scale: the spectrum is a tall peak at 0, where
most of the P eigenvalues lie, with thin tails that hold the curvature):
- left, the eigenvalues lambda themselves: the tails draw in as m grows (transition to
  linearity);
- right, lambda sqrt(m): if ||H|| = O~(m^-1/2) (Theorem 3.6), the spectrum's edge stays put.
  The tails' mass still falls with m: P grows like m^2 and ever more of its eigenvalues
  are near 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import measure
from ..errors import DagcError
from ..metrics.inputs import sweep_inputs
from ..metrics.options import check_int, check_seed
from ..runtime import compile as compile_net
from . import figures

__all__ = ["DensityCurve", "density_curves", "density_figure", "write_density_figure"]

# The Gaussian that smooths each width's quadrature, as a fraction of its largest |node|:
# the same relative resolution at every width, so the shapes compare.
SMOOTHING = 0.02
# The log axis shows this many decades below the highest density: the tails, not the
# quadrature's vanishing far-away weights.
DECADES = 5
_GRID_POINTS = 801


@dataclass(frozen=True)
class DensityCurve:
    """One width's smoothed spectral density of the Hessian of output 0 at (w0, x)."""

    width: int  # the file's width
    m: int  # the paper's width m
    n_params: int
    eigenvalues: np.ndarray  # the grid, in units of lambda
    density: np.ndarray  # integrates to 1 over the grid (the quadrature's weights sum to 1)
    spectral_radius: float  # the largest |Ritz value|: an estimate of ||H||


def density_curves(arch: str | Path, widths: Sequence[int], seed: int = 0, probes: int = 8,
                   steps: int = 60) -> list[DensityCurve]:
    """The smoothed SLQ density of the Hessian of output 0 of ``arch`` (a bundled name or a
    file) at each width, at w0 = net.init(seed) and the first sweep input of ``seed``
    (`dagc.metrics.inputs.sweep_inputs`), from ``probes`` Lanczos runs of ``steps`` steps."""
    if not widths:
        raise DagcError("widths: expected at least one width")
    check_seed(seed)
    check_int(probes, "probes", minimum=1)
    check_int(steps, "steps", minimum=1)
    return [_curve(arch, width, seed, probes, steps) for width in widths]


def _curve(arch: str | Path, width: int, seed: int, probes: int, steps: int) -> DensityCurve:
    net = compile_net(arch, width=width)
    x = sweep_inputs(net, seed, 1)[0]
    nodes, weights = measure.hessian_density(net, net.init(seed), x, probes=probes,
                                             steps=steps, seed=seed)
    radius = float(np.max(np.abs(nodes)))
    grid = np.linspace(-1.1 * radius, 1.1 * radius, _GRID_POINTS)
    density = measure.smoothed_density(nodes, weights, grid, SMOOTHING * radius)
    return DensityCurve(width, net.width, net.n_params, grid, density, radius)


def density_figure(arch: str | Path, widths: Sequence[int], seed: int = 0, probes: int = 8,
                   steps: int = 60):
    """A matplotlib Figure of `density_curves`: left against lambda, right against
    lambda sqrt(m) (the density rescaled so that each curve still integrates to 1); y on a
    log scale. Uses the Agg canvas; never opens a window."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = density_curves(arch, widths, seed, probes, steps)
    result = Figure(figsize=(10, 4.2), layout="constrained")
    FigureCanvasAgg(result)
    raw, scaled = result.subplots(1, 2, sharey=True)
    colours = colormaps["viridis"](np.linspace(0.0, 0.85, len(curves)))
    for curve, colour in zip(curves, colours, strict=True):
        label = f"m = {curve.m} (P = {curve.n_params:,}), ||H|| ~ {curve.spectral_radius:.3g}"
        raw.plot(curve.eigenvalues, curve.density, color=colour, lw=1.3, label=label)
        root = math.sqrt(curve.m)
        scaled.plot(curve.eigenvalues * root, curve.density / root, color=colour, lw=1.3)
    peak = max(float(c.density.max()) for c in curves)
    raw.set_yscale("log")
    raw.set_ylim(peak * 10.0 ** -DECADES, peak * 3)
    raw.set_xlabel(r"eigenvalue $\lambda$ of $H_f(w_0; x)$")
    raw.set_ylabel("spectral density (log scale)")
    raw.set_title(r"against $\lambda$: the spectrum narrows as m grows", fontsize=10)
    scaled.set_xlabel(r"$\lambda \sqrt{m}$")
    scaled.set_title(r"against $\lambda\sqrt{m}$: the edge stays put ($\|H\| = "
                     r"\tilde O(m^{-1/2})$);" "\nthe tails thin: ever more of the P "
                     "eigenvalues are near 0", fontsize=10)
    for axes in (raw, scaled):
        axes.grid(True, which="major", color="0.9", lw=0.6)
    # the right panel's upper corners are empty: the peak is narrower there
    scaled.legend(handles=raw.lines, fontsize=8, loc="upper right", frameon=False)
    name = Path(str(arch)).stem
    result.suptitle(f"{name}: spectral density of the output's Hessian at init, one input\n"
                    f"stochastic Lanczos quadrature, {probes} probes x {steps} steps, seed "
                    f"{seed}, smoothed by a Gaussian of width {SMOOTHING:g} ||H||",
                    fontsize=9.5)
    return result


def write_density_figure(figure, path: str | Path) -> list[Path]:
    """Save ``figure`` as PNG and SVG beside each other: ``path`` with suffixes .png and
    .svg (``density`` or ``density.png`` give density.png and density.svg)."""
    return figures.save(figure, *(Path(path).with_suffix(s) for s in (".png", ".svg")))
