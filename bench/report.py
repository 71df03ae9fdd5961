"""Results -> a markdown report and a JSON file."""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import targets


def write(results: dict, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    md, js = directory / "latest.md", directory / "latest.json"
    md.write_text(markdown(results))
    js.write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    return md, js


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return repr(value)


def _time(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2 ** 20:,.0f} MiB" if abs(n) >= 2 ** 24 else f"{n / 2 ** 20:,.2f} MiB"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown(results: dict) -> str:
    m = results["machine"]
    limits = results["limits"]
    flops, copy = _best_limits(results)
    revision = m.get("dagc_revision") or {}
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    out = ["# dagc vs JAX and PyTorch (float64, CPU)", ""]
    out += [f"- Machine: {m['cpu']}, {m['cores']} cores "
            f"({m['cores_usable']} usable), "
            f"{(m['memory_bytes'] or 0) / 2 ** 30:.0f} GiB; Python {m['python']}",
            f"- Versions: {versions}",
            f"- dagc commit {revision.get('commit')}"
            + (f", with local changes in {', '.join(revision['modified'])}"
               if revision.get("modified") else ""),
            f"- Limits measured in this run: float64 matrix product (np.dot 2048x2048) "
            f"{flops:.1f} GFLOP/s (median {limits['matmul_gflops']['median']:.1f}); copy "
            f"bandwidth {copy:.1f} GB/s (read + write; median "
            f"{limits['copy_gbps']['median']:.1f}). At the end: "
            f"{results['limits_end']['matmul_gflops']['best']:.1f} GFLOP/s, "
            f"{results['limits_end']['copy_gbps']['best']:.1f} GB/s. Fractions below use the "
            f"better of the two ({flops:.1f} GFLOP/s, {copy:.1f} GB/s).",
            f"- Load average at start {_load(limits)}, at end {_load(results['limits_end'])}"
            " (2 cores, shared with other work: every number is noisy)",
            f"- Settings: {m['environment'] or 'library defaults'}",
            "- Times are medians over interleaved rounds; ratios are medians of per-round "
            "ratios dagc / peer (below 1: dagc is faster). `best` is the fastest peer variant "
            "in each round.",
            "- % of limit: dagc's rate as a fraction of the matrix-product rate (forward, VJP, "
            "NTK: FLOPs counted as noted) or of the copy bandwidth (HVP: bytes counted as at "
            "least reading w and v and writing the result, 3 * 8 * P).", ""]
    if results["notes"]:
        out += ["## Notes", ""] + [f"- {note}" for note in results["notes"]] + [""]
    for case in results["cases"]:
        out += _case(case, flops, copy)
    out += _targets(results, flops, copy)
    out += _compile(results)
    out += _memory(results)
    return "\n".join(out) + "\n"


def _best_limits(results: dict) -> tuple[float, float]:
    """The run's matrix-product rate (GFLOP/s) and copy bandwidth (GB/s)."""
    start = results["limits"]
    end = results.get("limits_end", start)
    # The limit is the best rate seen (start or end of the run): a loaded machine lowers both.
    return (max(start["matmul_gflops"]["best"], end["matmul_gflops"]["best"]),
            max(start["copy_gbps"]["best"], end["copy_gbps"]["best"]))


def _load(limits: dict) -> str:
    load = limits.get("load_average")
    return "-" if not load else "/".join(f"{x:.1f}" for x in load)


def _case(case: dict, flops: float, copy: float) -> list[str]:
    rows = case["rows"]
    peers = []
    for row in rows:
        peers += [n for n in row["seconds"] if not n.startswith("dagc") and n not in peers]
    groups = []
    for row in rows:
        groups += [g for g in row.get("group_ratios", {}) if g not in groups]
    header = ["op", "dagc"] + peers + [f"dagc/{p}" for p in peers]
    header += [f"dagc/{g}" for g in groups if g not in peers] + ["dagc % of limit"]
    body = []
    for row in rows:
        line = [row["op"], _time(row["seconds"]["dagc"])]
        line += [_time(row["seconds"].get(p)) for p in peers]
        line += [_ratio(row["ratios"].get(p, {}).get("median")) for p in peers]
        line += [_ratio(row["group_ratios"].get(g, {}).get("median"))
                 for g in groups if g not in peers]
        line.append(_fraction(row, flops, copy))
        body.append(line)
    out = [f"## {case['arch']}, width {case['width']} (m = {case['width_m']}, "
           f"P = {case['n_params']:,})", ""]
    out += _table(header, body) + [""]
    extra = []
    for row in rows:
        if row["op"] == "ntk" and row.get("limit", {}).get("jjt_flops"):
            extra.append(f"NTK: J J^T would be {row['limit']['jjt_flops'] / 1e9:.1f} GFLOP "
                         f"(dagc's structured NTK: {row['limit']['amount'] / 1e9:.2f} GFLOP)")
        if row.get("batch_speedup"):
            extra.append(f"{row['op']}: hessian_norms is {row['batch_speedup']:.2f}x the "
                         "throughput of one hessian_norm per input")
        for name in row["seconds"]:
            if name.startswith("dagc ") and row["op"].startswith("hessian_norm"):
                extra.append(f"{row['op']}: {name}: {_time(row['seconds'][name])} (dagc / it: "
                             f"{_ratio(row['ratios'][name]['median'])})")
        if row.get("matvecs"):
            extra.append(f"{row['op']}: Lanczos matvecs {row['matvecs']}")
    if case.get("sweep_cells"):
        cells = ", ".join(f"{k} {_time(v)}" for k, v in case["sweep_cells"].items())
        extra.append(f"one sweep cell per metric (dagc.measure.measure): {cells}")
    extra += case["notes"]
    out += [f"- {line}" for line in extra] + ([""] if extra else [])
    return out


def _fraction(row: dict, flops: float, copy: float) -> str:
    share = _share(row, flops, copy)
    return "-" if share is None else f"{100 * share:.0f}% ({_unit(row)})"


def _share(row: dict, flops: float, copy: float) -> float | None:
    """dagc's rate in a timed row as a fraction of the machine limit that bounds it."""
    limit = row.get("limit")
    if not limit:
        return None
    peak = (flops if limit["kind"] == "flop" else copy) * 1e9
    return limit["amount"] / row["seconds"]["dagc"] / peak


def _unit(row: dict) -> str:
    return "FLOP/s" if row["limit"]["kind"] == "flop" else "GB/s copy"


def _targets(results: dict, flops: float, copy: float) -> list[str]:
    body = []
    for case in results["cases"]:
        for row in case["rows"]:
            share = _share(row, flops, copy)
            for check in row["targets"]:
                met = {True: "yes", False: "**no**", None: "n/a"}[check["met"]]
                body.append([case["arch"], str(case["width"]), check["label"],
                             _ratio(check["ratio"]), met, _needs(row, check, share)])
            if row["op"] == "hvp" and case["width"] == targets.HVP_BANDWIDTH_WIDTH \
                    and share is not None:
                body.append([case["arch"], str(case["width"]),
                             f"HVP >= {targets.HVP_BANDWIDTH:.0%} of copy bandwidth "
                             "(counting 3 * 8P bytes)", f"{share:.0%}",
                             "yes" if share >= targets.HVP_BANDWIDTH else "**no**",
                             f"at most {targets.HVP_BANDWIDTH_BOUND:.0%}: forward-over-reverse "
                             "moves >= 5 * 8P bytes"])
    if not body:
        return []
    return ["## Issue-4 targets (ratio = dagc / peer, median of rounds)", "",
            "To meet it (missed targets): the fraction of the bounding machine limit that "
            "dagc would have to reach (its current fraction x ratio / target), or what bounds "
            "the target.", ""] + \
        _table(["arch", "width", "target", "ratio", "met", "to meet it"], body) + [""]


def _needs(row: dict, check: dict, share: float | None) -> str:
    if check["met"] is not False:
        return ""
    if check["group"] == "dagc 16 x hessian_norm":
        return _batch_bounds(row)
    if share is None or check["ratio"] is None:
        return ""
    return f"{100 * share * check['ratio'] / check['bound']:.0f}% ({_unit(row)})"


def _batch_bounds(row: dict) -> str:
    """What bounds hessian_norms' gain over single runs: a batched Lanczos step's, and (dense
    networks) the weight products'."""
    found = []
    if row.get("step_gain"):
        found.append(f"a batched step has {row['step_gain']:.2f}x the throughput of one row's")
    gain = row.get("product_gain")
    if gain:
        found.append(f"its {gain['rows']}-row products (numpy, one {gain['width']}-wide "
                     f"matrix) {gain['gain']:.2f}x ({gain['batch_gflops']:.1f} vs "
                     f"{gain['one_row_gflops']:.1f} GFLOP/s)")
    return "; ".join(found)


def _compile(results: dict) -> list[str]:
    if not results["compile"]:
        return []
    body = []
    for arch, entry in results["compile"].items():
        for kind in ("cold", "cached"):
            probe = entry["dagc"][kind]
            if "error" in probe:
                body.append([arch, f"dagc {kind}", "-", probe["error"][:120], "-"])
                continue
            first = probe["first_call_seconds"]
            total = targets.compile_total(probe)
            bound = targets.COMPILE_COLD if kind == "cold" else targets.COMPILE_CACHED
            passes = ", ".join(f"{p} {v:.1f}" for p, v in first.items())
            runs = probe.get("totals", [total])
            spread = (f" (median of {len(runs)}: {min(runs):.2f}-{max(runs):.2f})"
                      if len(runs) > 1 else "")
            body.append([arch, f"dagc {kind}", f"{total:.2f} s{spread}",
                         f"{passes}; import {probe['import_seconds']:.1f}, process "
                         f"{probe['process_seconds']:.1f}",
                         "yes" if total <= bound else f"**no** (<= {bound:g} s)"])
        for width, variants in entry["jax"].items():
            for name, ops in variants.items():
                detail = ", ".join(f"{op} {s:.1f}" for op, s in ops.items())
                body.append([arch, f"{name} jit, width {width}",
                             f"{sum(ops.values()):.2f} s", detail, ""])
    return ["## Compile time (fresh processes; dagc: compile + first call of each pass, "
            "target total of forward, VJP, HVP, NTK)", ""] + \
        _table(["arch", "what", "total", "per pass (s)", "target met"], body) + [""]


def _memory(results: dict) -> list[str]:
    if not results["memory"]:
        return []
    body = []
    for probe in results["memory"]:
        arch, width = probe["arch"], str(probe["width"])
        if "error" in probe:
            body.append([arch, width] + ["-"] * 7 + [probe["error"][:120]])
            continue
        reference = probe["reference_bytes"]
        vectors = reference - probe["weights_bytes"]
        increase = probe["peak_rss"] - probe["rss_before"]
        body.append([arch, width, f"{probe['n_params']:,}", _bytes(probe["peak_rss"]),
                     _bytes(probe["rss_runtime"]),
                     f"{_bytes(probe['weights_bytes'])} + {_bytes(vectors)} "
                     f"({probe['lanczos_vectors']} vectors of {probe['vector_length']:,})",
                     f"{probe['peak_rss'] / reference:.2f}x",
                     f"{(probe['peak_rss'] - probe['rss_runtime']) / reference:.2f}x",
                     f"{_bytes(increase)} ({increase / vectors:.2f}x the vectors)",
                     f"{probe['how']}, {probe['seconds']:.1f} s"])
    return ["## Memory of one Hessian norm (fresh process)", "",
            "Runtime: the process's RSS before any width-dependent array (interpreter, numpy, "
            "numba, LLVM and the compiled code, warmed up at width 16). Above it: the network "
            "at this width (weights, sparse indices) and what the norm allocates; the last "
            "but one column is the norm's own allocation, from its start to its peak.", ""] + \
        _table(["arch", "width", "P", "peak RSS", "runtime", "weights + Lanczos vectors",
                "peak / (w + vectors)", "(peak - runtime) / (w + vectors)",
                "norm allocates", "how"], body) + [""]


# --- docs/benchmarks.md -----------------------------------------------------------------------

DOCS_TITLE = "# Benchmarks"
# How each timed op reads in the summary table; {batch} and {ntk} come from the run's config.
_OP_LABELS = {
    "forward": "forward, batch {batch}",
    "vjp": "VJP, batch {batch}",
    "hvp": "HVP, one input",
    "ntk": "NTK, n = {ntk}",
    "hessian_norm": "Hessian norm, one input",
}


def docs_page(results: dict, notes: str) -> str:
    """docs/benchmarks.md: how to run the benchmark, the summary of a saved run, the
    hand-written `notes` (bench/notes.md), and the run's full report."""
    # The run's own report becomes one section of this page: every heading one level down.
    full = "\n".join("#" + line if line.startswith("#") else line
                     for line in markdown(results).splitlines())
    out = [DOCS_TITLE, "",
           "Generated by `python -m bench --render-docs` from `bench/results/latest.json` and "
           "`bench/notes.md`; edit those, not this page (`tests/test_docs.py` checks that it "
           "is up to date).", ""]
    out += _how_to_run() + _summary(results) + [notes.strip(), "", full]
    return "\n".join(out)


def _how_to_run() -> list[str]:
    return ["## Running it", "",
            "`pip install -e \".[bench]\"` (JAX and PyTorch CPU, each optional), then "
            "`python -m bench [--archs densenet3,sparse3,randdag] [--widths 128,512,2048] "
            "[--memory-widths 2048,4096] [--quick] [--threads N]`. It runs each network in "
            "JAX (jit) and PyTorch (torch.func) as `dagc.export` gives it (`net.to_jax`, "
            "`net.to_torch`; gather and masked-dense variants for sparse connections), checks "
            "that every peer matches dagc to 1e-9, then times forward, VJP, HVP, NTK, Hessian "
            "norms, compile time and memory, interleaved, as medians of per-round ratios. It "
            "measures the machine's matrix-product rate and copy bandwidth in the same run and "
            "writes `bench/results/latest.md` and `.json`. Its targets table says, for each "
            "missed target, the fraction of the bounding machine limit dagc would have to "
            "reach, or the bound itself. On a shared machine use `--threads 1`.", ""]


def _summary(results: dict) -> list[str]:
    """The latest run in one table: dagc's time and its ratio to each framework's best
    variant, per architecture, width and op."""
    m, config = results["machine"], results["config"]
    flops, copy = _best_limits(results)
    commit = (m.get("dagc_revision") or {}).get("commit")
    labels = {op: label.format(batch=config["batch"], ntk=config["ntk_inputs"])
              for op, label in _OP_LABELS.items()}
    labels[f"hessian_norms_{config['norm_inputs']}"] = \
        f"Hessian norms, {config['norm_inputs']} inputs"
    body = [[case["arch"], str(case["width"]), labels.get(row["op"], row["op"]),
             _time(row["seconds"]["dagc"]),
             *(_ratio(row.get("group_ratios", {}).get(peer, {}).get("median"))
               for peer in ("jax", "torch"))]
            for case in results["cases"] for row in case["rows"]]
    return ["## Latest full run", "",
            f"dagc at commit {commit}, float64, {m['cpu']} ({m['cores']} cores), "
            f"{flops:.1f} GFLOP/s matrix product and {copy:.1f} GB/s copy on one thread, "
            f"settings "
            f"{_settings(m)}. Ratios are dagc / the framework's fastest variant, medians of "
            "interleaved rounds; below 1 dagc is faster.", ""] + \
        _table(["arch", "width", "op", "dagc", "/ JAX", "/ PyTorch"], body) + [""]


def _settings(machine: dict) -> str:
    environment = machine.get("environment") or {}
    return ", ".join(f"`{k}={v}`" for k, v in environment.items()) or "library defaults"
