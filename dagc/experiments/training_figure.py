"""The figure of training loss curves: at one width, one panel per architecture, the loss
L(w_t) of every training cell against the step t on a log axis, coloured by the step's
``lr_factor`` c, so the three regimes of docs/metrics.md (lazy c < 1: monotone; catapult
1 < c < 2: a spike, then convergence; divergent: a blow-up) are seen side by side.

The curves are the ``loss_curve`` field that the training metrics (ntk_change, lin_gap) keep
in each cell's extras; `dagc report` writes the figure when a store has any.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import figures

PLOT_NAME = "loss_curves.png"
VECTOR_NAME = "loss_curves.svg"


@dataclass(frozen=True)
class LossCurve:
    """One training cell's loss after every step (``losses[0]``: at w0)."""

    arch: str
    width: int
    width_m: int | None
    seed: int
    lr_factor: float
    regime: str
    losses: tuple[float, ...]
    train_points: int | None  # n, as the cell recorded it (an older store's did not)


def loss_curves(rows: Sequence[dict], width: int | None = None) -> list[LossCurve]:
    """The loss curves of the finished cells in `rows`, at `width` or, per architecture, at
    its largest width with curves. ntk_change and lin_gap of one cell train the same run:
    each (architecture, width, seed, lr_factor) is kept once."""
    cells = [r for r in rows if r["status"] == "ok"
             and isinstance(r["extras"].get("loss_curve"), list)]
    chosen = {arch: width if width is not None else max(r["width"] for r in cells
                                                          if r["arch"] == arch)
              for arch in sorted({r["arch"] for r in cells})}
    curves: dict[tuple, LossCurve] = {}
    for r in cells:
        if r["width"] != chosen[r["arch"]]:
            continue
        curve = _curve(r)
        curves.setdefault((curve.arch, curve.width, curve.seed, curve.lr_factor), curve)
    return sorted(curves.values(), key=lambda c: (c.arch, c.lr_factor, c.seed))


def _curve(row: dict) -> LossCurve:
    from ..metrics.training import REGIMES  # here: a report need not load the runtime

    extras = row["extras"]
    code = extras.get("regime")
    return LossCurve(arch=row["arch"], width=row["width"], width_m=row.get("width_m"),
                     seed=row["seed"], lr_factor=float(row["options"].get("lr_factor", 0.5)),
                     regime=REGIMES.get(code, "?") if code is not None else "?",
                     losses=tuple(float(v) for v in extras["loss_curve"]),
                     train_points=_training_points(row))


def _training_points(row: dict) -> int | None:
    """n of the cell: recorded, or the train_size option when that is not its default 0."""
    recorded = row["extras"].get("train_points")
    return int(recorded) if recorded is not None else (row["options"].get("train_size") or None)


def figure(curves: Sequence[LossCurve], columns: int = 3):
    """A matplotlib Figure of `curves` (see `loss_curves`): one panel per architecture, loss
    against step with a log loss axis, one line per seed coloured by lr_factor (its legend
    names the regimes the cells recorded), a marker where a curve ends, a caption. Uses the
    Agg canvas; never opens a window."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    archs = list(dict.fromkeys(c.arch for c in curves)) or ["(no loss curves)"]
    columns = min(columns, len(archs))
    rows = math.ceil(len(archs) / columns)
    result = Figure(figsize=(4.6 * columns, 3.4 * rows + 0.9), layout="constrained")
    FigureCanvasAgg(result)
    colours = factor_colours(curves)
    for index, arch in enumerate(archs):
        axes = result.add_subplot(rows, columns, index + 1)
        _panel(axes, arch, [c for c in curves if c.arch == arch], colours)
    result.supxlabel(textwrap.fill(caption(curves), int(result.get_figwidth() * 17)),
                     fontsize=7.5)
    return result


def factor_colours(curves: Sequence[LossCurve]) -> dict[float, tuple]:
    """One colour per lr_factor, ordered from small (dark) to large (bright) steps."""
    from matplotlib import colormaps

    factors = sorted({c.lr_factor for c in curves})
    palette = colormaps["plasma"]
    return {f: palette(0.85 * i / max(len(factors) - 1, 1)) for i, f in enumerate(factors)}


def _panel(axes, arch: str, curves: Sequence[LossCurve], colours: dict) -> None:
    axes.set_yscale("log")
    axes.set_xlabel("gradient-descent step t")
    axes.set_ylabel("training loss L(w_t)")
    widths = sorted({(c.width, c.width_m) for c in curves})
    axes.set_title(arch + "".join(f", width {w}" + (f" (m = {m})" if m else "")
                                  for w, m in widths), fontsize=9)
    labelled: set[float] = set()
    for c in curves:
        positive = [(t, v) for t, v in enumerate(c.losses) if v > 0.0]  # log axis
        if not positive:
            continue
        steps, losses = zip(*positive, strict=True)
        label = None
        if c.lr_factor not in labelled:
            labelled.add(c.lr_factor)
            label = f"c = {c.lr_factor:g}: {_regimes(curves, c.lr_factor)}"
        axes.plot(steps, losses, "-", lw=1.1, color=colours[c.lr_factor], label=label)
        axes.plot(steps[-1:], losses[-1:], "x" if c.regime == "divergent" else "o", ms=4,
                  color=colours[c.lr_factor])
    if labelled:
        axes.legend(fontsize=7.5, frameon=False, title="lr_factor c: regime",
                    title_fontsize=7.5)


def _regimes(curves: Sequence[LossCurve], factor: float) -> str:
    """The regimes the cells of one lr_factor recorded, e.g. "catapult" or "lazy/catapult"."""
    return "/".join(sorted({c.regime for c in curves if c.lr_factor == factor}))


def caption(curves: Sequence[LossCurve]) -> str:
    """What the figure shows, in one paragraph."""
    seeds = len({c.seed for c in curves})
    sizes = sorted({c.train_points for c in curves if c.train_points is not None})
    points = "/".join(map(str, sizes)) if sizes else "2 n_in"
    return (f"Full-batch training loss L(w_t) = 1/(2n) sum_i ||f(w_t; x_i) - y_i||^2 on "
            f"n = {points} training points after every step, {seeds} seed(s) per lr_factor "
            "(one line each); the step is c times "
            "the critical 2n / lambda_max(K_0). c < 1: lazy (the loss falls monotonically); "
            "1 < c < 2: catapult (the loss spikes while lambda_max(K) falls, then converges); "
            "beyond: divergent (x: training stopped at the blow-up). Regimes as each cell "
            "recorded them (docs/metrics.md, field regime).")


def write_figure(curves: Sequence[LossCurve], *paths: str | Path) -> list[Path]:
    """Save `figure(curves)` to each path (format from the suffix: .png, .svg, .pdf)."""
    return figures.save(figure(curves), *paths)
