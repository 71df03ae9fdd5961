"""What machine the benchmark ran on, and its limits measured in the same run: the float64
matrix-product rate (np.dot of 2048 x 2048 matrices) and the copy bandwidth (read + write of a
large array)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

PACKAGES = ("dagc", "numpy", "scipy", "numba", "llvmlite", "jax", "jaxlib", "torch")
# Settings that change the measured times: thread counts, the allocator, and which OpenBLAS
# kernels run (OPENBLAS_CORETYPE=Haswell, set on some machines, keeps it off AVX-512).
SETTING_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                     "NUMBA_NUM_THREADS", "XLA_FLAGS", "MALLOC_MMAP_THRESHOLD_",
                     "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def versions() -> dict[str, str | None]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def dagc_revision() -> dict:
    """The dagc checkout's commit and whether its code or templates have local changes."""
    import dagc

    root = Path(dagc.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dagc"],
                               cwd=root, text=True, capture_output=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "modified": []}
    return {"commit": head or None,
            "modified": [line[3:] for line in dirty.splitlines() if line.strip()]}


def info() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": memory_total(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions(),
        "dagc_revision": dagc_revision(),
        "environment": {k: os.environ[k] for k in SETTING_VARIABLES if k in os.environ},
    }


def matmul_gflops(n: int = 2048, repeats: int = 5) -> dict:
    """float64 np.dot of two n x n matrices: best and median GFLOP/s (2 n^3 flops)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    out = np.empty((n, n))
    np.dot(a, b, out=out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.dot(a, b, out=out)
        times.append(time.perf_counter() - start)
    flops = 2.0 * n ** 3
    return {"best": flops / min(times) / 1e9, "median": flops / float(np.median(times)) / 1e9,
            "n": n}


def copy_gbps(n_bytes: int = 1 << 28, repeats: int = 5) -> dict:
    """np.copyto between two preallocated (already faulted-in) arrays of n_bytes: GB/s
    counting read + write (2 * n_bytes per copy)."""
    src = np.ones(n_bytes // 8)
    dst = np.zeros_like(src)
    np.copyto(dst, src)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    moved = 2.0 * src.nbytes
    return {"best": moved / min(times) / 1e9, "median": moved / float(np.median(times)) / 1e9,
            "bytes": src.nbytes}


def batch_product_gain(width: int, rows: int, repeats: int = 15) -> dict:
    """GFLOP/s of the two products a Lanczos step makes with a width x width weight matrix
    (W @ a.T forward, g @ W backward) for one row and for `rows` rows, interleaved: the
    most that batching `rows` Lanczos runs can gain on a dense network's products here."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((width, width))
    steps = {}
    for n in (1, rows):
        a = rng.standard_normal((n, width))
        aT = np.ascontiguousarray(a.T)
        steps[n] = lambda a=a, aT=aT: (W @ aT, a @ W)
        steps[n]()
    times = {n: [] for n in steps}
    for _ in range(repeats):
        for n, step in steps.items():
            start = time.perf_counter()
            step()
            times[n].append(time.perf_counter() - start)
    rates = {n: 4.0 * n * width ** 2 / float(np.median(t)) / 1e9 for n, t in times.items()}
    return {"width": width, "rows": rows, "one_row_gflops": rates[1],
            "batch_gflops": rates[rows], "gain": rates[rows] / rates[1]}


def limits() -> dict:
    """Both limits, with the load average at the time (a busy machine lowers them)."""
    return {"matmul_gflops": matmul_gflops(), "copy_gbps": copy_gbps(),
            "load_average": load_average(), "time": time.time()}
