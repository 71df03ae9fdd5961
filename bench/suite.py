"""The benchmark itself: for each architecture and width, check every peer against dagc, then
time forward, VJP, HVP and NTK (and the Hessian norms when `dagc.measure` exists), interleaved;
compile times and peak memory come from fresh processes (`probes`)."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import dagc

from . import machine, peers, probes, targets
from .lanczos import as_float, dagc_measure, spectral_norm
from .network import Description, describe
from .timing import Settings, Timings, compare

OPS = ("forward", "vjp", "hvp", "ntk")
TOLERANCE = 1e-9  # peers must agree with dagc to this, relative to the largest |value|


@dataclass
class Config:
    archs: list[str]
    widths: list[int]
    frameworks: list[str]
    settings: Settings = field(default_factory=Settings)
    batch: int = 64
    ntk_inputs: int = 128
    norm_inputs: int = 16
    lanczos_budget: float = 120.0  # seconds a peer may spend on one Lanczos row
    # At 2048 the process's fixed ~185 MiB (interpreter, numba, LLVM, code) outweighs the
    # weights; 4096 shows how the peak approaches weights + vectors as they dominate.
    memory_widths: list[int] = field(default_factory=lambda: [2048, 4096])
    compile: bool = True
    quick: bool = False


def run(config: Config, log: Callable[[str], None] = print) -> dict:
    frameworks, missing = peers.available(config.frameworks)
    results = {"machine": machine.info(), "config": _config_dict(config),
               "frameworks": frameworks, "notes": list(missing.values()), "cases": [],
               "compile": {}, "memory": []}
    for message in missing.values():
        log(message)
    log("measuring the machine's limits (matrix product, copy bandwidth) ...")
    results["limits"] = machine.limits()
    measure = dagc_measure()
    if measure is None:
        results["notes"].append(
            "dagc.measure (hessian_norm, hessian_norms, measure) is not available: the Lanczos "
            "rows (Hessian norm at one input, 16-input norms) and the sweep cells are skipped.")
    if "jax" in frameworks:
        results["notes"].append(
            "neural-tangents not benchmarked: `pip install neural-tangents` pulls in TensorFlow "
            "and pins an older JAX, so the JAX NTK peer is the Jacobian contraction J J^T.")
        from .peers import jax_peer

        results["notes"].append(
            f"JAX used {jax_peer.cores_used():.2f} CPU seconds per second on a jitted matrix "
            "product: its times may use more than one core whatever its thread flags say (the "
            "process is not pinned to one CPU: pinned, JAX's own threads contend for it).")
    for arch in config.archs:
        if config.compile:
            log(f"{arch}: compile time, cold and cached, in fresh processes ...")
            results["compile"][arch] = {"dagc": probes.compile_times(arch, min(config.widths)),
                                        "jax": {}}
        for width in config.widths:
            log(f"{arch} width {width} ...")
            try:
                case = run_case(arch, width, config, frameworks, measure, log)
            except Exception as err:  # noqa: BLE001 - one broken case must not end the run
                results["notes"].append(f"{arch} width {width}: failed: {err!r}")
                log(traceback.format_exc())
                continue
            results["cases"].append(case)
            if config.compile and case["jax_compile"]:
                results["compile"][arch]["jax"][str(width)] = case["jax_compile"]
        for width in config.memory_widths:
            log(f"{arch}: peak memory of a Hessian norm at width {width} ...")
            results["memory"].append({"arch": arch, "width": width,
                                      **probes.hessian_memory(arch, width)})
    results["limits_end"] = machine.limits()
    return results


def _config_dict(config: Config) -> dict:
    return {"archs": config.archs, "widths": config.widths, "frameworks": config.frameworks,
            "batch": config.batch, "ntk_inputs": config.ntk_inputs,
            "norm_inputs": config.norm_inputs, "memory_widths": config.memory_widths,
            "quick": config.quick, "timing": vars(config.settings)}


def _sphere(rng, n: int, d: int) -> np.ndarray:
    X = rng.standard_normal((n, d))
    return X * (np.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True))


def run_case(arch, width, config: Config, frameworks, measure, log) -> dict:
    net = dagc.compile(arch, width=width)
    desc = describe(net)
    rng = np.random.default_rng(12345)
    w = net.init(0)
    X = _sphere(rng, config.batch, net.n_in)
    arrays = {
        "forward": {"w": w, "X": X},
        "vjp": {"w": w, "X": X, "C": rng.standard_normal((config.batch, net.n_out))},
        "hvp": {"w": w, "x": X[0].copy(), "v": rng.standard_normal(net.n_params), "output": 0},
        "ntk": {"w": w, "X": _sphere(rng, config.ntk_inputs, net.n_in)},
    }
    out = np.empty(net.n_params)
    dagc_fns = {
        "forward": lambda a: net.forward(a["w"], a["X"]),
        "vjp": lambda a: net.vjp(a["w"], a["X"], a["C"]),
        "hvp": lambda a: net.hvp(a["w"], a["x"], a["v"], a["output"], out=out),
        "ntk": lambda a: net.ntk(a["w"], a["X"]),
    }
    case = {"arch": arch, "width": width, "width_m": net.width_m, "n_params": net.n_params,
            "sparse": desc.sparse, "edge_weights": desc.n_edge_weights, "rows": [],
            "notes": [], "jax_compile": {}, "load_average": [machine.load_average()]}
    variants = []
    for framework in frameworks:
        try:
            variants += peers.load(framework, desc)
        except Exception as err:  # noqa: BLE001
            case["notes"].append(f"{framework}: cannot build the network: {err!r}")
    for op in OPS:
        args = arrays[op]
        reference = np.array(dagc_fns[op](args))
        fns = {"dagc": (lambda f=dagc_fns[op], a=args: f(a))}
        errors = {}
        for peer in variants:
            need = _peer_bytes(op, desc, peer.mode, config)
            available = _available_memory()
            if available is not None and need > 0.5 * available:
                case["notes"].append(f"{op}: {peer.name} skipped: needs about {need / 1e9:.1f} GB"
                                     f" of {available / 1e9:.1f} GB available")
                continue
            try:
                if peer.framework == "jax" and config.compile:
                    seconds = peer.compile_seconds(op, **args)
                    case["jax_compile"].setdefault(peer.name, {})[op] = seconds
                bound = peer.bind(op, **args)
                errors[peer.name] = _relative_error(bound.to_numpy(bound.run()), reference)
            except Exception as err:  # noqa: BLE001
                case["notes"].append(f"{op}: {peer.name} failed: {err!r}"[:400])
                continue
            if not errors[peer.name] <= TOLERANCE:
                case["notes"].append(f"{op}: {peer.name} disagrees with dagc "
                                     f"(relative error {errors[peer.name]:.1e}); not timed")
                continue
            fns[peer.name] = bound.run
        log(f"  {op}: timing {', '.join(fns)}")
        timings = compare(fns, config.settings)
        case["rows"].append(_row(op, timings, errors, variants, desc, config, width))
        del fns
    if measure is not None:
        case["rows"] += _lanczos_rows(net, measure, variants, config, rng, log, case["notes"])
        if not desc.sparse:  # sparse layers gather: BLAS products do not bound them
            case["rows"][-1]["product_gain"] = machine.batch_product_gain(width,
                                                                          config.norm_inputs)
        case["sweep_cells"] = _sweep_cells(net, measure, log, case["notes"])
    case["load_average"].append(machine.load_average())
    return case


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _peer_bytes(op: str, desc: Description, mode: str, config: Config) -> int:
    """A rough upper estimate of a peer's working memory (gathers materialize n x nnz)."""
    gathered = sum(c.n_weights for b in desc.blocks for c in b.conns if c.kind != "dense")
    gathered = gathered if mode == "gather" else 0
    if op == "forward":
        return 8 * config.batch * gathered * 2
    if op == "vjp":
        return 8 * config.batch * gathered * 5
    if op == "hvp":
        return 8 * desc.n_params * 12
    return 8 * config.ntk_inputs * (3 * desc.n_out * desc.n_params + 5 * gathered)


