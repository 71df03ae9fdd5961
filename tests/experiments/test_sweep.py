"""Sweeps: planning, skipping finished cells, resuming after a kill, concurrent writers,
process pools that agree with a serial run, and the command line.

Most tests replace the network and the measurement with a fast deterministic fake
(`FAKE_RUN_CELL`, picklable so spawned workers can use it); one test runs the real thing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import threadpoolctl

from dagc import cli
from dagc.errors import DagcError
from dagc.experiments import local, sweep
from dagc.experiments.store import Store
from dagc.frontend import spec
from dagc.ir import graph

TESTS = Path(__file__).resolve().parent
ARCHS = ["mlp3", "bottleneck3"]


# --- the fake network and measurement ------------------------------------------------------

_LOADS = 0  # nets loaded by this process


def fake_load_net(text, path, width):
    """The real graph (so width m, depth and P are right), no code generation or numba."""
    global _LOADS
    _LOADS += 1
    return graph.build(spec.parse(text, path), width)


def fake_value(name, width, seed, metric, inputs):
    """3 * width^-1/2 times a deterministic 'noise' of a few percent."""
    h = hashlib.sha256(f"{name}|{width}|{seed}|{metric}|{inputs}".encode()).digest()
    u = int.from_bytes(h[:8], "little") / 2.0 ** 64
    return 3.0 * width ** -0.5 * math.exp(0.1 * (u - 0.5))


def fake_measure(net, metric, seed, options):
    fail = os.environ.get("FAKE_FAIL")  # "width:seed" that raises, or dies with "die:width"
    if fail == f"{net.width}:{seed}":
        raise RuntimeError(f"fake failure at width {net.width} seed {seed}")
    if fail == f"die:{net.width}" and metric == "hessian" and seed == 0:
        os._exit(3)
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    import numba

    return {"value": fake_value(net.name, net.width, seed, metric, options.inputs),
            "pid": float(os.getpid()), "loads": float(_LOADS),
            "numba_threads": float(numba.get_num_threads()),
            "blas_threads": float(max(_blas_threads(), default=1)),
            "omp": os.environ.get("OMP_NUM_THREADS", "unset"),
            "openblas": os.environ.get("OPENBLAS_NUM_THREADS", "unset")}


def _blas_threads(count=None):
    """The thread counts of the BLAS libraries loaded here (setting them to `count`)."""
    if count is not None:
        threadpoolctl.threadpool_limits(count, user_api="blas")
    return [pool["num_threads"] for pool in threadpoolctl.threadpool_info()
            if pool["user_api"] == "blas"]


FAKE_RUN_CELL = functools.partial(sweep.run_cell, load_net=fake_load_net, measure_fn=fake_measure)


def fake_make_executor(jobs, fn=None):
    return _real_make_executor(jobs, fn or FAKE_RUN_CELL)


_real_make_executor = local.make_executor


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FAKE_FAIL", raising=False)
    monkeypatch.delenv("FAKE_SLEEP", raising=False)


@pytest.fixture
def fake(monkeypatch):
    """`dagc sweep` on the command line uses the fake."""
    monkeypatch.setattr(local, "make_executor", fake_make_executor)


def _cells(widths=(4, 8, 16), seeds=2, metrics=("hessian", "gradient"), archs=ARCHS,
           **options):
    loaded = sweep.load_architectures(archs, widths)
    return sweep.plan(loaded, widths, range(seeds), metrics, sweep.make_options(**options))


def _run(cells, db, jobs=1):
    with Store.open(db) as store:
        outcome = sweep.run_sweep(cells, store, fake_make_executor(jobs), progress=False)
        return outcome, store.rows()


def _numbers(rows):
    """What must not depend on order, job count or process."""
    return {(r["arch"], r["digest"], r["width"], r["seed"], r["metric"], r["options_hash"]):
            (r["status"], r["value"], r["width_m"], r["depth"], r["n_params"])
            for r in rows}


# --- planning and running -------------------------------------------------------------------

def test_plan_is_the_full_grid_grouped_by_architecture_and_width():
    cells = _cells(widths=(8, 4), seeds=3, metrics=("gradient",))
    assert len(cells) == 2 * 2 * 3
    assert len({c.key for c in cells}) == len(cells)
    groups = [c.group for c in cells]
    # each (architecture, width) group is contiguous, widths in the order given
    assert [g for i, g in enumerate(groups) if i == 0 or groups[i - 1] != g] == \
        list(dict.fromkeys(groups))
    assert [c.width for c in cells][:6] == [8] * 6
    assert {c.arch for c in cells} == set(ARCHS)
    assert all("blocks:" in c.text for c in cells)


def test_options_hash_separates_options():
    a = _cells(inputs=2)[0]
    b = _cells(inputs=3)[0]
    assert a.options_hash != b.options_hash
    assert json.loads(a.options)["inputs"] == 2
    with pytest.raises(DagcError, match="unknown measurement option"):
        sweep.make_options(nonsense=1)


def test_digest_covers_the_graph_file_of_a_neuron_level_architecture(tmp_path):
    (tmp_path / "g.txt").write_text("a h\nb h\nh o\n")
    (tmp_path / "neurons.yaml").write_text("name: neurons\ngraph: g.txt\n")
    (first,) = sweep.load_architectures([str(tmp_path / "neurons.yaml")], [1])
    (tmp_path / "g.txt").write_text("a h\nb h\na o\nh o\n")
    (second,) = sweep.load_architectures([str(tmp_path / "neurons.yaml")], [1])
    assert first.digest != second.digest and first.text == second.text
    assert Path(first.path).is_absolute()


def test_run_cell_is_picklable_and_single_threaded_on_its_own():
    """What a cluster executor relies on: ship a cell, run it anywhere, ship the result back."""
    import pickle

    import scipy.sparse.linalg  # noqa: F401 - load scipy's BLAS too

    def ship(thing):  # our own bytes, not untrusted data
        return pickle.loads(pickle.dumps(thing))  # noqa: S301

    cell = ship(_cells(archs=["mlp3"], widths=(8,), seeds=1)[0])
    run = ship(FAKE_RUN_CELL)
    before = _blas_threads(2)
    try:
        result = ship(run(cell))
        assert _blas_threads() == [2] * len(before)
    finally:
        _blas_threads(max(before, default=1))
    assert result.status == "ok" and result.cell == cell
    assert result.value == fake_value("mlp3", 8, 0, cell.metric, 4)
    assert result.extras["blas_threads"] == 1.0
    assert (result.width_m, result.depth) == (8, 4)


def test_sweep_stores_every_cell_and_a_rerun_skips_them(tmp_path, monkeypatch):
    cells = _cells()
    monkeypatch.setattr(sweep, "_NETS", type(sweep._NETS)())  # no nets of earlier tests
    loads_before = _LOADS
    outcome, rows = _run(cells, tmp_path / "r.sqlite")
    assert (outcome.ran, outcome.skipped, outcome.failed) == (len(cells), 0, [])
    assert len(rows) == len(cells)
    for r in rows:
        assert r["status"] == "ok"
        assert r["value"] == fake_value(r["arch"], r["width"], r["seed"], r["metric"], 4)
        assert r["width_m"] == (1 if r["arch"] == "bottleneck3" else r["width"])
        assert r["arch_text"].startswith("#") and r["options"]["inputs"] == 4
        assert r["elapsed"] >= 0 and r["host"] and r["timestamp"]
    # a net is loaded once per (architecture, width), not per cell
    assert max(r["extras"]["loads"] for r in rows) - loads_before == len({c.group for c in cells})
    again, _ = _run(cells, tmp_path / "r.sqlite")
    assert (again.ran, again.skipped) == (0, len(cells))


def test_failed_cell_is_recorded_and_retried(tmp_path, monkeypatch):
    cells = _cells()
    monkeypatch.setenv("FAKE_FAIL", "8:1")
    outcome, rows = _run(cells, tmp_path / "r.sqlite")
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(outcome.failed) == len(failed) == 4  # 2 architectures x 2 metrics
    assert all("fake failure at width 8 seed 1" in r["error"] for r in failed)
    assert all(r["value"] is None for r in failed)
    monkeypatch.delenv("FAKE_FAIL")
    again, rows = _run(cells, tmp_path / "r.sqlite")
    assert (again.ran, again.skipped, again.failed) == (4, len(cells) - 4, [])
    assert all(r["status"] == "ok" for r in rows)


def test_different_options_never_mix(tmp_path):
    db = tmp_path / "r.sqlite"
    first, _ = _run(_cells(inputs=2), db)
    second, rows = _run(_cells(inputs=3), db)
    assert second.skipped == 0 and second.ran == first.ran
    assert len(rows) == 2 * first.ran
    for r in rows:
        assert r["value"] == fake_value(r["arch"], r["width"], r["seed"], r["metric"],
                                        r["options"]["inputs"])


def test_process_pool_gives_the_numbers_of_a_serial_run(tmp_path):
    cells = _cells(widths=(4, 8, 16, 32), seeds=3)
    environment = {name: os.environ.get(name) for name in local.THREAD_VARIABLES}
    import scipy.sparse.linalg  # noqa: F401 - load scipy's BLAS too

    before = _blas_threads(2)  # as on a machine with two cores or more
    try:
        _, serial = _run(cells, tmp_path / "serial.sqlite", jobs=1)
        _, pooled = _run(cells, tmp_path / "pooled.sqlite", jobs=2)
        assert _blas_threads() == [2] * len(before)  # restored after the serial sweep
    finally:
        _blas_threads(max(before, default=1))
    assert {r["extras"]["blas_threads"] for r in serial + pooled} == {1.0}
    assert {name: os.environ.get(name) for name in local.THREAD_VARIABLES} == environment
    assert _numbers(pooled) == _numbers(serial)
    assert len({r["extras"]["pid"] for r in pooled}) == 2
    assert os.getpid() not in {r["extras"]["pid"] for r in pooled}
    # every worker is single-threaded (BLAS, OpenMP, numba); this process is not changed
    assert {r["extras"]["numba_threads"] for r in pooled} == {1.0}
    assert {r["extras"]["omp"] for r in pooled} == {"1"}
    assert {r["extras"]["openblas"] for r in pooled} == {"1"}
    # workers stay on their (architecture, width) group: far fewer loads than cells
    loads = {}
    for r in pooled:
        loads[r["extras"]["pid"]] = max(loads.get(r["extras"]["pid"], 0), r["extras"]["loads"])
    assert sum(loads.values()) <= len({c.group for c in cells}) + 2


def test_pool_workers_are_replaced_after_their_quota_of_cells(tmp_path, monkeypatch):
    """max_tasks_per_child: a worker leaves after CELLS_PER_WORKER cells and a fresh one
    (single-threaded too) takes over, with the same numbers."""
    monkeypatch.setattr(local, "CELLS_PER_WORKER", 2)
    cells = _cells(archs=["mlp3"], widths=(4, 8))
    _, serial = _run(cells, tmp_path / "serial.sqlite", jobs=1)
    _, pooled = _run(cells, tmp_path / "pooled.sqlite", jobs=2)
    assert _numbers(pooled) == _numbers(serial)
    cells_per_process = Counter(r["extras"]["pid"] for r in pooled)
    assert max(cells_per_process.values()) == 2 and len(cells_per_process) >= len(cells) // 2
    assert {r["extras"]["omp"] for r in pooled} == {"1"}


def test_process_pool_survives_a_dying_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "die:8")
    cells = _cells(archs=["mlp3"])
    outcome, rows = _run(cells, tmp_path / "r.sqlite", jobs=2)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and len(outcome.failed) == 1
    assert (failed[0]["width"], failed[0]["seed"], failed[0]["metric"]) == (8, 0, "hessian")
    assert "worker process died (exit code 3)" in failed[0]["error"]
    assert sum(r["status"] == "ok" for r in rows) == len(cells) - 1


def test_interrupt_keeps_finished_cells(tmp_path):
    cells = _cells()
    seen = []

    def executor(todo, on_start=None):
        for result in local.serial_executor(todo, on_start, fn=FAKE_RUN_CELL):
            seen.append(result)
            if len(seen) == 5:
                raise KeyboardInterrupt
            yield result

    with Store.open(tmp_path / "r.sqlite") as store:
        with pytest.raises(KeyboardInterrupt):
            sweep.run_sweep(cells, store, executor, progress=False)
        assert len(store.rows()) == 4


# --- separate processes: kill -9, Ctrl-C, two sweeps at once --------------------------------

SCRIPT = """
import signal
import sys
sys.path.insert(0, {tests!r})
import test_sweep
from dagc import cli
from dagc.experiments import local

