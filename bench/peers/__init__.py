"""Peer implementations of a dagc network: JAX (jit) and PyTorch (torch.func).

Both run the network that `dagc.export` gives (`to_jax`, `to_torch`) as a function of the
flat weight vector (`dagc.export.split_weights`) and differentiate it the way a user of each
framework would. Both are optional: `available()` says which can be imported and `load()`
builds every variant of the requested frameworks for one network. A network with sparse or
ragged connections gets two variants per framework, export's two `sparse` modes: `gather`
(index the sources, reduce per neuron) and `masked` (scatter the weights into a dense matrix,
then a dense product: the baseline of a dense library on a sparse network).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..network import Description

FRAMEWORKS = ("jax", "torch")
_MODULES = {"jax": "bench.peers.jax_peer", "torch": "bench.peers.torch_peer"}
_INSTALL = {
    "jax": "pip install jax jaxlib   (CPU; the benchmark enables float64 itself)",
    "torch": "pip install torch==2.13.0   (the CPU wheel)",
}


@dataclass
class Bound:
    """One operation with its arguments already converted: `run()` computes and waits for the
    result (in the framework's own type), `to_numpy` converts a result for checking."""

    run: Callable[[], Any]
    to_numpy: Callable[[Any], np.ndarray]


def available(frameworks=FRAMEWORKS) -> tuple[list[str], dict[str, str]]:
    """(importable frameworks, {missing framework: message saying how to install it})."""
    found, missing = [], {}
    for name in frameworks:
        try:
            importlib.import_module(name)
        except ImportError as err:
            missing[name] = (f"{name} is not installed ({err}); skipping it. "
                             f"Install: {_INSTALL[name]}")
        else:
            found.append(name)
    return found, missing


def load(framework: str, desc: Description) -> list:
    """Every variant of `framework` for the network `desc`, each with `.name`, `.framework`,
    `.mode`, `.bind(op, **arrays)` (ops: forward, vjp, hvp, ntk) and
    `.hvp_operator(w, x, output)`; JAX's also `.compile_seconds(op, **arrays)`."""
    module = importlib.import_module(_MODULES[framework])
    modes = ("gather", "masked") if desc.sparse else ("dense",)
    return [module.Peer(desc.net, mode) for mode in modes]


def variant_name(framework: str, mode: str) -> str:
    """"jax", "torch" for a dense network; "jax-gather", "torch-masked", ... otherwise."""
    return framework if mode == "dense" else f"{framework}-{mode}"


def export_mode(mode: str) -> str:
    """The `sparse` mode of `dagc.export` a variant runs (a dense network has no sparse
    connections: either mode is the same function)."""
    return "gather" if mode == "dense" else mode


def as_reported(op: str, n_out: int, result: np.ndarray) -> np.ndarray:
    """A peer's result in dagc's shape: the NTK (n, n, n_out, n_out) of a one-output
    network is (n, n) in dagc."""
    return result[:, :, 0, 0] if op == "ntk" and n_out == 1 else result
