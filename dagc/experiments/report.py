"""Reports of a results store: per (architecture, metric) a table over widths, the fitted
slope b of log(value) = a + b log(width) with a bootstrap confidence interval over seeds, a
verdict, a CSV of all cells and log-log plots (design.md section 5).

Cells of different architecture texts (digests) or measurement options never mix: each such
combination is its own group. Everything is deterministic (the bootstrap uses a fixed seed).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .store import Store

DECAY_THRESHOLD = -0.15  # "decays" when the whole CI lies below this slope
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
FEW_SEEDS = 5  # below this many seeds the table warns that the bootstrap CI is rough
CSV_NAME = "cells.csv"
PLOT_NAME = "loglog.png"
JSON_NAME = "summary.json"
_METRIC_ORDER = ("hessian", "hessian_ball", "gradient", "linearization", "ntk_change")
_CSV_COLUMNS = ("arch", "digest", "width", "width_m", "depth", "n_params", "seed", "metric",
                "status", "value", "extras", "error", "options_hash", "options", "elapsed",
                "host", "timestamp", "dagc_version")


@dataclass
class Summary:
    """One (architecture, metric, options) group of cells."""

    arch: str
    digest: str
    metric: str
    options_hash: str
    options: dict
    widths: list[int] = field(default_factory=list)
    width_m: list[int | None] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    n: list[int] = field(default_factory=list)  # finished seeds per width
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    min: list[float] = field(default_factory=list)
    max: list[float] = field(default_factory=list)
    slope: float = math.nan
    intercept: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    verdict: str = ""
    note: str | None = None  # on the paper's width m (a bottleneck)
    excluded: int = 0  # finished cells left out of the fit (value not positive and finite)
    failed: list[dict] = field(default_factory=list)

    @property
    def few_seeds(self) -> bool:
        """The CI resamples so few seeds that it is rough."""
        return 2 <= len(self.seeds) < FEW_SEEDS

    def label(self, show_digest: bool = False) -> str:
        return self.arch + (f"@{self.digest[:8]}" if show_digest else "")

    def to_json(self) -> dict:
        def number(x):
            return None if x is None or not math.isfinite(x) else float(x)

        return dict(
            arch=self.arch, metric=self.metric, slope=number(self.slope),
            ci_low=number(self.ci_low), ci_high=number(self.ci_high),
            intercept=number(self.intercept), verdict=self.verdict, widths=self.widths,
            width_m=self.width_m, seeds=self.seeds, n=self.n,
            mean=[number(x) for x in self.mean], std=[number(x) for x in self.std],
            min=[number(x) for x in self.min], max=[number(x) for x in self.max],
            note=self.note, few_seeds=self.few_seeds, excluded=self.excluded,
            failed=self.failed, digest=self.digest, options_hash=self.options_hash,
            options=self.options)


def load(path: str | Path) -> list[dict]:
    """All cells of a store (read-only; the store must exist)."""
    with Store.open(path, readonly=True) as store:
        return store.rows()


def summarize(rows: Iterable[dict], samples: int = BOOTSTRAP_SAMPLES,
              seed: int = BOOTSTRAP_SEED) -> list[Summary]:
    """Group cells by (architecture, digest, metric, options) and fit each group."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["arch"], row["digest"], row["metric"], row["options_hash"])
        groups.setdefault(key, []).append(row)
    order = {m: i for i, m in enumerate(_METRIC_ORDER)}
    keys = sorted(groups, key=lambda k: (k[0], k[1], order.get(k[2], len(order)), k[2], k[3]))
    return [_summarize(groups[k], samples, seed) for k in keys]


def _summarize(rows: list[dict], samples: int, seed: int) -> Summary:
    first = rows[0]
    s = Summary(arch=first["arch"], digest=first["digest"], metric=first["metric"],
                options_hash=first["options_hash"], options=first["options"])
    ok = [r for r in rows if r["status"] == "ok"]
    s.failed = [dict(width=r["width"], seed=r["seed"], error=r["error"])
                for r in rows if r["status"] != "ok"]
    usable = [r for r in ok if _usable(r["value"])]
    s.excluded = len(ok) - len(usable)
    s.seeds = sorted({r["seed"] for r in ok})
    for width in sorted({r["width"] for r in ok}):
        at = [r for r in ok if r["width"] == width]
        values = np.array([r["value"] for r in at], dtype=float)
        s.widths.append(int(width))
        s.width_m.append(next((r["width_m"] for r in at if r["width_m"] is not None), None))
        s.n.append(len(at))
        s.mean.append(float(np.mean(values)))
        s.std.append(float(np.std(values, ddof=1)) if len(values) > 1 else math.nan)
        s.min.append(float(np.min(values)))
        s.max.append(float(np.max(values)))
    x = np.log([r["width"] for r in usable])
    y = np.log([r["value"] for r in usable])
    if len(set(x.tolist())) >= 2:
        s.slope, s.intercept = _fit(x, y)
        seeds = np.array([r["seed"] for r in usable])
        s.ci_low, s.ci_high = _bootstrap(x, y, seeds, samples, seed)
    s.verdict = _verdict(s)
    s.note = _width_note(s.widths, s.width_m)
    return s


