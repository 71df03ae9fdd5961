"""Measurements that need a fresh process: dagc's compile time (cold: empty cache; cached: a
second process on the same cache) and the peak memory of a Hessian norm.

The parent calls `compile_times` / `hessian_memory`; each runs `python -m bench.probes KIND
...` and reads one JSON line from its output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import targets

PASSES = ("forward", "vjp", "hvp", "ntk", "jacobian", "factored_hessian")
TIMEOUT = 1800


def _run(args: list[str], env: dict) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.probes", *args], env=env, text=True,
                          capture_output=True, timeout=TIMEOUT,
                          cwd=Path(__file__).resolve().parent.parent)
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}", "process_seconds": wall}
    result = json.loads(lines[-1])
    result["process_seconds"] = wall
    return result


def compile_times(arch: str, width: int, repeats: int = 3) -> dict:
    """Cold and cached compile (+ first call) of every pass, each in a fresh process.

    A cold compile varies by 20% or more from one process to the next on a shared machine,
    so each kind runs `repeats` times (cold: each on an empty cache) and the run with the
    median total of the target passes is reported, with every run's total beside it.
    """
    runs = {"cold": [], "cached": []}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="dagc-bench-cache-") as cache:
            env = dict(os.environ, DAGC_CACHE_DIR=cache,
                       NUMBA_CACHE_DIR=str(Path(cache, "numba")))
            runs["cold"].append(_run(["compile", arch, str(width)], env))
            runs["cached"].append(_run(["compile", arch, str(width)], env))
    return {kind: _median_run(kind_runs) for kind, kind_runs in runs.items()}


def _median_run(runs: list[dict]) -> dict:
    ok = sorted((r for r in runs if "error" not in r), key=targets.compile_total)
    if not ok:
        return runs[0]
    return dict(ok[(len(ok) - 1) // 2], totals=[targets.compile_total(r) for r in ok])


def hessian_memory(arch: str, width: int) -> dict:
    """Peak RSS of one Hessian spectral norm in a fresh process (default cache)."""
    return _run(["memory", arch, str(width)], dict(os.environ))


# --- the child side ---------------------------------------------------------------------------

def _compile_child(arch: str, width: int) -> dict:
    start = time.perf_counter()
    import numpy as np

    import dagc

    imported = time.perf_counter()
    net = dagc.compile(arch, width=width)
    generated = time.perf_counter()
    rng = np.random.default_rng(0)
    w = net.init(0)
    X = rng.standard_normal((4, net.n_in))
    calls = {
        "forward": lambda: net.forward(w, X),
        "vjp": lambda: net.vjp(w, X, np.ones((4, net.n_out))),
        "hvp": lambda: net.hvp(w, X[0], w, 0, out=np.empty(net.n_params)),
        "ntk": lambda: net.ntk(w, X),
        "jacobian": lambda: net.jacobian(w, X),
        "factored_hessian": lambda: _factored_hvp(net, w, X),
    }
    first, cpu = {}, {}
    for name in PASSES:
        t, c = time.perf_counter(), time.process_time()
        calls[name]()
        first[name] = time.perf_counter() - t
        cpu[name] = time.process_time() - c
    # CPU seconds as well as wall seconds: on a loaded machine only the former is meaningful
    return {"import_seconds": imported - start, "codegen_seconds": generated - imported,
            "first_call_seconds": first, "first_call_cpu_seconds": cpu,
            "process_cpu_seconds": time.process_time()}


def _factored_hvp(net, w, X):
    import numpy as np

    operator = net.factored_hessian(w, X)
    return operator.apply(np.ones((operator.rows, operator.size)))


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _memory_child(arch: str, width: int) -> dict:
    import numpy as np

    import dagc

    from .lanczos import NCV, dagc_measure, spectral_norm

    vectors, length = NCV, None  # eigsh keeps NCV vectors of length P

    measure = dagc_measure()
    rng = np.random.default_rng(0)
    small = dagc.compile(arch, width=16)  # load every function used below, at a tiny width
    x_small = rng.standard_normal(small.n_in)
    if measure is not None:
        measure.hessian_norm(small, small.init(0), x_small)
    else:
        small.hvp(small.init(0), x_small, small.init(1), 0, out=np.empty(small.n_params))
    runtime = _status("VmRSS")  # the interpreter, numba and the compiled code: no width yet
    net = dagc.compile(arch, width=width)
    w = net.init(0)
    x = rng.standard_normal(net.n_in)
    x *= np.sqrt(net.n_in) / np.linalg.norm(x)
    if measure is not None:
        how = "dagc.measure.hessian_norm"
        # Its Lanczos runs on the factored coordinates: about ten vectors of length r << P
        # (v, q, r, q_prev and the operator's images of them) and no P-vector at all.
        vectors, length = 10, net.factored_hessian(w, x[None, :]).size

        def run():
            return measure.hessian_norm(net, w, x)
    else:
        how = "scipy eigsh on net.hvp (dagc.measure not available)"
        buffer = np.empty(net.n_params)

        def run():
            return spectral_norm(lambda v: net.hvp(w, x, np.ascontiguousarray(v), 0,
                                                   out=buffer).copy(), net.n_params)
    reset = _reset_peak()
    before = _status("VmRSS")
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    return {"how": how, "n_params": net.n_params, "rss_runtime": runtime,
            "rss_before": before, "peak_rss": peak,
            "peak_reset": reset, "seconds": seconds,
            "step_seconds": _step_seconds(net, w, x) if measure is not None else None,
            "weights_bytes": 8 * net.n_params, "lanczos_vectors": vectors,
            "vector_length": length or net.n_params,
            "reference_bytes": 8 * (net.n_params + vectors * (length or net.n_params)),
            "reference": f"weights + {vectors} Lanczos vectors of length "
                         f"{length or net.n_params:,}"}


def _step_seconds(net, w, x, repeats: int = 5) -> float:
    """Median time of one Lanczos step of a single norm: one application of the factored
    Hessian to one vector (measured after the peak, so its buffers do not count there)."""
    import numpy as np

    operator = net.factored_hessian(w, x[None, :])
    v = np.random.default_rng(1).standard_normal((1, operator.size))
    times = []
    for _ in range(repeats + 1):  # the first application warms the caches and is dropped
        start = time.perf_counter()
        operator.apply(v)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def main(argv: list[str]) -> None:
    kind, arch, width = argv[0], argv[1], int(argv[2])
    child = {"compile": _compile_child, "memory": _memory_child}[kind]
    print(json.dumps(child(arch, width)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