if __name__ == "__main__":
    # Ctrl-C as at a terminal: a job started in the background (`pytest &`) inherits an
    # ignored SIGINT, and Python keeps ignoring it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    local.make_executor = test_sweep.fake_make_executor
    sys.exit(cli.main(sys.argv[1:]))
"""


def _sweep_process(tmp_path, args, sleep=0.0, marker=""):
    script = tmp_path / "fake_sweep.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    env = dict(os.environ, FAKE_SLEEP=str(sleep), FAKE_MARKER=marker)
    return subprocess.Popen([sys.executable, str(script), "sweep", *args, "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _count(db):
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)
        try:
            return connection.execute("SELECT count(*) FROM cells").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error:
        return 0


def _processes_with(marker):
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"FAKE_MARKER={marker}".encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            pass
    return found


GRID = ["mlp3", "bottleneck3", "--widths", "4,8,16", "--seeds", "3",
        "--metrics", "hessian,gradient"]  # 36 cells


GRID_CELLS = dict(archs=["mlp3", "bottleneck3"], widths=(4, 8, 16), seeds=3)


@pytest.mark.parametrize("jobs, sig", [(1, signal.SIGKILL), (2, signal.SIGKILL),
                                       (2, signal.SIGINT)])
def test_resume_after_kill_gives_the_uninterrupted_result(tmp_path, jobs, sig):
    db = tmp_path / "killed.sqlite"
    marker = uuid.uuid4().hex
    victim = _sweep_process(tmp_path, [*GRID, "--db", str(db), "--jobs", str(jobs)],
                            sleep=0.15, marker=marker)
    deadline = time.monotonic() + 120
    while _count(db) < 6 and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.05)
    assert victim.poll() is None, "the sweep finished before it could be interrupted"
    victim.send_signal(sig)
    _, err = victim.communicate(timeout=60)
    if sig == signal.SIGKILL:
        assert victim.returncode == -9, err
    else:
        assert victim.returncode == 130, err
        assert err.strip().splitlines()[-1] == (
            f"dagc: interrupted: {_count(db)} of 36 cells are stored in {db}; "
            "run the same command again to resume")
    interrupted = _count(db)
    assert 6 <= interrupted < 36
    deadline = time.monotonic() + 10  # workers die with their parent
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_with(marker) == []

    cells = _cells(**GRID_CELLS)
    rerun, rows = _run(cells, db)
    assert (rerun.skipped, rerun.ran) == (interrupted, 36 - interrupted)
    _, reference = _run(cells, tmp_path / "reference.sqlite")
    assert _numbers(rows) == _numbers(reference)
    assert len(rows) == 36
    connection = sqlite3.connect(db)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    connection.close()


def test_two_sweeps_writing_one_store_lose_nothing(tmp_path):
    db = tmp_path / "shared.sqlite"
    first = _sweep_process(tmp_path, [*GRID, "--db", str(db)], sleep=0.01)
    second = _sweep_process(tmp_path, ["mlp3", "densenet3", "--widths", "4,8,16,32",
                                       "--seeds", "3", "--metrics", "gradient",
                                       "--db", str(db), "--jobs", "2"], sleep=0.01)
    for process in (first, second):
        _, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
    reference = tmp_path / "reference.sqlite"
    _run(_cells(widths=(4, 8, 16), seeds=3), reference)
    _run(_cells(archs=["mlp3", "densenet3"], widths=(4, 8, 16, 32), seeds=3,
                metrics=("gradient",)), reference)
    with Store.open(reference, readonly=True) as a, Store.open(db, readonly=True) as b:
        assert _numbers(b.rows()) == _numbers(a.rows())
    connection = sqlite3.connect(db)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    connection.close()


# --- the command line -----------------------------------------------------------------------

def test_cli_sweep_prints_the_report_and_writes_files(tmp_path, fake, capsys):
    db = tmp_path / "r.sqlite"
    code = cli.main(["sweep", "mlp3", "--widths", "4,8,16", "--seeds", "2", "--metrics",
                     "hessian", "--db", str(db), "--report-dir", str(tmp_path / "rep")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "mlp3  hessian" in out and "slope b against m = " in out
    assert "sweep" in err  # the progress bar
    assert (tmp_path / "rep" / "cells.csv").read_text().count("\n") == 1 + 6
    assert (tmp_path / "rep" / "loglog.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_measurement_options_reach_the_stored_cells(tmp_path, fake, capsys):
    db = tmp_path / "r.sqlite"
    assert cli.main(["sweep", "mlp3", "--widths", "4", "--seeds", "1", "--metrics",
                     "hessian_ball,linearization", "--db", str(db), "--no-progress",
                     "--inputs", "3", "--radius", "0.5", "--ball-points", "7",
                     "--directions", "5"]) == 0
    with Store.open(db, readonly=True) as store:
        options = {row["metric"]: row["options"] for row in store.rows()}
    # each cell stores only the options its metric reads (docs/metrics.md)
    assert options == {
        "hessian_ball": {"inputs": 3, "radius": 0.5, "ball_points": 7, "tol": 1e-6,
                         "hessian_method": "lanczos", "ascent_steps": 8},
        "linearization": {"inputs": 3, "radius": 0.5, "directions": 5, "tol": 1e-6}}


def test_cli_quick_preset(tmp_path, fake, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # one job: no worker processes to start
    assert cli.main(["sweep", "mlp3", "bottleneck3", "--quick", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "1 job(s)" in err
    with Store.open(tmp_path / "dagc-results.sqlite", readonly=True) as store:
        rows = store.rows()
    assert sorted({r["width"] for r in rows}) == list(sweep.QUICK_WIDTHS)
    assert {r["seed"] for r in rows} == set(range(sweep.QUICK_SEEDS))
    assert {r["metric"] for r in rows} == set(sweep.QUICK_METRICS)
    assert {r["options"]["inputs"] for r in rows} == {sweep.default_options()["inputs"]}
    assert len(rows) == 2 * 4 * 2 * 2
    assert (tmp_path / "report" / "loglog.png").exists()
    assert "bottleneck" in out  # the note on width m


def test_cli_report_dir_that_cannot_be_written(tmp_path, fake, capsys):
    (tmp_path / "file").write_text("")
    code = cli.main(["sweep", "mlp3", "--widths", "4,8", "--seeds", "1", "--no-progress",
                     "--db", str(tmp_path / "r.sqlite"), "--report-dir", str(tmp_path / "file")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot write the report" in err
    assert not (tmp_path / "r.sqlite").exists()  # checked before anything ran


def test_cli_failed_cells_exit_1_and_are_listed(tmp_path, fake, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "8:0")
    code = cli.main(["sweep", "mlp3", "--widths", "4,8", "--seeds", "2", "--metrics",
                     "gradient", "--db", str(tmp_path / "r.sqlite"), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "FAILED width 8 seed 0: RuntimeError: fake failure" in out
    assert "1 cell(s) failed" in err


BAD_YAML = "name: broken\nwidth: 8\ninputs: {x: 4}\nblocks:\n  out: {size: 1, from: [nowhere]}\n"
BAD_WIDTH = textwrap.dedent("""\
    name: tiny_fan_in
    inputs: {x: 4}
    blocks:
      h1: {size: width, act: tanh, from: [x]}
      out: {size: 1, from: [{block: h1, fan_in: width - 8}]}
