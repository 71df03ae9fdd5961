"""Checks of integer arguments shared by the runtime and the metrics (one home, below both)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import DagcError


def check_int(value: Any, name: str, minimum: int) -> None:
    """`DagcError` naming ``name`` unless ``value`` is an integer (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DagcError(f"{name}: expected an integer >= {minimum}, got {value!r}")


def check_seed(seed: Any) -> None:
    """`DagcError` unless ``seed`` is an integer >= 0."""
    check_int(seed, "seed", minimum=0)