def _relative_error(value: np.ndarray, reference: np.ndarray) -> float:
    value = np.asarray(value, dtype=np.float64).reshape(reference.shape)
    scale = max(float(np.max(np.abs(reference))), 1e-300)
    return float(np.max(np.abs(value - reference)) / scale)


def _groups(names: list[str], variants) -> dict[str, list[str]]:
    present = [v for v in variants if v.name in names]
    groups = {fw: [v.name for v in present if v.framework == fw] for fw in peers.FRAMEWORKS}
    groups = {k: v for k, v in groups.items() if v}
    if groups:
        groups["best"] = [v.name for v in present]
    return groups


def _limit(op: str, desc: Description, config: Config) -> dict:
    """How much of the bounding machine limit dagc's time reaches (filled in by the report,
    which knows the limits): FLOPs for products, bytes for the HVP."""
    edges = desc.n_edge_weights
    inner = sum(c.n_weights for b in desc.blocks for c in b.conns
                if c.src not in {name for name, _ in desc.inputs})
    n = config.batch
    if op == "forward":
        return {"kind": "flop", "amount": 2.0 * n * edges,
                "counted": "2 n E (E edge weights, n = batch)"}
    if op == "vjp":
        return {"kind": "flop", "amount": 2.0 * n * (2 * edges + inner),
                "counted": "2 n (2 E + E_hidden): forward, weight gradient, adjoints"}
    if op == "hvp":
        return {"kind": "bytes", "amount": 3.0 * 8 * desc.n_params,
                "counted": "3 * 8 * P: read w and v, write out (a lower bound)"}
    m = config.ntk_inputs
    big = 2 * m  # dagc's ntk(X) runs the batch X1 + X2 = 2n samples
    gram = sum(c.size_src for b in desc.blocks for c in b.conns if c.kind == "dense")
    gram += sum(b.size for b in desc.blocks)
    gram += sum(c.n_weights for b in desc.blocks for c in b.conns if c.kind != "dense")
    flops = 2.0 * big * (edges + inner) * desc.n_out + 2.0 * m * m * gram * desc.n_out ** 2
    return {"kind": "flop", "amount": flops,
            "counted": "structured NTK: forward + backward of 2n samples, n^2 Gram products",
            "jjt_flops": 2.0 * m * m * desc.n_params * desc.n_out ** 2}


