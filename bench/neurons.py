"""Benchmarks of the neuron path (issue 21): compile once per activation set, and scale.

    python -m bench.neurons [--edges 1e7 1e8] [--fan-in 100] [--skip-compile]

- compile: every pass of a 100-neuron graph with five activations, cold (fresh dagc and numba
  caches, in a fresh process; densenet3 the same way, the target), then a second, different
  100-neuron graph with the same activations in another process (the module and numba's cache
  are reused); the module's size for graphs of 100 and of a million neurons.
- scale: a random layered DAG (fan-in 100 from all earlier neurons, five activations mixed in
  every layer) at each edge count, in its own process: build time, resident memory against
  weights + indices, forward (1 and 16 samples), VJP and HVP times, the VJP's and HVP's bytes
  streamed per second as a fraction of the copy bandwidth measured in the same process, and
  the forward against scipy.sparse CSR products of the same graph, and forward, VJP and HVP
  against the peers of bench/peers (`dagc.export`'s network in PyTorch, one thread, and JAX,
  jit; gather, and masked where its dense matrices fit in --masked-up-to bytes) on graphs up to
  --peers-up-to edges.

Results: bench/results/neurons.json, or --out (and the report printed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np

ACTS = ("tanh", "sigmoid", "softplus", "gelu", "sin")
RESULTS = Path(__file__).parent / "results" / "neurons.json"


# --- graphs ----------------------------------------------------------------------------------

def random_neuron_graph(n_neurons: int, fan_in: int, n_in: int = 100, layer_size: int = 10_000,
                        acts=ACTS, seed: int = 0):
    """A layered random DAG as a `NeuronGraph`, vectorized: every neuron past layer 0 has
    `fan_in` distinct sources among all earlier neurons, its largest in the previous layer;
    each layer's neurons split into contiguous runs of the activations, then one identity
    output. Numbered already sorted by (layer, activation), so the IR keeps it as is."""
    from dagc.ir import neurons

    rng = np.random.default_rng(seed)
    sizes = [n_in] + [layer_size] * round((n_neurons - n_in - 1) / layer_size) + [1]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    n = int(starts[-1])
    layer = np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)
    codes = np.empty(n, np.int64)
    codes[:n_in] = neurons.INPUT
    act_codes = np.array([neurons.CODES[a] for a in acts])
    indptr = np.zeros(n + 1, np.int64)
    indptr[n_in + 1:] = fan_in * np.arange(1, n - n_in + 1)
    indices = np.empty(int(indptr[-1]), np.uint32)
    for lay in range(1, len(sizes)):
        lo, hi, before = int(starts[lay]), int(starts[lay + 1]), int(starts[lay - 1])
        k = min(fan_in, lo)
        if k != fan_in:
            raise ValueError("the inputs are fewer than the fan-in")
        # k sorted draws from [0, lo - k], plus 0..k-1: distinct and sorted within each row
        rows = np.sort(rng.integers(0, lo - k + 1, (hi - lo, k)), axis=1) + np.arange(k)
        low = rows[:, -1] < before  # none in the previous layer: the largest goes there
        rows[low, -1] = rng.integers(before, lo, np.count_nonzero(low))
        indices[indptr[lo]:indptr[hi]] = rows.ravel()
        codes[lo:hi] = (act_codes[np.arange(hi - lo) * len(acts) // (hi - lo)]
                        if lay < len(sizes) - 1 else neurons.CODES["identity"])
    return neurons.NeuronGraph(range(n), layer, codes, np.arange(n) == n - 1, indptr, indices)


def small_graph_file(path: Path, n_neurons: int, seed: int) -> None:
    """A 100-neuron mixed-activation graph as GraphML: 5 inputs, fan-in 2-6."""
    import networkx as nx

    rng = np.random.default_rng(seed)
    graph = nx.DiGraph()
    graph.add_nodes_from(f"x{i}" for i in range(5))
    for i in range(n_neurons - 5):
        earlier = list(graph.nodes)
        node = f"n{i}"
        graph.add_node(node, act=ACTS[int(rng.integers(len(ACTS)))])
        k = int(rng.integers(2, 7))
        graph.add_edges_from((str(p), node)
                             for p in rng.choice(earlier, min(k, len(earlier)), replace=False))
    for node in list(graph.nodes):  # the last neurons without successors are outputs
        if graph.out_degree(node) == 0 and graph.in_degree(node) > 0:
            graph.nodes[node].pop("act")
    nx.write_graphml(graph, path)


# --- compile ---------------------------------------------------------------------------------

_COMPILE_SCRIPT = textwrap.dedent("""
    import json, sys, time
    start = time.perf_counter()
    from bench.neurons import run_every_pass
    from dagc.backend import cache, render
    from dagc.frontend import graphs
    from dagc.ir import neurons
    imported = time.perf_counter()
    ir = neurons.build(neurons.from_networkx(graphs.read(sys.argv[1], "bench"), "tanh", "bench"),
                       "bench", None, None, "bench")
    path = render.write_neuron_module(ir.acts, cache.cache_dir())
    run_every_pass(cache.load_module(path), ir)
    done = time.perf_counter()
    print(json.dumps({"seconds": done - start, "import": imported - start,
                      "passes": done - imported, "cpu_seconds": time.process_time(),
                      "module": str(path), "module_bytes": path.stat().st_size,
                      "module_lines": path.read_text().count("\\n"), "acts": list(ir.acts)}))
