"""Sweeps: plan the grid of cells, skip the finished ones, run the rest, store each result.

A *cell* is one (architecture, width, seed, metric) measurement under one set of options. It
carries the architecture file's text, so whoever runs it (this process, a local worker process,
a cluster worker) needs nothing else. `run_cell(cell) -> Result` is a pure, picklable top-level
function: the same cell gives the same numbers in any order, process or job count.

An *executor* runs cells and yields their `Result`s as they complete: in this process or a
local pool (`dagc.experiments.local`) or on a Dask cluster (`dagc.experiments.dask`).
`run_sweep` writes every result to the store as it arrives, so an interrupted sweep loses only
the cells in flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import itertools
import json
import statistics
import sys
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numba
from numba.np.ufunc import parallel as numba_parallel
from threadpoolctl import threadpool_limits

from .. import __version__, measure, runtime
from ..errors import DagcError
from ..frontend import spec
from ..untrusted import MAX_MESSAGE, printable
from .store import Store, host_name

# The metric registry (docs/metrics.md): names, the options each reads, labels, slopes.
METRICS = measure.METRICS
# `dagc sweep --quick`: a first look in a few minutes on two cores. Only fewer widths and
# seeds, never other measurement options, so a normal run reuses every cell it shares with it.
QUICK_WIDTHS = (32, 64, 128, 256)
QUICK_SEEDS = 2
QUICK_METRICS = ("hessian", "gradient")
# Cells one sweep may plan: a million cells of a millisecond each are a quarter-hour's run,
# and a grid beyond that is a typo (`--seeds 1000000000`) to refuse before memory runs out.
MAX_CELLS = 1_000_000

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


def option_grid(swept: dict[str, Sequence], **fixed) -> list[dict]:
    """One options dict per combination of the ``swept`` values (every radius times every
    lr_factor, say), each ``make_options(**fixed, **combination)``; just
    ``[make_options(**fixed)]`` when nothing is swept."""
    names = list(swept)
    return [make_options(**fixed, **dict(zip(names, values, strict=True)))
            for values in itertools.product(*(swept[name] for name in names))]


def options_key(metric: str, options: dict) -> tuple[str, str]:
    """(canonical JSON, hash) of the options ``metric`` reads; the hash is part of every
    cell's key, so an option a metric does not read never makes its cells run again."""
    text = json.dumps(measure.options_for(metric, options), sort_keys=True,
                      separators=(",", ":"))
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
        parsed = spec.load(name)  # reads the graph file, if any, once: the digest covers it
        path = str(Path(parsed.path).resolve())
        parsed = dataclasses.replace(spec.parse(parsed.text, path), graph_data=parsed.graph_data)
        if parsed.width_free and len(widths) > 1:
            raise DagcError(f"{printable(str(name))}: the network does not depend on `width` "
                            "(a fixed graph or fixed sizes): sweep it at one width "
                            f"(--widths 1), not {len(widths)}")
        start = time.perf_counter()
        for width in sorted(widths):
            runtime.generate(parsed, width)  # the module is written once, then found intact
            if time.perf_counter() - start > validate_seconds:
                break
        archs.setdefault(parsed.digest,
                         Architecture(parsed.name, parsed.digest, parsed.text, path))
    return list(archs.values())


