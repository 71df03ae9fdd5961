"""Sweeps: plan the grid of cells, skip the finished ones, run the rest, store each result.

A *cell* is one (architecture, width, seed, metric) measurement under one set of options. It
carries the architecture file's text, so whoever runs it (this process, a local worker process,
a cluster worker) needs nothing else. `run_cell(cell) -> Result` is a pure, picklable top-level
function: the same cell gives the same numbers in any order, process or job count.

An *executor* is a function `executor(cells, on_start=None)` that runs cells and yields their
`Result`s as they complete (`on_start(cell)`, if given, is called when a cell starts).
`serial_executor` runs them in this process; `process_executor(jobs)` in a local pool of
single-threaded worker processes. The caller (`run_sweep`) writes every result to the store as
it arrives, so an interrupted sweep loses only the cells in flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import json
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import wait
from pathlib import Path
from types import SimpleNamespace

import numba
from numba.np.ufunc import parallel as numba_parallel
from threadpoolctl import threadpool_limits

from .. import __version__, measure, runtime
from ..backend import render as codegen
from ..errors import DagcError
from ..frontend import spec
from ..ir import graph
from .store import Store, host_name

# The metrics of dagc.measure (design.md section 5), for checking arguments before it is loaded.
METRICS = measure.METRICS
# Defaults of dagc.measure.Options, used only when dagc.measure cannot be imported.
QUICK_WIDTHS = (32, 64, 128, 256)
QUICK_SEEDS = 2
QUICK_METRICS = ("hessian", "gradient")
QUICK_OPTIONS = dict(inputs=2)

# Environment variables that make BLAS, OpenMP and numba use one thread. They must be set
# before numpy or numba is imported, which in a spawned worker happens while it unpickles its
# target, before any initializer runs; so they are set in the environment it starts with.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class Architecture:
    """An architecture file as a sweep carries it: its name, text and text digest."""

    name: str
    digest: str  # of the text (and of the graph file a neuron-level architecture names)
    text: str = field(repr=False)
    path: str  # absolute; for messages and for graph files named relative to it


@dataclass(frozen=True)
class Cell:
    """One measurement: picklable, self-contained, identified by `key`."""

    arch: str
    digest: str
    text: str = field(repr=False)
    path: str
    width: int
    seed: int
    metric: str
    options: str  # JSON, sorted keys
    options_hash: str

    @property
    def key(self) -> tuple:
        """The store's primary key (`store.KEY_COLUMNS`)."""
        return (self.arch, self.digest, self.width, self.seed, self.metric, self.options_hash)

    @property
    def group(self) -> tuple:
        """Cells of one group share a compiled net: same architecture and width."""
        return (self.digest, self.path, self.width)

    @property
    def label(self) -> str:
        return f"{self.arch} width={self.width} seed={self.seed} {self.metric}"


@dataclass(frozen=True)
class Result:
    """What running a cell gave: a value and extras, or an error."""

    cell: Cell
    status: str  # "ok" | "failed"
    value: float | None
    extras: dict
    error: str | None
    width_m: int | None
    depth: int | None
    n_params: int | None
    elapsed: float
    host: str
    timestamp: str
    dagc_version: str

    def row(self) -> dict:
        """The store row of this result."""
        c = self.cell
        return dict(arch=c.arch, digest=c.digest, width=c.width, seed=c.seed, metric=c.metric,
                    options_hash=c.options_hash, status=self.status, value=self.value,
                    extras=self.extras, error=self.error, width_m=self.width_m,
                    depth=self.depth, n_params=self.n_params, arch_text=c.text,
                    options=c.options, dagc_version=self.dagc_version, elapsed=self.elapsed,
                    host=self.host, timestamp=self.timestamp)


@dataclass
class Outcome:
    """What `run_sweep` did."""

    cells: list[Cell]  # the planned grid
    skipped: int  # already finished in the store
    ran: int  # finished now (ok or failed)
    failed: list[Result]


# --- planning -------------------------------------------------------------------------------

def default_options() -> dict:
    """The measurement options' defaults (`dagc.measure.Options`)."""
    return dataclasses.asdict(measure.Options())


def make_options(**overrides) -> dict:
    """Default options with some replaced, checked and normalized by `dagc.measure.Options`;
    unknown names are an error."""
    options = default_options()
    unknown = sorted(set(overrides) - set(options))
    if unknown:
        raise DagcError(f"unknown measurement option(s) {', '.join(unknown)} "
                        f"(known: {', '.join(options)})")
    options.update(overrides)
    return dataclasses.asdict(measure.Options(**options))