def _row(op, timings: Timings, errors, variants, desc, config, width) -> dict:
    names = list(timings.per_round)
    groups = _groups(names, variants)
    ratios = {name: timings.ratio("dagc", [name]) for name in names if name != "dagc"}
    group_ratios = {g: timings.ratio("dagc", members) for g, members in groups.items()}
    checks = []
    for label, group, bound in targets.ratio_targets(op, width, desc.sparse):
        ratio = group_ratios.get(group, {}).get("median")
        checks.append({"label": label, "group": group, "bound": bound, "ratio": ratio,
                       "met": None if ratio is None else ratio <= bound})
    return {"op": op, "seconds": {n: timings.median(n) for n in names},
            "per_round": timings.per_round, "number": timings.number,
            "ratios": ratios, "group_ratios": group_ratios, "errors": errors,
            "limit": _limit(op, desc, config), "targets": checks}


def _lanczos_rows(net, measure, variants, config: Config, rng, log, notes) -> list[dict]:
    """Hessian spectral norm at one input, and at 16 inputs (batched vs one at a time)."""
    settings = Settings(rounds=3, target=0.0, warmup=1, min_rounds=1,
                        max_seconds=config.settings.max_seconds * 3)
    w = net.init(0)
    X = _sphere(rng, config.norm_inputs, net.n_in)
    x = X[0].copy()
    rows = []
    reference = measure.hessian_norm(net, w, x)
    buffer = np.empty(net.n_params)

    def dagc_matvec(v):
        return net.hvp(w, x, np.ascontiguousarray(v), 0, out=buffer).copy()

    # The peers' driver (scipy eigsh) on dagc's HVP too, to tell HVP speed from driver speed.
    fns = {"dagc": lambda: measure.hessian_norm(net, w, x),
           "dagc eigsh": lambda: spectral_norm(dagc_matvec, net.n_params)}
    values = {"dagc": as_float(reference)}
    matvecs = {}
    for peer in variants:
        matvec = peer.hvp_operator(w, x)
        start = time.perf_counter()
        found = spectral_norm(matvec, net.n_params)
        cost = time.perf_counter() - start
        values[peer.name], matvecs[peer.name] = found["norm"], found["matvecs"]
        if abs(found["norm"] - values["dagc"]) > 1e-5 * abs(values["dagc"]):
            notes.append(f"hessian_norm: {peer.name} found {found['norm']:.8g}, "
                         f"dagc {values['dagc']:.8g}")
        if cost * (1 + settings.rounds) > config.lanczos_budget:
            notes.append(f"hessian_norm: {peer.name} not timed (one run took {cost:.1f} s)")
            continue
        fns[peer.name] = lambda m=matvec: spectral_norm(m, net.n_params)
    log(f"  hessian_norm: timing {', '.join(fns)}")
    timings = compare(fns, settings)
    row = _lanczos_row("hessian_norm", timings, variants, values, matvecs)
    rows.append(row)

    single = timings.median("dagc")
    k = config.norm_inputs
    fns = {"dagc": lambda: measure.hessian_norms(net, w, X),
           "dagc 16 x hessian_norm": lambda: [measure.hessian_norm(net, w, xi) for xi in X]}
    batch_values = measure.hessian_norms(net, w, X)
    for peer in variants:
        if peer.name not in row["seconds"] or row["seconds"][peer.name] * k * 2 > \
                config.lanczos_budget:
            notes.append(f"hessian_norms: {peer.name} not timed (16 runs would take too long)")
            continue
        fns[peer.name] = lambda p=peer: [spectral_norm(p.hvp_operator(w, xi), net.n_params)
                                         for xi in X]
    log(f"  hessian_norms ({k} inputs): timing {', '.join(fns)}")
    timings = compare(fns, settings)
    row = _lanczos_row(f"hessian_norms_{k}", timings, variants, {}, {})
    speedup = timings.ratio("dagc 16 x hessian_norm", ["dagc"])["median"]
    row["batch_speedup"] = speedup
    row["values"] = {"dagc": _jsonable(batch_values)}
    row["single_estimate"] = single * k
    row["targets"].append({"label": f"{k}-input norms >= {targets.BATCH_NORMS_SPEEDUP:g}x "
                                    f"throughput of {k} single runs",
                           "group": "dagc 16 x hessian_norm",
                           "bound": 1 / targets.BATCH_NORMS_SPEEDUP,
                           "ratio": 1 / speedup, "met": speedup >= targets.BATCH_NORMS_SPEEDUP})
    row["step_gain"] = _step_gain(net, w, X, config.settings)
    rows.append(row)
    return rows