""")


_DENSENET3_SCRIPT = textwrap.dedent("""
    import json, time
    start = time.perf_counter()
    import numpy as np
    import dagc
    net = dagc.compile("densenet3", width=8)
    w = net.init(0)
    X = np.random.default_rng(0).standard_normal((3, net.n_in))
    net.forward(w, X)
    net.vjp(w, X, np.ones((3, net.n_out)))
    net.jacobian(w, X)
    net.hvp(w, X[0], w)
    H = net.factored_hessian(w, X)
    H.apply(np.ones((3, H.size)))
    net.ntk(w, X)
    net.ntk(w, X, X[:2])
    print(json.dumps({"seconds": time.perf_counter() - start,
                      "cpu_seconds": time.process_time()}))
""")


def bench_compile() -> dict:
    """Every pass compiled cold (fresh dagc and numba caches: a clean checkout), for a
    100-neuron graph and, the target, for densenet3's block-level module; then a second
    100-neuron graph with the same activations in a new process, with the caches warm."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DAGC_CACHE_DIR": tmp, "NUMBA_CACHE_DIR": f"{tmp}/numba"}
        runs = {}
        jobs = [("cold", _COMPILE_SCRIPT, 1), ("second_graph", _COMPILE_SCRIPT, 2)]
        for label, script, seed in jobs:
            graph = Path(tmp) / f"graph{seed}.graphml"
            small_graph_file(graph, 100, seed)
            runs[label] = _run_json(script, [str(graph)], env)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DAGC_CACHE_DIR": tmp, "NUMBA_CACHE_DIR": f"{tmp}/numba"}
        runs["densenet3_cold"] = _run_json(_DENSENET3_SCRIPT, [], env)
    return runs


def _run_json(script: str, args: list[str], env: dict) -> dict:
    """Run `script` in a fresh interpreter at the repository's root; its last line's JSON."""
    out = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True,
                         text=True, cwd=Path(__file__).parents[1])
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- scale -----------------------------------------------------------------------------------

