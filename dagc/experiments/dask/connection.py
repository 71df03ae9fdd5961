"""Reaching a Dask scheduler: its address (given, or read from a scheduler file), a client
connected within a bounded time, and a check that the cluster's workers can run dagc."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from ...errors import DagcError
from ...untrusted import read_regular
from .worker import worker_info

INSTALL_HINT = 'install it with pip install "dagc[dask]"'
DEFAULT_TIMEOUT = 10.0  # seconds to reach the scheduler (and to wait for its file)
LIVE = ("running", "connecting")  # a client's statuses while it may still get results


class Connection:
    """A client of the scheduler at `address` or named in `scheduler_file`. `open()` connects
    (again, after `close()`); `say(line)` receives notes about the cluster's workers."""

    def __init__(self, scheduler: str | None, scheduler_file: str | None,
                 timeout: float | None, say: Callable[[str], None]):
        if (scheduler is None) == (scheduler_file is None):
            raise DagcError("give either a Dask scheduler address (--scheduler tcp://HOST:PORT) "
                            "or a scheduler file (--scheduler-file FILE), "
                            + ("not both" if scheduler is not None else "got neither"))
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        if not timeout > 0:
            raise DagcError(f"the scheduler timeout must be positive, got {timeout}")
        self.distributed = import_distributed()
        self.timeout = float(timeout)
        self.scheduler_file = scheduler_file
        self.address = scheduler
        self.say = say
        self.client = None

    @property
    def live(self) -> bool:
        """Whether the client is connected (or reconnecting) to the scheduler."""
        return self.client is not None and self.client.status in LIVE

    def open(self):
        """The client, connecting first unless it is live. A scheduler that cannot be reached
        within the timeout is a one-line `DagcError`."""
        if not self.live:
            deadline = time.monotonic() + self.timeout
            if self.scheduler_file is not None:
                self.address = address_from_file(self.scheduler_file, deadline)
            check_address(self.address)
            self.client = _client_within(self.distributed, self.address,
                                         max(deadline - time.monotonic(), 0.5), self.timeout)
            weakref.finalize(self, close_quietly, self.client)
        return self.client

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            close_quietly(client)

    def describe(self) -> str:
        """One line on the cluster, after checking that its workers run this dagc."""
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
            self.say(f"cluster: no workers at {self.address} yet; cells wait for some "
                     f"(start them with `dask worker {self.address} --nthreads 1`)")
            return
        from ... import __version__

        try:
            answers = self.client.run(worker_info, on_error="return")
        except Exception as err:  # noqa: BLE001
            raise DagcError(f"the Dask workers at {self.address} cannot run dagc "
                            f"({one_line(err)}); {INSTALL_HINT} on every worker") from None
        for address, answer in sorted(answers.items()):
            if isinstance(answer, BaseException):
                raise DagcError(f"Dask worker {address} cannot run dagc ({one_line(answer)}); "
                                f"install dagc {__version__} on every worker") from None
            if answer.get("dagc") != __version__:
                self.say(f"cluster: warning: worker {address} has dagc {answer.get('dagc')}, "
                         f"this process {__version__}")
        many = sorted(a for a, info in workers.items() if info.get("nthreads", 1) > 1)
        if many:
            self.say(f"cluster: note: {len(many)} worker(s) have several threads but run one "
                     "cell at a time (BLAS's thread count is per process); start workers "
                     "with --nthreads 1 and --nworkers N to use N cores")


def import_distributed():
    """The `distributed` module, or a `DagcError` saying how to install it."""
    try:
        import distributed
    except ImportError as err:
        raise DagcError(f"running sweeps on a Dask cluster needs dask.distributed, which is "
                        f"not installed ({one_line(err)}); {INSTALL_HINT}") from None
    return distributed


