"""Reliability of sweeps and stores (docs/guarantees.md): a graph file changed mid-sweep, grids
too large to plan, special files, read-only stores, corrupt rows, kill -9 at random moments,
concurrent sweeps and a full disk."""

from __future__ import annotations

import os
import random
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dagc import cli, runtime
from dagc.errors import DagcError
from dagc.experiments import sweep
from dagc.experiments.store import Store

GRAPH_A = "a h\nb h\nh o\n"
GRAPH_B = "a h\nb h\na o\nh o\n"


def _graph_arch(tmp_path: Path, edges: str) -> Path:
    (tmp_path / "g.txt").write_text(edges)
    arch = tmp_path / "gnet.yaml"
    arch.write_text("name: gnet\ngraph: g.txt\n")
    return arch


# --- item 1: a graph file is read once per group and checked against the planned digest ----

def test_a_graph_file_changed_mid_sweep_fails_its_cells_instead_of_mixing(tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(runtime, "compile_spec",
                        lambda parsed, width: compiled.append(parsed.graph_data) or parsed)
    arch = _graph_arch(tmp_path, GRAPH_A)
    (planned,) = sweep.load_architectures([str(arch)], [1])
    first, second = sweep.plan([planned], [1, 2], [0], ["gradient"], sweep.make_options())
    sweep.compile_net(first.text, first.path, first.width, first.digest)
    assert compiled == [GRAPH_A.encode()]  # built from the bytes that were hashed

    (tmp_path / "g.txt").write_text(GRAPH_B)
    with pytest.raises(DagcError, match=r"g\.txt: the graph file changed since the sweep"):
        sweep.compile_net(second.text, second.path, second.width, second.digest)
    result = sweep.run_cell(second)
    assert result.status == "failed" and "changed since the sweep" in result.error
    assert compiled == [GRAPH_A.encode()]


# --- item 5: bounds on what a flag can ask for ----------------------------------------------

def test_a_grid_of_a_billion_seeds_is_refused_before_it_is_made(tmp_path):
    (arch,) = sweep.load_architectures(["mlp3"], [4])
    with pytest.raises(DagcError, match=r"too many for one sweep \(at most 1,000,000\)"):
        sweep.plan([arch], [4, 8], range(10**9), ["gradient"], sweep.make_options())
    endless = iter(int, 1)  # an iterator that never ends
    with pytest.raises(DagcError, match="too many for one sweep"):
        sweep.plan([arch], [4], endless, ["gradient"], sweep.make_options())
    assert len(sweep.plan([arch], [4], range(3), ["gradient"], sweep.make_options())) == 3


# --- items 6, 7, 10: special files, read-only stores, corrupt rows ---------------------------

def _row(**changes) -> dict:
    row = dict(arch="a", digest="d", width=8, seed=0, metric="gradient", options_hash="o",
               status="ok", value=0.5, extras={"n": 1.0}, error=None, width_m=8, depth=2,
               n_params=10, arch_text="name: a", options={}, dagc_version="0",
               elapsed=0.1, host="h", timestamp="2026-01-01T00:00:00+00:00")
    return {**row, **changes}


def _store(path: Path, *rows: dict) -> Path:
    with Store.open(path) as store:
        for row in rows:
            store.record(row)
    return path


def _in_subprocess(code: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


@pytest.mark.parametrize("command", ["report", "sweep"])
def test_a_fifo_as_store_is_refused_not_waited_on(tmp_path, command):
    fifo = tmp_path / "results.sqlite"
    os.mkfifo(fifo)
    args = {"report": ["report", str(fifo), "--json"],
            "sweep": ["sweep", "mlp3", "--widths", "4", "--seeds", "1", "--metrics",
                      "gradient", "--db", str(fifo), "--no-progress"]}[command]
    done = _in_subprocess(f"import sys\nfrom dagc import cli\nsys.exit(cli.main({args!r}))",
                          tmp_path)  # blocked forever before
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().endswith("results.sqlite: cannot read: not a regular file")
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_reading_a_store_creates_no_side_files(tmp_path):
    path = _store(tmp_path / "results.sqlite", _row())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]
    before = path.read_bytes()
    with Store.open(path, readonly=True) as store:
        assert [r["value"] for r in store.rows()] == [0.5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]  # no -wal, -shm
    assert path.read_bytes() == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs file permissions that apply (not root)")
def test_a_store_in_a_read_only_directory_can_be_reported(tmp_path):
    directory = tmp_path / "shared"
    directory.mkdir()
    path = _store(directory / "results.sqlite", _row())
    directory.chmod(0o555)
    try:
        with Store.open(path, readonly=True) as store:
            assert [r["value"] for r in store.rows()] == [0.5]
    finally:
        directory.chmod(0o755)
    assert sorted(p.name for p in directory.iterdir()) == ["results.sqlite"]


@pytest.mark.parametrize("column, bad, problem", [
    ("extras", "{not json", "extras is not JSON"),
    ("extras", "[1, 2]", "extras is not a JSON object"),
    ("value", "0.5abc", "value is str, not a number"),
    ("options", "nul", "options is not JSON"),
])
def test_a_corrupt_row_is_named_by_its_key_and_measured_again(tmp_path, column, bad, problem):
    path = _store(tmp_path / "results.sqlite", _row(), _row(seed=1))
    db = sqlite3.connect(path)
    db.execute(f"UPDATE cells SET {column} = ? WHERE seed = 1", (bad,))  # noqa: S608
    db.commit()
    db.close()
    with Store.open(path) as store:
        with pytest.raises(DagcError, match=r"corrupt row \(arch=a, digest=d, width=8, seed=1, "
                                             rf"metric=gradient, options_hash=o\): {problem}"):
            store.rows()
        assert store.finished() == {("a", "d", 8, 0, "gradient", "o")}
        store.record(_row(seed=1))  # what a rerun does
        assert [r["seed"] for r in store.rows()] == [0, 1]
    done = _in_subprocess(f"from dagc import cli\ncli.main(['report', {str(path)!r}, '--json'])",
                          tmp_path)
    assert "Traceback" not in done.stderr


def test_a_fifo_as_cells_csv_is_refused(tmp_path):
    fifo = tmp_path / "cells.csv"
    os.mkfifo(fifo)
    done = _in_subprocess(f"import sys\nfrom dagc import cli\nsys.exit(cli.main(['report', "
                          f"{str(fifo)!r}, '--json']))", tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().endswith("cells.csv: cannot read: not a regular file")


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_special_scheduler_file_is_refused_at_once(tmp_path, special):
    from dagc.experiments.dask import connection

    path = "/dev/zero" if special == "/dev/zero" else str(tmp_path / "scheduler.json")
    if special == "fifo":
        os.mkfifo(path)
    with pytest.raises(DagcError, match=r"--scheduler-file .*: cannot read: not a regular file"):
        connection.address_from_file(path, deadline=0.0)


# --- item 4: a read-only out= buffer ---------------------------------------------------------

def test_a_read_only_out_buffer_is_a_dagc_error(tiny_net):
    w = tiny_net.init(0)
    out = np.zeros(tiny_net.n_params)
    out.flags.writeable = False
    X = np.full((1, tiny_net.n_in), 0.5)
    with pytest.raises(DagcError, match="out: expected a writable contiguous float64 array"):
        tiny_net.vjp(w, X, np.ones((1, tiny_net.n_out)), out=out)
    with pytest.raises(DagcError, match="out: expected a writable"):
        tiny_net.hvp(w, X[0], w, out=out)


@pytest.fixture
def tiny_net():
    from conftest import arch_path

    import dagc

    return dagc.compile(arch_path("tiny"), width=4)


# --- real sweeps: kill -9 at random moments, two at once, a full disk -------------------------

REAL_GRID = ["mlp3", "--widths", "4,8", "--seeds", "2", "--metrics", "gradient,hessian"]
REAL_CELLS = 8


def _real_sweep(db: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dagc", "sweep", *REAL_GRID, "--db", str(db),
                             "--no-progress", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _results(db: Path) -> dict:
    """Every number a cell stored, by cell key: what must not depend on kills or company."""
    with Store.open(db, readonly=True) as store:
        return {tuple(r[c] for c in ("arch", "digest", "width", "seed", "metric",
                                     "options_hash")):
                (r["status"], r["value"], r["extras"], r["width_m"], r["n_params"])
                for r in store.rows()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, float]:
    """An uninterrupted real sweep: its numbers and how long it took (warm caches)."""
    db = tmp_path_factory.mktemp("reference") / "reference.sqlite"
    _real_sweep(db).communicate(timeout=300)  # compiles, if the cache is cold
    db.unlink()
    start = time.monotonic()
    _, err = _real_sweep(db).communicate(timeout=300)
    results = _results(db)
    assert len(results) == REAL_CELLS and all(v[0] == "ok" for v in results.values()), err
    return results, time.monotonic() - start


def test_a_real_sweep_killed_at_random_moments_resumes_to_the_same_numbers(tmp_path, reference):
    expected, duration = reference
    db = tmp_path / "killed.sqlite"
    rng = random.Random(23)  # reproducible moments
    for _ in range(4):
        victim = _real_sweep(db)
        time.sleep(rng.uniform(0.0, duration))
        victim.kill()
        victim.communicate(timeout=60)
        if db.exists():
            connection = sqlite3.connect(db)
            assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            connection.close()
    _, err = _real_sweep(db).communicate(timeout=300)
    assert _results(db) == expected, err


def test_two_real_sweeps_on_one_store_store_each_cell_once(tmp_path, reference):
    expected, _ = reference
    db = tmp_path / "shared.sqlite"
    sweeps = [_real_sweep(db), _real_sweep(db, "--jobs", "2")]
    for process in sweeps:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    assert _results(db) == expected


def test_a_full_disk_stops_the_sweep_with_one_line_and_a_rerun_completes(tmp_path, reference,
                                                                        monkeypatch, capsys):
    """ENOSPC simulated by SQLite's own page limit: the write fails as on a full disk."""
    expected, _ = reference
    db = _store(tmp_path / "full.sqlite", _row(arch="padding", arch_text="#" * 3500))
    opened = Store.open

    def full(path, **kwargs):  # no page beyond those the new store has: a few cells fit
        store = opened(path, **kwargs)
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")
        return store

    monkeypatch.setattr(Store, "open", full)
    monkeypatch.chdir(tmp_path)
    argv = ["sweep", *REAL_GRID, "--db", str(db), "--no-progress"]
    assert cli.main(argv) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message == (f"dagc: error: {db}: the disk is full (database or disk is full); free "
                       "some space and run the same command again: the finished cells are kept")
    monkeypatch.setattr(Store, "open", opened)
    stored = len(_results(db)) - 1
    assert 0 <= stored < REAL_CELLS
    connection = sqlite3.connect(db)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    connection.close()
    assert cli.main(argv) == 0
    assert {k: v for k, v in _results(db).items() if k[0] != "padding"} == expected


def test_a_cell_error_is_one_escaped_bounded_line():
    err = DagcError("graph \x1b[2Jnode\nid " + "x" * 5000)
    text = sweep.describe_error(err)
    assert text.startswith("DagcError: graph \\x1b[2Jnode id xxx") and "\x1b" not in text
    assert len(text) < 1100 and text.endswith("more characters)")
