"""Power-law fits of a metric against width with intervals that are honest for 2-10 seeds.

A seed fixes w0 and the inputs at every width, so one seed's cells are correlated across
widths: the seeds, not the cells, are the independent replicates. Every coefficient is
therefore fitted once per seed by least squares, and its estimate and interval come from the
G per-seed coefficients: their mean and a t-interval with G - 1 degrees of freedom. This is
exact when the per-seed coefficients are normal, whatever the correlation inside a seed; the
coverage simulation of docs/reporting.md checks it on synthetic sweeps. With balanced cells
(every seed at every width) the mean of the per-seed slopes equals the pooled least-squares
slope.

All functions take x = log(width axis) and y = log(metric), one entry per usable cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import stdtrit  # the t quantile (scipy.stats' own), without scipy.stats' import

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A coefficient: the mean over seeds and its t-interval (NaN bounds with one seed)."""

    value: float
    low: float
    high: float
    seeds: int  # G, the per-seed fits it averages

    def contains(self, number: float, margin: float = 0.0) -> bool:
        """`number` lies in [low - margin, high + margin]."""
        return self.low - margin <= number <= self.high + margin

    def to_json(self) -> dict:
        return dict(value=_finite(self.value), ci_low=_finite(self.low),
                    ci_high=_finite(self.high), seeds=self.seeds)


NO_ESTIMATE = Estimate(math.nan, math.nan, math.nan, 0)


def t_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """Mean of `samples` and its two-sided t-interval with len(samples) - 1 degrees of freedom."""
    samples = np.asarray(samples, dtype=float)
    if len(samples) == 0:
        return NO_ESTIMATE
    mean = float(np.mean(samples))
    if len(samples) < 2:
        return Estimate(mean, math.nan, math.nan, 1)
    half = t_quantile(len(samples) - 1, confidence) * float(np.std(samples, ddof=1)) \
        / math.sqrt(len(samples))
    return Estimate(mean, mean - half, mean + half, len(samples))


def t_quantile(dof: int, confidence: float = CONFIDENCE) -> float:
    """The t quantile that makes a two-sided interval of `confidence`."""
    return float(stdtrit(dof, 0.5 + confidence / 2))


def per_seed_coefficients(x: np.ndarray, y: np.ndarray, seeds: np.ndarray,
                          design: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Least-squares coefficients of y on the columns of design(x), one row per seed that has
    at least as many distinct x values as coefficients (the others are left out)."""
    columns = design(np.ones(1)).shape[1]
    rows = [np.linalg.lstsq(design(x[seeds == seed]), y[seeds == seed], rcond=None)[0]
            for seed in np.unique(seeds) if len(np.unique(x[seeds == seed])) >= columns]
    return np.array(rows).reshape(len(rows), columns)


def line(x: np.ndarray) -> np.ndarray:
    """Design of log(metric) = a + b log(x)."""
    return np.column_stack([np.ones_like(x), x])


@dataclass(frozen=True)
class PowerLaw:
    """log(metric) = intercept + slope * log(x), per-seed fits averaged."""

    slope: Estimate
    intercept: float


def fit_power_law(x: np.ndarray, y: np.ndarray, seeds: np.ndarray) -> PowerLaw:
    """The slope with its seed-cluster t-interval, and the mean intercept (to draw the line)."""
    coefficients = per_seed_coefficients(x, y, seeds, line)
    if len(coefficients) == 0:
        return PowerLaw(NO_ESTIMATE, math.nan)
    return PowerLaw(t_interval(coefficients[:, 1]), float(np.mean(coefficients[:, 0])))


def slope_drift(x: np.ndarray, y: np.ndarray, seeds: np.ndarray) -> Estimate:
    """Lack of fit as a curvature: the change of the local slope per doubling of x.

    Per seed, log(metric) = a + b u + c u^2 with u = log(x) - (its centre over the group), so
    the local slope is b + 2 c u and changes by 2 c log(2) per doubling; zero for a power law.
    """
    centre = (x.min() + x.max()) / 2 if len(x) else 0.0

    def quadratic(u: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones_like(u), u - centre, (u - centre) ** 2])

    coefficients = per_seed_coefficients(x, y, seeds, quadratic)
    if len(coefficients) == 0:
        return NO_ESTIMATE
    return t_interval(2 * math.log(2) * coefficients[:, 2])


@dataclass(frozen=True)
class LogCorrected:
    """log(metric) = a + b log(x) + c log(log(x)), i.e. metric ~ x^b log(x)^c."""

    slope: Estimate
    log_power: Estimate


def fit_log_corrected(x: np.ndarray, y: np.ndarray, seeds: np.ndarray) -> LogCorrected | None:
    """The power and the log's power, each with its seed-cluster t-interval; None when some
    x <= 1 (log(x) must be positive) or no seed has three distinct widths."""
    if len(x) == 0 or np.any(x <= 0):
        return None
    coefficients = per_seed_coefficients(
        x, y, seeds, lambda u: np.column_stack([np.ones_like(u), u, np.log(u)]))
    if len(coefficients) == 0:
        return None
    return LogCorrected(t_interval(coefficients[:, 1]), t_interval(coefficients[:, 2]))


def local_slopes(x_levels: np.ndarray, mean_y: np.ndarray) -> list[float]:
    """Slopes between consecutive widths of the per-width mean of log(metric)."""
    return [float(s) for s in np.diff(mean_y) / np.diff(x_levels)]


def log_factor_slope(x_levels: np.ndarray) -> float:
    """The apparent slope a factor log(x) alone adds over these widths: the least-squares slope
    of log(log(x)) on log(x). A metric ~ x^b log(x)^c fitted by a pure power law gives about
    b + c times this."""
    if len(x_levels) < 2 or np.any(x_levels <= 0):
        return math.nan
    return float(np.polyfit(x_levels, np.log(x_levels), 1)[0])


def _finite(number: float) -> float | None:
    return float(number) if math.isfinite(number) else None


def simulate_coverage(seeds: int, sweeps: int, *, rng_seed: int = 0, true_slope: float = -0.5,
                      widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048),
                      seed_sd: float = 0.1, tilt_sd: float = 0.03, noise_sd: float = 0.05,
                      heavy_tails: bool = False) -> float:
    """The fraction of `sweeps` synthetic sweeps whose 95% slope interval covers `true_slope`.

    Each sweep draws, per seed g, log(value) = log(3) + (true_slope + tilt_g) log(m) + u_g
    + e_gm: a seed's own level u_g and slope tilt_g make its cells correlated across widths,
    e_gm is independent noise per cell. `heavy_tails` draws u, tilt and e from Student's t
    with 3 degrees of freedom (same scales) instead of normals.
    """
    rng = np.random.default_rng(rng_seed)

    def draw(scale: float, size) -> np.ndarray:
        return scale * (rng.standard_t(3, size) if heavy_tails else rng.normal(0, 1, size))

    x = np.tile(np.log(np.array(widths, dtype=float)), seeds)
    labels = np.repeat(np.arange(seeds), len(widths))
    covered = 0
    for _ in range(sweeps):
        level, tilt = draw(seed_sd, seeds)[labels], draw(tilt_sd, seeds)[labels]
        y = math.log(3) + (true_slope + tilt) * x + level + draw(noise_sd, len(x))
        covered += fit_power_law(x, y, labels).slope.contains(true_slope)
    return covered / sweeps