def options_key(options: dict) -> tuple[str, str]:
    """(canonical JSON, hash) of an options dict; the hash is part of every cell's key."""
    text = json.dumps(options, sort_keys=True, separators=(",", ":"))
    return text, hashlib.sha256(text.encode()).hexdigest()[:16]


def load_architectures(names: Sequence[str | Path], widths: Sequence[int],
                       validate_seconds: float = 2.0) -> list[Architecture]:
    """Read, parse and check architectures (bundled names or paths) before a sweep.

    Each is built at its smallest width and its module generated (one module serves every
    width), then built at further widths while that stays quick (`validate_seconds` each):
    an architecture that does not compile is a `DagcError` before anything is run or stored.
    Repeated architectures (same text) are kept once.
    """
    archs: dict[str, Architecture] = {}
    for name in names:
        parsed = spec.load(name)
        path = str(Path(parsed.path).resolve())
        parsed = spec.parse(parsed.text, path)
        start = time.perf_counter()
        for i, width in enumerate(sorted(widths)):
            ir = graph.build(parsed, width)
            if i == 0:
                codegen.write_module(ir, runtime.cache_dir())
            if time.perf_counter() - start > validate_seconds:
                break
        digest = parsed.digest
        if isinstance(parsed.graph, Path):  # the neurons are in another file: hash it too
            data = parsed.graph.read_bytes()
            digest = hashlib.sha256(parsed.text.encode() + b"\0" + data).hexdigest()[:16]
        archs.setdefault(digest, Architecture(parsed.name, digest, parsed.text, path))
    return list(archs.values())


def plan(archs: Sequence[Architecture], widths: Sequence[int], seeds: Iterable[int],
         metrics: Sequence[str], options: dict) -> list[Cell]:
    """Every cell of the grid, grouped by (architecture, width): groups ordered by width,
    then architecture (so the first groups of a parallel sweep compile different
    architectures); within a group, by seed then metric."""
    text, digest = options_key(options)
    seeds = list(seeds)
    return [Cell(a.name, a.digest, a.text, a.path, width, seed, metric, text, digest)
            for width in widths for a in archs for seed in seeds for metric in metrics]


# --- running one cell -----------------------------------------------------------------------

def compile_net(text: str, path: str, width: int):
    """The default way a cell gets its network: parse the carried text and compile it."""
    return runtime.compile_spec(spec.parse(text, path), width)


_NETS: OrderedDict = OrderedDict()  # this process's recently used nets
_NETS_KEPT = 2


def _net(cell: Cell, load_net: Callable):
    key = (load_net, cell.digest, cell.path, cell.width)
    if key in _NETS:
        _NETS.move_to_end(key)
        return _NETS[key]
    net = load_net(cell.text, cell.path, cell.width)
    _NETS[key] = net
    while len(_NETS) > _NETS_KEPT:
        _NETS.popitem(last=False)
    return net


def run_cell(cell: Cell, *, load_net: Callable | None = None,
             measure_fn: Callable | None = None) -> Result:
    """Run one cell: compile (or reuse) its net, measure, and return a `Result`.

    BLAS runs on one thread meanwhile, so a cell gives the same numbers in any executor (an
    executor with threads should run one cell per process at a time: BLAS's thread count is
    per process). Never raises for a failing measurement: the error becomes a 'failed'
    result. The net of the cell's (architecture, width) is kept for the next cells of the
    same group. `load_net` (text, path, width) -> net and `measure_fn` (net, metric, seed,
    options) -> dict replace the defaults (`compile_net`, `dagc.measure.measure`); a
    replacement `measure_fn` receives the options as a namespace.
    """
    start = time.perf_counter()
    net = None
    status, value, extras, error = "failed", None, {}, None
    try:
        with single_threaded():  # the numbers must not depend on how many threads BLAS has
            net = _net(cell, load_net or compile_net)
            options = json.loads(cell.options)
            if measure_fn is None:
                out = measure.measure(net, cell.metric, cell.seed, measure.Options(**options))
            else:
                out = measure_fn(net, cell.metric, cell.seed, SimpleNamespace(**options))
        value, extras = _split(out)
        status = "ok"
    except Exception as err:  # noqa: BLE001 - recorded as a failed cell, retried by a rerun
        error = _describe(err)
    return Result(
        cell=cell, status=status, value=value, extras=extras, error=error,
        width_m=_int_attr(net, "width_m"), depth=_int_attr(net, "depth"),
        n_params=_int_attr(net, "n_params"), elapsed=time.perf_counter() - start,
        host=host_name(), timestamp=_now(), dagc_version=__version__)


