"""Sweeps on a Dask distributed cluster (docs/design.md, Executors: local and Dask):
`dagc sweep --scheduler ADDR`.

`dask_executor(scheduler)` connects to a running Dask scheduler and returns an executor (see
`dagc.sweep`): every cell becomes one task that runs `sweep.run_cell(cell)` on a worker. The
cell carries its architecture file's text, so a worker needs only dagc installed; it compiles
the architecture itself (dagc's and numba's on-disk cache make that once per machine, and each
worker process keeps its recent nets). Results come back as they complete and the caller (the
client process, `sweep.run_sweep`) writes each to the results store at once: workers never
touch the store.

Faults: a task whose worker dies (killed, out of memory) is rescheduled on another worker by
Dask itself, up to the scheduler's `distributed.scheduler.allowed-failures`, and so is a
finished cell whose result died with its worker before the client fetched it (it is waited
for again: see `DaskExecutor._result`); after that, and for a task that raises, the cell
becomes a 'failed' result and the sweep goes on (a rerun
retries it). Keys are unique per sweep, so a rerun always reruns. A client that dies takes its
tasks with it (the scheduler releases them); the store then holds every cell finished so far
and a rerun resumes. Numbers are the same as in a local sweep: `run_cell` pins BLAS and numba
to one thread, and each worker process runs one cell at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..errors import DagcError
from . import sweep
from .sweep import Cell, Result

INSTALL_HINT = 'install it with pip install "dagc[dask]"'
DEFAULT_TIMEOUT = 10.0  # seconds to reach the scheduler (and to wait for its file)
START_TOPIC = "dagc-cell-start"  # the workers' "a cell starts" events (one topic, bounded log)


def dask_executor(scheduler: str | None = None, scheduler_file: str | None = None,
                  timeout: float | None = None, *, fn: Callable[[Cell], Result] | None = None,
                  log=None) -> DaskExecutor:
    """An executor running cells as tasks on the Dask cluster at `scheduler` (an address such
    as tcp://HOST:8786) or described by `scheduler_file` (written by
    `dask scheduler --scheduler-file FILE`).

    Connects now, so a scheduler that cannot be reached within `timeout` seconds (default
    `DEFAULT_TIMEOUT`) is a one-line `DagcError` before the caller opens the store. `fn`
    replaces `sweep.run_cell` (it must be picklable); `log` (default stderr) receives a line
    when the cluster has no workers and a summary after each sweep.
    """
    return DaskExecutor(scheduler, scheduler_file, timeout, fn=fn, log=log)


class DaskExecutor:
    """See `dask_executor`. Call it like any executor; `close()` disconnects (it also
    disconnects after each sweep and reconnects for the next, and at exit)."""

    def __init__(self, scheduler: str | None, scheduler_file: str | None,
                 timeout: float | None = None, *, fn: Callable | None = None, log=None):
        if (scheduler is None) == (scheduler_file is None):
            raise DagcError("give either a Dask scheduler address (--scheduler tcp://HOST:PORT) "
                            "or a scheduler file (--scheduler-file FILE), "
                            + ("not both" if scheduler is not None else "got neither"))
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        if not timeout > 0:
            raise DagcError(f"the scheduler timeout must be positive, got {timeout}")
        self.distributed = _import_distributed()
        self.timeout = float(timeout)
        self.scheduler_file = scheduler_file
        self.fn = fn
        self.log = log
        self.address = scheduler
        self.client = None
        self.counts: Counter = Counter()  # worker address -> cells it ran, in the last sweep
        self.failed = 0  # ... failed cells
        self.restarted = 0  # ... cells started more than once (their worker died)
        self.keys: dict[str, Cell] = {}  # task key -> cell, in the last sweep
        self.where: dict[tuple, str] = {}  # cell key -> worker address that ran it, in it
        self._connect()
        self.description = self._describe_cluster()

    # --- connecting ---------------------------------------------------------------------

    def _connect(self) -> None:
        deadline = time.monotonic() + self.timeout
        if self.scheduler_file is not None:
            self.address = _address_from_file(self.scheduler_file, deadline)
        address = self.address
        _check_address(address)
        remaining = max(deadline - time.monotonic(), 0.5)
        # In a thread, to bound the time: a server that accepts the connection but does not
        # speak Dask's protocol keeps the Client's start waiting past its own timeout.
        box: dict = {}
        thread = threading.Thread(target=_new_client, args=(self.distributed, address,
                                                            remaining, box),
                                  name="dagc-dask-connect", daemon=True)
        thread.start()
        thread.join(remaining + 0.5)
        if thread.is_alive() or "error" in box:
            err = box.get("error")
            reason = "" if err is None else _one_line(err)
            reason = "" if "timed out" in reason.lower() or not reason else f" ({reason})"
            if thread.is_alive():  # a client connecting late closes itself
                box["abandoned"] = True
            raise DagcError(f"cannot reach the Dask scheduler at {address} within "
                            f"{self.timeout:g} s{reason}; is `dask scheduler` running there "
                            "and the port open?")
        client = box["client"]
        self.client = client
        weakref.finalize(self, _close_quietly, client)

    def _describe_cluster(self) -> str:
        workers = self._workers()
        threads = sum(info.get("nthreads", 0) for info in workers.values())
        self._check_workers(workers)
        return (f"on the Dask cluster at {self.address} ({len(workers)} worker(s), "
                f"{threads} thread(s) now)")

    def _workers(self) -> dict:
        try:
            info = self.client.scheduler_info(n_workers=-1)
        except TypeError:  # distributed before 2024.12 lists every worker anyway
            info = self.client.scheduler_info()
        return dict(info.get("workers", {}))

    def _check_workers(self, workers: dict) -> None:
        """Workers must import this dagc; say so now rather than failing every cell."""
        if not workers:
            self._say(f"cluster: no workers at {self.address} yet; cells wait for some "
                      f"(start them with `dask worker {self.address} --nthreads 1`)")
            return
        from .. import __version__

        try:
            answers = self.client.run(_worker_info, on_error="return")
        except Exception as err:  # noqa: BLE001
            raise DagcError(f"the Dask workers at {self.address} cannot run dagc "
                            f"({_one_line(err)}); {INSTALL_HINT} on every worker") from None
        for address, answer in sorted(answers.items()):
            if isinstance(answer, BaseException):
                raise DagcError(f"Dask worker {address} cannot run dagc ({_one_line(answer)}); "
                                f"install dagc {__version__} on every worker") from None
            if answer.get("dagc") != __version__:
                self._say(f"cluster: warning: worker {address} has dagc {answer.get('dagc')}, "
                          f"this process {__version__}")
        many = sorted(a for a, info in workers.items() if info.get("nthreads", 1) > 1)
        if many:
            self._say(f"cluster: note: {len(many)} worker(s) have several threads but run one "
                      "cell at a time (BLAS's thread count is per process); start workers "
                      "with --nthreads 1 and --nworkers N to use N cores")

    # --- running ------------------------------------------------------------------------

    def __call__(self, cells: Iterable[Cell], on_start: Callable | None = None
                 ) -> Iterator[Result]:
        cells = list(cells)
        if not cells:
            return
        if self.client is None or self.client.status not in ("running", "connecting"):
            self._connect()
        client = self.client
        sweep_id = uuid.uuid4().hex[:8]
        self.counts, self.failed, self.restarted, self.where = Counter(), 0, 0, {}
        by_key: dict[str, Cell] = {}
        starts: queue.SimpleQueue = queue.SimpleQueue()
        subscribed = _subscribe(client, sweep_id, starts)
        outstanding: dict[str, object] = {}  # key -> future not yet yielded
        try:
            for i, cell in enumerate(cells):  # in plan order: earlier tasks go first
                key = f"dagc-cell-{sweep_id}-{i}"
                by_key[key] = cell
                outstanding[key] = client.submit(_run_task, cell, self.fn, sweep_id, key,
                                                 key=key, pure=False, retries=0)
            self.keys = by_key
            pending = self.distributed.as_completed(list(outstanding.values()), loop=client.loop)
            seen: Counter = Counter()  # key -> times it started (more: its worker died)
            while not pending.is_empty():
                _drain(starts, by_key, seen, on_start)
                batch = pending.next_batch(block=False)
                if not batch:
                    time.sleep(0.05)
                    continue
                for future in batch:
                    result = self._result(future, by_key[future.key])
                    if result is None:  # its result died with its worker: being recomputed
                        pending.add(future)  # as_completed emits it again when it ends
                        continue
                    del outstanding[future.key]
                    future.release()
                    yield result
            _drain(starts, by_key, seen, on_start)
            self.restarted = sum(1 for n in seen.values() if n > 1)
            self._summary(len(cells))
        finally:
            if outstanding:  # stopped early: drop the cells not done
                with contextlib.suppress(Exception):
                    client.cancel(list(outstanding.values()), force=True)
            if subscribed:
                with contextlib.suppress(Exception):
                    client.unsubscribe_topic(START_TOPIC)
            self.close()

    def _result(self, future, cell: Cell) -> Result | None:
        """The result of the cell whose `future` as_completed emitted, or None if the future
        is not done after all and must be waited for again.

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
            return None
        if status == "finished":
            try:  # a result lost during the fetch: result() itself waits for its recomputation
                result, worker = future.result()
            except Exception as err:  # noqa: BLE001 - its recomputation failed or was dropped
                return self._failed(cell, f"could not fetch the result from the cluster "
                                          f"({_one_line(err)})")
            self.counts[worker or "?"] += 1
            self.where[cell.key] = worker or "?"
            if result.status != "ok":
                self.failed += 1
            return result
        if status == "cancelled":
            try:
                future.result()  # raises the FutureCancelledError saying why
            except Exception as err:  # noqa: BLE001
                reason = str(getattr(err, "reason", "") or _one_line(err))
            else:  # pragma: no cover - a cancelled future has no result
                reason = "unknown"
            if (reason != "scheduler-connection-lost"
                    and self.client.status in ("running", "connecting")):
                # the scheduler dropped the task (forgot it, restarted): this cell fails
                return self._failed(cell, f"the Dask scheduler dropped this cell's task "
                                          f"({reason})")
        if status == "cancelled" or self.client.status not in ("running", "connecting"):
            raise DagcError(f"lost the connection to the Dask scheduler at {self.address}; "
                            "the finished cells are in the store: run the same command again "
                            "to resume")
        # 'error' is all that is left, and final: exception() returns at once
        try:
            err = future.exception()
        except Exception as other:  # noqa: BLE001
            err = other
        if type(err).__name__ == "KilledWorker":
            failures = err.args[2] if len(err.args) > 2 else "several"
            return self._failed(cell, "the worker process died every time it ran this cell "
                                      f"(killed or out of memory; Dask gave up after "
                                      f"{failures} allowed failure(s): KilledWorker)")
        return self._failed(cell, _describe(err))

    def _failed(self, cell: Cell, error: str) -> Result:
        self.failed += 1
        self.counts["(none)"] += 1
        return sweep.failed_result(cell, error)

    def _summary(self, total: int) -> None:
        where = ", ".join(f"{n} on {address}" for address, n in sorted(self.counts.items()))
        text = f"cluster: ran {total} cell(s) at {self.address}: {where}"
        if self.failed:
            text += f"; {self.failed} failed"
        if self.restarted:
            text += f"; {self.restarted} restarted after their worker died"
        self._say(text)

    def _say(self, text: str) -> None:
        out = self.log or sys.stderr
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency
            print(text, file=out)
        else:
            tqdm.write(text, file=out)  # above a progress bar, if one is showing

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            _close_quietly(client)

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- on the workers ---------------------------------------------------------------------------

