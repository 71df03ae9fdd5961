"""Sweeps on a Dask cluster (`dagc.cluster`, `dagc sweep --scheduler`): a real scheduler and
two single-threaded worker processes on 127.0.0.1 (`distributed.LocalCluster`).

- the cluster gives the same numbers as a local serial sweep, bit for bit;
- a worker killed (SIGKILL) mid-sweep: Dask reruns its cells on another worker, every cell is
  stored exactly once, with the same numbers;
- the client killed mid-sweep: a rerun recomputes exactly the missing cells;
- cells that fail (a network too large for memory, an exception, a cell that kills its worker
  every time) are stored as failed with their error, the rest finish, a rerun retries them;
- an unreachable scheduler (or missing scheduler file) is a one-line error within the timeout,
  with the store not created; without dask.distributed, an error saying how to install it.

Several processes compiling one architecture at once share dagc's and numba's cache without
corruption: tests/test_concurrent_compile.py covers that (here every worker loads one cache).

The numba cache is warmed first by another process, so the workers and this process all load
the same compiled code (a process that compiled the code itself may differ from one that
loaded it in the last bit of a Hessian norm). Skipped without the `dask` extra.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")
cloudpickle = pytest.importorskip("cloudpickle")

from dagc import cli  # noqa: E402
from dagc.errors import DagcError  # noqa: E402
from dagc.experiments import dask as cluster  # noqa: E402
from dagc.experiments import sweep  # noqa: E402
from dagc.experiments.dask import connection, faults  # noqa: E402
from dagc.experiments.local import serial_executor  # noqa: E402
from dagc.experiments.store import Store  # noqa: E402

# The workers cannot import this file: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ARCH = "mlp3"
WIDTHS = (8, 16)
SEEDS = 2
METRICS = ("gradient", "hessian")
HUGE = 10**6  # mlp3 at this width has 2e12 parameters: runtime refuses to init it

WARM = textwrap.dedent(f"""\
    from dagc.experiments import sweep
    archs = sweep.load_architectures([{ARCH!r}], [8])
    for cell in sweep.plan(archs, [8], [0], {METRICS!r}, sweep.make_options()):
        assert sweep.run_cell(cell).status == "ok"
