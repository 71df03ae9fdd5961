"""Metrics: what a sweep cell measures, one module per family, one registry.

- `registry`: the `Metric` record, `METRICS`, `measure` (one cell), `options_for` (what a
  cell's options key holds) and `readers` (which metrics read an option);
- `options`: `Options` and the argument checks; `inputs`: the seeded random draws;
- families: `curvature` (hessian, hessian_ball, hessian_hidden, hessian_preact),
  `first_order` (gradient, linearization), `spectra` (loss_hessian; eigenvalues, traces and
  densities as functions), `training` (ntk_change), `limits` (ntk_gap); `docs` renders
  docs/metrics.md from the registry.

Importing this package registers every family's metrics, in this order.
"""

from . import curvature, first_order, limits, spectra, training  # noqa: F401 - each registers its metrics
from .options import Options, option_help
from .registry import METRICS, Metric, measure, options_for, readers

__all__ = ["METRICS", "Metric", "Options", "measure", "options_for", "option_help", "readers"]
