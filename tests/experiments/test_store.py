"""The SQLite results store: schema, one transaction per cell, refusing bad files untouched."""

from __future__ import annotations

import math
import sqlite3
import threading

import pytest

from dagc.errors import DagcError
from dagc.experiments.store import APPLICATION, SCHEMA_VERSION, Store, check


def _row(width=64, seed=0, metric="hessian", status="ok", value=0.5, **extra):
    row = dict(arch="mlp3", digest="d" * 16, width=width, seed=seed, metric=metric,
               options_hash="o" * 16, status=status, value=value, extras={"max": 1.5},
               error=None if status == "ok" else "boom", width_m=width, depth=4,
               n_params=100, arch_text="name: mlp3\n", options={"inputs": 2},
               dagc_version="0.1.0", elapsed=0.25, host="here",
               timestamp="2024-01-01T00:00:00+00:00")
    row.update(extra)
    return row


def _key(row):
    return (row["arch"], row["digest"], row["width"], row["seed"], row["metric"],
            row["options_hash"])


def test_new_store_is_marked_wal_and_round_trips(tmp_path):
    path = tmp_path / "r.sqlite"
    with Store.open(path) as store:
        store.record(_row(seed=0))
        store.record(_row(seed=1, status="failed", value=None))
        store.record(_row(seed=2, value=float("nan")))
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    meta = dict(raw.execute("SELECT key, value FROM meta"))
    assert meta["application"] == APPLICATION
    assert meta["schema_version"] == str(SCHEMA_VERSION)
    raw.close()
    with Store.open(path, readonly=True) as store:
        rows = store.rows()
        assert store.finished() == {_key(_row(seed=0)), _key(_row(seed=2))}
        assert store.is_finished(_key(_row(seed=0)))
        assert not store.is_finished(_key(_row(seed=1)))
    assert [r["seed"] for r in rows] == [0, 1, 2]
    assert rows[0]["value"] == 0.5 and rows[0]["extras"] == {"max": 1.5}
    assert rows[0]["options"] == {"inputs": 2} and rows[0]["arch_text"] == "name: mlp3\n"
    assert rows[1]["status"] == "failed" and rows[1]["error"] == "boom"
    assert math.isnan(rows[2]["value"])


def test_failed_cell_is_replaced_by_success_but_never_the_reverse(tmp_path):
    with Store.open(tmp_path / "r.sqlite") as store:
        store.record(_row(status="failed", value=None))
        store.record(_row(value=0.75))
        store.record(_row(status="failed", value=None))
        rows = store.rows()
    assert len(rows) == 1
    assert rows[0]["status"] == "ok" and rows[0]["value"] == 0.75


def test_readonly_open_of_missing_store_creates_nothing(tmp_path):
    path = tmp_path / "missing.sqlite"
    with pytest.raises(DagcError, match="no such results store"):
        Store.open(path, readonly=True)
    assert not path.exists()
    assert check(path, must_exist=False) is False


def test_empty_file_becomes_a_store(tmp_path):
    path = tmp_path / "empty.sqlite"
    path.write_bytes(b"")
    with Store.open(path) as store:
        store.record(_row())
    assert check(path)


def _not_sqlite(path):
    path.write_bytes(b"these are my notes, not a database\n" * 100)


def _foreign_sqlite(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE people (name TEXT)")
    db.execute("INSERT INTO people VALUES ('ada')")
    db.commit()
    db.close()


def _foreign_meta(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute("INSERT INTO meta VALUES ('application', 'something-else')")
    db.commit()
    db.close()


def _future_version(path):
    with Store.open(path) as store:
        store.record(_row())
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
               (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _no_cells_table(path):
    with Store.open(path):
        pass
    db = sqlite3.connect(path)
    db.execute("DROP TABLE cells")
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


@pytest.mark.parametrize("make, message", [
    (_not_sqlite, "not an SQLite database"),
    (_foreign_sqlite, "not a dagc results store"),
    (_foreign_meta, "not a dagc results store"),
    (_future_version, "newer dagc"),
    (_no_cells_table, "no `cells` table"),
])
@pytest.mark.parametrize("mode", ["write", "readonly", "check"])
def test_bad_store_is_refused_and_left_byte_identical(tmp_path, make, message, mode):
    path = tmp_path / "bad.sqlite"
    make(path)
    before = path.read_bytes()
    with pytest.raises(DagcError, match=message) as err:
        if mode == "check":
            check(path)
        else:
            Store.open(path, readonly=mode == "readonly")
    assert "\n" not in str(err.value)
    assert path.read_bytes() == before


def test_directory_is_not_a_store(tmp_path):
    with pytest.raises(DagcError, match="directory"):
        Store.open(tmp_path)


def test_locked_store_is_a_clear_error(tmp_path):
    path = tmp_path / "r.sqlite"
    with Store.open(path) as store:
        store.record(_row())
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DagcError, match="locked by another process"):
            Store.open(path, timeout=0.2)
    finally:
        other.execute("ROLLBACK")
        other.close()
    with Store.open(path, timeout=0.2) as store:  # free again
        assert len(store.rows()) == 1


def test_record_waits_for_a_short_lock_instead_of_failing(tmp_path):
    path = tmp_path / "r.sqlite"
    store = Store.open(path, timeout=10)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    timer.start()
    try:
        store.record(_row())  # blocks until the other writer commits
    finally:
        timer.join()
        other.close()
    assert len(store.rows()) == 1
    store.close()


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "r.sqlite"
    errors = []

    def write(seed_offset):
        try:
            with Store.open(path) as store:
                for width in range(1, 41):
                    store.record(_row(width=width, seed=seed_offset))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Store.open(path, readonly=True) as store:
        assert len(store.finished()) == 4 * 40
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