""")


def plan(widths=WIDTHS, seeds=SEEDS, metrics=METRICS):
    archs = sweep.load_architectures([ARCH], widths)
    return sweep.plan(archs, widths, range(seeds), metrics, sweep.make_options())


def numbers(rows) -> dict:
    """Everything a cell measured, by cell key (what must not depend on where it ran)."""
    return {(r["arch"], r["digest"], r["width"], r["seed"], r["metric"], r["options_hash"]):
            (r["status"], r["value"], r["extras"], r["width_m"], r["depth"], r["n_params"])
            for r in rows}


def run(cells, db, executor):
    with Store.open(db) as store:
        outcome = sweep.run_sweep(cells, store, executor, progress=False)
        return outcome, store.rows()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    # LocalCluster closes a nanny whose worker is absent 15 s after an earlier death of the
    # same worker (a stale timer): the nannies must restart killed workers, however often.
    lost = dask.config.set({"distributed.deploy.lost-worker-timeout": "1h"})
    with pytest.MonkeyPatch.context() as mp, lost:
        mp.setenv("DAGC_CACHE_DIR", str(root / "cache"))  # the workers inherit it
        warm = subprocess.Popen([sys.executable, "-c", WARM], cwd=root, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            local = distributed.LocalCluster(
                processes=True, n_workers=2, threads_per_worker=1, host="127.0.0.1",
                dashboard_address=None, scheduler_kwargs={"allowed_failures": 1})
        except BaseException:
            warm.kill()
            raise
        with local, distributed.Client(local, set_as_default=False) as client:
            out, _ = warm.communicate(timeout=300)
            assert warm.returncode == 0, out[-3000:]
            cells = plan()
            reference = run(cells, root / "reference.sqlite", serial_executor)[1]
            assert len(reference) == len(cells)
            assert all(r["status"] == "ok" for r in reference)
            yield SimpleNamespace(root=root, address=local.scheduler_address, client=client,
                                  cluster=local, cells=cells, reference=numbers(reference))


def pids(client) -> dict[str, int]:
    return client.run(os.getpid)


def wait_for_workers(client, n=2, timeout=60.0):
    deadline = time.monotonic() + timeout
    while len(client.scheduler_info(n_workers=-1)["workers"]) < n:
        assert time.monotonic() < deadline, "the workers did not come back"
        time.sleep(0.1)


def slow_run_cell(cell, seconds=0.4):
    """`run_cell` after a pause, so a sweep can be interrupted while cells are running."""
    time.sleep(seconds)
    return sweep.run_cell(cell)


# --- same numbers ----------------------------------------------------------------------------

def test_cluster_sweep_matches_local_serial_sweep_bit_for_bit(env):
    executor = cluster.dask_executor(env.address)
    assert "2 worker(s)" in executor.description
    outcome, rows = run(env.cells, env.root / "same.sqlite", executor)
    assert outcome.ran == len(env.cells) and not outcome.failed
    assert numbers(rows) == env.reference  # values, extras, m, depth, P: identical
    assert sum(executor.tally.counts.values()) == len(env.cells)
    assert set(executor.tally.counts) <= set(pids(env.client))  # ran on the cluster's workers
    assert executor.client is None  # disconnected after the sweep


# --- faults ----------------------------------------------------------------------------------

def test_killed_worker_cells_rerun_elsewhere_and_every_cell_is_stored_once(env):
    wait_for_workers(env.client)
    executor = cluster.dask_executor(env.address, fn=slow_run_cell)
    victim = {}

    def killing(cells, on_start=None):
        for i, result in enumerate(executor(cells, on_start)):
            if i == 0:  # a cell is done: kill a worker that is running another one
                busy = {w: keys for w, keys in env.client.processing().items() if keys}
                address = sorted(busy)[0]
                victim.update(address=address, keys=list(busy[address]))
                os.kill(pids(env.client)[address], signal.SIGKILL)
            yield result

    outcome, rows = run(env.cells, env.root / "killed.sqlite", killing)
    assert victim["keys"]
    assert outcome.ran == len(env.cells) and not outcome.failed
    assert numbers(rows) == env.reference  # each cell once, same numbers
    for key in victim["keys"]:  # the victim's cells ran on a live worker
        assert executor.tally.where[executor.tally.keys[key].key] != victim["address"]
    assert executor.tally.restarted >= 1
    wait_for_workers(env.client)  # the nanny restarted the killed worker


CLIENT = """\
import sys, time
from dagc.experiments import dask as cluster
from dagc.experiments import sweep
from dagc.experiments.store import Store

def slow(cell):
    time.sleep(0.5)
    return sweep.run_cell(cell)

address, db = sys.argv[1:]
archs = sweep.load_architectures([{arch!r}], {widths!r})
cells = sweep.plan(archs, {widths!r}, range({seeds}), {metrics!r}, sweep.make_options())
with Store.open(db) as store:
    sweep.run_sweep(cells, store, cluster.dask_executor(address, fn=slow), progress=False)