_SCALE_SCRIPT = textwrap.dedent("""
    import json, sys
    from bench.neurons import scale_in_process
    print(json.dumps(scale_in_process(int(float(sys.argv[1])), int(sys.argv[2]),
                                      None if sys.argv[3] == "-" else float(sys.argv[3]))))
""")


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _best(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_every_pass(module, ir) -> None:
    """Each pass once (compiling it in a fresh cache)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal(ir.n_params)
    X = rng.standard_normal((3, ir.n_in))
    args = ir.kernel_args
    module.forward(w, X, *args)
    module.forward(w, X[:1], *args)
    C = np.ones((3, ir.n_out))
    module.backward(w, X, C, False, False, np.zeros((1, ir.n_params)), np.empty((3, ir.n_out)),
                    *args)
    module.backward(w, X, C, False, True, np.zeros((3, ir.n_params)), np.empty((3, ir.n_out)),
                    *args)
    module.hvp(w, X[0], w, 0, np.empty(ir.n_params), *args)
    state = module.hessian_state(w, X, np.zeros(3, np.int64), np.full(3, -1), *args)
    module.hvp_factored(w, state, np.ones((3, ir.factored_size)), *args)
    module.ntk(w, X, X, True, *args)
    module.ntk(w, X, X[:2], False, *args)


def scale_in_process(n_edges: int, fan_in: int, masked_up_to: float | None = None) -> dict:
    """Build, run and time one random DAG with n_edges edges (see the module docstring);
    the peers too unless `masked_up_to` is None (`peer_comparison`)."""
    import scipy.sparse

    from bench.machine import copy_gbps, load_average
    from dagc.backend import cache, render
    from dagc.ir import neurons

    load_at_start = load_average()
    n_neurons = n_edges // fan_in
    module_path = render.write_neuron_module(("identity",) + ACTS, cache.cache_dir())
    module = cache.load_module(module_path)
    run_every_pass(module, neurons.build(random_neuron_graph(400, fan_in, layer_size=100),
                                          "warm", None, None, "bench"))  # compiled before
    base = _rss()
    tracemalloc.start()  # numpy reports its allocations: the build's exact peak
    start = time.perf_counter()
    raw = random_neuron_graph(n_neurons, fan_in)
    ir = neurons.build(raw, "scale", None, None, "bench")
    del raw
    build = time.perf_counter() - start
    build_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    structure = ir.indices.nbytes + ir.indptr.nbytes + 5 * 8 * ir.n_neurons
    after_build = _rss() - base
    rng = np.random.default_rng(0)
    w = rng.standard_normal(ir.n_params)
    v = rng.standard_normal(ir.n_params)
    out = np.empty(ir.n_params)
    grad = np.zeros((1, ir.n_params))
    args = ir.kernel_args
    X1 = rng.standard_normal((1, ir.n_in))
    X16 = rng.standard_normal((16, ir.n_in))
    C1 = np.ones((1, 1))
    F1 = np.empty((1, 1))
    times = {
        "forward_1": _best(lambda: module.forward(w, X1, *args)),
        "forward_16": _best(lambda: module.forward(w, X16, *args)),
        "vjp_1": _best(lambda: module.backward(w, X1, C1, False, False, grad, F1, *args)),
        "hvp": _best(lambda: module.hvp(w, X1[0], v, 0, out, *args)),
    }
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    # scipy.sparse: the same forward, one CSR product per run (its rows), then numpy's
    # activation of the run (the scale folded into the matrix, as dagc folds it per row)
    matrix = scipy.sparse.csr_matrix((w * np.repeat(ir.scale, np.diff(ir.indptr)),
                                      ir.indices, ir.indptr), shape=(ir.n_neurons,) * 2)
    numpy_acts = {"identity": lambda z: z, "tanh": np.tanh,
                  "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
                  "softplus": lambda z: np.logaddexp(z, 0.0),
                  "gelu": lambda z: 0.5 * z * (1 + scipy.special.erf(z / np.sqrt(2))),
                  "sin": np.sin}
    names = list(neurons.CODES)
    runs = [(int(a), int(b), numpy_acts[names[c]], matrix[a:b]) for a, b, c in ir.runs]

    def scipy_forward(X):
        A = np.empty((ir.n_neurons, X.shape[0]))
        A[:ir.n_in] = X.T
        for first, end, act, rows in runs:
            A[first:end] = act(rows @ A)
        return A[ir.outputs].T

    import scipy.special  # noqa: F401 - the gelu above

    np.testing.assert_allclose(scipy_forward(X16), module.forward(w, X16, *args), rtol=1e-9,
                               atol=1e-12)
    times["scipy_forward_1"] = _best(lambda: scipy_forward(X1))
    times["scipy_forward_16"] = _best(lambda: scipy_forward(X16))
    compared = {"seconds": {}, "jit_seconds": {}, "skipped": {}}
    if masked_up_to is not None:
        from dagc.runtime import CompiledNet

        compared = peer_comparison(CompiledNet(ir, module), w, v, X1, X16, masked_up_to)
    copy = copy_gbps(min(1 << 29, 8 * n_edges))["best"]
    streamed = {  # the bytes each pass must move per edge, gathers of neuron values aside
        # forward reads w and the index; reverse reads them again and writes the gradient
        "vjp_1": (8 + 4) * n_edges + (8 + 4 + 8) * n_edges,
        # forward reads w, v and the index; reverse reads them again and writes H v
        "hvp": (8 + 8 + 4) * n_edges + (8 + 8 + 4 + 8) * n_edges,
    }
    return {
        "load_average": load_average(),  # a shared machine: how busy it was (at the end)
        "load_average_start": load_at_start,
        "edges": ir.n_params, "neurons": ir.n_neurons, "runs": len(ir.runs),
        "module_bytes": module_path.stat().st_size,
        "layers": ir.depth, "fan_in": fan_in, "build_seconds": build,
        "weights_bytes": 8 * ir.n_params,
        "structure_bytes": structure,  # indices, indptr and the per-neuron arrays
        "build_peak_bytes": build_peak,  # numpy's peak while building
        "rss_after_build_bytes": after_build,
        # the whole run above the compiled runtime: structure, w, v, the HVP's result, the
        # gradient, and the passes' per-neuron buffers
        "peak_rss_bytes": peak,
        "vectors_bytes": 4 * 8 * ir.n_params,  # w, v, out, grad
        "seconds": times,
        "copy_gbps": copy,
        "stream_gbps": {k: streamed[k] / times[k] / 1e9 for k in streamed},
        "fraction_of_copy": {k: streamed[k] / times[k] / 1e9 / copy for k in streamed},
        "vs_scipy": {"forward_1": times["forward_1"] / times["scipy_forward_1"],
                     "forward_16": times["forward_16"] / times["scipy_forward_16"]},
        "peer_seconds": compared["seconds"],
        "peer_jit_seconds": compared["jit_seconds"],
        "peers_skipped": compared["skipped"],
        "vs_peers": {name: {k: times[k] / t for k, t in peer.items()}
                     for name, peer in compared["seconds"].items()},
    }


def neuron_description(net):
    """The `bench.network.Description` of a neuron-level `CompiledNet`: its inputs, and one
    ragged connection from the buffer of all neurons to itself (the edge view `dagc.export`
    runs), so that `bench.peers.load` gives its gather and masked variants."""
    from bench.network import Block, Conn, Description

    n = net.ir.n_neurons
    blocks = (Block("neurons", n, (Conn("neurons", "ragged", n, n, net.n_params),)),)
    return Description(net.name, None, (("neurons", net.n_in),), blocks, net.n_params,
                       net.n_in, net.n_out, net)


def masked_bytes(ir) -> int:
    """The dense matrices a masked peer scatters the weights into, summed over the runs (each
    run's rows by the buffer of every earlier neuron): what its VJP and HVP keep alive."""
    first, end = ir.runs[:, 0].astype(np.int64), ir.runs[:, 1].astype(np.int64)
    return int(8 * np.sum((end - first) * first))


def peer_comparison(net, w: np.ndarray, v: np.ndarray, X1: np.ndarray, X16: np.ndarray,
                    masked_up_to: float) -> dict:
    """Forward (1 and 16 samples), VJP and HVP of the peers of bench/peers (`dagc.export`'s
    network in PyTorch, one thread, and JAX, jit) on this network, each checked against dagc
    first: {"seconds": {variant: {op: s}}, "jit_seconds": {variant: {op: s}} (JAX's first
    call, its trace and compile), "skipped": {variant: why}}. A masked variant runs only if
    its dense matrices (`masked_bytes`) are at most `masked_up_to` bytes."""
    from bench import peers

    found, missing = peers.available()
    if "torch" in found:
        import torch

        torch.set_num_threads(1)
    C1 = np.ones((1, net.n_out))
    cases = {  # op name: (peer op, its arrays, dagc's result)
        "forward_1": ("forward", {"w": w, "X": X1}, net.forward(w, X1)),
        "forward_16": ("forward", {"w": w, "X": X16}, net.forward(w, X16)),
        "vjp_1": ("vjp", {"w": w, "X": X1, "C": C1}, net.vjp(w, X1, C1)),
        "hvp": ("hvp", {"w": w, "x": X1[0].copy(), "v": v, "output": 0},
                net.hvp(w, X1[0], v, 0)),
    }
    seconds, jit, skipped = {}, {}, dict(missing)
    masked = masked_bytes(net.ir)
    for framework in found:
        for peer in peers.load(framework, neuron_description(net)):
            if peer.mode == "masked" and masked > masked_up_to:
                skipped[peer.name] = (f"its dense matrices take {masked / 1e9:.1f} GB "
                                      f"(--masked-up-to {masked_up_to:.3g} bytes)")
                continue
            seconds[peer.name], jit[peer.name] = {}, {}
            for name, (op, arrays, expected) in cases.items():
                bound = peer.bind(op, **arrays)
                start = time.perf_counter()
                result = bound.run()  # JAX: traces and compiles
                jit[peer.name][name] = time.perf_counter() - start
                np.testing.assert_allclose(bound.to_numpy(result), expected, rtol=1e-9,
                                           atol=1e-12, err_msg=f"{peer.name} {name}")
                seconds[peer.name][name] = _best(bound.run)
            if framework != "jax":
                del jit[peer.name]
    return {"seconds": seconds, "jit_seconds": jit, "skipped": skipped}


def bench_scale(n_edges: int, fan_in: int, masked_up_to: float | None) -> dict:
    """`scale_in_process` in a fresh process (its memory is the graph's alone); JAX's XLA
    on one thread, as bench/__main__.py runs it (numba and scipy keep their defaults)."""
    flags = os.environ.get("XLA_FLAGS", "")
    env = {**os.environ, "XLA_FLAGS": (flags + " --xla_cpu_multi_thread_eigen=false "
                                       "intra_op_parallelism_threads=1").strip()}
    out = subprocess.run([sys.executable, "-c", _SCALE_SCRIPT, str(n_edges), str(fan_in),
                          "-" if masked_up_to is None else str(masked_up_to)],
                         capture_output=True, text=True, cwd=Path(__file__).parents[1], env=env)
    if out.returncode != 0:
        return {"edges": n_edges, "error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=float, nargs="*", default=[1e7])
    parser.add_argument("--fan-in", type=int, default=100)
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--peers-up-to", type=float, default=1e7,
                        help="run the PyTorch and JAX peers on graphs up to this many edges")
    parser.add_argument("--masked-up-to", type=float, default=2e9,
                        help="run the peers' masked variants only if their dense matrices "
                             "take at most this many bytes")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="the results file (updated: other keys are kept)")
    args = parser.parse_args(argv)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    from bench.machine import info, load_average

    results["machine"] = info()
    if not args.skip_compile:
        results["compile"] = {**bench_compile(), "load_average": load_average()}
        print(json.dumps(results["compile"], indent=1), flush=True)
    for edges in args.edges:
        result = bench_scale(int(edges), args.fan_in,
                             args.masked_up_to if edges <= args.peers_up_to else None)
        results.setdefault("scale", {})[str(int(edges))] = result
        print(json.dumps(result, indent=1), flush=True)
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
