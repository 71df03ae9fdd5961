"""Reports of sweep results: per (architecture, metric, options) group a table over widths, the
slope b of log(metric) = a + b log(x) with a seed-cluster t-interval, lack of fit, an optional
log-corrected fit, a verdict against the exponent theory expects, and the files (CSV of every
cell, JSON summary, text table, figure as PNG and SVG). docs/reporting.md explains every number.

x is the paper's width m (`width_m` of a cell) by default, or the file's `width`. Cells of
different architecture texts (digests) or measurement options never mix. Everything is
deterministic.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import DagcError
from ..untrusted import check_regular
from . import figures, fit, training_figure
from .fit import Estimate
from .store import Store

X_AXES = ("m", "width")
# The exponents a sweep tells apart (0, -1/2, -1) are this far apart: an interval that holds
# the expected exponent and also one this far from it is "inconclusive".
NEIGHBOUR_STEP = 0.5
CSV_NAME = "cells.csv"
TABLE_NAME = "report.txt"
SLOPES_NAME = "slopes.md"
JSON_NAME = "summary.json"
PLOT_NAME = "loglog.png"
VECTOR_NAME = "loglog.svg"
SOURCE_NAME = "source.json"  # what a report directory was made from (see `check_directory`)
_CSV_COLUMNS = ("arch", "digest", "width", "width_m", "depth", "n_params", "seed", "metric",
                "status", "value", "extras", "error", "options_hash", "options", "elapsed",
                "host", "timestamp", "dagc_version")
_CSV_INTEGERS = ("width", "width_m", "depth", "n_params", "seed")
_CSV_FLOATS = ("value", "elapsed")


@dataclass(frozen=True)
class MetricInfo:
    """What the report needs of a metric: axis label, definition, theory's exponent."""

    label: str
    definition: str
    expected_slope: float | None


def metric_info(name: str) -> MetricInfo:
    """The registry's label, definition and expected slope of metric `name` (none for an
    unknown metric: its values are still fitted, without a theory to compare with)."""
    from ..metrics import METRICS  # the package import registers every family's metrics

    metric = METRICS.get(name)
    if metric is None:
        return MetricInfo(name, name, None)
    return MetricInfo(metric.label, metric.definition, metric.expected_slope)


def _metric_order(name: str) -> tuple[int, str]:
    """The registry's order; metrics it does not know (an older store's) last."""
    from ..metrics import METRICS

    names = list(METRICS)
    return (names.index(name) if name in names else len(names), name)


@dataclass
class Summary:
    """One (architecture, metric, options) group of cells, fitted against `x_name`."""

    arch: str
    digest: str
    metric: str
    options_hash: str
    options: dict
    x_name: str = "m"
    widths: list[int] = field(default_factory=list)
    width_m: list[int | None] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    n: list[int] = field(default_factory=list)  # finished seeds per width
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    min: list[float] = field(default_factory=list)
    max: list[float] = field(default_factory=list)
    geo_mean: list[float] = field(default_factory=list)  # exp(mean log value): what is fitted
    geo_low: list[float] = field(default_factory=list)  # its 95% t-interval over seeds
    geo_high: list[float] = field(default_factory=list)
    slope: Estimate = fit.NO_ESTIMATE
    intercept: float = math.nan
    expected_slope: float | None = None
    log_margin: float = 0.0  # what a factor log(x)^(+-1) adds to the slope over these widths
    local_slopes: list[float] = field(default_factory=list)
    slope_drift: Estimate = fit.NO_ESTIMATE
    log_corrected: fit.LogCorrected | None = None
    verdict: str = ""
    note: str | None = None  # on the paper's width m (a bottleneck)
    excluded: int = 0  # finished cells left out of the fit (value not positive and finite)
    train_points: list[int] = field(default_factory=list)  # n the training cells recorded
    failed: list[dict] = field(default_factory=list)

    @property
    def x_values(self) -> list[int | None]:
        """The x of each width: m or the file's width."""
        return list(self.width_m) if self.x_name == "m" else list(self.widths)

    def label(self, show_digest: bool = False) -> str:
        return self.arch + (f"@{self.digest[:8]}" if show_digest else "")

    def to_json(self) -> dict:
        numbers = _json_numbers
        return dict(
            arch=self.arch, metric=self.metric, x=self.x_name, x_values=self.x_values,
            widths=self.widths, width_m=self.width_m, seeds=self.seeds, n=self.n,
            slope=_json_number(self.slope.value), ci_low=_json_number(self.slope.low),
            ci_high=_json_number(self.slope.high), dof=max(self.slope.seeds - 1, 0),
            interval=f"{fit.CONFIDENCE:.0%} t-interval over per-seed slopes",
            intercept=_json_number(self.intercept), expected_slope=self.expected_slope,
            log_margin=_json_number(self.log_margin), verdict=self.verdict,
            mean=numbers(self.mean), std=numbers(self.std), min=numbers(self.min),
            max=numbers(self.max), geo_mean=numbers(self.geo_mean),
            geo_ci_low=numbers(self.geo_low), geo_ci_high=numbers(self.geo_high),
            local_slopes=numbers(self.local_slopes), slope_drift=self.slope_drift.to_json(),
            log_corrected=None if self.log_corrected is None else dict(
                slope=self.log_corrected.slope.to_json(),
                log_power=self.log_corrected.log_power.to_json()),
            note=self.note, excluded=self.excluded, train_points=self.train_points,
            failed=self.failed, digest=self.digest,
            options_hash=self.options_hash, options=self.options)


