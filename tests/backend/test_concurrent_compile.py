"""Several processes compiling the same architecture at once (docs/design.md): the module
is written atomically and once, numba's on-disk cache is shared safely, and later processes
load from it instead of compiling.

A tiny architecture with one activation keeps the cold numba compile short; only the forward
pass (and the functions it calls) is compiled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import INLINE

WORKER = """\
import json, sys, time
from pathlib import Path
import numpy as np
import dagc
from numba.core.dispatcher import Dispatcher

arch, sync, index = sys.argv[1:]
sync = Path(sync)
(sync / f"ready-{index}").touch()
while not (sync / "go").exists():  # start compiling together
    time.sleep(0.005)
start = time.perf_counter()
net = dagc.compile(arch)
w = net.init(seed=0)
X = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
Y = net.forward(w, X)
seconds = time.perf_counter() - start
stats = {name: [sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values())]
         for name, f in vars(net.module).items() if isinstance(f, Dispatcher) and f.signatures}
print(json.dumps({"Y": Y.tolist(), "module": net.module.__file__, "seconds": seconds,
                  "stats": stats}))
"""


def run_round(arch: Path, cache: Path, sync: Path, n: int) -> list[dict]:
    """n fresh processes that compile and run `arch` at the same moment."""
    sync.mkdir()
    # numba's default cache location (__pycache__ beside the module), whatever the caller set
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["DAGC_CACHE_DIR"] = str(cache)
    processes = [subprocess.Popen([sys.executable, "-c", WORKER, str(arch), str(sync), str(i)],
                                  env=env, cwd=sync, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(n)]
    try:
        deadline = time.monotonic() + 120
        while len(list(sync.glob("ready-*"))) < n:
            assert time.monotonic() < deadline, "workers did not start"
            assert all(p.poll() is None for p in processes), "a worker died before starting"
            time.sleep(0.01)
        (sync / "go").touch()
        results = [p.communicate(timeout=600) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(processes, results, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    return [json.loads(out.splitlines()[-1]) for out, _ in results]


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in directory.rglob("*") if p.is_file()}


def test_concurrent_compiles_share_one_module_and_numba_cache(tmp_path):
    arch = tmp_path / "tiny.yaml"
    arch.write_text(INLINE["tiny_sparse"])
    cache = tmp_path / "cache"
    generated = cache / "generated"

    first = run_round(arch, cache, tmp_path / "sync1", n=3)
    # identical results, one module file shared by all, nothing half-written left behind
    assert all(r["Y"] == first[0]["Y"] for r in first)
    assert len(first[0]["Y"]) == 4 and len(first[0]["Y"][0]) == 2
    modules = sorted(p.name for p in generated.glob("*.py"))
    assert len(modules) == 1 and modules[0].startswith("tiny_sparse_")
    assert {r["module"] for r in first} == {str(generated / modules[0])}
    leftovers = [p for p in cache.rglob("*")
                 if p.name.startswith(".") or ".tmp" in p.name or p.suffix == ".tmp"]
    assert not leftovers, leftovers
    assert sorted(p.name for p in generated.iterdir()) == sorted([modules[0], "__pycache__"])
    index_files = sorted(p.name for p in (generated / "__pycache__").glob("*.nbi"))
    assert any(".forward-" in name for name in index_files), index_files
    compiled = {name for r in first for name, (_, misses) in r["stats"].items() if misses}
    assert "forward" in compiled  # somebody compiled: the cache was really cold
    before = snapshot(cache)

    second = run_round(arch, cache, tmp_path / "sync2", n=2)
    assert all(r["Y"] == first[0]["Y"] for r in second)
    for r in second:  # every jitted function came from numba's cache, none was compiled
        assert r["stats"] and "forward" in r["stats"]
        assert all(hits >= 1 and misses == 0 for hits, misses in r["stats"].values()), r
    assert snapshot(cache) == before  # no new or rewritten module, index or cache file
    cold = max(r["seconds"] for r in first)
    warm = max(r["seconds"] for r in second)
    print(f"compile + forward: cold {cold:.1f} s (3 processes), warm {warm:.1f} s")