_CELL_LOCK = threading.Lock()  # one cell at a time per worker process


def _run_task(cell: Cell, fn: Callable | None, sweep_id: str, key: str
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
            result = sweep.failed_result(cell, _describe(err), time.perf_counter() - start)
    return result, address


def _worker_info() -> dict:
    from .. import __version__

    return {"dagc": __version__, "pid": os.getpid()}


# --- helpers ------------------------------------------------------------------------------------

def _import_distributed():
    try:
        import distributed
    except ImportError as err:
        raise DagcError(f"running sweeps on a Dask cluster needs dask.distributed, which is "
                        f"not installed ({_one_line(err)}); {INSTALL_HINT}") from None
    return distributed


def _new_client(distributed, address: str, timeout: float, box: dict) -> None:
    try:
        client = distributed.Client(address, timeout=timeout, set_as_default=False)
    except Exception as err:  # noqa: BLE001 - OSError, TimeoutError, protocol errors
        box["error"] = err
        return
    box["client"] = client
    if box.get("abandoned"):
        _close_quietly(client)


def _check_address(address) -> None:
    """A malformed address is an error now (the Client would take its whole timeout)."""
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import get_backend

    problem = None
    if not isinstance(address, str) or not address or any(c.isspace() for c in address):
        problem = "expected one address"
    else:
        try:
            scheme, location = parse_address(address)
            get_backend(scheme)
            if scheme in ("tcp", "tls", "ws", "wss"):
                host, port = parse_host_port(location)
                if not host or not 0 < int(port) < 65536:
                    problem = "expected HOST:PORT"
        except (ValueError, TypeError) as err:
            problem = _one_line(err)
    if problem:
        raise DagcError(f"--scheduler: bad Dask scheduler address {address!r} ({problem}; "
                        "e.g. tcp://HOST:8786)")


def _address_from_file(path: str, deadline: float) -> str:
    """The scheduler address in a scheduler file, waiting for it to appear until `deadline`
    (a scheduler started at the same time writes it when it is up)."""
    problem = "no such file"
    while True:
        try:
            info = json.loads(Path(path).read_text())
            address = info["address"]
            if isinstance(address, str) and address:
                return address
            problem = "no scheduler address in it"
        except FileNotFoundError:
            problem = "no such file"
            if not Path(path).parent.is_dir():
                raise DagcError(f"--scheduler-file {path}: no such file or directory") from None
        except IsADirectoryError:
            raise DagcError(f"--scheduler-file {path}: is a directory") from None
        except OSError as err:
            raise DagcError(f"--scheduler-file {path}: cannot read it: "
                            f"{err.strerror or err}") from None
        except (ValueError, KeyError, TypeError):  # maybe still being written
            problem = "not a Dask scheduler file (JSON with an 'address')"
        if time.monotonic() >= deadline:
            raise DagcError(f"--scheduler-file {path}: {problem} (waited until the timeout; "
                            f"start the scheduler with `dask scheduler --scheduler-file {path}`)")
        time.sleep(0.1)


def _subscribe(client, sweep_id: str, starts: queue.SimpleQueue) -> bool:
    """Have the workers' "cell starts" events of this sweep put their keys on `starts`."""
    def handler(event) -> None:
        message = event[1] if isinstance(event, tuple) and len(event) == 2 else event
        if isinstance(message, dict) and message.get("sweep") == sweep_id:
            starts.put(message.get("key"))

    try:
        client.subscribe_topic(START_TOPIC, handler)
    except Exception:  # noqa: BLE001 - progress labels only
        return False
    return True


def _drain(starts: queue.SimpleQueue, by_key: dict, seen: Counter, on_start) -> None:
    while True:
        try:
            key = starts.get_nowait()
        except queue.Empty:
            return
        if key not in by_key:
            continue
        seen[key] += 1
        if seen[key] == 1 and on_start is not None:
            on_start(by_key[key])


def _describe(err: BaseException) -> str:
    message = " ".join(str(err).split()) or "(no message)"
    return f"{type(err).__name__}: {message}"


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _close_quietly(client) -> None:
    with contextlib.suppress(Exception):
        client.close(timeout=5)