# --- reading ------------------------------------------------------------------------------

def load(path: str | Path) -> list[dict]:
    """All cells of a results store, or of a CSV that `write_csv` wrote (read-only)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return read_csv(path)
    with Store.open(path, readonly=True) as store:
        return store.rows()


def read_csv(path: str | Path) -> list[dict]:
    """The cells of a CSV written by `write_csv`, typed as `Store.rows` returns them."""
    path = Path(path)
    check_regular(path)  # a FIFO would block the open
    try:
        with open(path, newline="") as handle:
            table = list(csv.DictReader(handle))
    except OSError as err:
        raise DagcError(f"{path}: cannot read the cells: {err.strerror or err}") from None
    missing = set(_CSV_COLUMNS) - set(table[0] if table else _CSV_COLUMNS)
    if missing:
        raise DagcError(f"{path}: not a dagc cells CSV (no column {sorted(missing)[0]})")
    return [_typed(row, path, line) for line, row in enumerate(table, start=2)]


def _typed(row: dict, path: Path, line: int) -> dict:
    try:
        for column in _CSV_INTEGERS:
            row[column] = int(row[column]) if row[column] else None
        for column in _CSV_FLOATS:
            row[column] = float(row[column]) if row[column] else None
        row["extras"] = json.loads(row["extras"] or "{}")
        row["options"] = json.loads(row["options"] or "{}")
    except ValueError as err:
        raise DagcError(f"{path}: line {line}: {err}") from None
    row["error"] = row["error"] or None
    if row["value"] is None and row["status"] == "ok":
        row["value"] = math.nan
    return row


def select(rows: Sequence[dict], archs: Sequence[str] | None = None,
           metrics: Sequence[str] | None = None) -> list[dict]:
    """The rows of the given architectures and metrics (all when None); a name that no row
    has is an error naming it."""
    for option, wanted, column in (("--arch", archs, "arch"), ("--metric", metrics, "metric")):
        present = sorted({row[column] for row in rows})
        for name in wanted or ():
            if name not in present:
                close = difflib.get_close_matches(name, present, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise DagcError(f"{option}: no cells of {name!r} ({hint}present: "
                                f"{', '.join(present) or 'none'})")
    return [row for row in rows if (not archs or row["arch"] in archs)
            and (not metrics or row["metric"] in metrics)]


# --- fitting ------------------------------------------------------------------------------

def summarize(rows: Iterable[dict], x: str = "m", log_corrected: bool = False) \
        -> list[Summary]:
    """Group cells by (architecture, digest, metric, options) and fit each group against x
    ("m": the paper's width, "width": the file's); `log_corrected` adds the fit of
    metric ~ x^b log(x)^c."""
    if x not in X_AXES:
        raise DagcError(f"--x: expected one of {', '.join(X_AXES)}, got {x!r}")
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["arch"], row["digest"], row["metric"], row["options_hash"])
        groups.setdefault(key, []).append(row)
    keys = sorted(groups, key=lambda k: (k[0], k[1], _metric_order(k[2]), k[3]))
    return [_summarize(groups[k], x, log_corrected) for k in keys]


def _summarize(rows: list[dict], x_name: str, log_corrected: bool) -> Summary:
    first = rows[0]
    s = Summary(arch=first["arch"], digest=first["digest"], metric=first["metric"],
                options_hash=first["options_hash"], options=first["options"], x_name=x_name)
    ok = [r for r in rows if r["status"] == "ok"]
    s.failed = [dict(width=r["width"], seed=r["seed"], error=r["error"])
                for r in rows if r["status"] != "ok"]
    s.seeds = sorted({r["seed"] for r in ok})
    s.train_points = sorted({int(r["extras"]["train_points"]) for r in ok
                             if "train_points" in r["extras"]})
    for width in sorted({r["width"] for r in ok}):
        _add_width(s, width, [r for r in ok if r["width"] == width])
    usable = [r for r in ok if _usable(r["value"]) and _usable(_x_of(r, x_name))]
    s.excluded = len(ok) - len(usable)
    s.expected_slope = metric_info(s.metric).expected_slope
    s.note = _width_note(s.widths, s.width_m)
    _fit(s, usable, log_corrected)
    s.verdict = verdict(s.slope, s.expected_slope, s.log_margin, x_name)
    if x_name == "m" and not math.isfinite(s.slope.value) and s.note:
        s.verdict = "no fit against m (see the note; --x width fits against the file's width)"
    return s


def _add_width(s: Summary, width: int, cells: list[dict]) -> None:
    values = np.array([r["value"] for r in cells], dtype=float)
    logs = np.log(values[[_usable(v) for v in values]])
    geo = fit.t_interval(logs)
    s.widths.append(int(width))
    s.width_m.append(next((r["width_m"] for r in cells if r["width_m"] is not None), None))
    s.n.append(len(cells))
    s.mean.append(float(np.mean(values)))
    s.std.append(float(np.std(values, ddof=1)) if len(values) > 1 else math.nan)
    s.min.append(float(np.min(values)))
    s.max.append(float(np.max(values)))
    s.geo_mean.append(math.exp(geo.value) if math.isfinite(geo.value) else math.nan)
    s.geo_low.append(math.exp(geo.low) if math.isfinite(geo.low) else math.nan)
    s.geo_high.append(math.exp(geo.high) if math.isfinite(geo.high) else math.nan)


def _fit(s: Summary, usable: list[dict], log_corrected: bool) -> None:
    x = np.log(np.array([_x_of(r, s.x_name) for r in usable], dtype=float))
    y = np.log(np.array([r["value"] for r in usable], dtype=float))
    seeds = np.array([r["seed"] for r in usable])
    power_law = fit.fit_power_law(x, y, seeds)
    s.slope, s.intercept = power_law.slope, power_law.intercept
    s.slope_drift = fit.slope_drift(x, y, seeds)
    levels = sorted(set(x.tolist()))
    if len(levels) >= 2:
        mean_y = [float(np.mean(y[x == level])) for level in levels]
        s.local_slopes = fit.local_slopes(np.array(levels), np.array(mean_y))
        margin = fit.log_factor_slope(np.array(levels))
        s.log_margin = margin if math.isfinite(margin) else 0.0
    if log_corrected:
        s.log_corrected = fit.fit_log_corrected(x, y, seeds)


def _x_of(row: dict, x_name: str) -> float | None:
    return row["width_m"] if x_name == "m" else row["width"]


def _usable(value) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def verdict(slope: Estimate, expected: float | None, log_margin: float, x_name: str = "m") \
        -> str:
    """Whether the slope's interval is consistent with theory's exponent `expected` (None:
    theory gives none), exactly or up to a factor log(x)^c with |c| <= 1, which moves a
    fitted slope by at most `log_margin`; "inconclusive" when it also holds an exponent
    `NEIGHBOUR_STEP` away (see docs/reporting.md)."""
    if not math.isfinite(slope.value):
        return "no fit (needs positive values at two or more widths of one seed)"
    if not math.isfinite(slope.low):
        return f"slope {slope.value:+.2f}, no interval (needs two or more seeds)"
    if expected is None:
        return _trend(slope) + " (theory gives no exponent)"
    law = power_label(x_name, expected)
    if slope.contains(expected, log_margin):
        neighbours = [e for e in (expected - NEIGHBOUR_STEP, expected + NEIGHBOUR_STEP)
                      if slope.contains(e)]
        if neighbours:
            return (f"inconclusive: the 95% CI holds {law} and "
                    f"{power_label(x_name, neighbours[0])} (add seeds)")
        if slope.contains(expected):
            return f"consistent with {law}"
        return f"consistent with {law} up to a log factor"
    if expected != 0 and slope.contains(0.0):
        return f"does not decay (theory: {law})"
    if expected == 0 or (slope.low > 0) != (expected > 0):
        return f"{_trend(slope)} (theory: {law})"
    return f"{'faster' if abs(slope.value) > abs(expected) else 'slower'} than {law}"


def _trend(slope: Estimate) -> str:
    if slope.high < 0:
        return "decays"
    if slope.low > 0:
        return "grows"
    return "no clear trend"


def power_label(x_name: str, exponent: float) -> str:
    """`m^-1/2`, `m^0`, `width^-1`: the exponent as a small fraction where it is one."""
    fraction = Fraction(exponent).limit_denominator(8)
    text = str(fraction) if abs(float(fraction) - exponent) < 1e-9 else f"{exponent:g}"
    return f"{x_name}^{text}"


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


# --- text and JSON ------------------------------------------------------------------------

def format_table(summaries: Sequence[Summary]) -> str:
    """The human-readable report."""
    if not summaries:
        return "no cells in the store"
    show_digest = _digest_shown(summaries)
    option_sets = {s.options_hash: s.options for s in summaries}
    lines: list[str] = []
    for s in summaries:
        header = f"{s.label(show_digest[s.arch])}  {s.metric}"
        if len(option_sets) > 1:
            header += f"  (options {s.options_hash[:8]})"
        lines += [header, *_width_lines(s), *_fit_lines(s), ""]
    if len(option_sets) > 1:
        lines.append("options:")
        for digest, options in option_sets.items():
            shown = " ".join(f"{k}={v}" for k, v in options.items())
            lines.append(f"  {digest[:8]}: {shown}")
    failed = sum(len(s.failed) for s in summaries)
    if failed:
        lines.append(f"{failed} failed cell(s); rerun the sweep to retry them")
    return "\n".join(lines).rstrip() + "\n"


def _width_lines(s: Summary) -> list[str]:
    lines = [f"  {'width':>7} {'m':>7} {'seeds':>5} {'mean':>11} {'std':>10}   "
             f"{'geo. mean [95% CI]':<30} {'local slope':>11}"]
    slopes = ["", *(f"{b:+.3f}" for b in s.local_slopes)]
    for i, width in enumerate(s.widths):
        m = "?" if s.width_m[i] is None else str(s.width_m[i])
        geo = f"{_num(s.geo_mean[i])} [{_num(s.geo_low[i])}, {_num(s.geo_high[i])}]"
        local = slopes[i] if i < len(slopes) else ""
        lines.append(f"  {width:>7} {m:>7} {s.n[i]:>5} {_num(s.mean[i]):>11} "
                     f"{_num(s.std[i], 2):>10}   {geo:<30} {local:>11}".rstrip())
    return lines


def _fit_lines(s: Summary) -> list[str]:
    if not math.isfinite(s.slope.value):
        lines = [f"  -> {s.verdict}"]
    else:
        lines = [f"  slope b against {s.x_name} = {s.slope.value:+.3f} {_interval(s.slope)}"
                 f"   -> {s.verdict}"]
    if math.isfinite(s.slope_drift.value):
        lines.append(f"  lack of fit: the local slope drifts by {s.slope_drift.value:+.3f} "
                     f"{_interval(s.slope_drift)} per doubling of {s.x_name}")
    if s.log_corrected is not None:
        b, c = s.log_corrected.slope, s.log_corrected.log_power
        lines.append(f"  log-corrected fit {s.x_name}^b log({s.x_name})^c: "
                     f"b = {b.value:+.3f} {_interval(b)}, c = {c.value:+.2f} {_interval(c)}")
    if math.isfinite(s.slope.low):
        lines.append(f"  [..]: 95% t-intervals over the per-seed fits of {s.slope.seeds} "
                     f"seeds ({s.slope.seeds - 1} dof)")
    if s.note:
        lines.append(f"  note: {s.note}")
    if s.excluded:
        lines.append(f"  note: {s.excluded} cell(s) with a value (or {s.x_name}) that is not "
                     "positive and finite are left out of the fit")
    lines += [f"  FAILED width {f['width']} seed {f['seed']}: {f['error']}" for f in s.failed]
    return lines


def _interval(estimate: Estimate) -> str:
    if not math.isfinite(estimate.low):
        return "[no interval: one seed]"
    return f"[{estimate.low:+.3f}, {estimate.high:+.3f}]"


def _num(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}g}" if math.isfinite(x) else "-"


def _digest_shown(summaries: Sequence[Summary]) -> dict[str, bool]:
    """Per architecture: do its cells come from more than one file text?"""
    digests: dict[str, set] = {}
    for s in summaries:
        digests.setdefault(s.arch, set()).add(s.digest)
    return {arch: len(d) > 1 for arch, d in digests.items()}


def markdown_table(summaries: Sequence[Summary]) -> str:
    """One row per architecture, one column per metric: slope [95% CI] (a README's table).
    Several option sets or file texts of one architecture get a row each."""
    metrics = sorted({s.metric for s in summaries}, key=_metric_order)
    rows: dict[str, dict[str, Summary]] = {}
    for s in summaries:
        rows.setdefault(_series_label(s, summaries), {})[s.metric] = s
    x_name = summaries[0].x_name if summaries else "m"
    lines = [f"| architecture | m at widths {_width_range(summaries)} | "
             + " | ".join(metrics) + " |", "| --- " * (len(metrics) + 2) + "|"]
    for label, by_metric in rows.items():
        first = next(iter(by_metric.values()))
        ms = [m for m in first.width_m if m is not None]
        span = f"{min(ms)} .. {max(ms)}" if ms else "?"
        cells = [_slope_cell(by_metric.get(metric)) for metric in metrics]
        lines.append(f"| {label} | {span} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nSlope b of log(metric) against log({x_name}), 95% t-interval " \
        "over the per-seed slopes.\n"


def _width_range(summaries: Sequence[Summary]) -> str:
    widths = sorted({w for s in summaries for w in s.widths})
    return f"{widths[0]} .. {widths[-1]}" if widths else ""


def _slope_cell(s: Summary | None) -> str:
    if s is None:
        return ""
    if not math.isfinite(s.slope.value):
        return "no fit"
    if not math.isfinite(s.slope.low):
        return f"{s.slope.value:+.2f} (one seed)"
    return f"{s.slope.value:+.2f} [{s.slope.low:+.2f}, {s.slope.high:+.2f}]"


def to_json(summaries: Sequence[Summary]) -> list[dict]:
    return [s.to_json() for s in summaries]


def _json_number(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _json_numbers(xs: Iterable[float]) -> list[float | None]:
    return [_json_number(x) for x in xs]


# --- files --------------------------------------------------------------------------------

def write_csv(rows: Iterable[dict], path: str | Path) -> Path:
    """Every cell, one line each (the architecture text is left out; it is in the store)."""
    path = Path(path)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(_CSV_COLUMNS)
        for row in rows:
            writer.writerow([_csv_value(column, row.get(column)) for column in _CSV_COLUMNS])
    return path


def _csv_value(column: str, value):
    if column in ("extras", "options"):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def check_directory(directory: str | Path, source: dict, force: bool = False) -> None:
    """Refuse to write a report into a non-empty directory that does not hold a report of the
    same `source` (store, x axis, filters), unless `force`: a rerun refreshes its own report,
    never someone else's."""
    directory = Path(directory)
    if force or not directory.exists():
        return
    if not directory.is_dir():
        raise DagcError(f"{directory}: cannot write the report: not a directory")
    if not any(directory.iterdir()):
        return
    try:
        previous = json.loads((directory / SOURCE_NAME).read_text())
    except (OSError, ValueError):
        previous = None
    if previous != source:
        what = "a different report" if previous is not None else "files that are not a report"
        raise DagcError(f"{directory}: holds {what}; use --force to overwrite it or -o to "
                        "choose another directory")


def write(rows: Sequence[dict], summaries: Sequence[Summary], directory: str | Path,
          source: dict | None = None) -> list[Path]:
    """Write the CSV, the table, the slopes as markdown, the JSON summary, the figure (PNG and
    SVG), the loss curves' figure (`training_figure`) when `rows` hold training cells, and
    `source` (what the report was made from) into `directory` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    texts = {TABLE_NAME: format_table(summaries), SLOPES_NAME: markdown_table(summaries),
             JSON_NAME: json.dumps(to_json(summaries), indent=1) + "\n"}
    for name, text in texts.items():
        (directory / name).write_text(text)
    paths = [write_csv(rows, directory / CSV_NAME), *(directory / name for name in texts),
             *write_figure(summaries, directory / PLOT_NAME, directory / VECTOR_NAME)]
    curves = training_figure.loss_curves(rows)
    if curves:  # a store with training cells: their loss curves too
        paths += training_figure.write_figure(curves, directory / training_figure.PLOT_NAME,
                                              directory / training_figure.VECTOR_NAME)
    if source is not None:
        (directory / SOURCE_NAME).write_text(json.dumps(source, indent=1) + "\n")
    return paths


# --- the figure ---------------------------------------------------------------------------

def figure(summaries: Sequence[Summary], columns: int = 3):
    """A matplotlib Figure for a paper: one panel per metric, x = m (or width) on a log axis,
    per architecture the geometric mean over seeds with its 95% t-interval, the fitted line
    and its slope, theory's exponent as a dashed guide where theory gives one, one legend and
    a caption. Groups without a fit (m constant: a bottleneck) are left out and named in the
    caption. Uses the Agg canvas; never opens a window."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [s for s in summaries if math.isfinite(s.slope.value)]
    metrics = sorted({s.metric for s in shown}, key=_metric_order) or ["(no fit)"]
    columns = min(columns, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    lines = 1 + max((sum(s.metric == m for s in shown) for m in metrics), default=0)
    text_height = 0.14 * lines  # inches: the slope lines under each panel
    result = Figure(figsize=(4.6 * columns, (3.4 + text_height) * rows + 1.2),
                    layout="constrained")
    FigureCanvasAgg(result)
    grid = result.add_gridspec(2 * rows, columns, height_ratios=[3.4, text_height] * rows)
    colours = _colours(summaries)  # from every group: the same colours against m and width
    for index, metric in enumerate(metrics):
        row, column = divmod(index, columns)
        series = [s for s in shown if s.metric == metric]
        _panel(result.add_subplot(grid[2 * row, column]), metric, series, summaries, colours)
        _slope_lines(result.add_subplot(grid[2 * row + 1, column]), series, summaries, colours)
    shown_labels = dict.fromkeys(_series_label(s, summaries) for s in shown)
    _legend(result, {label: colours[label] for label in shown_labels})
    _caption(result, summaries, shown)
    return result


def _colours(summaries: Sequence[Summary]) -> dict[str, tuple]:
    from matplotlib import colormaps

    labels = list(dict.fromkeys(_series_label(s, summaries) for s in summaries))
    palette = colormaps["tab10"].colors
    return {label: palette[i % len(palette)] for i, label in enumerate(labels)}


def _series_label(s: Summary, summaries: Sequence[Summary]) -> str:
    """The architecture, and the options that tell its series of one metric apart (e.g.
    `densenet3 (lr_factor=1.5)`): metrics that read different options share a label, so a
    sweep with its default options gives one row and one colour per architecture."""
    label = s.label(_digest_shown(summaries)[s.arch])
    siblings = [t.options for t in summaries
                if (t.arch, t.digest, t.metric) == (s.arch, s.digest, s.metric)]
    varying = [key for key in s.options if len({repr(o.get(key)) for o in siblings}) > 1]
    if varying:
        label += " (" + ", ".join(f"{key}={s.options[key]}" for key in varying) + ")"
    return label


def _panel(axes, metric: str, series: Sequence[Summary], all_series: Sequence[Summary],
           colours: dict) -> None:
    info = metric_info(metric)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_title(textwrap.fill(f"{metric}: {_first_clause(info.definition)}", 56),
                   fontsize=8.5)
    axes.set_ylabel(info.label)
    x_name = series[0].x_name if series else "m"
    axes.set_xlabel(x_name + (" (the paper's width)" if x_name == "m" else " (file's width)"))
    for s in series:
        _series(axes, s, colours[_series_label(s, all_series)])
    if series and info.expected_slope is not None:
        _guide(axes, series, info.expected_slope)
    _readable_log_ticks(axes)


def _slope_lines(axes, series: Sequence[Summary], all_series: Sequence[Summary],
                 colours: dict) -> None:
    """Each series' slope and interval in `axes`, a strip under its panel, in the series'
    colour (inside the panel they would hide points)."""
    axes.axis("off")
    lines = [(f"slope b [95% CI] against {series[0].x_name if series else 'm'}", "0.3")]
    for s in series:
        interval = f" [{s.slope.low:+.2f}, {s.slope.high:+.2f}]" \
            if math.isfinite(s.slope.low) else " (one seed)"
        label = _series_label(s, all_series)
        lines.append((f"{label:<12} {s.slope.value:+.2f}{interval}", colours[label]))
    for row, (text, colour) in enumerate(lines):
        axes.text(0.0, 1 - row / (len(series) + 1), text, transform=axes.transAxes,
                  fontsize=7.5, color=colour, family="monospace", va="top")


def _first_clause(definition: str) -> str:
    """A definition up to its first ";" outside parentheses: the training metrics go on there
    with their training options, which docs/metrics.md spells out, and a panel's title
    should stay a few lines."""
    depth = 0
    for i, char in enumerate(definition):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == ";" and depth == 0:
            return definition[:i]
    return definition


def _readable_log_ticks(axes) -> None:
    """Plain numbers on each log axis spanning less than two decades (0.2, 0.5 rather than
    2 x 10^-1); every minor tick labelled only below one decade on y (on x, where labels sit
    side by side, only 1, 2 and 5)."""
    from matplotlib.ticker import FuncFormatter

    for axis, (low, high), dense in ((axes.yaxis, axes.get_ylim(), True),
                                     (axes.xaxis, axes.get_xlim(), False)):
        if high / low >= 100:
            continue
        shown = (1, 2, 3, 4, 5, 6, 7, 8, 9) if dense and high / low < 10 else (1, 2, 5)

        def plain(value: float, _position, shown=shown) -> str:
            mantissa = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
            return f"{value:g}" if mantissa in shown else ""

        axis.set_major_formatter(FuncFormatter(plain))
        axis.set_minor_formatter(FuncFormatter(plain))


def _series(axes, s: Summary, colour) -> None:
    points = [(x, g, lo, hi) for x, g, lo, hi
              in zip(s.x_values, s.geo_mean, s.geo_low, s.geo_high, strict=True)
              if x is not None and _usable(g)]
    if not points:
        return
    x, g, lo, hi = (np.array(v, dtype=float) for v in zip(*points, strict=True))
    lo, hi = np.where(np.isfinite(lo), lo, g), np.where(np.isfinite(hi), hi, g)
    axes.errorbar(x, g, yerr=[g - lo, hi - g], fmt="o", ms=3.5, capsize=2.5, lw=1,
                  color=colour)
    ends = np.array([x.min(), x.max()])
    axes.plot(ends, np.exp(s.intercept) * ends ** s.slope.value, "-", lw=1.2, color=colour)


def _guide(axes, series: Sequence[Summary], exponent: float) -> None:
    """Theory's exponent, through the geometric centre of the fitted lines (so the eye
    compares slopes, not levels), labelled at its right end."""
    lows = [min(x for x in s.x_values if x) for s in series]
    highs = [max(x for x in s.x_values if x) for s in series]
    ends = np.array([min(lows), max(highs)], dtype=float)
    centre = math.exp(np.mean([math.log(lo * hi) / 2 for lo, hi in zip(lows, highs,
                                                                         strict=True)]))
    level = math.exp(np.mean([s.intercept + s.slope.value * math.log(centre) for s in series]))
    values = level * (ends / centre) ** exponent
    axes.plot(ends, values, "--", color="0.25", lw=1.1, zorder=0)
    axes.annotate(_math_power(series[0].x_name, exponent), (ends[1], values[1]),
                  textcoords="offset points", xytext=(0, 5), ha="right", fontsize=9,
                  color="0.25")


def _math_power(x_name: str, exponent: float) -> str:
    base, power = power_label(x_name, exponent).split("^")
    return f"${base}^{{{power}}}$" if x_name == "m" else f"{base}$^{{{power}}}$"


def _legend(result, colours: dict) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", ms=4, lw=1.2, label=label)
               for label, c in colours.items()]
    handles += [Line2D([], [], color="0.4", marker="o", ms=4, lw=0,
                       label="geometric mean over seeds, bar: 95% t-interval"),
                Line2D([], [], color="0.4", lw=1.2, label="least-squares fit"),
                Line2D([], [], color="0.25", lw=1.1, ls="--",
                       label="theory's exponent (where it gives one)")]
    result.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 5),
                  fontsize=8, frameon=False)