def _client_within(distributed, address: str, seconds: float, timeout: float):
    """A client of `address`, connected in a thread to bound the time: a server that accepts
    the connection but does not speak Dask's protocol keeps the Client's start waiting past
    its own timeout."""
    box: dict = {}
    thread = threading.Thread(target=_new_client, args=(distributed, address, seconds, box),
                              name="dagc-dask-connect", daemon=True)
    thread.start()
    thread.join(seconds + 0.5)
    if thread.is_alive() or "error" in box:
        err = box.get("error")
        reason = "" if err is None else one_line(err)
        reason = "" if "timed out" in reason.lower() or not reason else f" ({reason})"
        if thread.is_alive():  # a client connecting late closes itself
            box["abandoned"] = True
        raise DagcError(f"cannot reach the Dask scheduler at {address} within "
                        f"{timeout:g} s{reason}; is `dask scheduler` running there "
                        "and the port open?")
    return box["client"]


def _new_client(distributed, address: str, timeout: float, box: dict) -> None:
    try:
        client = distributed.Client(address, timeout=timeout, set_as_default=False)
    except Exception as err:  # noqa: BLE001 - OSError, TimeoutError, protocol errors
        box["error"] = err
        return
    box["client"] = client
    if box.get("abandoned"):
        close_quietly(client)


def check_address(address) -> None:
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
            problem = one_line(err)
    if problem:
        raise DagcError(f"--scheduler: bad Dask scheduler address {address!r} ({problem}; "
                        "e.g. tcp://HOST:8786)")


SCHEDULER_FILE_BYTES = 1 << 20  # a scheduler file is a few hundred bytes of JSON


def address_from_file(path: str, deadline: float) -> str:
    """The scheduler address in a scheduler file, waiting for it to appear until `deadline`
    (a scheduler started at the same time writes it when it is up)."""
    problem = "no such file"
    while True:
        try:
            info = json.loads(read_regular(path, SCHEDULER_FILE_BYTES, "--scheduler-file "))
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
        except DagcError:  # not a regular file, or too large: waiting will not help
            raise
        except OSError as err:
            raise DagcError(f"--scheduler-file {path}: cannot read it: "
                            f"{err.strerror or err}") from None
        except (ValueError, KeyError, TypeError):  # maybe still being written
            problem = "not a Dask scheduler file (JSON with an 'address')"
        if time.monotonic() >= deadline:
            raise DagcError(f"--scheduler-file {path}: {problem} (waited until the timeout; "
                            f"start the scheduler with `dask scheduler --scheduler-file {path}`)")
        time.sleep(0.1)


class _OneLine(logging.Filter):
    """Distributed's own error records on the client side as one line, without tracebacks,
    naming the error that started it all: when the scheduler dies, the client logs its failed
    reconnection with two chained tracebacks just before dagc says, in one line, what
    happened and how to resume. Its informational records (reconnection attempts) are
    dropped while a sweep runs: dagc's line tells the outcome."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return False
        if record.exc_info and record.exc_info[1] is not None:
            message = record.getMessage().strip()
            cause = one_line(_first_cause(record.exc_info[1]), with_type=True)
            record.msg = f"{message}: {cause}" if message else cause
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def _first_cause(err: BaseException) -> BaseException:
    """The exception at the start of a chain (what a traceback dump prints first)."""
    seen = {id(err)}
    while True:
        earlier = err.__cause__ or err.__context__
        if earlier is None or id(earlier) in seen:
            return err
        seen.add(id(earlier))
        err = earlier


@contextlib.contextmanager
def quiet_client_logs() -> Iterator[None]:
    """While a sweep runs, distributed's log records pass through `_OneLine`."""
    logger = logging.getLogger("distributed")
    handlers = list(logger.handlers)
    quiet = _OneLine()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def one_line(err: BaseException, *, with_type: bool = False) -> str:
    """An error's message on one line (its type when it has none, or always before it)."""
    message = " ".join(str(err).split())
    if with_type:
        return f"{type(err).__name__}: {message}" if message else type(err).__name__
    return message or type(err).__name__


def close_quietly(client) -> None:
    """Close a client, whatever state it and its scheduler are in."""
    with contextlib.suppress(Exception):
        client.close(timeout=5)