"""


def test_killed_client_rerun_recomputes_only_the_missing_cells(env):
    wait_for_workers(env.client)
    db = env.root / "client.sqlite"
    script = CLIENT.format(arch=ARCH, widths=WIDTHS, seeds=SEEDS, metrics=METRICS)
    client = subprocess.Popen([sys.executable, "-c", script, env.address, str(db)],
                              cwd=env.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        deadline = time.monotonic() + 60
        while count_rows(db) < 2:
            assert client.poll() is None, client.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the client stored nothing"
            time.sleep(0.02)
        client.send_signal(signal.SIGKILL)
    finally:
        client.kill()
        client.wait()
    stored = count_rows(db)
    assert 2 <= stored < len(env.cells)

    # the scheduler drops the dead client's tasks
    deadline = time.monotonic() + 30
    while env.client.run_on_scheduler(_dagc_tasks):
        assert time.monotonic() < deadline, "the dead client's tasks stayed on the scheduler"
        time.sleep(0.1)

    executor = cluster.dask_executor(env.address)
    outcome, rows = run(env.cells, db, executor)
    assert outcome.skipped == stored
    assert outcome.ran == len(env.cells) - stored == len(executor.tally.keys)
    assert numbers(rows) == env.reference


def _dagc_tasks(dask_scheduler) -> int:
    return sum(1 for key in dask_scheduler.tasks if str(key).startswith("dagc-cell-"))


def count_rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            return connection.execute("SELECT count(*) FROM cells").fetchone()[0]
    except sqlite3.OperationalError:  # being created
        return 0


def flaky_run_cell(cell, flag):
    if cell.seed == 1 and cell.width == WIDTHS[0] and os.path.exists(flag):
        raise RuntimeError(f"flaky failure of {cell.label}")
    return sweep.run_cell(cell)


def test_failing_cells_are_stored_with_their_error_and_retried_by_a_rerun(env):
    wait_for_workers(env.client)
    flag = env.root / "flaky"
    flag.touch()
    cells = plan(widths=(WIDTHS[0], HUGE), metrics=("gradient",))
    db = env.root / "failing.sqlite"
    executor = cluster.dask_executor(env.address, fn=functools.partial(flaky_run_cell,
                                                                       flag=str(flag)))
    outcome, rows = run(cells, db, executor)
    assert outcome.ran == 4 and len(outcome.failed) == 3 and executor.tally.failed == 3
    by_cell = {(r["width"], r["seed"]): r for r in rows}
    assert by_cell[WIDTHS[0], 0]["status"] == "ok"
    assert by_cell[WIDTHS[0], 1]["status"] == "failed"
    assert by_cell[WIDTHS[0], 1]["error"].startswith("RuntimeError: flaky failure of mlp3")
    for seed in (0, 1):
        row = by_cell[HUGE, seed]
        assert row["status"] == "failed" and row["value"] is None
        assert row["error"].startswith("DagcError: the 2,000,017,000,000 parameters of mlp3 "
                                       "need 16000.1 GB"), row["error"]

    flag.unlink()
    outcome, rows = run(cells, db, executor)
    assert outcome.skipped == 1 and outcome.ran == 3 == len(executor.tally.keys)  # only the failed
    by_cell = {(r["width"], r["seed"]): r for r in rows}
    assert by_cell[WIDTHS[0], 1]["status"] == "ok"
    assert env.reference[cells[1].key][1] == by_cell[WIDTHS[0], 1]["value"]
    assert [by_cell[HUGE, s]["status"] for s in (0, 1)] == ["failed", "failed"]


def poison_run_cell(cell):
    if cell.seed == 0 and cell.metric == "gradient" and cell.width == WIDTHS[0]:
        os._exit(9)  # like a segfault or the OOM killer, every time
    return sweep.run_cell(cell)


def test_a_cell_that_kills_every_worker_fails_and_the_sweep_goes_on(env):
    wait_for_workers(env.client)
    cells = plan(widths=WIDTHS[:1], metrics=("gradient",))
    executor = cluster.dask_executor(env.address, fn=poison_run_cell)
    outcome, rows = run(cells, env.root / "poison.sqlite", executor)
    assert outcome.ran == 2 and len(outcome.failed) == 1
    by_seed = {r["seed"]: r for r in rows}
    assert by_seed[0]["status"] == "failed"
    assert "worker process died every time it ran this cell" in by_seed[0]["error"]
    assert "KilledWorker" in by_seed[0]["error"]
    assert by_seed[1]["status"] == "ok"
    assert by_seed[1]["value"] == env.reference[cells[1].key][1]
    wait_for_workers(env.client)


def _holders(key, dask_scheduler=None) -> list[str]:  # the workers holding key's result
    ts = dask_scheduler.tasks.get(key)
    return sorted(ws.address for ws in ts.who_has or ()) if ts is not None else []


def test_a_finished_cell_whose_worker_dies_before_its_result_is_fetched_is_recomputed(env):
    """The worker holding a finished cell's result dies before the client fetched it: the
    client's future goes from 'finished' to 'lost', Dask recomputes the task elsewhere, and
    the cell is stored once, ok, with the same numbers (not failed with "NoneType: None")."""
    wait_for_workers(env.client)
    cells = plan(widths=WIDTHS[:1], metrics=("gradient",))
    executor = cluster.dask_executor(env.address, fn=slow_run_cell)  # a rerun takes 0.4 s
    seen = {}

    def losing(cells, on_start=None):
        for i, result in enumerate(executor(cells, on_start)):
            if i == 0:  # hold the first result while the other cell finishes, then kill
                key = next(k for k, c in executor.tally.keys.items() if c.key != result.cell.key)
                state = executor.client.futures[key]  # this client's view of that task
                deadline = time.monotonic() + 60
                while state.status != "finished" or not env.client.run_on_scheduler(
                        _holders, key):
                    assert time.monotonic() < deadline, f"{key} never finished"
                    time.sleep(0.01)
                address = env.client.run_on_scheduler(_holders, key)[0]
                os.kill(pids(env.client)[address], signal.SIGKILL)
                while state.status == "finished":
                    assert time.monotonic() < deadline, "the client never heard of the loss"
                    time.sleep(0.005)
                seen.update(key=key, address=address, status=state.status)
            yield result

    outcome, rows = run(cells, env.root / "lost.sqlite", losing)
    assert seen["status"] == "lost"
    assert outcome.ran == 2 and not outcome.failed, [r.error for r in outcome.failed]
    assert numbers(rows) == {cell.key: env.reference[cell.key] for cell in cells}
    assert executor.tally.where[executor.tally.keys[seen["key"]].key] != seen["address"]
    assert executor.tally.restarted == 1  # the lost cell ran twice
    wait_for_workers(env.client)


class FakeFuture:
    def __init__(self, status, error=None):
        self.status, self.error = status, error

    def result(self):
        raise self.error

    def exception(self):
        return self.error


def test_how_each_future_status_becomes_a_result():
    """Fault classification alone, no cluster: the cell's failures, the cluster's, neither."""
    address = "tcp://127.0.0.1:1"
    cell = plan(widths=WIDTHS[:1], seeds=1, metrics=("gradient",))[0]
    cancelled = distributed.client.FutureCancelledError

    for status in ("lost", "pending"):  # not done after all: waited for again
        assert faults.settle(FakeFuture(status), cell, True, address) is faults.WAIT_AGAIN
    forgotten = FakeFuture("cancelled", cancelled("k", "already forgotten"))
    result, worker = faults.settle(forgotten, cell, True, address)
    assert result.status == "failed" and worker is None
    assert "dropped this cell's task (already forgotten)" in result.error
    raised = FakeFuture("error", ValueError("bad"))
    assert faults.settle(raised, cell, True, address)[0].error == "ValueError: bad"

    disconnected = FakeFuture("cancelled", cancelled("k", "scheduler-connection-lost"))
    with pytest.raises(DagcError, match="lost the connection to the Dask scheduler"):
        faults.settle(disconnected, cell, True, address)
    with pytest.raises(DagcError, match="lost the connection to the Dask scheduler"):
        faults.settle(raised, cell, False, address)


# --- the command line ------------------------------------------------------------------------

def test_cli_sweep_on_the_cluster_by_address_and_scheduler_file(env, capfd):
    db = env.root / "cli.sqlite"
    args = ["sweep", ARCH, "--widths", "8,16", "--seeds", "2", "--metrics", "gradient,hessian",
            "--db", str(db), "--no-progress"]
    assert cli.main(args + ["--scheduler", env.address]) == 0
    err = capfd.readouterr().err
    assert f"on the Dask cluster at {env.address} (2 worker(s)" in err
    assert f"cluster: ran {len(env.cells)} cell(s) at {env.address}: " in err
    with Store.open(db, readonly=True) as store:
        assert numbers(store.rows()) == env.reference

    scheduler_file = env.root / "scheduler.json"
    scheduler_file.write_text(json.dumps({"type": "Scheduler", "address": env.address}))
    assert cli.main(args + ["--scheduler-file", str(scheduler_file)]) == 0
    err = capfd.readouterr().err
    assert f"{len(env.cells)} already in" in err and "cluster: ran" not in err

    assert cli.main(args + ["--scheduler", env.address, "--jobs", "2"]) == 2
    assert "--jobs" in capfd.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_a_one_line_error_within_the_timeout(tmp_path, capfd,
                                                                     monkeypatch):
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(DagcError, match=f"cannot reach the Dask scheduler at {address} "
                                        "within 1 s"):
        cluster.dask_executor(address, timeout=1)
    assert time.monotonic() - start < 5

    with socket.socket() as mute:  # accepts connections, never answers: not a scheduler
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        start = time.monotonic()
        with pytest.raises(DagcError, match="cannot reach the Dask scheduler"):
            cluster.dask_executor(f"tcp://127.0.0.1:{mute.getsockname()[1]}", timeout=1)
        assert time.monotonic() - start < 3

    monkeypatch.setattr(connection, "DEFAULT_TIMEOUT", 1.0)
    db = tmp_path / "never.sqlite"
    monkeypatch.chdir(tmp_path)
    for option, value in (("--scheduler", address), ("--scheduler-file", "missing.json")):
        capfd.readouterr()
        start = time.monotonic()
        code = cli.main(["sweep", ARCH, "--widths", "8", "--seeds", "1", "--metrics",
                         "gradient", "--db", str(db), option, value])
        elapsed = time.monotonic() - start
        out, err = capfd.readouterr()
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("dagc: error: "), err
        assert elapsed < 10
        assert not db.exists()  # the store is not even created
    assert "missing.json" in err


def test_bad_addresses_and_arguments(tmp_path):
    with pytest.raises(DagcError, match="either a Dask scheduler address"):
        cluster.dask_executor()
    with pytest.raises(DagcError, match="not both"):
        cluster.dask_executor("tcp://127.0.0.1:1", str(tmp_path / "f"))
    start = time.monotonic()
    for address in ("tcp://a b:1", "nosuchscheme://127.0.0.1:1", "tcp://127.0.0.1",
                    "tcp://:8786", "127.0.0.1:0", ""):
        with pytest.raises(DagcError, match="bad Dask scheduler address"):
            cluster.dask_executor(address, timeout=5)
    assert time.monotonic() - start < 2  # at once, not after the timeout
    with pytest.raises(DagcError, match="no such file or directory"):
        cluster.dask_executor(scheduler_file=str(tmp_path / "no" / "file.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(DagcError, match="not a Dask scheduler file"):
        cluster.dask_executor(scheduler_file=str(bad), timeout=0.3)


def test_without_dask_distributed_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails
    with pytest.raises(DagcError, match=r'pip install "dagc\[dask\]"'):
        cluster.dask_executor("tcp://127.0.0.1:8786")


# --- stopping: Ctrl-C, and a scheduler that dies -----------------------------------------------

def _start(args, log):
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)


def _wait_for_rows(db, n, process, seconds=180):
    deadline = time.monotonic() + seconds
    while count_rows(db) < n:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"fewer than {n} cells were stored"
        time.sleep(0.05)


def _sigint_as_at_a_terminal() -> None:
    """In the child before exec: Ctrl-C's default action, which Python turns into
    KeyboardInterrupt. A test run started in the background (`pytest &`, nohup) passes on an
    ignored SIGINT, and Python would keep ignoring it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _statuses(db) -> Counter:
    with Store.open(db, readonly=True) as store:
        return Counter(r["status"] for r in store.rows())


