"""What the benchmark needs to know about a compiled network besides the network itself: its
connections' kinds and sizes (for the peers' memory estimates and the FLOP counts of the
machine-limit fractions), read off dagc's public API (`net.layout`, `net.ir.blocks`).

The peers run the network itself through `dagc.export` (`Description.net`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Conn:
    """Weighted edges src -> dst: a dense matrix, or sparse or ragged edge lists."""

    src: str
    kind: str  # "dense" | "sparse" | "ragged"
    size_dst: int
    size_src: int
    n_weights: int


@dataclass(frozen=True)
class Block:
    """A computed block and its incoming connections."""

    name: str
    size: int
    conns: tuple[Conn, ...]


@dataclass(frozen=True)
class Description:
    name: str
    width: int | None
    inputs: tuple[tuple[str, int], ...]  # in the column order of X
    blocks: tuple[Block, ...]  # computed blocks, topological order
    n_params: int
    n_in: int
    n_out: int
    net: Any  # the dagc.CompiledNet itself, which the peers export

    @property
    def sparse(self) -> bool:
        return any(c.kind != "dense" for b in self.blocks for c in b.conns)

    @property
    def n_edge_weights(self) -> int:
        """Multiply-adds per sample of a forward pass (every edge weight used once)."""
        return sum(c.n_weights for b in self.blocks for c in b.conns)


def describe(net) -> Description:
    """The description of a `dagc.CompiledNet`."""
    blocks = net.ir.blocks
    size = {b.name: b.size for b in blocks}
    conns: dict[str, list[Conn]] = {b.name: [] for b in blocks}
    for src, dst, kind, _, shape in net.layout:
        if kind != "bias":
            conns[dst].append(Conn(src, kind, size[dst], size[src], int(np.prod(shape))))
    computed = tuple(Block(b.name, b.size, tuple(conns[b.name])) for b in blocks if b.act != "")
    inputs = tuple((b.name, b.size) for b in blocks if b.act == "")
    return Description(net.name, net.width, inputs, computed, net.n_params, net.n_in,
                       net.n_out, net)
