"""The metric registry: the one list of what a sweep cell can measure.

Each `Metric` says what it is (a one-line definition, a y-axis label and every field of its
result), how to compute it (`function(net, seed, options) -> dict` whose ``"value"`` is the
number fitted against width), which `Options` fields it reads (a cell's options key holds only
those), and the slope of log(value) against log(m) that theory expects. The CLI's choices,
sweep planning, the report's labels, fits and verdicts, and docs/metrics.md all read
`METRICS`; each family module (curvature, first_order, training) registers its own entries
when `dagc.metrics` is imported.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import DagcError
from ..runtime import CompiledNet
from .options import TRAVEL, Options, check_seed

__all__ = ["Metric", "METRICS", "register", "lookup", "measure", "options_for", "readers"]


@dataclass(frozen=True)
class Metric:
    """One registered metric.

    Attributes:
        name: the name a sweep and the store use.
        function: ``function(net, seed, options) -> dict[str, float]``, see `measure`.
        reads: the `Options` fields the function reads; only these enter a cell's options key.
        definition: one line: exactly what ``"value"`` is.
        label: the y-axis label of a report's plot.
        expected_slope: the slope of log(value) against log(m) (m: the paper's width) that
            theory expects; None where it predicts none.
        slope_reason: one or two sentences: why that slope.
        fields: {result field: its meaning}, ``"value"`` first; every field `function`
            returns, and nothing else.
    """

    name: str
    function: Callable[[CompiledNet, int, Options], dict[str, float]]
    reads: tuple[str, ...]
    definition: str
    label: str
    expected_slope: float | None
    slope_reason: str
    fields: dict[str, str]

    def __post_init__(self) -> None:
        known = {f.name for f in dataclasses.fields(Options)}
        unknown = sorted(set(self.reads) - known)
        if unknown:  # a programming error in a family module, caught at import
            raise ValueError(f"metric {self.name}: reads unknown option(s) {unknown}")
        if next(iter(self.fields), None) != "value":
            raise ValueError(f"metric {self.name}: fields must start with 'value'")


METRICS: dict[str, Metric] = {}

DEFAULT_OPTIONS = Options()


def register(metric: Metric) -> Metric:
    """Add `metric` to the registry (each family module registers its own)."""
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name} is registered twice")
    METRICS[metric.name] = metric
    return metric


def lookup(name: str) -> Metric:
    """The registered metric ``name``, or `DagcError` listing the known ones."""
    if name not in METRICS:
        raise DagcError(f"metric: unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


def options_for(name: str, options: Options | dict[str, Any]) -> dict[str, Any]:
    """The options metric ``name`` reads, as {field: value} (a subset of ``options``): what
    identifies a cell's measurement (an option it does not read never splits its cells)."""
    values = dataclasses.asdict(options) if isinstance(options, Options) else options
    reads = lookup(name).reads
    if "radius" in reads and values.get("radius") == TRAVEL:
        # R = travel is the distance ntk_change's training travels: its options decide R.
        reads += lookup("ntk_change").reads
    return {key: value for key, value in values.items() if key in reads}


def readers(option: str) -> tuple[str, ...]:
    """The registered metrics that read ``option``, in registry order."""
    return tuple(metric.name for metric in METRICS.values() if option in metric.reads)


def measure(net: CompiledNet, metric: str, seed: int,
            options: Options = DEFAULT_OPTIONS) -> dict[str, float]:
    """Measure one sweep cell: ``metric`` of ``net`` at ``w0 = net.init(seed)``.

    Returns a dict of floats (the metric's registered ``fields``) whose ``"value"`` is the
    statistic fitted against width; docs/metrics.md defines each one. Raises `DagcError` for
    an unknown metric, a bad seed or bad options, and when a result is not finite (a metric
    never returns a number computed from NaN or inf).
    """
    if not isinstance(net, CompiledNet):
        raise DagcError(f"net: expected a CompiledNet, got {type(net).__name__}")
    entry = lookup(metric)
    check_seed(seed)
    if not isinstance(options, Options):
        raise DagcError(f"options: expected dagc.measure.Options, got {type(options).__name__}")
    result = entry.function(net, seed, options)
    for name, value in result.items():
        # a list field (a training metric's loss curve) must be finite throughout
        if not all(math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
            raise DagcError(f"{metric}: the result's {name} is not finite ({value!r})")
    return result
