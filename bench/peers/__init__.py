"""Peer implementations of a dagc network: JAX (jit) and PyTorch (torch.func).

Both are optional: `available()` says which can be imported and `load()` builds every variant
of the requested frameworks for one network. A network with sparse or ragged connections gets
two variants per framework: `gather` (index the sources, reduce per neuron) and `masked`
(scatter the weights into a dense matrix, then a dense product).
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
    `.bind(op, **arrays)` (ops: forward, vjp, hvp, ntk) and `.hvp_operator(w, x, output)`."""
    module = importlib.import_module(_MODULES[framework])
    modes = ("gather", "masked") if desc.sparse else ("dense",)
    return [module.Peer(desc, mode) for mode in modes]