def plan(archs: Sequence[Architecture], widths: Sequence[int], seeds: Iterable[int],
         metrics: Sequence[str], options: dict) -> list[Cell]:
    """Every cell of the grid, grouped by (architecture, width): groups ordered by width,
    then architecture (so the first groups of a parallel sweep compile different
    architectures); within a group, by seed then metric. A grid of more than MAX_CELLS
    cells is a `DagcError`, raised before any cell is made."""
    keys = {metric: options_key(metric, options) for metric in metrics}
    per_seed = len(widths) * len(archs) * len(metrics)
    if not isinstance(seeds, Sequence):  # an iterator: take no more seeds than can fit
        seeds = list(itertools.islice(seeds, MAX_CELLS // max(per_seed, 1) + 1))
    if per_seed * len(seeds) > MAX_CELLS:
        raise DagcError(f"{per_seed * len(seeds):,} cells ({len(seeds):,} seeds or more) are "
                        f"too many for one sweep (at most {MAX_CELLS:,})")
    return [Cell(a.name, a.digest, a.text, a.path, width, seed, metric, *keys[metric])
            for width in widths for a in archs for seed in seeds for metric in metrics]


def plan_option_sets(archs: Sequence[Architecture], widths: Sequence[int], seeds: Sequence[int],
                     metrics: Sequence[str], option_sets: Sequence[dict]) -> list[Cell]:
    """`plan` for each option set, each cell once: a metric that reads none of the options
    that differ between the sets (hessian under a list of radii) plans the same cells for
    every set, and is measured once."""
    planned = (cell for options in option_sets
               for cell in plan(archs, widths, seeds, metrics, options))
    return list({cell.key: cell for cell in planned}.values())


# --- running one cell -----------------------------------------------------------------------

def compile_net(text: str, path: str, width: int, digest: str | None = None):
    """The default way a cell gets its network: parse the carried text and compile it.

    A neuron-level architecture's graph file is read here, once, and the network built from
    those bytes; given the cell's `digest`, they must be the bytes the sweep was planned
    with, so a graph file edited during a sweep fails its cells (docs/guarantees.md) instead
    of storing another network's numbers under the planned digest.
    """
    parsed = spec.read_graph(spec.parse(text, path))
    if digest is not None and parsed.digest != digest:
        raise DagcError(f"{printable(parsed.graph)}: the graph file changed since the sweep "
                        "was planned; run the sweep again to measure the new graph")
    return runtime.compile_spec(parsed, width)


_NETS: OrderedDict = OrderedDict()  # this process's recently used nets
_NETS_KEPT = 2


def _net(cell: Cell, load_net: Callable):
    key = (load_net, cell.digest, cell.path, cell.width)
    if key in _NETS:
        _NETS.move_to_end(key)
        return _NETS[key]
    if load_net is compile_net:
        net = compile_net(cell.text, cell.path, cell.width, cell.digest)
    else:
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
            # the cell holds only the options its metric reads: the rest take their defaults
            options = measure.Options.from_dict(json.loads(cell.options))
            if measure_fn is None:
                out = measure.measure(net, cell.metric, cell.seed, options)
            else:
                out = measure_fn(net, cell.metric, cell.seed,
                                 SimpleNamespace(**dataclasses.asdict(options)))
        value, extras = _split(out)
        status = "ok"
    except Exception as err:  # noqa: BLE001 - recorded as a failed cell, retried by a rerun
        if _caused_by_interrupt(err):  # Ctrl-C, wrapped by numba or a LAPACK callback
            raise KeyboardInterrupt from err
        error = describe_error(err)
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
            if isinstance(item, list):  # e.g. a loss curve: JSON keeps it a list of floats
                extras[name] = [float(x) for x in item]
            else:
                extras[name] = item if isinstance(item, (str, bool)) or item is None \
                    else float(item)
    return float(out["value"]), extras


def _caused_by_interrupt(err: BaseException) -> bool:
    """Whether a KeyboardInterrupt is in the chain of causes of `err`: compiled code that a
    SIGINT interrupts reports it as a SystemError raised from the KeyboardInterrupt."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def describe_error(err: BaseException) -> str:
    """One line naming an error, and where it was raised unless it is a `DagcError`; user
    text in it (paths, node ids) with control characters escaped, at most MAX_MESSAGE long."""
    where = traceback.extract_tb(err.__traceback__)
    message = printable(" ".join(str(err).split()) or "(no message)", MAX_MESSAGE)
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


# --- one thread per process -----------------------------------------------------------------

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


# --- the sweep ------------------------------------------------------------------------------

class _Measured:
    """The progress bar's time estimate, from measured cells only: the median time of the
    cells run after their architecture's first (which compiles), times the cells left,
    over the cells that run at once."""

    def __init__(self):
        self.archs: set[str] = set()  # digests with a finished cell in this run
        self.seconds: list[float] = []
        self.parallel = 1

    def add(self, result: Result, parallel: int) -> None:
        if result.cell.digest in self.archs:
            self.seconds.append(result.elapsed)
        self.archs.add(result.cell.digest)
        self.parallel = max(self.parallel, parallel)

    def seconds_left(self, cells: int) -> float | None:
        if not self.seconds:
            return None
        return statistics.median(self.seconds) * cells / self.parallel


def run_sweep(cells: Sequence[Cell], store: Store, executor: Callable[..., Iterator[Result]],
              progress: bool = True) -> Outcome:
    """Run the cells of a planned grid that the store does not hold finished with `executor`
    (see `dagc.experiments.local`), writing each result as it arrives. A KeyboardInterrupt
    stops the sweep and the executor (its workers, its cluster tasks); finished cells stay
    stored, the cells in flight are not recorded."""
    finished = store.finished()
    todo = [c for c in cells if c.key not in finished]
    outcome = Outcome(cells=list(cells), skipped=len(cells) - len(todo), ran=0, failed=[])
    if not todo:
        return outcome
    from tqdm import tqdm

    running: dict[tuple, Cell] = {}
    measured = _Measured()
    # tqdm's own estimate would extrapolate from the compiles too: ours is in the postfix
    bar = tqdm(total=len(cells), initial=outcome.skipped, unit="cell", desc="sweep",
               file=sys.stderr, disable=not progress, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")

    def show(refresh: bool) -> None:
        label = ""
        if running:
            cell = next(reversed(running.values()))
            # an architecture's first cells here compile its passes (or load them from cache)
            label = cell.label if cell.digest in measured.archs else f"compiling {cell.arch}"
            label += f" (+{len(running) - 1} more)" if len(running) > 1 else ""
        left = measured.seconds_left(len(todo) - outcome.ran)
        bar.set_postfix_str(label + ("" if left is None else f", ~{left:.0f} s left"),
                            refresh=refresh)

    def started(cell: Cell) -> None:
        running[cell.key] = cell
        show(refresh=True)

    results = executor(todo, on_start=started)
    try:
        for result in results:
            store.record(result.row())
            measured.add(result, parallel=len(running))
            running.pop(result.cell.key, None)
            outcome.ran += 1
            if result.status != "ok":
                outcome.failed.append(result)
                bar.write(f"failed: {result.cell.label}: {result.error}", file=sys.stderr)
            show(refresh=False)
            bar.update(1)
    finally:
        if hasattr(results, "close"):  # stop its workers now, not when it is collected
            results.close()
        bar.close()
    return outcome