def failed_result(cell: Cell, error: str, elapsed: float = 0.0) -> Result:
    return Result(cell=cell, status="failed", value=None, extras={}, error=error,
                  width_m=None, depth=None, n_params=None, elapsed=elapsed, host=host_name(),
                  timestamp=_now(), dagc_version=__version__)


def _split(out) -> tuple[float, dict]:
    if not isinstance(out, dict) or "value" not in out:
        raise TypeError(f"measure returned {type(out).__name__}, expected a dict with 'value'")
    extras = {}
    for name, item in out.items():
        if name != "value":
            extras[name] = item if isinstance(item, (str, bool)) or item is None else float(item)
    return float(out["value"]), extras


def _describe(err: BaseException) -> str:
    where = traceback.extract_tb(err.__traceback__)
    message = " ".join(str(err).split()) or "(no message)"
    text = f"{type(err).__name__}: {message}"
    if where and not isinstance(err, DagcError):
        frame = where[-1]
        text += f" [at {Path(frame.filename).name}:{frame.lineno} in {frame.name}]"
    return text


def _int_attr(net, name: str) -> int | None:
    value = getattr(net, name, None)
    return None if value is None else int(value)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- executors ------------------------------------------------------------------------------

Executor = Callable[..., Iterator[Result]]


def serial_executor(cells: Iterable[Cell], on_start: Callable | None = None, *,
                    fn: Callable[[Cell], Result] | None = None) -> Iterator[Result]:
    """Run the cells one by one in this process, single-threaded like a pool worker (so the
    numbers do not depend on the job count: BLAS sums in another order on more threads)."""
    with single_threaded():
        for cell in cells:
            if on_start is not None:
                on_start(cell)
            yield (fn or run_cell)(cell)


def make_executor(jobs: int, fn: Callable[[Cell], Result] | None = None) -> Executor:
    """The executor of `dagc sweep --jobs N`: this process for 1, else a local pool."""
    if jobs == 1:
        return functools.partial(serial_executor, fn=fn)
    return process_executor(jobs, fn)


def process_executor(jobs: int, fn: Callable[[Cell], Result] | None = None) -> Executor:
    """An executor running cells in `jobs` spawned worker processes, one cell at a time each.

    Every worker uses one BLAS/OpenMP/numba thread (so `jobs` processes share the cores
    instead of fighting over them) and keeps working on one (architecture, width) group, so it
    compiles or loads each net once; idle workers take new groups, then help with unfinished
    ones. A worker that dies (crash, out of memory) fails its cell and is replaced. `fn` must
    be picklable (a top-level function or a `functools.partial` of one).
    """
    if jobs < 1:
        raise DagcError(f"--jobs must be at least 1, got {jobs}")

    def execute(cells: Iterable[Cell], on_start: Callable | None = None) -> Iterator[Result]:
        return _pool(list(cells), jobs, fn or run_cell, on_start)

    return execute


class _Worker:
    def __init__(self, context, fn: Callable, index: int):
        self.conn, child = context.Pipe()
        with single_threaded_environment():
            self.process = context.Process(target=_worker_main, args=(child, fn, os.getpid()),
                                           name=f"dagc-sweep-{index}", daemon=True)
            self.process.start()
        child.close()
        self.cell: Cell | None = None
        self.group: tuple | None = None
        self.archs: set[str] = set()

    def send(self, cell: Cell) -> None:
        self.cell = cell
        with contextlib.suppress(OSError, ValueError):  # a dead worker fails the cell below
            self.conn.send(cell)

    def stop(self, now: bool) -> None:
        if not now:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(None)
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.conn.close()


def _pool(cells: list[Cell], jobs: int, fn: Callable, on_start: Callable | None):
    if not cells:
        return
    remaining: dict[tuple, deque] = {}
    for cell in cells:
        remaining.setdefault(cell.group, deque()).append(cell)
    started: set[tuple] = set()
    context = multiprocessing.get_context("spawn")
    workers: list[_Worker] = []
    abort = True
    try:
        workers = [_Worker(context, fn, i) for i in range(min(jobs, len(cells)))]
        while True:
            for worker in workers:
                if worker.cell is None:
                    cell = _next_cell(worker, workers, remaining, started)
                    if cell is not None:
                        if on_start is not None:
                            on_start(cell)
                        worker.send(cell)
            busy = [w for w in workers if w.cell is not None]
            if not busy:
                break
            wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for i, worker in enumerate(workers):
                if worker.cell is None:
                    continue
                result = _receive(worker)
                if result is not None:
                    worker.cell = None
                    yield result
                elif not worker.process.is_alive():
                    cell, code = worker.cell, worker.process.exitcode
                    worker.cell = None
                    worker.stop(now=True)
                    workers[i] = _Worker(context, fn, i)
                    yield failed_result(cell, f"the worker process died (exit code {code}) "
                                              "while running this cell")
        abort = False
    finally:
        for worker in workers:
            worker.stop(now=abort)


