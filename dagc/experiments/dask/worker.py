"""What runs on the Dask workers: a cell's task, and the check that a worker can run dagc.

Kept apart from the client's code because it is what the workers import (by reference, so
every worker needs dagc installed)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable

from .. import sweep
from ..sweep import Cell, Result

START_TOPIC = "dagc-cell-start"  # the workers' "a cell starts" events (one topic, bounded log)

_CELL_LOCK = threading.Lock()  # one cell at a time per worker process


def run_task(cell: Cell, fn: Callable | None, sweep_id: str, key: str
             ) -> tuple[Result, str | None]:
    """A cell's task: run it on this worker, say where. Cells of a process run one at a time:
    BLAS's thread count and the nets `run_cell` keeps are per process, not per thread."""
    address = None
    with contextlib.suppress(Exception):
        from distributed import get_worker

        worker = get_worker()
        address = worker.address
        worker.log_event(START_TOPIC, {"sweep": sweep_id, "key": key})
    start = time.perf_counter()
    with _CELL_LOCK:
        try:
            result = (fn or sweep.run_cell)(cell)
        except Exception as err:  # noqa: BLE001 - a replacement fn that raised
            result = sweep.failed_result(cell, sweep.describe_error(err),
                                         time.perf_counter() - start)
    return result, address


def worker_info() -> dict:
    """The dagc version and process of a worker (run there by `Client.run`)."""
    from ... import __version__

    return {"dagc": __version__, "pid": os.getpid()}
