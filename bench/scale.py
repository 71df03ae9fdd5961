"""The Hessian norm at the widths of the results' widest rows (issue 26, "Scale").

    python -m bench.scale [--arch densenet3] [--widths 8192,16384]

For each width, in a fresh process (`bench.probes`, the memory probe): the peak resident memory
of one Hessian spectral norm against the weights (8 P bytes), with and without the runtime
(interpreter, numpy, numba and the compiled code, measured before the network exists), the
norm's time, and the time of one Lanczos step (one application of the factored Hessian to one
vector) against the time to read what the step must read, every weight matrix twice (forward
and backward), at the copy bandwidth this process measures first. Results:
bench/results/scale.json, and a table printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import machine, probes

RESULTS = Path(__file__).parent / "results" / "scale.json"
WEIGHT_READS_PER_STEP = 2  # the factored operator's forward and backward sweeps


def measure(arch: str, widths: list[int]) -> dict:
    """The machine's copy bandwidth, then one memory probe per width."""
    bandwidth = machine.copy_gbps()
    rows = []
    for width in widths:
        probe = probes.hessian_memory(arch, width)
        probe.update(arch=arch, width=width)
        rows.append(probe)
        print(_line(probe, bandwidth["median"]), flush=True)
    return {"machine": machine.info(), "copy_gbps": bandwidth, "rows": rows}


def _line(row: dict, gbps: float) -> str:
    if "error" in row:
        return f"{row['arch']} width {row['width']}: {row['error']}"
    weights = row["weights_bytes"]
    read = WEIGHT_READS_PER_STEP * weights / (gbps * 1e9)
    return (f"{row['arch']} width {row['width']}: P = {row['n_params']:,}; peak "
            f"{row['peak_rss'] / 2**30:.2f} GiB = {row['peak_rss'] / weights:.2f}x the weights "
            f"({(row['peak_rss'] - row['rss_runtime']) / weights:.2f}x above the runtime); "
            f"norm {row['seconds']:.1f} s; step {row['step_seconds'] * 1e3:.0f} ms against "
            f"{read * 1e3:.0f} ms to read the weights twice at {gbps:.1f} GB/s "
            f"({read / row['step_seconds']:.0%} of the bandwidth)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="densenet3")
    parser.add_argument("--widths", default="8192,16384")
    args = parser.parse_args(argv)
    result = measure(args.arch, [int(w) for w in args.widths.split(",")])
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