""")


@pytest.mark.parametrize("args, message", [
    (["mlp3", "--metrics", "hessian,curvature"], "unknown metric 'curvature'"),
    (["mlp3", "--widths", "16,0"], "--widths: must be at least 1, got 0"),
    (["mlp3", "--widths", "-8"], "--widths: must be at least 1"),
    (["mlp3", "--widths", "16,32,16"], "16 is listed twice"),
    (["mlp3", "--widths", "16,016"], "listed twice"),
    (["mlp3", "--widths", "wide"], "--widths: expected an integer"),
    (["mlp3", "--widths", ""], "--widths: expected a comma-separated list"),
    (["mlp3", "--seeds", "0"], "--seeds: must be at least 1"),
    (["mlp3", "--jobs", "0"], "--jobs: must be at least 1"),
    (["mlp3", "--radius", "-1"], "--radius: must be a positive number"),
    (["mlp3", "--ball-points", "0"], "--ball-points: must be at least 1"),
    (["mlp3", "--directions", "two"], "--directions: expected an integer"),
    (["nosucharch"], "no such architecture"),
    (["BAD_YAML"], "unknown source 'nowhere'"),
    (["BAD_WIDTH", "--widths", "4,16"], "fan_in"),
])
@pytest.mark.parametrize("existing", [False, True])
def test_cli_bad_input_is_one_line_and_leaves_the_store_untouched(tmp_path, fake, capsys,
                                                                  args, message, existing):
    (tmp_path / "BAD_YAML.yaml").write_text(BAD_YAML)
    (tmp_path / "BAD_WIDTH.yaml").write_text(BAD_WIDTH)
    args = [str(tmp_path / f"{a}.yaml") if a.startswith("BAD_") else a for a in args]
    db = tmp_path / "r.sqlite"
    if existing:
        _run(_cells(archs=["mlp3"], widths=(4,), seeds=1), db)
        before = db.read_bytes()
    code = cli.main(["sweep", *args, "--db", str(db), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("dagc: error: ") and err.count("\n") == 1 and message in err
    if existing:
        assert db.read_bytes() == before
    else:
        assert not db.exists()


@pytest.mark.parametrize("content", [b"not a database at all\n" * 50, None])
def test_cli_bad_store_is_one_line_and_untouched(tmp_path, fake, capsys, content):
    db = tmp_path / "r.sqlite"
    if content is None:  # an SQLite file of another program
        connection = sqlite3.connect(db)
        connection.execute("CREATE TABLE t (x)")
        connection.commit()
        connection.close()
    else:
        db.write_bytes(content)
    before = db.read_bytes()
    code = cli.main(["sweep", "mlp3", "--widths", "4", "--seeds", "1", "--db", str(db)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not a dagc results store" in err
    assert db.read_bytes() == before


def test_cli_scheduler_uses_the_cluster_executor(tmp_path, fake, capsys, monkeypatch):
    import types

    addresses = []

    def dask_executor(address):
        addresses.append(address)
        return fake_make_executor(1)

    import dagc.experiments

    fake_cluster = types.SimpleNamespace(dask_executor=dask_executor)
    # `from ..experiments import dask` reads the package's attribute once the real module
    # has been imported (by an earlier test), and sys.modules before that: replace both
    monkeypatch.setitem(sys.modules, "dagc.experiments.dask", fake_cluster)
    monkeypatch.setattr(dagc.experiments, "dask", fake_cluster, raising=False)
    db = tmp_path / "r.sqlite"
    args = ["sweep", "mlp3", "--widths", "4,8", "--seeds", "1", "--metrics", "gradient",
            "--db", str(db), "--no-progress"]
    assert cli.main([*args, "--scheduler", "tcp://example:8786"]) == 0
    assert addresses == ["tcp://example:8786"]
    assert "on the Dask cluster at tcp://example:8786" in capsys.readouterr().err
    with Store.open(db, readonly=True) as store:
        assert len(store.rows()) == 2
    assert cli.main([*args, "--scheduler", "tcp://example:8786", "--jobs", "2"]) == 2
    assert "not both" in capsys.readouterr().err


def test_cli_locked_store_is_one_line(tmp_path, fake, capsys, monkeypatch):
    from dagc.experiments import store

    db = tmp_path / "r.sqlite"
    _run(_cells(archs=["mlp3"], widths=(4,), seeds=1), db)
    monkeypatch.setattr(store, "PROBE_TIMEOUT", 0.2)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        code = cli.main(["sweep", "mlp3", "--widths", "4,8", "--seeds", "1", "--db", str(db)])
    finally:
        other.execute("ROLLBACK")
        other.close()
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "locked by another process" in err


# --- the real thing -------------------------------------------------------------------------

def test_real_sweep_end_to_end_is_deterministic_across_job_counts(tmp_path, monkeypatch,
                                                                  capsys):
    pytest.importorskip("dagc.measure")
    monkeypatch.delenv("DAGC_CACHE_DIR")  # share numba's cache with the user: compile once
    # at width 128 OpenBLAS would use several threads, and sum in another order
    args = ["sweep", "mlp3", "--widths", "8,128", "--seeds", "2", "--metrics",
            "hessian,gradient", "--inputs", "1", "--no-progress"]
    assert cli.main([*args, "--db", str(tmp_path / "one.sqlite"), "--jobs", "1"]) == 0
    assert cli.main([*args, "--db", str(tmp_path / "two.sqlite"), "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "mlp3  hessian" in out and "mlp3  gradient" in out
    with Store.open(tmp_path / "one.sqlite", readonly=True) as one, \
            Store.open(tmp_path / "two.sqlite", readonly=True) as two:
        rows = one.rows()
        assert _numbers(two.rows()) == _numbers(rows)
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    assert all(r["value"] > 0 and r["width_m"] == r["width"] for r in rows)


REAL_SCRIPT = """
import signal
import sys
from dagc import cli

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal
    sys.exit(cli.main(sys.argv[1:]))
