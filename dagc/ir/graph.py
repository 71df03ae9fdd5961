"""Spec -> IR: topological order, layers, in-degrees, the paper's width m, parameter layout.

Block DAGs map one block to one IR block. Neuron DAGs (graph files and the `random_dag`
generator) group their neurons by (layer, activation, output or not) into IR blocks joined by
ragged connections (CSR index arrays), so both kinds compile through the same templates.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from ..errors import DagcError
from ..frontend import expr
from ..frontend.spec import ACTIVATIONS, RandomDag, Spec, check_acyclic


@dataclass(frozen=True)
class Block:
    """A group of neurons with one activation. Inputs have act "" and no connections."""

    name: str
    size: int
    act: str
    layer: int
    in_degree: np.ndarray = field(repr=False)  # (size,) int64, total in-degree d_v per neuron
    bias: bool = False
    add: tuple[str, ...] = ()
    is_output: bool = False
    neurons: tuple | None = field(default=None, repr=False)  # node ids of a neuron graph

    @property
    def is_input(self) -> bool:
        return self.act == ""


@dataclass(frozen=True)
class Connection:
    """Weighted edges src -> dst. Sparse and ragged connections carry CSR index arrays:
    int64 row pointers, and uint32 source indices (what the kernels take: half the index
    traffic and memory, and no negative-index wraparound test on every gather or scatter)."""

    src: str
    dst: str
    kind: str  # "dense" | "sparse" (fixed fan-in) | "ragged" (neuron graphs)
    offset: int
    shape: tuple[int, ...]
    indptr: np.ndarray | None = field(default=None, repr=False)
    indices: np.ndarray | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class Piece:
    """One entry of the parameter layout (docs/design.md, Parameter layout); src is None
    for a bias."""

    src: str | None
    dst: str
    kind: str  # "dense" | "sparse" | "ragged" | "bias"
    offset: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class IR:
    name: str
    spec: Spec
    width: int | None  # the file's `width` parameter after overrides
    blocks: tuple[Block, ...]  # topological order, inputs first
    connections: tuple[Connection, ...]  # layout order
    layout: tuple[Piece, ...]
    n_params: int
    width_m: int | None  # the paper's width: min in-degree outside layers 0 and 1
    depth: int
    bottlenecks: tuple[str, ...]

    @property
    def inputs(self) -> tuple[Block, ...]:
        return tuple(b for b in self.blocks if b.is_input)

    @property
    def outputs(self) -> tuple[Block, ...]:
        return tuple(b for b in self.blocks if b.is_output)

    @property
    def n_in(self) -> int:
        return sum(b.size for b in self.inputs)

    @property
    def n_out(self) -> int:
        return sum(b.size for b in self.outputs)

    def incoming(self, name: str) -> tuple[Connection, ...]:
        return tuple(c for c in self.connections if c.dst == name)

    @property
    def factored_blocks(self) -> tuple[tuple[str, Block], ...]:
        """The segments of the factored Hessian's coordinates, in order: ("p", B) for every
        non-input block B (the tangent of its adjoint g_B), then ("q", A) for every non-input
        block A that feeds a connection (the tangent of its activations a_A)."""
        sources = {c.src for c in self.connections}
        computed = [b for b in self.blocks if not b.is_input]
        return tuple([("p", b) for b in computed]
                     + [("q", b) for b in computed if b.name in sources])


def build(spec: Spec, width: int | None = None, graph_seed: int | None = None) -> IR:
    """Resolve sizes for `width` (default: the file's) and build the IR."""
    width = spec.width if width is None else width
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1
                              or width > expr.MAX_SIZE):
        raise DagcError(f"width must be a positive integer up to {expr.MAX_SIZE:,}, "
                        f"got {expr.show(width)}")
    seed = spec.graph_seed if graph_seed is None else graph_seed
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DagcError(f"graph_seed must be a non-negative integer, got {seed!r}")
    try:
        if spec.graph is None:
            blocks, conns = _block_dag(spec, width, seed)
        elif isinstance(spec.graph, RandomDag):
            blocks, conns = _group_neurons(_random_dag(spec.graph, width, seed, spec.path))
        else:
            blocks, conns = _group_neurons(
                _read_graph_file(spec.graph, spec.hidden_act, spec.path))
    except MemoryError:
        raise DagcError(f"{spec.path}: not enough memory for the network at width "
                        f"{width}") from None
    if spec.graph is not None:
        _release_freed_heap()
    return _finish(spec, width, blocks, conns)


