"""The issue-4 targets, as checks on measured ratios (dagc time / peer time, lower is better)."""

from __future__ import annotations


def ratio_targets(op: str, width: int, sparse: bool) -> list[tuple[str, str, float]]:
    """[(label, peer group, bound)] for a timed row. The peer group is "jax", "torch" or
    "best" (the faster framework's best variant in each round); a target is met when the
    median ratio is at most the bound."""
    targets = []
    if op in ("forward", "vjp"):
        targets.append((f"{op} <= {1.0 if width >= 512 else 0.5}x faster peer", "best",
                        1.0 if width >= 512 else 0.5))
    if op == "hvp":
        targets += [("HVP <= 0.25x JAX", "jax", 0.25), ("HVP <= 0.10x PyTorch", "torch", 0.10)]
    if op == "ntk" and width == 512:
        targets.append(("NTK <= 0.02x JAX J J^T", "jax", 0.02))
    if sparse and op in ("hvp", "vjp"):
        targets.append((f"sparse {op} >= 3x faster than best peer", "best", 1 / 3))
    return targets


# Compile: seconds of (compile + first call) of forward, VJP, HVP and NTK in a fresh process.
COMPILE_COLD = 10.0
COMPILE_CACHED = 1.0
COMPILED_PASSES = ("forward", "vjp", "hvp", "ntk")


def compile_total(probe: dict) -> float:
    """Seconds of the compile target's passes in one compile probe's result."""
    return sum(probe["first_call_seconds"][p] for p in COMPILED_PASSES)


# HVP at width 2048: >= 70% of the copy bandwidth, counting 3 * 8P bytes (read w and v, write
# the result). Forward-over-reverse reads every weight and tangent weight twice, once per sweep
# (the backward sweep needs adjoints that depend on the whole forward sweep), and writes the
# result once: at least 5 * 8P bytes, so the count reaches at most 3/5 of the bandwidth.
HVP_BANDWIDTH = 0.70
HVP_BANDWIDTH_WIDTH = 2048
HVP_BANDWIDTH_BOUND = 3 / 5

# 16-input Hessian norms: hessian_norms must have >= 3x the throughput of 16 single runs.
BATCH_NORMS_SPEEDUP = 3.0
