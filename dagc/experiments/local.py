"""Local executors: run a sweep's cells in this process or in a pool of worker processes.

An executor is a function `executor(cells, on_start=None)` that runs cells and yields their
`Result`s as they complete (`on_start(cell)` is called as a cell starts); `sweep.run_sweep`
stores each result as it arrives. Both executors here run every cell single-threaded (BLAS,
OpenMP, numba), so a cell gives the same bits whatever the job count (docs/design.md,
"sweeps").

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
    ones. A worker that dies (crash, out of memory) fails its cell, and the pool is replaced.
    Workers die with this process. `fn` must be picklable (a top-level function or a
    `functools.partial` of one).
    """
    if jobs < 1:
        raise DagcError(f"--jobs must be at least 1, got {jobs}")

    def execute(cells: Iterable[Cell], on_start: Callable | None = None) -> Iterator[Result]:
        return _run_pool(list(cells), jobs, fn or run_cell, on_start)

    return execute


class _Groups:
    """The cells not yet started, by (architecture, width) group, and which group each worker
    is on: a worker stays on its group, so it compiles or loads each net once."""

    def __init__(self, cells: Iterable[Cell]):
        self.remaining: dict[tuple, deque[Cell]] = {}
        for cell in cells:
            self.remaining.setdefault(cell.group, deque()).append(cell)
        self.started: set[tuple] = set()
        self.group_of: dict[int, tuple] = {}  # worker pid -> its group
        self.archs_of: dict[int, set[str]] = {}  # worker pid -> architectures it loaded

    def __bool__(self) -> bool:
        return any(self.remaining.values())

    def next_for(self, worker: int | None, busy: Iterable[int | None]) -> Cell:
        """The next cell for `worker` (a pid, None for a worker not heard from yet): from its
        group; else a new group, preferring an architecture it has loaded, then one no busy
        worker is loading; else from the end of the largest unfinished group."""
        group = self.group_of.get(worker)
        if group is not None and self.remaining.get(group):
            return self.remaining[group].popleft()
        fresh = [g for g, cells in self.remaining.items() if cells and g not in self.started]
        loaded = self.archs_of.get(worker, set())
        others = {self.group_of[w][0] for w in busy if w in self.group_of}
        group = next((g for g in fresh if g[0] in loaded), None) \
            or next((g for g in fresh if g[0] not in others), None) \
            or next(iter(fresh), None)
        if group is not None:
            self._assign(worker, group)
            return self.remaining[group].popleft()
        group = max((g for g in self.remaining if self.remaining[g]),
                    key=lambda g: len(self.remaining[g]))
        self._assign(worker, group)
        return self.remaining[group].pop()  # its owner works from the start

    def _assign(self, worker: int | None, group: tuple) -> None:
        self.started.add(group)
        if worker is not None:
            self.group_of[worker] = group
            self.archs_of.setdefault(worker, set()).add(group[0])

    def ran(self, worker: int, cell: Cell) -> None:
        """`worker` ran `cell`: a worker first heard from now is on that cell's group."""
        if worker not in self.group_of:
            self._assign(worker, cell.group)


def _run_pool(cells: list[Cell], jobs: int, fn: Callable, on_start: Callable | None
              ) -> Iterator[Result]:
    """Run cells on a pool, replacing the pool when a worker dies. The cells in flight when
    that happens are rerun one at a time, so the one that kills its worker is found and
    fails alone."""
    groups = _Groups(cells)
    suspects: deque[Cell] = deque()
    jobs = min(jobs, len(cells))
    with single_threaded_environment():  # for every worker, also those started later
        while groups or suspects:
            with _worker_pool(jobs) as pool:
                broken, code = yield from _dispatch(pool, jobs, groups, suspects, fn, on_start)
            if len(broken) == 1:  # it ran alone: its cell killed it
                yield failed_result(broken[0], f"the worker process died (exit code {code}) "
                                               "while running this cell")
            else:
                suspects.extend(broken)


def _dispatch(pool: ProcessPoolExecutor, jobs: int, groups: _Groups, suspects: deque,
              fn: Callable, on_start: Callable | None):
    """Keep the pool's `jobs` workers busy until the cells run out; yield the results.
    Returns the cells that were in flight when a worker died (the pool is then broken) and
    that worker's exit code, else ([], None)."""
    in_flight: dict[Future, tuple[Cell, int | None]] = {}
    idle: list[int | None] = [None] * jobs  # pids; None: a worker not heard from yet
    while True:
        alone = bool(suspects)  # a suspect runs with nothing beside it
        while idle and (suspects or groups) and not (alone and in_flight):
            worker = idle.pop()
            busy = [w for _, w in in_flight.values()]
            cell = suspects.popleft() if alone else groups.next_for(worker, busy)
            if on_start is not None:
                on_start(cell)
            in_flight[pool.submit(_run_in_worker, fn, cell)] = (cell, worker)
        if not in_flight:
            return [], None
        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        code = None
        if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
            wait(in_flight)  # a broken pool fails every pending future at once
            code = _exit_code(pool)  # before shutdown forgets the workers
            done = set(in_flight)
        broken = []
        for future in sorted(done, key=lambda f: in_flight[f][0].key):
            cell, _ = in_flight.pop(future)
            if isinstance(future.exception(), BrokenProcessPool):
                broken.append(cell)
                continue
            result, worker = future.result()
            groups.ran(worker, cell)
            idle.append(worker)
            yield result
        if broken:
            return broken, code


@contextlib.contextmanager
def _worker_pool(jobs: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of `jobs` spawned, single-threaded workers that die with this process. Leaving
    the block early (Ctrl-C, an error) kills the workers rather than waiting for their cells."""
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(),),
                               max_tasks_per_child=CELLS_PER_WORKER)
    finished = False
    try:
        yield pool
        finished = True
    finally:
        if not finished:
            _kill_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)


def _workers(pool: ProcessPoolExecutor) -> list:
    # ProcessPoolExecutor has no public way to stop a running task or read a dead worker's
    # exit code; its process table is the only handle on them.
    return list((getattr(pool, "_processes", None) or {}).values())


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    for process in _workers(pool):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.kill()


def _exit_code(pool: ProcessPoolExecutor) -> str:
    """The exit code of the worker that died; the pool terminated the others (SIGTERM)."""
    workers = _workers(pool)
    for process in workers:  # its pipe closes a moment before its exit code is there
        process.join(timeout=1.0)
    codes = [p.exitcode for p in workers if p.exitcode not in (None, 0)]
    own = [code for code in codes if code != -signal.SIGTERM]
    return str((own or codes or ["unknown"])[0])


def _run_in_worker(fn: Callable[[Cell], Result], cell: Cell) -> tuple[Result, int]:
    """A worker's task: run the cell and say which worker ran it."""
    start = time.perf_counter()
    try:
        result = fn(cell)
    except Exception as err:  # noqa: BLE001 - a custom fn that raised
        result = failed_result(cell, describe_error(err), time.perf_counter() - start)
    return result, os.getpid()


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
