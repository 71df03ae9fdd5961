"""Sweeps on a Dask distributed cluster: `dagc sweep --scheduler ADDR` (docs/design.md,
"Executors: local and Dask").

`dask_executor(scheduler)` connects to a running Dask scheduler and returns an executor (see
`dagc.experiments.local`): every cell becomes one task that runs `sweep.run_cell(cell)` on a
worker. The cell carries its architecture file's text, so a worker needs only dagc installed;
it compiles the architecture itself (dagc's and numba's on-disk cache make that once per
machine, and each worker process keeps its recent nets). Results come back as they complete
and the caller (the client process, `sweep.run_sweep`) writes each to the results store at
once: workers never touch the store. Numbers are the same as in a local sweep: `run_cell`
pins BLAS and numba to one thread, and each worker process runs one cell at a time.

The parts, one job each: `connection` (the scheduler's address, a client within a bounded
time, the workers' check), `submission` (the loop from cells to results), `faults` (which
failures are a cell's, which the cluster's), `worker` (what runs on the workers).

Faults: a task whose worker dies is rescheduled by Dask itself, up to the scheduler's
`distributed.scheduler.allowed-failures`, and so is a finished cell whose result died with its
worker before the client fetched it; after that, and for a task that raises, the cell becomes
a 'failed' result and the sweep goes on (a rerun retries it). A client that dies or is
interrupted takes its tasks with it; the store then holds every cell finished so far and a
rerun resumes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator

from ..sweep import Cell, Result
from .connection import DEFAULT_TIMEOUT, INSTALL_HINT, Connection, quiet_client_logs
from .submission import Tally, run_cells

__all__ = ["DEFAULT_TIMEOUT", "INSTALL_HINT", "DaskExecutor", "dask_executor"]


def dask_executor(scheduler: str | None = None, scheduler_file: str | None = None,
                  timeout: float | None = None, *, fn: Callable[[Cell], Result] | None = None,
                  log=None) -> DaskExecutor:
    """An executor running cells as tasks on the Dask cluster at `scheduler` (an address such
    as tcp://HOST:8786) or described by `scheduler_file` (written by
    `dask scheduler --scheduler-file FILE`).

    Connects now, so a scheduler that cannot be reached within `timeout` seconds (default
    `connection.DEFAULT_TIMEOUT`) is a one-line `DagcError` before the caller opens the
    store. `fn` replaces `sweep.run_cell` (it must be picklable); `log` (default stderr)
    receives a line when the cluster has no workers and a summary after each sweep.
    """
    return DaskExecutor(scheduler, scheduler_file, timeout, fn=fn, log=log)


class DaskExecutor:
    """See `dask_executor`. Call it like any executor; `close()` disconnects (it also
    disconnects after each sweep and reconnects for the next, and at exit). After a sweep,
    `tally` says what ran where."""

    def __init__(self, scheduler: str | None, scheduler_file: str | None,
                 timeout: float | None = None, *, fn: Callable | None = None, log=None):
        self.fn = fn
        self.log = log
        self.connection = Connection(scheduler, scheduler_file, timeout, self._say)
        self.connection.open()
        self.description = self.connection.describe()
        self.tally = Tally()

    @property
    def address(self) -> str:
        return self.connection.address

    @property
    def client(self):
        """The client while connected, else None."""
        return self.connection.client

    def __call__(self, cells: Iterable[Cell], on_start: Callable | None = None
                 ) -> Iterator[Result]:
        cells = list(cells)
        if not cells:
            return
        client = self.connection.open()
        self.tally = Tally()
        with quiet_client_logs():  # also while closing: a dead scheduler's client logs then
            try:
                yield from run_cells(client, cells, self.fn, on_start, self.address,
                                     self.tally)
                self._summary(len(cells))
            finally:
                self.close()

    def _summary(self, total: int) -> None:
        tally = self.tally
        where = ", ".join(f"{n} on {address}" for address, n in sorted(tally.counts.items()))
        text = f"cluster: ran {total} cell(s) at {self.address}: {where}"
        if tally.failed:
            text += f"; {tally.failed} failed"
        if tally.restarted:
            text += f"; {tally.restarted} restarted after their worker died"
        self._say(text)

    def _say(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.log or sys.stderr)  # above a progress bar, if one shows

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
