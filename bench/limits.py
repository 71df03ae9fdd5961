"""Benchmark of the infinite-width kernels against neural-tangents' kernel_fn (issue 24).

    python -m bench.limits --nt-python /tmp/ntvenv/bin/python [--sizes 256 1024]

neural-tangents needs a JAX of its era (jax 0.4.30), so it runs in its own interpreter (a venv
with the `limits` extra), as a child process of this script given the same inputs through
.npy files. Both sides: CPU, float64, one thread, the NNGP and NTK of the same network (three
hidden layers of 512... any width: the limit does not depend on it, x in R^16 on the sphere of
radius 4, one identity output), X2 = X1.

- erf: closed forms on both sides; accuracy is their agreement.
- tanh: dagc's Mehler series against NT's ElementwiseNumerical (Gauss-Hermite on the pair) at
  the smallest degree whose error on a 48-point subset is at most dagc's, both measured
  against NT at degree 250 on that subset (accurate to ~1e-14 at these variances). NT runs
  through `nt.batch` in 128-row tiles: its rule materializes (deg, deg, n1, n2) arrays.
  Its tanh time is measured once at n = 128 (one tile) and scaled by (n / 128)^2 (the tiles
  are independent and equal), marked "extrapolated": at the degree matching dagc's accuracy
  one n = 256 call ran for minutes.

Times are the best of `--repeats` calls after one warm-up (compiles excluded), wall and CPU
seconds; on a loaded machine the CPU seconds compare the two fairly. Results:
bench/results/limits.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "limits.json"
NT_TANH_TILE = 128  # the one n at which NT's tanh kernel is timed (one nt.batch tile)
N_IN, DEPTH = 16, 3
SUBSET, REFERENCE_DEGREE, DEGREES = 48, 250, (40, 60, 80, 100, 120, 150, 200)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1",
              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


def architecture(act: str) -> str:
    sources = ["x"] + [f"h{k}" for k in range(1, DEPTH)]
    blocks = "\n".join(f"  h{k}: {{size: width, act: {act}, from: [{src}]}}"
                       for k, src in enumerate(sources, start=1))
    return (f"name: limits_{act}\nwidth: 8\ninputs: {{x: {N_IN}}}\nblocks:\n{blocks}\n"
            f"  out: {{size: 1, from: [h{DEPTH}]}}\n")


def inputs(n: int, seed: int = 0) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((n, N_IN))
    return X * np.sqrt(N_IN) / np.linalg.norm(X, axis=1, keepdims=True)


def timed(call, repeats: int) -> dict:
    call()  # compiles (numba) or traces (JAX)
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return {"wall": best_wall, "cpu": best_cpu}


# --- neural-tangents, in its own interpreter -------------------------------------------------

def nt_worker(request: dict) -> dict:
    """Runs under the neural-tangents interpreter: kernels and times of every job."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import neural_tangents as nt
    from neural_tangents import stax

    def kernel_fn(act: str, degree: int | None, batch: int | None):
        phi = stax.Erf() if act == "erf" else stax.ElementwiseNumerical(jnp.tanh, deg=degree)
        layers = [layer for _ in range(DEPTH) for layer in (stax.Dense(8), phi)]
        fn = jax.jit(stax.serial(*layers, stax.Dense(1))[2], static_argnames="get")
        return nt.batch(fn, batch_size=batch) if batch else fn

    results = []
    for job in request["jobs"]:
        X = np.load(job["x"])
        fn = kernel_fn(job["act"], job.get("degree"), job.get("batch"))

        def call(fn=fn, X=X):
            k = fn(X, None, ("nngp", "ntk"))
            return np.asarray(k.nngp), np.asarray(k.ntk)

        entry = dict(job)
        if job.get("time"):
            entry["time"] = timed(call, job["repeats"])
        nngp, ntk = call()
        np.save(job["out"], np.stack([nngp, ntk]))
        results.append(entry)
    return {"jobs": results}