# --- block DAGs -------------------------------------------------------------------------------

def _block_dag(spec: Spec, width, seed):
    where = spec.path
    sizes = {name: expr.evaluate(size, width, f"{where}: input {name}")
             for name, size in spec.inputs}
    for b in spec.blocks:
        sizes[b.name] = expr.evaluate(b.size, width, f"{where}: block {b.name}: size")
    order = _topological_order(
        [name for name, _ in spec.inputs] + [b.name for b in spec.blocks],
        [(s.block, b.name) for b in spec.blocks for s in b.sources]
        + [(a, b.name) for b in spec.blocks for a in b.add],
    )
    by_name = {b.name: b for b in spec.blocks}
    feeders = ({s.block for b in spec.blocks for s in b.sources}
               | {a for b in spec.blocks for a in b.add})
    layers: dict[str, int] = {}
    blocks, conns = [], []
    for position, name in enumerate(order):
        if name not in by_name:
            layers[name] = 0
            blocks.append(Block(name, sizes[name], "", 0, np.zeros(sizes[name], np.int64)))
            continue
        b = by_name[name]
        # An identity skip has no weight: it orders the computation but is no edge of the
        # paper's graph, so it neither deepens a block nor counts in its in-degree.
        layers[name] = 1 + max(layers[s.block] for s in b.sources)
        degree = 0
        for index, s in enumerate(b.sources):
            conn = _block_connection(s, index, b.name, sizes, width, seed, position, where)
            conns.append(conn)
            degree += conn.shape[1]
        degree += int(b.bias)
        for a in b.add:
            if sizes[a] != sizes[name]:
                raise DagcError(f"{where}: block {name}: `add: {a}` needs equal sizes, "
                                f"got {sizes[a]} and {sizes[name]}")
        blocks.append(Block(name, sizes[name], b.act, layers[name],
                            np.full(sizes[name], degree, np.int64), b.bias, b.add,
                            is_output=name not in feeders))
    return blocks, conns


def _block_connection(source, source_index, dst, sizes, width, seed, position, where) -> Connection:
    n_src, n_dst = sizes[source.block], sizes[dst]
    if source.fan_in is None:
        return Connection(source.block, dst, "dense", 0, (n_dst, n_src))
    k = expr.evaluate(source.fan_in, width, f"{where}: block {dst}: fan_in from {source.block}")
    if k > n_src:
        raise DagcError(f"{where}: block {dst}: fan_in {k} from {source.block} exceeds its "
                        f"size {n_src}")
    # Seeded by the connection's place in the file, so every run draws the same graph.
    rng = np.random.default_rng([seed, position, source_index])
    indices = np.empty((n_dst, k), np.uint32)
    for row in range(n_dst):
        indices[row] = np.sort(rng.choice(n_src, size=k, replace=False))
    indptr = np.arange(0, n_dst * k + 1, k, dtype=np.int64)
    return Connection(source.block, dst, "sparse", 0, (n_dst, k), indptr, indices.ravel())