def _caption(result, summaries: Sequence[Summary], shown: Sequence[Summary]) -> None:
    seeds = "/".join(str(n) for n in sorted({len(s.seeds) for s in shown})) or "0"
    text = (f"{seeds} seeds per width; a seed draws w0 and the inputs x, uniform on the sphere "
            "of radius sqrt(d_in) and the same at every width")
    inputs = _option_values(shown, "inputs")
    if inputs:
        text += f"; {inputs} input(s) x per cell"
    train = _training_points(shown)
    if train:
        text += f" ({train} training points for the metrics that train)"
    text += (". Slope b of log(metric) = a + b log(x): mean of the per-seed least-squares "
             "slopes, 95% t-interval with (seeds - 1) degrees of freedom.")
    left_out = sorted({s.arch for s in summaries if s not in shown})
    if left_out:
        text += f" Not shown (no fit against the x axis): {', '.join(left_out)}."
    characters_per_inch = 17  # of a 7.5-point font
    result.supxlabel(textwrap.fill(text, int(result.get_figwidth() * characters_per_inch)),
                     fontsize=7.5)


def _option_values(summaries: Sequence[Summary], option: str) -> str:
    """The values `option` takes over the groups that read it, e.g. "2" or "2/8"."""
    values = sorted({s.options[option] for s in summaries if option in s.options})
    return "/".join(str(v) for v in values)


def _training_points(summaries: Sequence[Summary]) -> str:
    """The training set sizes n of the groups that read train_size, e.g. "32" or "16/32":
    the n their cells recorded, else the option; "2 n_in" for an older store's cells of
    train_size 0 (its default), which did not record n."""
    sizes: set[int] = set()
    unrecorded = False
    for s in summaries:
        if "train_size" not in s.options:
            continue
        if s.train_points or s.options["train_size"]:
            sizes.update(s.train_points or [s.options["train_size"]])
        else:
            unrecorded = True
    return "/".join([str(n) for n in sorted(sizes)] + (["2 n_in"] if unrecorded else []))


def write_figure(summaries: Sequence[Summary], *paths: str | Path) -> list[Path]:
    """Save `figure(summaries)` to each path (format from the suffix: .png, .svg, .pdf)."""
    return figures.save(figure(summaries), *paths)
