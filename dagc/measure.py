"""The public measurement API: one sweep cell (`measure`), the registry of metrics (`METRICS`)
and the functions the metrics are built from, gathered in one namespace for users' scripts.

The code lives where each concept has its home: `dagc.metrics` (the registry, options, random
draws and one module per family of metrics) and `dagc.linalg` (Lanczos). docs/metrics.md
defines every metric exactly.

Conventions shared by every metric:

- ``w0 = net.init(seed)`` (i.i.d. N(0, 1), NTK parameterization);
- inputs are ``options.inputs`` points uniform on the sphere of radius ``sqrt(n_in)`` (so each
  coordinate has unit mean square, like the paper's normalized data);
- every random draw comes from ``generator(seed, purpose)``, one independent stream per
  purpose, so ``measure(net, metric, seed, options)`` gives bit-identical numbers in any
  process (given the same BLAS and thread count);
- a network with several outputs is measured output by output; statistics run over all
  (input, output) pairs;
- NaN or inf in an argument is a `dagc.errors.DagcError` naming it, never a silent number.
"""

from __future__ import annotations

from .linalg.lanczos import lanczos_norms
from .linalg.spectrum import smoothed_density
from .metrics import METRICS, Metric, measure, options_for
from .metrics.curvature import (
    BallAscent,
    ball_ascent,
    ball_radius,
    dense_hessian,
    eigenvalue_gradient,
    hessian_norm,
    hessian_norms,
    hidden_blocks,
    hidden_hessian_norms,
    output_preactivation_norms,
    preactivation_norms,
    project_to_ball,
    top_curvature,
)
from .metrics.first_order import (
    gradient_direction_errors,
    gradient_norms,
    linearization_errors,
    top_eigenvector_errors,
)
from .metrics.inputs import generator, regression_set, sphere_points, sweep_inputs, unit_vector
from .metrics.options import HESSIAN_METHODS, Options
from .metrics.spectra import (
    hessian_density,
    hessian_eigs,
    hessian_trace,
    loss_hessian_norms,
    parameter_indices,
)
from .metrics.training import TrainResult, ntk_matrix, train

__all__ = [
    "METRICS", "Metric", "Options", "HESSIAN_METHODS", "measure", "options_for",
    "hessian_norm", "hessian_norms", "dense_hessian", "lanczos_norms",
    "ball_ascent", "ball_radius", "BallAscent", "top_curvature", "eigenvalue_gradient",
    "project_to_ball",
    "hidden_blocks", "hidden_hessian_norms", "preactivation_norms",
    "output_preactivation_norms", "hessian_eigs", "hessian_trace", "hessian_density",
    "smoothed_density", "parameter_indices", "loss_hessian_norms",
    "gradient_norms", "linearization_errors", "gradient_direction_errors",
    "top_eigenvector_errors",
    "ntk_matrix", "train", "TrainResult",
    "generator", "sphere_points", "unit_vector", "sweep_inputs", "regression_set",
]
