"""Which failures are a cell's and which the cluster's: what a completed future means.

A cell's own failure (its task raised, or its worker died every time it ran it) becomes a
'failed' result that the store records and a rerun retries. A task the scheduler dropped
fails its cell too (a rerun retries it). Losing the scheduler is the cluster's failure: it
stops the sweep with one line, the finished cells stay stored. A finished result that died
with its worker before the client fetched it is neither: Dask computes it again.
"""

from __future__ import annotations

from ...errors import DagcError
from .. import sweep
from ..sweep import Cell, Result
from .connection import one_line

WAIT_AGAIN = None  # `settle`'s answer for a future that is not done after all
LOST_CONNECTION = "scheduler-connection-lost"  # distributed's cancellation reason


def settle(future, cell: Cell, connected: bool, address: str
           ) -> tuple[Result, str | None] | None:
    """(the cell's result, the worker that ran it or None) for a future that as_completed
    emitted, or `WAIT_AGAIN`; raises `DagcError` when the scheduler is gone (`connected`:
    whether the client still is).

    as_completed emits a future once, when its done event is first set. If the worker
    holding the finished result then dies before we fetch it, the scheduler sends the
    client "lost-data": the future's status becomes 'lost' (not 'pending') and its event
    is cleared, and the scheduler computes the task again (a cell's task has no
    dependencies, so it always can). Asking such a future for its exception() would
    wait for the recomputation and then return None (it finished): a good cell stored
    as failed with "NoneType: None". So a 'lost' (or reset to 'pending') future goes
    back to as_completed. That cannot wait forever: every way the task can end sets the
    event again - finished; erred (KilledWorker once its reruns have killed too many
    workers); cancelled (the scheduler forgot it, restarted, or we lost the connection).
    """
    status = future.status
    if status in ("lost", "pending"):
        return WAIT_AGAIN
    if status == "finished":
        return _finished(future, cell, connected, address)
    if status == "cancelled":
        reason = _cancel_reason(future)
        if reason != LOST_CONNECTION and connected:
            return _failed(cell, f"the Dask scheduler dropped this cell's task ({reason})")
    if status == "cancelled" or not connected:
        raise _lost(address)
    return _failed(cell, _task_error(future))  # 'error' is all that is left, and final


def _finished(future, cell: Cell, connected: bool, address: str
              ) -> tuple[Result, str | None]:
    try:  # a result lost during the fetch: result() itself waits for its recomputation
        result, worker = future.result()
    except OSError:  # the connection closed under the fetch (distributed's CommClosedError)
        raise _lost(address) from None
    except Exception as err:  # noqa: BLE001 - its recomputation failed or was dropped
        # the scheduler went away while the fetch waited: the cluster's failure, not the cell's
        if not connected or getattr(err, "reason", "") == LOST_CONNECTION:
            raise _lost(address) from None
        return _failed(cell, f"could not fetch the result from the cluster ({one_line(err)})")
    return result, worker or "?"


def _cancel_reason(future) -> str:
    try:
        future.result()  # raises the FutureCancelledError saying why
    except Exception as err:  # noqa: BLE001
        return str(getattr(err, "reason", "") or one_line(err))
    return "unknown"  # pragma: no cover - a cancelled future has no result


def _task_error(future) -> str:
    """Why an erred task failed: the cell's exception, or its worker dying every time."""
    try:
        err = future.exception()  # final for an erred future: returns at once
    except Exception as other:  # noqa: BLE001
        err = other
    if type(err).__name__ == "KilledWorker":
        failures = err.args[2] if len(err.args) > 2 else "several"
        return ("the worker process died every time it ran this cell (killed or out of "
                f"memory; Dask gave up after {failures} allowed failure(s): KilledWorker)")
    return sweep.describe_error(err)


def _lost(address: str) -> DagcError:
    return DagcError(f"lost the connection to the Dask scheduler at {address}; the finished "
                     "cells are in the store: run the same command again to resume")


def _failed(cell: Cell, error: str) -> tuple[Result, None]:
    return sweep.failed_result(cell, error), None