def _receive(worker: _Worker) -> Result | None:
    try:
        if worker.conn.poll(0 if worker.process.is_alive() else 0.2):
            return worker.conn.recv()
    except (EOFError, OSError):
        pass
    return None


def _next_cell(worker: _Worker, workers: list[_Worker], remaining: dict, started: set):
    """Keep a worker on its group; else give it a new group, preferring an architecture it has
    loaded, then one no other worker is loading; else help with the largest unfinished group."""
    group = worker.group
    if group is None or not remaining.get(group):
        fresh = [g for g in remaining if g not in started and remaining[g]]
        others = {w.group[0] for w in workers if w is not worker and w.group is not None
                  and w.cell is not None}
        group = next((g for g in fresh if g[0] in worker.archs), None) \
            or next((g for g in fresh if g[0] not in others), None) \
            or next(iter(fresh), None)
        if group is None:
            unfinished = [g for g in remaining if remaining[g]]
            if not unfinished:
                return None
            group = max(unfinished, key=lambda g: len(remaining[g]))
            cell = remaining[group].pop()  # take from the end: its owner works from the start
            _assign(worker, group, started)
            return cell
        _assign(worker, group, started)
    return remaining[group].popleft()


def _assign(worker: _Worker, group: tuple, started: set) -> None:
    started.add(group)
    worker.group = group
    worker.archs.add(group[0])


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


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run BLAS (and numba's parallel loops) in this process on one thread for a while, so a
    cell sums in the same order whatever process runs it (bit-identical results)."""
    for module in ("numpy", "scipy.linalg.cython_blas", "scipy.sparse.linalg"):
        importlib.import_module(module)  # load the BLAS libraries a measurement uses
    numba_threads = _numba_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        if numba_threads is not None:
            _numba_threads(numba_threads)


def _numba_threads(count: int) -> int | None:
    """Set numba's thread count if its thread pool is running; return the previous count."""
    if not getattr(numba_parallel, "_is_initialized", False):
        return None
    previous = numba.get_num_threads()
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    return previous


def _worker_main(conn, fn: Callable, parent: int) -> None:
    """A worker process: run the cells the parent sends, one at a time, until told to stop
    (None) or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _die_with_parent(parent)
    threadpool_limits(1)  # belt and braces: the environment already asked for one thread
    while True:
        try:
            cell = conn.recv()
        except (EOFError, OSError):
            return
        if cell is None:
            return
        start = time.perf_counter()
        try:
            result = fn(cell)
        except Exception as err:  # noqa: BLE001 - a custom fn that raised
            result = failed_result(cell, _describe(err), time.perf_counter() - start)
        try:
            conn.send(result)
        except (OSError, ValueError):
            return


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


# --- the sweep ------------------------------------------------------------------------------

def run_sweep(cells: Sequence[Cell], store: Store, executor: Executor | None = None,
              progress: bool = True) -> Outcome:
    """Run the cells of a planned grid that the store does not hold finished, writing each
    result as it arrives. A KeyboardInterrupt stops the sweep; finished cells stay stored."""
    executor = executor or serial_executor
    finished = store.finished()
    todo = [c for c in cells if c.key not in finished]
    outcome = Outcome(cells=list(cells), skipped=len(cells) - len(todo), ran=0, failed=[])
    if not todo:
        return outcome
    from tqdm import tqdm

    running: dict[tuple, Cell] = {}
    bar = tqdm(total=len(cells), initial=outcome.skipped, unit="cell", desc="sweep",
               file=sys.stderr, disable=not progress, dynamic_ncols=True, smoothing=0.1)

    def show(refresh: bool) -> None:
        label = ""
        if running:
            label = next(reversed(running.values())).label
            label += f" (+{len(running) - 1} more)" if len(running) > 1 else ""
        bar.set_postfix_str(label, refresh=refresh)

    def started(cell: Cell) -> None:
        running[cell.key] = cell
        show(refresh=True)

    try:
        for result in executor(todo, on_start=started):
            store.record(result.row())
            running.pop(result.cell.key, None)
            outcome.ran += 1
            if result.status != "ok":
                outcome.failed.append(result)
                bar.write(f"failed: {result.cell.label}: {result.error}", file=sys.stderr)
            show(refresh=False)
            bar.update(1)
    finally:
        bar.close()
    return outcome
