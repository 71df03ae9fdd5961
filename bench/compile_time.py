"""Cold compile time: a first architecture alone, then a second one in the same process.

Each run is a fresh process with a fresh module cache (DAGC_CACHE_DIR) and a fresh numba cache
(NUMBA_CACHE_DIR) for everything, shared kernels included, so nothing is loaded from disk. The
process compiles `densenet3`, forces every pass (forward, Jacobian, VJP, HVP, factored Hessian,
NTK) to compile by calling it once, then does the same for `sparse3`: with shared kernels the
second architecture reuses the kernels the first compiled.

Run it on this tree and, for comparison, on another checkout (the code before the restructure):

    git worktree add /tmp/old 30578f2
    python -m bench.compile_time --tree . --tree /tmp/old --repeats 2

Trees are interleaved (new, old, new, old) so that a change in the machine's load hits both.
Wall and CPU seconds are recorded: on a shared machine only CPU seconds compare runs fairly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIRST, SECOND = "densenet3", "sparse3"
WIDTH = 16

# Runs in the child process, with the tree under test first on sys.path.
CHILD = """\
import json, sys, time
import numpy as np

start = time.perf_counter(), time.process_time()
import dagc
imported = time.perf_counter(), time.process_time()


def every_pass(name):
    net = dagc.compile(name, width=WIDTH)
    w = net.init(0)
    X = np.random.default_rng(0).standard_normal((3, net.n_in))
    net.forward(w, X)
    net.jacobian(w, X)
    net.vjp(w, X, np.ones((3, net.n_out)))
    net.hvp(w, X[0], w, output=0)
    H = net.factored_hessian(w, X)
    H.apply(np.ones((3, H.size)))
    net.ntk(w, X)


times = {}
for name in NAMES:
    before = time.perf_counter(), time.process_time()
    every_pass(name)
    after = time.perf_counter(), time.process_time()
    times[name] = {"wall": after[0] - before[0], "cpu": after[1] - before[1]}
print(json.dumps({"dagc": dagc.__file__, "import_wall": imported[0] - start[0],
                  "import_cpu": imported[1] - start[1], "compile": times}))
"""


def run_once(tree: Path) -> dict:
    """One fresh process compiling FIRST then SECOND from `tree`, with empty caches."""
    with tempfile.TemporaryDirectory(prefix="dagc-compile-time-") as scratch:
        env = dict(os.environ, PYTHONPATH=str(tree.resolve()),
                   DAGC_CACHE_DIR=str(Path(scratch, "dagc")),
                   NUMBA_CACHE_DIR=str(Path(scratch, "numba")))
        code = CHILD.replace("WIDTH", str(WIDTH)).replace("NAMES", repr((FIRST, SECOND)))
        result = subprocess.run([sys.executable, "-c", code], env=env, cwd=scratch,
                                capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"{tree}: {result.stderr[-3000:]}")
    found = json.loads(result.stdout.splitlines()[-1])
    if not Path(found["dagc"]).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"{tree}: imported dagc from {found['dagc']}")
    return found


def summary(runs: list[dict]) -> dict:
    """Medians over the runs of each architecture's wall and CPU seconds."""
    return {name: {kind: statistics.median(r["compile"][name][kind] for r in runs)
                   for kind in ("wall", "cpu")} for name in (FIRST, SECOND)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path, required=True,
                        help="a checkout to measure (repeat for several; interleaved)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/compile_time.json"))
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = {str(t): [] for t in args.tree}
    for repeat in range(args.repeats):
        for tree in args.tree:
            found = run_once(tree)
            runs[str(tree)].append(found)
            times = ", ".join(f"{n} {v['wall']:.1f} s wall / {v['cpu']:.1f} s cpu"
                              for n, v in found["compile"].items())
            print(f"[{repeat + 1}/{args.repeats}] {tree}: {times}", flush=True)
    load = os.getloadavg()
    report = {
        "what": f"cold compile of {FIRST} alone, then {SECOND} in the same process, every "
                f"pass forced, width {WIDTH}, fresh module and numba caches",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_end": load},
        "trees": {tree: {"runs": r, "median": summary(r)} for tree, r in runs.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for tree, r in report["trees"].items():
        print(tree, json.dumps(r["median"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
