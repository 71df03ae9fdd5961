"""The SQLite results store of sweeps (docs/design.md, Sweeps, the results store and
resume).

One row per (architecture, width, seed, metric, options) cell, committed in its own
transaction as soon as the cell finishes, so an interrupted sweep loses at most the cells in
flight and a rerun skips what is done. The file is plain SQLite (stdlib `sqlite3`) in WAL mode
with a busy timeout, so several sweeps may write one store at once and a report may read it
while a sweep runs.

A `meta` table marks the file as a dagc store and holds its schema version. Opening a file that
is not SQLite, a SQLite file that is not a dagc store, or a store of an unknown schema version
raises a one-line `DagcError` and leaves the file as it was; so does a path that is not a
regular file (a FIFO would block forever). A read-only open never writes, nor creates side
files, and a row edited into a state dagc never writes is reported with its cell key
(docs/guarantees.md).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from ..errors import DagcError
from ..untrusted import check_regular, printable

SCHEMA_VERSION = 1
APPLICATION = "dagc-results"
APPLICATION_ID = 0x64616763  # "dagc" in the SQLite header (PRAGMA application_id)
DEFAULT_TIMEOUT = 60.0  # seconds to wait for another writer before calling the store locked
PROBE_TIMEOUT = 10.0  # ... when opening it, before any work is done
_SQLITE_HEADER = b"SQLite format 3\x00"

KEY_COLUMNS = ("arch", "digest", "width", "seed", "metric", "options_hash")
COLUMNS = KEY_COLUMNS + (
    "status", "value", "extras", "error", "width_m", "depth", "n_params", "arch_text",
    "options", "dagc_version", "elapsed", "host", "timestamp",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    arch         TEXT    NOT NULL,  -- the architecture file's `name`
    digest       TEXT    NOT NULL,  -- hash of the architecture file's text
    width        INTEGER NOT NULL,  -- the file's `width` parameter
    seed         INTEGER NOT NULL,
    metric       TEXT    NOT NULL,
    options_hash TEXT    NOT NULL,  -- hash of `options`: different options never mix
    status       TEXT    NOT NULL CHECK (status IN ('ok', 'failed')),
    value        REAL,              -- NULL when failed (or NaN)
    extras       TEXT    NOT NULL DEFAULT '{}',  -- JSON object of further numbers
    error        TEXT,              -- why a failed cell failed
    width_m      INTEGER,           -- the paper's width m
    depth        INTEGER,
    n_params     INTEGER,
    arch_text    TEXT    NOT NULL,  -- the architecture file, verbatim
    options      TEXT    NOT NULL,  -- JSON of the measurement options
    dagc_version TEXT    NOT NULL,
    elapsed      REAL,              -- seconds spent on the cell (compile included if any)
    host         TEXT,
    timestamp    TEXT    NOT NULL,  -- UTC, ISO 8601, when the cell finished
    PRIMARY KEY (arch, digest, width, seed, metric, options_hash)
);
"""

# A finished ('ok') cell is never replaced by a failure of the same cell (two sweeps sharing
# a store may both run it); a failure is replaced by anything newer.
# The statements are built from the constant column names above, never from input.
_UPSERT = (
    f"INSERT INTO cells ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "  # noqa: S608
    f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in KEY_COLUMNS)
    + " WHERE cells.status != 'ok' OR excluded.status = 'ok'"
)
_KEYS = ", ".join(KEY_COLUMNS)
_CHECKED = ("value", "extras", "options")  # columns a hand edit can make unreadable
_SELECT_FINISHED = (
    f"SELECT {_KEYS}, {', '.join(_CHECKED)} FROM cells WHERE status = 'ok'")  # noqa: S608
_MATCH_KEY = " AND ".join(f"{c} = ?" for c in KEY_COLUMNS)
_SELECT_IS_FINISHED = f"SELECT 1 FROM cells WHERE status = 'ok' AND {_MATCH_KEY}"  # noqa: S608
_SELECT_ALL = (
    f"SELECT {', '.join(COLUMNS)} FROM cells "  # noqa: S608
    "ORDER BY arch, digest, metric, options_hash, width, seed")