"""


def test_ctrl_c_stops_a_real_serial_sweep_and_stores_no_failure(tmp_path, monkeypatch):
    """SIGINT lands inside numba code (where it used to come out as a SystemError stored as a
    failed cell while the sweep went on): the sweep stops within seconds, exits 130 and says
    how many cells are stored; the interrupted cell is not in the store."""
    pytest.importorskip("dagc.measure")
    monkeypatch.delenv("DAGC_CACHE_DIR")  # share numba's cache with the user: compile once
    script = tmp_path / "real_sweep.py"
    script.write_text(REAL_SCRIPT)
    db = tmp_path / "real.sqlite"
    args = ["sweep", "mlp3", "--widths", "8,512", "--seeds", "40", "--metrics", "hessian",
            "--inputs", "2", "--db", str(db), "--jobs", "1", "--no-progress"]
    victim = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240  # a cold compile first
    while _count(db) < 41 and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.05)  # past the quick width-8 cells, into the width-512 ones
    assert victim.poll() is None, "the sweep finished before it could be interrupted"
    time.sleep(0.3)
    victim.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = victim.communicate(timeout=60)
    assert time.monotonic() - sent < 5, err
    assert victim.returncode == 130, err
    stored = _count(db)
    assert 41 <= stored < 80
    assert err.strip().splitlines()[-1] == (
        f"dagc: interrupted: {stored} of 80 cells are stored in {db}; "
        "run the same command again to resume")
    assert "Error" not in err and "failed" not in err
    with Store.open(db, readonly=True) as store:
        assert {r["status"] for r in store.rows()} == {"ok"}
