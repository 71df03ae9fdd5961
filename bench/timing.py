"""Interleaved timing on a shared, noisy machine.

Every implementation of one operation is warmed up, then timed in rounds; within a round each
implementation runs `number` calls back to back (enough for about `target` seconds), in an
order rotated from round to round. Comparisons use the median over rounds of the per-round
ratio dagc / peer, so load that comes and goes hits both sides of a ratio alike.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Settings:
    rounds: int = 7
    target: float = 0.2  # seconds of calls per implementation per round
    warmup: int = 2
    max_seconds: float = 60.0  # per operation: fewer rounds when single calls are slow
    pause: float = 0.005  # between implementations, so spinning worker threads go idle
    min_rounds: int = 3


@dataclass
class Timings:
    """Seconds per call, one entry per round, for each implementation."""

    per_round: dict[str, list[float]] = field(default_factory=dict)
    number: dict[str, int] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.per_round[name])

    def ratios(self, name: str, others: list[str]) -> list[float]:
        """Per round: time of `name` / the fastest of `others` in that round."""
        rounds = len(self.per_round[name])
        return [self.per_round[name][r] / min(self.per_round[o][r] for o in others)
                for r in range(rounds)]

    def ratio(self, name: str, others: list[str]) -> dict:
        values = self.ratios(name, others)
        return {"median": statistics.median(values), "min": min(values), "max": max(values),
                "rounds": len(values)}


def _once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(fns: dict[str, Callable[[], object]], settings: Settings) -> Timings:
    """Time every callable, interleaved. Callables must wait for their result."""
    names = list(fns)
    single = {}
    for name in names:  # warm up (JIT, caches, pages), then estimate one call
        for _ in range(max(settings.warmup - 1, 0)):
            fns[name]()
        single[name] = max(_once(fns[name]), 1e-7)
    number = {n: max(1, math.ceil(settings.target / single[n])) for n in names}
    cost = sum(number[n] * single[n] for n in names)
    rounds = max(settings.min_rounds, min(settings.rounds, int(settings.max_seconds / cost)))
    timings = Timings({n: [] for n in names}, number)
    enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                time.sleep(settings.pause)
                fn, k = fns[name], number[name]
                start = time.perf_counter()
                for _ in range(k):
                    fn()
                timings.per_round[name].append((time.perf_counter() - start) / k)
            gc.collect()
    finally:
        if enabled:
            gc.enable()
    return timings