def run_nt(python: str, jobs: list[dict]) -> list[dict]:
    env = dict(os.environ, **ONE_THREAD, JAX_PLATFORMS="cpu")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"jobs": jobs}, handle)
    done = subprocess.run([python, __file__, "--worker", handle.name], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"neural-tangents worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["jobs"]


# --- dagc --------------------------------------------------------------------------------------

def dagc_net(act: str, directory: Path):
    import dagc

    path = directory / f"limits_{act}.yaml"
    path.write_text(architecture(act))
    return dagc.compile(str(path))


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest entry error relative to the largest entry of b."""
    return float(np.abs(a - b).max() / np.abs(b).max())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nt-python", help="interpreter with neural-tangents (required)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(nt_worker(json.loads(Path(args.worker).read_text()))))
        return
    if not args.nt_python:
        parser.error("--nt-python is required")
    os.environ.update(ONE_THREAD)
    # One core for both sides (the NT child inherits it): XLA keeps helper threads whatever
    # its flags say, and on one core they cannot run beside the computation.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    work = Path(tempfile.mkdtemp(prefix="dagc_bench_limits_"))
    report = {"what": __doc__.split("\n\n")[2], "sizes": args.sizes, "results": {}}
    subset = work / "subset.npy"
    np.save(subset, inputs(SUBSET, 1))
    for act in ("erf", "tanh"):
        net = dagc_net(act, work)
        entry = report["results"].setdefault(act, {})
        degree = None
        if act == "tanh":
            degree, entry["accuracy"] = choose_degree(net, args.nt_python, subset, work)
        tile_time = None
        if act == "tanh":
            x = work / f"x{NT_TANH_TILE}.npy"
            np.save(x, inputs(NT_TANH_TILE))
            job = {"act": act, "x": str(x), "out": str(work / "nt_tile.npy"), "time": True,
                   "repeats": 1, "degree": degree, "batch": NT_TANH_TILE}
            tile_time = run_nt(args.nt_python, [job])[0]["time"]
        for n in sorted(args.sizes):
            x = work / f"x{n}.npy"
            X = inputs(n)
            np.save(x, X)
            mine = timed(lambda X=X, net=net: net.ntk_limit(X), args.repeats)
            row = {"dagc": mine, "nt_degree": degree}
            if tile_time is not None:
                scale = (n / NT_TANH_TILE) ** 2
                theirs = {key: value * scale for key, value in tile_time.items()}
                row["neural_tangents_extrapolated_from"] = NT_TANH_TILE
            else:
                job = {"act": act, "x": str(x), "out": str(work / f"nt_{act}_{n}.npy"),
                       "time": True, "repeats": args.repeats}
                theirs = run_nt(args.nt_python, [job])[0]["time"]
                nt_kernels = np.load(job["out"])
                row["max_relative_difference"] = max(
                    relative_error(net.nngp_limit(X)[..., 0], nt_kernels[0]),
                    relative_error(net.ntk_limit(X)[..., 0], nt_kernels[1]))
            row |= {"neural_tangents": theirs, "ratio_wall": mine["wall"] / theirs["wall"],
                    "ratio_cpu": mine["cpu"] / theirs["cpu"]}
            entry[str(n)] = row
            print(act, n, json.dumps(row), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {RESULTS}")


def choose_degree(net, nt_python: str, subset: Path, work: Path) -> tuple[int, dict]:
    """The smallest NT degree whose error on the subset is at most dagc's, both against NT at
    REFERENCE_DEGREE."""
    degrees = (REFERENCE_DEGREE, *DEGREES)
    jobs = [{"act": "tanh", "x": str(subset), "out": str(work / f"deg{d}.npy"), "degree": d}
            for d in degrees]
    run_nt(nt_python, jobs)
    reference = np.load(jobs[0]["out"])
    X = np.load(subset)
    mine = np.stack([net.nngp_limit(X)[..., 0], net.ntk_limit(X)[..., 0]])
    dagc_error = max(relative_error(mine[k], reference[k]) for k in range(2))
    errors = {}
    for d, job in zip(DEGREES, jobs[1:], strict=True):
        got = np.load(job["out"])
        errors[d] = max(relative_error(got[k], reference[k]) for k in range(2))
    chosen = next((d for d in DEGREES if errors[d] <= dagc_error), DEGREES[-1])
    return chosen, {"reference": f"neural-tangents at degree {REFERENCE_DEGREE} on {SUBSET} points",
                    "dagc_error": dagc_error, "nt_error_by_degree": errors, "chosen_degree": chosen}


if __name__ == "__main__":
    main()