def test_ctrl_c_and_a_dying_scheduler_stop_a_cluster_sweep_with_one_line(tmp_path):
    """Ctrl-C: exit 130 within seconds, one line saying how many cells are stored, and no cell
    stored as failed. The scheduler killed mid-sweep: one line (distributed's own tracebacks
    reformatted), exit 2, and no cell blamed for the cluster's failure."""
    scheduler_file = tmp_path / "scheduler.json"
    with open(tmp_path / "cluster.log", "w") as log:
        scheduler = _start(["dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                            "--no-dashboard", "--scheduler-file", str(scheduler_file)], log)
        worker = _start(["dask", "worker", "--scheduler-file", str(scheduler_file),
                         "--nthreads", "1", "--no-dashboard"], log)
        try:
            db = tmp_path / "r.sqlite"
            # Cells of tenths of a second: small ones finished all 400 before the signal
            # arrived once the numba cache was warm.
            args = [sys.executable, "-m", "dagc", "sweep", ARCH, "--widths", "256,512",
                    "--seeds", "200", "--metrics", "hessian", "--inputs", "1", "--db", str(db),
                    "--scheduler-file", str(scheduler_file), "--no-progress"]
            sweep_ = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, preexec_fn=_sigint_as_at_a_terminal)
            _wait_for_rows(db, 5, sweep_)
            sweep_.send_signal(signal.SIGINT)
            sent = time.monotonic()
            _, err = sweep_.communicate(timeout=60)
            assert time.monotonic() - sent < 10, err
            assert sweep_.returncode == 130, err
            stored = count_rows(db)
            assert err.splitlines()[-1] == (
                f"dagc: interrupted: {stored} of 400 cells are stored in {db}; run the same "
                "command again to resume"), err
            assert "Traceback" not in err and set(_statuses(db)) == {"ok"}

            sweep_ = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
            _wait_for_rows(db, stored + 5, sweep_)
            scheduler.kill()
            _, err = sweep_.communicate(timeout=60)
            assert sweep_.returncode == 2, err
            assert err.splitlines()[-1].startswith("dagc: error: lost the connection to the "
                                                   "Dask scheduler"), err
            assert "Traceback" not in err, err
            assert set(_statuses(db)) == {"ok"}, err
        finally:
            for process in (worker, scheduler):
                process.kill()
                process.wait()
