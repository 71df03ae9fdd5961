"""The metric registry: the one list of what a sweep cell can measure.

Each `Metric` says what it is (a one-line definition and a y-axis label), how to compute it
(`function(net, seed, options) -> dict` whose ``"value"`` is the number fitted against
width), which `Options` fields it reads (a cell's options key holds only those), and the slope
of log(value) against log(m) that theory expects (None where theory predicts none). The CLI's
choices, sweep planning, the report's labels, fits and verdicts, and docs/metrics.md all read
`METRICS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One registered metric (see the module docstring)."""

    name: str
    function: Callable
    reads: tuple[str, ...]
    definition: str
    label: str
    expected_slope: float | None


METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add `metric` to the registry (each family module registers its own)."""
    METRICS[metric.name] = metric
    return metric
