"""Sweep results as a pandas DataFrame, for notebooks (docs/design.md, Python API)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import DagcError
from .experiments import report

#: The columns of `load_results`, in order: what a cell is, what it measured, how it went.
COLUMNS = ("arch", "width", "m", "seed", "metric", "value", "options", "status", "error",
           "depth", "n_params", "digest", "options_hash", "extras", "elapsed", "timestamp")


def load_results(path: str | Path) -> Any:
    """Every cell of a results store (or of a report's cells CSV) as a `pandas.DataFrame`,
    one row per cell with the columns `COLUMNS`: `m` is the paper's width, `options` the
    JSON of the measurement options the metric read (a string, so rows group by it), `value`
    NaN for a failed cell. Needs pandas (`dagc[pandas]`)."""
    try:
        import pandas
    except ImportError:
        raise DagcError("load_results needs pandas (pip install 'dagc[pandas]')") from None
    rows = [_row(cell) for cell in report.load(path)]
    frame = pandas.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({"width": "int64", "seed": "int64", "value": "float64",
                         "m": "Int64", "depth": "Int64", "n_params": "Int64"})


def _row(cell: dict) -> dict:
    return {**{column: cell.get(column) for column in COLUMNS}, "m": cell.get("width_m"),
            "options": json.dumps(cell.get("options") or {}, sort_keys=True),
            "value": float("nan") if cell.get("value") is None else cell["value"]}