def _step_gain(net, w, X: np.ndarray, settings: Settings) -> float:
    """Throughput of one Lanczos step of `hessian_norms` (`FactoredHessian.apply`) for all
    rows of X against one row, interleaved: what batching can gain once the step count and
    the bookkeeping are set aside."""
    batch, single = net.factored_hessian(w, X), net.factored_hessian(w, X[:1])
    C = np.ones((batch.rows, batch.size))
    timings = compare({"batch": lambda: batch.apply(C), "one row": lambda: single.apply(C[:1])},
                      settings)
    return len(X) / timings.ratio("batch", ["one row"])["median"]


def _jsonable(value):
    try:
        return np.asarray(value, dtype=np.float64).ravel().tolist()
    except (TypeError, ValueError):
        return repr(value)[:200]


def _lanczos_row(op, timings: Timings, variants, values, matvecs) -> dict:
    names = list(timings.per_round)
    groups = _groups(names, variants)
    return {"op": op, "seconds": {n: timings.median(n) for n in names},
            "per_round": timings.per_round, "number": timings.number,
            "ratios": {n: timings.ratio("dagc", [n]) for n in names if n != "dagc"},
            "group_ratios": {g: timings.ratio("dagc", m) for g, m in groups.items()},
            "values": values, "matvecs": matvecs, "limit": None, "targets": []}


def _sweep_cells(net, measure, log, notes) -> dict:
    """One full sweep cell per metric (dagc.measure.measure with default options)."""
    cells = {}
    metrics = getattr(measure, "METRICS", ())
    options = measure.Options() if hasattr(measure, "Options") else None
    if not metrics or not hasattr(measure, "measure"):
        notes.append("dagc.measure has no measure()/METRICS: sweep cells skipped")
        return cells
    for metric in metrics:
        log(f"  sweep cell: {metric}")
        start = time.perf_counter()
        try:
            measure.measure(net, metric, 0, options)
        except Exception as err:  # noqa: BLE001
            notes.append(f"sweep cell {metric} failed: {err!r}"[:400])
            continue
        cells[metric] = time.perf_counter() - start
    return cells