def _usable(value) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least squares y = a + b x; returns (b, a)."""
    xm, ym = x.mean(), y.mean()
    b = float(np.sum((x - xm) * (y - ym)) / np.sum((x - xm) ** 2))
    return b, float(ym - b * xm)


def _bootstrap(x: np.ndarray, y: np.ndarray, seeds: np.ndarray, samples: int,
               rng_seed: int) -> tuple[float, float]:
    """95% percentile interval of the slope, resampling whole seeds with replacement."""
    unique = np.unique(seeds)
    if len(unique) < 2:
        return math.nan, math.nan
    # Per-seed sufficient statistics of least squares: n, sum x, sum y, sum xx, sum xy.
    stats = np.array([[np.sum(seeds == u), x[seeds == u].sum(), y[seeds == u].sum(),
                       (x[seeds == u] ** 2).sum(), (x[seeds == u] * y[seeds == u]).sum()]
                      for u in unique])
    rng = np.random.default_rng(rng_seed)
    counts = rng.multinomial(len(unique), np.full(len(unique), 1.0 / len(unique)), size=samples)
    n, sx, sy, sxx, sxy = (counts @ stats).T
    denominator = n * sxx - sx ** 2
    good = denominator > 1e-9 * np.maximum(n * sxx, 1.0)  # at least two distinct widths
    slopes = (n[good] * sxy[good] - sx[good] * sy[good]) / denominator[good]
    if len(slopes) == 0:
        return math.nan, math.nan
    low, high = np.percentile(slopes, [2.5, 97.5])
    return float(low), float(high)


def _verdict(s: Summary) -> str:
    if not math.isfinite(s.slope):
        return "no fit (needs positive values at two or more widths)"
    if not math.isfinite(s.ci_high):
        return f"slope {s.slope:.2f}, no confidence interval (needs two or more seeds)"
    if s.ci_high < DECAY_THRESHOLD:
        return f"decays like width^{s.slope:.2f}"
    return "does not decay"


def _width_note(widths: list[int], width_m: list[int | None]) -> str | None:
    known = [(w, m) for w, m in zip(widths, width_m, strict=True) if m is not None]
    if len(known) < 2:
        return None
    ms = [m for _, m in known]
    if len(set(ms)) == 1:
        return (f"the paper's width m stays {ms[0]} at every width (a bottleneck): "
                "no transition to linearity is expected")
    if any(b <= a for a, b in zip(ms, ms[1:], strict=False)):
        return "the paper's width m does not grow with width at every step " \
               f"(m = {', '.join(str(m) for m in ms)})"
    return None


# --- output ---------------------------------------------------------------------------------

def format_table(summaries: Sequence[Summary]) -> str:
    """The human-readable report."""
    if not summaries:
        return "no cells in the store"
    names: dict[str, set] = {}
    for s in summaries:
        names.setdefault(s.arch, set()).add(s.digest)
    option_sets = {s.options_hash: s.options for s in summaries}
    lines: list[str] = []
    for s in summaries:
        label = s.label(show_digest=len(names[s.arch]) > 1)
        header = f"{label}  {s.metric}"
        if len(option_sets) > 1:
            header += f"  (options {s.options_hash[:8]})"
        lines.append(header)
        lines.append(f"  {'width':>7} {'m':>7} {'seeds':>5} {'mean':>11} {'std':>10}   "
                     f"{'min .. max'}")
        for i, width in enumerate(s.widths):
            m = "?" if s.width_m[i] is None else str(s.width_m[i])
            lines.append(f"  {width:>7} {m:>7} {s.n[i]:>5} {_num(s.mean[i]):>11} "
                         f"{_num(s.std[i], 2):>10}   {_num(s.min[i])} .. {_num(s.max[i])}")
        if math.isfinite(s.slope):
            ci = (f"95% CI [{s.ci_low:+.3f}, {s.ci_high:+.3f}]" if math.isfinite(s.ci_low)
                  else "95% CI n/a")
            lines.append(f"  slope b = {s.slope:+.3f}   {ci}   -> {s.verdict}")
        else:
            lines.append(f"  -> {s.verdict}")
        if s.note:
            lines.append(f"  note: {s.note}")
        if s.few_seeds and math.isfinite(s.ci_low):
            lines.append(f"  note: the CI resamples only {len(s.seeds)} seeds and is rough; "
                         f"use {FEW_SEEDS} or more for a firmer one")
        if s.excluded:
            lines.append(f"  note: {s.excluded} cell(s) with a value that is not positive and "
                         "finite are left out of the fit")
        for f in s.failed:
            lines.append(f"  FAILED width {f['width']} seed {f['seed']}: {f['error']}")
        lines.append("")
    if len(option_sets) > 1:
        lines.append("options:")
        for digest, options in option_sets.items():
            shown = " ".join(f"{k}={v}" for k, v in options.items())
            lines.append(f"  {digest[:8]}: {shown}")
    failed = sum(len(s.failed) for s in summaries)
    if failed:
        lines.append(f"{failed} failed cell(s); rerun the sweep to retry them")
    return "\n".join(lines).rstrip() + "\n"


def _num(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}g}" if math.isfinite(x) else "-"


def to_json(summaries: Sequence[Summary]) -> list[dict]:
    return [s.to_json() for s in summaries]


def write_csv(rows: Iterable[dict], path: str | Path) -> Path:
    """Every cell, one line each (the architecture text is left out; it is in the store)."""
    path = Path(path)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(_CSV_COLUMNS)
        for row in rows:
            out = []
            for column in _CSV_COLUMNS:
                value = row.get(column)
                if column in ("extras", "options"):
                    value = json.dumps(value, sort_keys=True)
                elif value is None:
                    value = ""
                elif isinstance(value, float):
                    value = repr(value)
                out.append(value)
            writer.writerow(out)
    return path


def write_plot(summaries: Sequence[Summary], path: str | Path) -> Path:
    """Log-log plot: one panel per metric, one line per architecture (mean over seeds, bars
    from min to max), the fitted slope in the legend, a dashed width^-1/2 reference."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    order = {m: i for i, m in enumerate(_METRIC_ORDER)}
    metrics = sorted({s.metric for s in summaries}, key=lambda m: (order.get(m, 99), m))
    columns = min(3, max(1, len(metrics)))
    rows = max(1, math.ceil(len(metrics) / columns))
    figure = Figure(figsize=(5.6 * columns, 5.4 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    names: dict[str, set] = {}
    for s in summaries:
        names.setdefault(s.arch, set()).add(s.digest)
    options = {s.options_hash for s in summaries}
    for index, metric in enumerate(metrics or ["(no cells)"]):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_title(metric)
        axes.set_xlabel("width")
        axes.set_ylabel(metric)
        anchors = []
        for s in (s for s in summaries if s.metric == metric):
            points = [(w, mean, lo, hi) for w, mean, lo, hi
                      in zip(s.widths, s.mean, s.min, s.max, strict=True)
                      if _usable(mean) and _usable(lo)]
            if not points:
                continue
            w, mean, lo, hi = (np.array(v, dtype=float) for v in zip(*points, strict=True))
            label = s.label(len(names[s.arch]) > 1)
            if len(options) > 1:
                label += f" [{s.options_hash[:6]}]"
            if math.isfinite(s.slope):
                label += f"  b={s.slope:+.2f}"
                if math.isfinite(s.ci_low):
                    label += f" [{s.ci_low:+.2f}, {s.ci_high:+.2f}]"
            axes.errorbar(w, mean, yerr=[mean - lo, hi - mean], marker="o", ms=4, capsize=3,
                          label=label)
            anchors.append((w[0], mean[0]))
        if anchors:
            w0 = min(a[0] for a in anchors)
            y0 = float(np.exp(np.mean([np.log(a[1]) for a in anchors])))
            all_w = sorted({w for s in summaries if s.metric == metric for w in s.widths})
            ref = np.array([all_w[0], all_w[-1]], dtype=float)
            axes.plot(ref, y0 * (ref / w0) ** -0.5, "k--", lw=1, label=r"width$^{-1/2}$")
            axes.set_xticks(all_w, [str(w) for w in all_w], minor=False)
            axes.set_xticks([], minor=True)
            # below the panel, so that no entry hides a data point
            axes.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.13),
                        ncols=2, frameon=False)
    figure.savefig(path, dpi=120)
    return path


def write(rows: Sequence[dict], summaries: Sequence[Summary], directory: str | Path) \
        -> list[Path]:
    """Write the CSV, the plot and the JSON summary into `directory` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    summary = directory / JSON_NAME
    summary.write_text(json.dumps(to_json(summaries), indent=1) + "\n")
    return [write_csv(rows, directory / CSV_NAME), write_plot(summaries, directory / PLOT_NAME),
            summary]
