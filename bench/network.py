"""A framework-neutral description of a compiled network, built only from dagc's public API.

The peers (JAX, PyTorch) rebuild the network from this description: `net.layout` gives where
each parameter piece lives in the flat vector w, `net.sources` the index arrays of sparse
(size_dst, fan_in) and ragged (indptr, indices) connections, and `net.ir.blocks` the blocks'
sizes, activations, skips, biases, per-neuron in-degrees and outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dagc.ops.activations import ACTIVATIONS


@dataclass(frozen=True)
class Conn:
    """Weighted edges src -> dst. Sparse and ragged ones list their edges as (rows, cols):
    weight e (in layout order) joins source neuron cols[e] to destination neuron rows[e]."""

    src: str
    kind: str  # "dense" | "sparse" | "ragged"
    offset: int
    size_dst: int
    size_src: int
    n_weights: int
    fan_in: int | None = None  # sparse only: every destination neuron has fan_in sources
    rows: np.ndarray | None = None
    cols: np.ndarray | None = None

    @property
    def gather_index(self) -> np.ndarray:
        """Sparse only: the (size_dst, fan_in) source indices."""
        return self.cols.reshape(self.size_dst, self.fan_in)


@dataclass(frozen=True)
class Block:
    name: str
    size: int
    act: str
    scale: np.ndarray  # (size,) 1/sqrt(total in-degree) per neuron
    conns: tuple[Conn, ...]
    bias_offset: int | None
    add: tuple[str, ...]
    is_output: bool


@dataclass(frozen=True)
class Description:
    name: str
    width: int | None
    inputs: tuple[tuple[str, int], ...]  # in the column order of X
    blocks: tuple[Block, ...]  # computed blocks, topological order
    outputs: tuple[str, ...]  # in the column order of Y
    n_params: int
    n_in: int
    n_out: int

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
    pieces: dict[str, list] = {b.name: [] for b in blocks}
    bias: dict[str, int] = {}
    for src, dst, kind, offset, shape in net.layout:
        if kind == "bias":
            bias[dst] = offset
        else:
            pieces[dst].append(_conn(src, dst, kind, offset, shape, size, net.sources))
    computed = []
    for b in blocks:
        if b.act == "":
            continue
        if b.act not in ACTIVATIONS:
            raise ValueError(f"block {b.name}: activation {b.act!r} unknown to the benchmark")
        scale = 1.0 / np.sqrt(np.asarray(b.in_degree, dtype=np.float64))
        computed.append(Block(b.name, b.size, b.act, scale, tuple(pieces[b.name]),
                              bias.get(b.name), tuple(b.add), b.is_output))
    inputs = tuple((b.name, b.size) for b in blocks if b.act == "")
    outputs = tuple(b.name for b in computed if b.is_output)
    return Description(net.name, net.width, inputs, tuple(computed), outputs, net.n_params,
                       sum(s for _, s in inputs), sum(size[o] for o in outputs))


def _conn(src, dst, kind, offset, shape, size, sources) -> Conn:
    n_dst, n_src = size[dst], size[src]
    if kind == "dense":
        return Conn(src, kind, offset, n_dst, n_src, n_dst * n_src)
    if kind == "sparse":
        index = np.asarray(sources[(src, dst)], dtype=np.int64)
        fan_in = index.shape[1]
        rows = np.repeat(np.arange(n_dst, dtype=np.int64), fan_in)
        return Conn(src, kind, offset, n_dst, n_src, index.size, fan_in, rows, index.ravel())
    if kind == "ragged":
        indptr, indices = sources[(src, dst)]
        rows = np.repeat(np.arange(n_dst, dtype=np.int64), np.diff(indptr))
        return Conn(src, kind, offset, n_dst, n_src, int(shape[0]), None, rows,
                    np.asarray(indices, dtype=np.int64))
    raise ValueError(f"connection {src} -> {dst}: unknown kind {kind!r}")
