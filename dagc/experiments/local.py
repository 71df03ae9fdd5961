"""Local executors: run a sweep's cells in this process or in a pool of worker processes.

An executor is a function `executor(cells, on_start=None)` that runs cells and yields their
`Result`s as they complete (`on_start(cell)` is called as a cell starts); `sweep.run_sweep`
stores each result as it arrives. Both executors here run every cell single-threaded (BLAS,
OpenMP, numba), so a cell gives the same bits whatever the job count (docs/design.md,
"Executors: local and Dask").

Ctrl-C stops either one: the serial executor turns a SIGINT that numba or a LAPACK callback
wrapped into another exception back into `KeyboardInterrupt` and drops the interrupted cell
(it is not a failure: a rerun runs it); the pool kills its workers, which ignore SIGINT.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from threadpoolctl import threadpool_limits

from ..errors import DagcError
from .sweep import Cell, Result, describe_error, failed_result, run_cell, single_threaded

Executor = Callable[..., Iterator[Result]]

# Environment variables that make BLAS, OpenMP and numba use one thread. A spawned worker
# imports numpy and numba while it unpickles its target, before any initializer runs, so
# they must already be in the environment it starts with.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

# A worker is replaced after this many cells: the nets it loaded and the machine code numba
# generated for them stay in the process, so a long sweep over many architectures would
# otherwise grow every worker. High enough that a worker finishes several groups first.
CELLS_PER_WORKER = 200


def make_executor(jobs: int, fn: Callable[[Cell], Result] | None = None) -> Executor:
    """The executor of `dagc sweep --jobs N`: this process for 1, else a local pool."""
    if jobs == 1:
        return functools.partial(serial_executor, fn=fn)
    return process_executor(jobs, fn)


# --- in this process --------------------------------------------------------------------------

def serial_executor(cells: Iterable[Cell], on_start: Callable | None = None, *,
                    fn: Callable[[Cell], Result] | None = None) -> Iterator[Result]:
    """Run the cells one by one in this process, single-threaded like a pool worker (so the
    numbers do not depend on the job count: BLAS sums in another order on more threads).

    A Ctrl-C during a cell raises `KeyboardInterrupt` and the cell yields nothing, even when
    the interrupt surfaced inside compiled code as some other error."""
    with single_threaded(), _sigint_seen() as interrupted:
        for cell in cells:
            if on_start is not None:
                on_start(cell)
            result = (fn or run_cell)(cell)
            if interrupted():
                raise KeyboardInterrupt
            yield result


@contextlib.contextmanager
def _sigint_seen() -> Iterator[Callable[[], bool]]:
    """While active, SIGINT is remembered (and raises KeyboardInterrupt as usual).

    A KeyboardInterrupt raised inside a callback from numba or scipy's Fortran comes out
    as a SystemError ("returned a result with an exception set") that `run_cell` would
    store as a failed cell; the flag lets the caller know the cell was interrupted."""
    seen = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield seen.is_set  # signals reach only the main thread: nothing to watch here
        return

    def handler(signum, frame):
        seen.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield seen.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


# --- in a pool of worker processes ------------------------------------------------------------

def process_executor(jobs: int, fn: Callable[[Cell], Result] | None = None) -> Executor:
    """An executor running cells in `jobs` spawned worker processes, one cell at a time each.

    Every worker uses one BLAS/OpenMP/numba thread (so `jobs` processes share the cores
    instead of fighting over them) and keeps working on one (architecture, width) group, so it
    compiles or loads each net once; idle workers take new groups, then help with unfinished
    ones. A worker that dies (crash, out of memory) fails its cell and is replaced; workers
    die with this process. `fn` must be picklable (a top-level function or a
    `functools.partial` of one).
    """
    if jobs < 1:
        raise DagcError(f"--jobs must be at least 1, got {jobs}")

    def execute(cells: Iterable[Cell], on_start: Callable | None = None) -> Iterator[Result]:
        return _run_pool(list(cells), jobs, fn or run_cell, on_start)

    return execute


class _Groups:
    """The cells not yet started, by (architecture, width) group, and the group each worker
    is on: a worker stays on its group, so it compiles or loads each net once."""

    def __init__(self, cells: Iterable[Cell]):
        self.remaining: dict[tuple, deque[Cell]] = {}
        for cell in cells:
            self.remaining.setdefault(cell.group, deque()).append(cell)
        self.started: set[tuple] = set()
        self.group_of: dict[int, tuple] = {}  # worker -> its group
        self.archs_of: dict[int, set[str]] = {}  # worker -> architectures it loaded

    def __bool__(self) -> bool:
        return any(self.remaining.values())

    def next_for(self, worker: int, busy: Iterable[int]) -> Cell:
        """The next cell for `worker`: from its group; else a new group, preferring an
        architecture it has loaded, then one no `busy` worker is loading; else from the end
        of the largest unfinished group (its owner works from the start)."""
        group = self.group_of.get(worker)
        if group is not None and self.remaining.get(group):
            return self.remaining[group].popleft()
        fresh = [g for g, cells in self.remaining.items() if cells and g not in self.started]
        loaded = self.archs_of.get(worker, set())
        others = {self.group_of[w][0] for w in busy if w in self.group_of}
        group = next((g for g in fresh if g[0] in loaded), None) \
            or next((g for g in fresh if g[0] not in others), None) \
            or next(iter(fresh), None)
        take_last = group is None
        if take_last:
            group = max((g for g in self.remaining if self.remaining[g]),
                        key=lambda g: len(self.remaining[g]))
        self.started.add(group)
        self.group_of[worker] = group
        self.archs_of.setdefault(worker, set()).add(group[0])
        return self.remaining[group].pop() if take_last else self.remaining[group].popleft()


class _Worker:
    """One worker process: a ProcessPoolExecutor of one, so the sweep chooses which worker
    runs which cell (a shared pool hands a task to whichever worker asks first, and so
    scatters a group's cells over workers that each load its net), and a worker that dies
    breaks only itself."""

    def __init__(self, index: int):
        self.index = index
        self.cell: Cell | None = None
        self.pool = _new_pool()

    def submit(self, fn: Callable, cell: Cell) -> Future:
        self.cell = cell
        return self.pool.submit(_run_in_worker, fn, cell)

    def replace(self) -> str:
        """Start a new process after this one died; returns the dead one's exit code."""
        process = _process_of(self.pool)
        if process is not None:
            process.join(timeout=5.0)  # its pipe closes a moment before its exit code is there
        code = "unknown" if process is None or process.exitcode is None else process.exitcode
        self.stop(now=True)
        self.pool = _new_pool()
        return str(code)

    def stop(self, now: bool) -> None:
        """Let the process finish (`now`: kill it, without waiting for its cell)."""
        if now:
            process = _process_of(self.pool)
            with contextlib.suppress(OSError, ValueError, AttributeError):
                if process is not None:
                    process.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _run_pool(cells: list[Cell], jobs: int, fn: Callable, on_start: Callable | None
              ) -> Iterator[Result]:
    """Keep every worker busy until the cells run out; yield the results as they come."""
    groups = _Groups(cells)
    workers: list[_Worker] = []
    finished = False
    with single_threaded_environment():  # for every worker, also those started later
        try:
            workers = [_Worker(i) for i in range(min(jobs, len(cells)))]
            in_flight: dict[Future, _Worker] = {}
            while True:
                for worker in workers:
                    if worker.cell is None and groups:
                        busy = [w.index for w in workers if w.cell is not None]
                        cell = groups.next_for(worker.index, busy)
                        if on_start is not None:
                            on_start(cell)
                        in_flight[worker.submit(fn, cell)] = worker
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    worker = in_flight.pop(future)
                    cell, worker.cell = worker.cell, None
                    if isinstance(future.exception(), BrokenProcessPool):
                        yield failed_result(cell, f"the worker process died (exit code "
                                                  f"{worker.replace()}) while running this cell")
                    else:
                        yield future.result()
            finished = True
        finally:
            for worker in workers:
                worker.stop(now=not finished)


def _new_pool() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(),),
                               max_tasks_per_child=CELLS_PER_WORKER)


def _process_of(pool: ProcessPoolExecutor):
    """The pool's one process, if started. ProcessPoolExecutor has no public way to stop a
    running task or read a dead worker's exit code; its process table is the only handle."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    return processes[0] if processes else None


def _run_in_worker(fn: Callable[[Cell], Result], cell: Cell) -> Result:
    """A worker's task: run the cell; a custom `fn` that raises fails the cell."""
    start = time.perf_counter()
    try:
        return fn(cell)
    except Exception as err:  # noqa: BLE001 - a custom fn that raised
        return failed_result(cell, describe_error(err), time.perf_counter() - start)


def _worker_init(parent: int) -> None:
    """Set up a worker process: Ctrl-C is the parent's to handle, and the worker dies with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    threadpool_limits(1)  # belt and braces: the environment already asked for one thread


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this worker when the sweep process dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


@contextlib.contextmanager
def single_threaded_environment() -> Iterator[None]:
    """Temporarily set the thread-count variables to 1 (for starting worker processes)."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: "1" for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