def _topological_order(nodes: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """Topological order that keeps file order among independent nodes."""
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    rank = {n: i for i, n in enumerate(nodes)}
    return list(nx.lexicographical_topological_sort(graph, key=rank.__getitem__))


# --- neuron DAGs ------------------------------------------------------------------------------

@dataclass
class _Neurons:
    """A neuron DAG in arrays: neurons numbered in topological order, predecessors as CSR
    (uint32 indices, the type the kernels take)."""

    names: list
    layer: np.ndarray
    act: list[str]
    is_output: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray


def _random_dag(gen: RandomDag, width, seed: int, where: str):
    n_in = expr.evaluate(gen.inputs, width, f"{where}: graph: inputs")
    size = expr.evaluate(gen.size, width, f"{where}: graph: size")
    k = expr.evaluate(gen.fan_in, width, f"{where}: graph: fan_in")
    total = n_in + gen.layers * size + gen.outputs
    if total > expr.MAX_SIZE:
        raise DagcError(f"{where}: graph: {total:,} neurons are too many "
                        f"(at most {expr.MAX_SIZE:,})")
    if k > n_in + size:
        raise DagcError(f"{where}: graph: fan_in {k} exceeds the {n_in + size} neurons "
                        "before layer 2")
    rng = np.random.default_rng([seed, 7919])
    layer_sizes = [n_in] + [size] * gen.layers + [gen.outputs]
    starts = np.concatenate([[0], np.cumsum(layer_sizes)])
    n = int(starts[-1])
    layer_of = np.repeat(np.arange(len(layer_sizes)), layer_sizes)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.select([layer_of == 0, layer_of == 1], [0, n_in], k), out=indptr[1:])
    # Filled in place: a list of per-neuron arrays would cost the CSR twice over at its peak,
    # in blocks small enough that the C heap keeps them after the build.
    indices = np.empty(indptr[-1], np.uint32)
    for i in range(n_in, n):
        layer = layer_of[i]
        row = indices[indptr[i]:indptr[i + 1]]
        if layer == 1:  # the first layer sees every input, as in the paper
            row[:] = np.arange(n_in)
            continue
        prev_lo, prev_hi = starts[layer - 1], starts[layer]
        chosen = rng.choice(prev_hi, size=k, replace=False)
        if not np.any(chosen >= prev_lo):  # keep the neuron in this layer
            chosen[0] = rng.integers(prev_lo, prev_hi)
        row[:] = np.sort(chosen)
    acts = [""] * n_in + [gen.act] * (n - n_in - gen.outputs) + ["identity"] * gen.outputs
    return _Neurons(list(range(n)), layer_of, acts, layer_of == len(layer_sizes) - 1,
                    indptr, indices)


def _read_graph_file(path: Path, default_act: str, where: str):
    graph = _read_networkx(path, where)
    if graph.number_of_nodes() == 0:
        raise DagcError(f"{path}: the graph has no neurons")
    check_acyclic(graph, f"{path}: the neurons")
    file_rank = {n: i for i, n in enumerate(graph.nodes)}
    order = list(nx.lexicographical_topological_sort(graph, key=file_rank.__getitem__))
    number = {n: i for i, n in enumerate(order)}
    layer = np.zeros(len(order), np.int64)
    acts, preds = [], []
    for node in order:
        pred = sorted(number[p] for p in graph.predecessors(node))
        preds.append(np.array(pred, np.uint32))
        if pred:
            layer[number[node]] = 1 + max(layer[p] for p in pred)
        act = graph.nodes[node].get("act")
        if not pred:
            if graph.out_degree(node) == 0:
                raise DagcError(f"{path}: input neuron {node!r} feeds nothing")
            acts.append("")
            continue
        if act is not None and act not in ACTIVATIONS:
            raise DagcError(f"{path}: neuron {node!r}: unknown activation {act!r} "
                            f"(known: {', '.join(ACTIVATIONS)})")
        is_out = graph.out_degree(node) == 0
        acts.append(act or ("identity" if is_out else default_act))
    is_output = np.array([graph.out_degree(n) == 0 and graph.in_degree(n) > 0 for n in order])
    return _Neurons(order, layer, acts, is_output, *_csr(preds))


def _read_networkx(path: Path, where: str) -> nx.DiGraph:
    suffix = path.suffix.lower()
    try:
        if path.exists() and not path.is_file():  # a directory, or a device that never ends
            raise DagcError(f"{path}: cannot read graph: not a regular file")
        if suffix == ".json":
            import json

            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise DagcError(f"{path}: expected a node-link JSON object, "
                                f"got {type(data).__name__}")
            edges = "links" if "links" in data else "edges"  # networkx >= 3.4 writes "edges"
            graph = nx.node_link_graph({**data, "multigraph": True}, directed=True, edges=edges)
        elif suffix == ".graphml":
            graph = nx.read_graphml(path)
        else:
            graph = nx.read_edgelist(path, create_using=nx.MultiDiGraph, nodetype=str)
    except FileNotFoundError:
        raise DagcError(f"{where}: graph file {path} not found") from None
    except DagcError:
        raise
    except Exception as err:  # networkx and its parsers raise many types for bad files
        message = " ".join(f"{type(err).__name__}: {err}".split())
        raise DagcError(f"{path}: cannot read graph: {message}") from None
    if not graph.is_directed():
        raise DagcError(f"{path}: the graph is undirected; dagc needs directed edges "
                        "(from inputs towards outputs)")
    for u, v in graph.edges():
        if graph.number_of_edges(u, v) > 1:
            raise DagcError(f"{path}: the edge {u!r} -> {v!r} is listed more than once")
    return nx.DiGraph(graph)