def check(path: str | Path, *, must_exist: bool = True) -> bool:
    """Validate a results store without writing to it.

    Returns True when `path` is an existing dagc store, False when it does not exist or is an
    empty file (`must_exist=False`: a sweep will create it). Raises `DagcError` otherwise.
    """
    path = Path(path)
    if not path.exists():
        if must_exist:
            raise DagcError(f"{path}: no such results store")
        return False
    if path.is_dir():
        raise DagcError(f"{path}: is a directory, not a dagc results store")
    check_regular(path)  # before opening: a FIFO would block the open
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except OSError as err:
        raise DagcError(f"{path}: cannot read the results store: {err.strerror}") from None
    if not header:
        if must_exist:
            raise DagcError(f"{path}: the file is empty, not a dagc results store")
        return False
    if header != _SQLITE_HEADER:
        raise DagcError(f"{path}: not a dagc results store (not an SQLite database)")
    connection = _connect(path, readonly=True, timeout=DEFAULT_TIMEOUT)
    try:
        if not must_exist and _is_blank(connection, path):
            return False  # an empty database, or one that another sweep is creating right now
        _check_meta(connection, path)
    finally:
        connection.close()
    return True


class Store:
    """An open results store. Use `Store.open(path)`; close it (or use `with`)."""

    def __init__(self, path: Path, connection: sqlite3.Connection, readonly: bool,
                 timeout: float = DEFAULT_TIMEOUT):
        self.path = path
        self._db = connection
        self.readonly = readonly
        self.timeout = timeout

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False,
             timeout: float = DEFAULT_TIMEOUT) -> Store:
        """Open a store, creating it when it does not exist (unless `readonly`).

        An existing file is validated before anything is written to it; a store that another
        process keeps locked for longer than `timeout` seconds is an error.
        """
        path = Path(path)
        connection = _retry(lambda: _open(path, readonly, timeout), min(timeout, PROBE_TIMEOUT))
        return cls(path, connection, readonly, timeout)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def finished(self) -> set[tuple]:
        """Keys (see `KEY_COLUMNS`) of the cells finished successfully. A corrupt row
        (see `rows`) is not finished: a sweep measures it again and replaces it."""
        with self._errors():
            rows = self._db.execute(_SELECT_FINISHED).fetchall()
        n = len(KEY_COLUMNS)
        return {tuple(row[:n]) for row in rows
                if _problem(dict(zip(_CHECKED, row[n:], strict=True))) is None}

    def is_finished(self, key: tuple) -> bool:
        with self._errors():
            row = self._db.execute(_SELECT_IS_FINISHED, tuple(key)).fetchone()
        return row is not None

    def record(self, row: dict) -> None:
        """Write one finished cell (a dict with the keys `COLUMNS`) in its own transaction."""
        values = tuple(_column_value(name, row.get(name)) for name in COLUMNS)

        def write() -> None:
            with self._errors(), self._transaction():
                self._db.execute(_UPSERT, values)

        _retry(write, self.timeout)

    def rows(self, keys: Iterable[tuple] | None = None) -> list[dict]:
        """All cells as dicts (extras and options decoded), or only those with the given keys,
        in a stable order: architecture, metric, options, width, seed. A row that dagc
        cannot have written (a hand edit: `value` text, `extras` not a JSON object) is a
        `DagcError` naming its cell key; rerunning its sweep replaces it."""
        with self._errors():
            cursor = self._db.execute(_SELECT_ALL)
            rows = [_decoded(self.path, dict(zip(COLUMNS, values, strict=True)))
                    for values in cursor]
        if keys is not None:
            wanted = {tuple(k) for k in keys}
            rows = [r for r in rows if tuple(r[c] for c in KEY_COLUMNS) in wanted]
        return rows

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # also when COMMIT itself failed
                with suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as err:
            raise _store_error(self.path, err) from None


class StoreLocked(DagcError):
    """Another process holds a lock on the store."""


