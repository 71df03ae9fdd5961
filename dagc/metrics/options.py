"""The measurement options (`Options`) and the argument checks every metric shares.

Each option's one-line help lives in its field's metadata, so the CLI, docs/metrics.md and the
registry's per-metric lists of options all read the same text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..arguments import check_int, check_seed
from ..errors import DagcError

__all__ = ["Options", "HESSIAN_METHODS", "TARGETS", "TRAVEL", "option_help", "check_int",
           "check_number", "check_radius", "check_tol", "check_method", "check_seed",
           "check_vector", "check_matrix", "check_finite"]

HESSIAN_METHODS = ("lanczos", "arpack")
TARGETS = ("teacher", "signs")
# The radius that stands for the distance gradient descent travels from w0 under the cell's
# training options (`dagc.metrics.curvature.ball_radius` turns it into a number per cell).
TRAVEL = "travel"


def _option(default: Any, text: str) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class Options:
    """Everything that changes a measurement. A sweep stores, with each result, the fields
    its metric reads (`dagc.metrics.registry.options_for`), so two results are comparable
    exactly when those are equal. Each field's help: `option_help`."""

    inputs: int = _option(4, "inputs x per measurement, uniform on the sphere of radius "
                             "sqrt(n_in)")
    radius: float | str = _option(1.0, "R: the radius of the ball around w0 (hessian_ball) "
                                       "and the step length along each direction "
                                       f"(linearization); {TRAVEL!r}: the distance gradient "
                                       "descent travels from w0 under the training options "
                                       "(ntk_change's ||w_T - w0||; they then join the "
                                       "cell's options key)")
    ball_points: int = _option(4, "random points w0 + R u, ||u|| = 1, of hessian_ball")
    directions: int = _option(4, "random unit directions u of linearization")
    ascent_steps: int = _option(8, "trial steps of hessian_ball's projected ascent from each "
                                   "of its five starts")
    hidden_neurons: int = _option(4, "neurons sampled per hidden block by hessian_hidden")
    train_size: int = _option(0, "n: points of the training set of ntk_change, lin_gap "
                                 "and loss_hessian (0: 2 n_in, so n > n_in and the kernel "
                                 "is not diagonal; the training metrics record the n used "
                                 "as train_points); lin_gap holds out as many again")
    targets: str = _option("teacher", "training targets: " + " or ".join(TARGETS) + " (a "
                                      "fixed random tanh network, or random +-1)")
    loss_drop: float = _option(1000.0, "training runs until the loss falls by this factor "
                                       "(> 1) ...")
    max_steps: int = _option(1000, "... or for at most this many steps")
    lr_factor: float = _option(0.5, "c: the step is c times the critical 2n / "
                                    "lambda_max(K0) of the squared loss (c < 1: lazy; 1 < c < "
                                    "2: catapult; beyond: divergent)")
    lr: float = _option(0.0, "an absolute step instead, times d^(2p-1) (d: the output's "
                             "in-degree, p: its output_scale); 0: use lr_factor")
    batch_size: int = _option(0, "samples per step of SGD (drawn without replacement); 0: "
                                 "full-batch gradient descent")
    tol: float = _option(1e-6, "relative tolerance of each Hessian norm (0: machine "
                               "precision)")
    hessian_method: str = _option("lanczos", "how Hessian norms are computed: "
                                             + " or ".join(HESSIAN_METHODS))

    def __post_init__(self) -> None:
        check_method(self.hessian_method, "options.hessian_method")
        if self.targets not in TARGETS:
            raise DagcError(f"options.targets: unknown {self.targets!r}; known: "
                            f"{', '.join(TARGETS)}")
        for name in ("inputs", "ball_points", "directions", "hidden_neurons"):
            check_int(getattr(self, name), f"options.{name}", minimum=1)
        for name in ("train_size", "max_steps", "batch_size", "ascent_steps"):
            check_int(getattr(self, name), f"options.{name}", minimum=0)
        object.__setattr__(self, "radius", check_radius(self.radius, "options.radius"))
        # Store floats as floats, so Options(radius=1) and Options(radius=1.0) serialize alike.
        for name, low, strict in (("loss_drop", 1.0, True),
                                  ("tol", 0.0, False), ("lr_factor", 0.0, True),
                                  ("lr", 0.0, False)):
            value = check_number(getattr(self, name), f"options.{name}", low, strict)
            object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Options:
        """Inverse of ``dataclasses.asdict``; missing keys take their defaults, unknown keys
        are an error (a store written by a newer dagc must not be silently reinterpreted)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DagcError(f"options: unknown field(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known))}")
        return cls(**values)


def option_help() -> dict[str, str]:
    """{option name: its one-line help}, in `Options` field order."""
    return {f.name: f.metadata["help"] for f in fields(Options)}


def check_number(value: Any, name: str, low: float, strict: bool) -> float:
    """``value`` as a float, or `DagcError` naming ``name`` unless it is a finite number
    above ``low`` (``strict``) or at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DagcError(f"{name}: expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < low or (strict and value == low):
        relation = ">" if strict else ">="
        raise DagcError(f"{name}: expected a finite number {relation} {low:g}, got {value!r}")
    return value


def check_radius(value: Any, name: str) -> float | str:
    """``value`` as a float > 0, or `TRAVEL` itself; any other value is a `DagcError` naming
    ``name``."""
    if isinstance(value, str):
        if value != TRAVEL:
            raise DagcError(f"{name}: expected a number > 0 or {TRAVEL!r}, got {value!r}")
        return value
    return check_number(value, name, 0.0, strict=True)


def check_tol(value: Any, name: str) -> float:
    """``value`` as a float, or `DagcError` unless it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0:
        raise DagcError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def check_method(value: Any, name: str) -> None:
    """`DagcError` unless ``value`` is one of `HESSIAN_METHODS`."""
    if value not in HESSIAN_METHODS:
        raise DagcError(f"{name}: unknown Hessian-norm method {value!r}; known: "
                        f"{', '.join(HESSIAN_METHODS)}")


def check_finite(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` itself, or `DagcError` naming ``name`` if it holds NaN or inf: a metric is
    never computed from non-finite numbers (they would otherwise come out as a plausible
    number, e.g. a Hessian norm of 0)."""
    if not np.isfinite(array).all():
        raise DagcError(f"{name}: contains NaN or inf")
    return array


def check_vector(value: Any, name: str, size: int) -> np.ndarray:
    """``value`` as a contiguous finite float64 array of shape (size,), or `DagcError`."""
    if not isinstance(value, np.ndarray) or value.dtype != np.float64 \
            or value.shape != (size,):
        raise DagcError(f"{name}: expected a float64 array of shape ({size},), got "
                        f"{_described(value)}")
    return check_finite(np.ascontiguousarray(value), name)


def check_matrix(value: Any, name: str, columns: int) -> np.ndarray:
    """``value`` as a contiguous finite float64 array of shape (n, columns), n >= 1, or
    `DagcError`."""
    if not isinstance(value, np.ndarray) or value.dtype != np.float64 or value.ndim != 2 \
            or value.shape[1] != columns or value.shape[0] == 0:
        raise DagcError(f"{name}: expected a float64 array of shape (n, {columns}) with n >= 1, "
                        f"got {_described(value)}")
    return check_finite(np.ascontiguousarray(value), name)


def _described(value: Any) -> str:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", type(value).__name__)
    return f"shape {shape} dtype {dtype}"