def _release_freed_heap() -> None:
    """Hand the heap that grouping a neuron DAG freed back to the OS. Its temporaries (index
    arrays of up to a few tens of MB) fall under glibc's adaptive mmap threshold, so they
    come from the heap, and glibc keeps the freed blocks: 62 MiB of resident memory for
    randdag at width 4096, half its weights. Linux only: elsewhere the C library has no
    malloc_trim."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # a C library other than glibc
        pass


def _csr(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    return indptr, np.concatenate(rows) if rows else np.empty(0, np.uint32)


def _group_neurons(neurons: _Neurons):
    """Group neurons by (layer, act, output); split their predecessors per source group."""
    keys = list(zip(neurons.layer.tolist(), neurons.act, neurons.is_output.tolist(), strict=True))
    distinct = sorted(set(keys), key=lambda k: (k[0], k[2], k[1]))
    names = _group_names(distinct)
    members = {key: np.array([i for i, k in enumerate(keys) if k == key], np.int64)
               for key in distinct}
    group_of = np.empty(len(keys), np.int32)
    local = np.empty(len(keys), np.uint32)
    for g, key in enumerate(distinct):
        group_of[members[key]] = g
        local[members[key]] = np.arange(len(members[key]))
    blocks, conns = [], []
    degree = np.diff(neurons.indptr)
    for g, key in enumerate(distinct):
        layer, act, is_out = key
        ids = members[key]
        blocks.append(Block(names[g], len(ids), act, layer, degree[ids].astype(np.int64),
                            is_output=is_out, neurons=tuple(neurons.names[i] for i in ids)))
        if not act:
            continue
        dst_row = np.repeat(np.arange(len(ids), dtype=np.int32), degree[ids])
        src = np.concatenate([neurons.indices[neurons.indptr[i]:neurons.indptr[i + 1]]
                              for i in ids])
        src_group = group_of[src]
        for s in np.unique(src_group).tolist():
            mask = src_group == s
            indptr = np.zeros(len(ids) + 1, np.int64)
            np.cumsum(np.bincount(dst_row[mask], minlength=len(ids)), out=indptr[1:])
            conns.append(Connection(names[s], names[g], "ragged", 0, (int(indptr[-1]),),
                                    indptr, local[src[mask]]))
    return blocks, conns


def _group_names(keys) -> list[str]:
    """x for inputs, h<layer> for hidden groups, out<layer> for outputs; act appended if needed."""
    base = []
    for layer, act, is_out in keys:
        base.append("x" if not act else (f"out{layer}" if is_out else f"h{layer}"))
    names = []
    for (_, act, _), b in zip(keys, base, strict=True):
        names.append(b if base.count(b) == 1 else f"{b}_{act}")
    if sum(1 for k in keys if k[2]) == 1:  # a single output group is simply `out`
        names = ["out" if k[2] else n for k, n in zip(keys, names, strict=True)]
    return names


# --- common -----------------------------------------------------------------------------------

def _finish(spec: Spec, width, blocks: list[Block], conns: list[Connection]) -> IR:
    """Assign parameter offsets in layout order and compute width m, depth and bottlenecks."""
    layout, placed, offset = [], [], 0
    for block in blocks:
        for conn in (c for c in conns if c.dst == block.name):
            conn = Connection(conn.src, conn.dst, conn.kind, offset, conn.shape, conn.indptr,
                              conn.indices)
            placed.append(conn)
            layout.append(Piece(conn.src, conn.dst, conn.kind, offset, conn.shape))
            offset += conn.size
        if block.bias:
            layout.append(Piece(None, block.name, "bias", offset, (block.size,)))
            offset += block.size
    if not any(b.is_output for b in blocks):
        raise DagcError(f"{spec.path}: the network has no outputs")
    width_m, bottlenecks = _paper_width(blocks)
    return IR(spec.name, spec, width, tuple(blocks), tuple(placed), tuple(layout), offset,
              width_m, max(b.layer for b in blocks), bottlenecks)


def _paper_width(blocks: list[Block]) -> tuple[int | None, tuple[str, ...]]:
    deep = [b for b in blocks if b.layer >= 2]
    if not deep:
        return None, ()
    m = int(min(b.in_degree.min() for b in deep))
    found = []
    for b in deep:
        hits = np.flatnonzero(b.in_degree == m)
        if b.neurons is None:
            found += [b.name] if len(hits) else []
        else:
            found += [str(b.neurons[i]) for i in hits]
    return m, tuple(found)