def _retry(action, timeout: float):
    """Run `action`, again while the store is locked, for up to `timeout` seconds. SQLite's
    busy timeout covers most conflicts, but answers some at once without waiting (a process
    turning a new file into a WAL database while another opens it, say)."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            return action()
        except StoreLocked:
            if time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(2 * pause, 0.2)


def _open(path: Path, readonly: bool, timeout: float) -> sqlite3.Connection:
    exists = check(path, must_exist=readonly)
    connection = _connect(path, readonly=readonly, timeout=timeout)
    try:
        if not exists:
            _create(connection, path)
        _check_meta(connection, path)
        if not readonly:
            _probe_write_lock(connection, path, min(timeout, PROBE_TIMEOUT))
            connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    except BaseException:
        connection.close()
        raise
    return connection


def _connect(path: Path, readonly: bool, timeout: float) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per cell.
    try:
        if readonly:
            connection = sqlite3.connect(_readonly_uri(path), uri=True, timeout=timeout,
                                         isolation_level=None)
        else:
            connection = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    except sqlite3.Error as err:
        raise _store_error(path, err) from None
    return connection


def _readonly_uri(path: Path) -> str:
    """A URI that reads `path` without writing anything. A read-only connection to a WAL
    database creates the -wal and -shm files beside it and cannot remove them (they then
    belong to whoever read, and can lock the store's owner out), so a store without a -wal
    file, which no sweep has open, is read as immutable: no side files, no locks. With a
    -wal file a sweep is writing (or was killed), and its log must be read too."""
    uri = path.resolve().as_uri()
    if Path(f"{path}-wal").exists():
        return f"{uri}?mode=ro"
    return f"{uri}?immutable=1"


def _create(connection: sqlite3.Connection, path: Path) -> None:
    """Initialize a new (or empty) file. Safe when several processes create one store at once:
    the tables are created if missing and the meta rows inserted if missing, in one
    transaction."""
    from .. import __version__

    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                [("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION)),
                 ("created_by", f"dagc {__version__}")])
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    except sqlite3.Error as err:
        raise _store_error(path, err) from None


def _is_blank(connection: sqlite3.Connection, path: Path) -> bool:
    try:
        return connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    except sqlite3.Error as err:
        raise _store_error(path, err) from None


def _check_meta(connection: sqlite3.Connection, path: Path) -> None:
    try:
        tables = {name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            raise DagcError(f"{path}: an SQLite database but not a dagc results store "
                            "(no `meta` table)")
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error as err:
        raise _store_error(path, err) from None
    if meta.get("application") != APPLICATION:
        raise DagcError(f"{path}: an SQLite database but not a dagc results store")
    version = meta.get("schema_version", "")
    if not version.isdigit():
        raise DagcError(f"{path}: dagc results store with an invalid schema version {version!r}")
    if int(version) > SCHEMA_VERSION:
        raise DagcError(f"{path}: written by a newer dagc (store schema version {version}; "
                        f"this dagc reads version {SCHEMA_VERSION}): upgrade dagc")
    if int(version) != SCHEMA_VERSION:
        raise DagcError(f"{path}: dagc results store of schema version {version}, which this "
                        f"dagc (version {SCHEMA_VERSION}) cannot read")
    if "cells" not in tables:
        raise DagcError(f"{path}: damaged dagc results store (no `cells` table)")


def _probe_write_lock(connection: sqlite3.Connection, path: Path, timeout: float) -> None:
    """Fail now, before any work, if another process keeps the store locked (writers that
    share a store hold the lock for milliseconds, one cell at a time)."""
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
    except sqlite3.Error as err:
        raise _store_error(path, err) from None


def _store_error(path: Path, err: sqlite3.Error) -> DagcError:
    message = " ".join(str(err).split())
    if "locked" in message or "busy" in message:
        return StoreLocked(f"{path}: the results store is locked by another process ({message}); "
                         "wait for it or use another --db")
    if "full" in message:  # SQLITE_FULL: no space left on the device (or a size limit)
        return DagcError(f"{path}: the disk is full ({message}); free some space and run the "
                         "same command again: the finished cells are kept")
    if "not a database" in message:
        return DagcError(f"{path}: not a dagc results store ({message})")
    if "readonly" in message or "read-only" in message:
        return DagcError(f"{path}: cannot write the results store ({message})")
    return DagcError(f"{path}: results store error: {message}")


def _column_value(name: str, value):
    if name in ("extras", "options") and not isinstance(value, str):
        return json.dumps(value if value is not None else {}, sort_keys=True)
    if name == "value" and value is not None:
        return float(value)
    return value


def _problem(row: dict) -> str | None:
    """What makes a row unreadable, if anything (only `_CHECKED` columns are looked at)."""
    if not (row["value"] is None or type(row["value"]) in (float, int)):
        return f"value is {type(row['value']).__name__}, not a number"
    for name in ("extras", "options"):
        try:
            decoded = json.loads(row[name] or "{}")
        except (TypeError, ValueError):
            return f"{name} is not JSON"
        if not isinstance(decoded, dict):
            return f"{name} is not a JSON object"
    return None


def _decoded(path: Path, row: dict) -> dict:
    problem = _problem(row)
    if problem is not None:
        key = ", ".join(f"{c}={printable(row[c], 60)}" for c in KEY_COLUMNS)
        raise DagcError(f"{path}: corrupt row ({key}): {problem}; delete it or rerun its "
                        "sweep to measure it again")
    row["extras"] = json.loads(row["extras"] or "{}")
    row["options"] = json.loads(row["options"] or "{}")
    if row["value"] is None and row["status"] == "ok":
        row["value"] = float("nan")  # SQLite stores NaN as NULL
    return row


def host_name() -> str:
    try:
        return os.uname().nodename
    except AttributeError:  # pragma: no cover - not POSIX
        import socket

        return socket.gethostname()
