"""Spec -> IR: topological order, layers, in-degrees, the paper's width m, parameter layout.

Block DAGs map one block to one IR block. Neuron DAGs (graph files and the `random_dag`
generator) take the neuron path (`build_neurons`, `dagc.ir.neurons`: the graph as data for
shared kernels), or, for a shallow homogeneous generator (`uses_neuron_path`), are grouped by
(layer, activation, output or not) into IR blocks joined by ragged connections (CSR index
arrays) and compile through the block templates.
"""

from __future__ import annotations

import ctypes
import sys
from collections import Counter
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from ..errors import DagcError
from ..frontend import expr, graphs
from ..frontend.spec import RandomDag, Spec
from . import neurons


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
        """The output blocks in column order: the file's `outputs` list, else block order."""
        found = [b for b in self.blocks if b.is_output]
        if self.spec.outputs:
            found.sort(key=lambda b: self.spec.outputs.index(b.name))
        return tuple(found)

    @property
    def input_names(self) -> list[str]:
        """One name per column of X: `x[3]` is column 3 of input block x; a neuron graph's
        columns are named by their node ids."""
        return [name for b in self.inputs for name in _column_names(b)]

    @property
    def output_names(self) -> list[str]:
        """One name per output column, as `input_names`: `head[1]` is column 1 of head."""
        return [name for b in self.outputs for name in _column_names(b)]

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


def _column_names(block: Block) -> list[str]:
    if block.neurons is not None:
        return [str(n) for n in block.neurons]
    return [f"{block.name}[{i}]" for i in range(block.size)]


def build(spec: Spec, width: int | None = None, graph_seed: int | None = None) -> IR:
    """Resolve sizes for `width` (default: the file's) and build the block IR (a neuron
    graph grouped into blocks; `build_neurons` keeps it neuron by neuron)."""
    width, seed = _checked(spec.width if width is None else width,
                           spec.graph_seed if graph_seed is None else graph_seed)
    try:
        if spec.graph is None:
            blocks, conns = _block_dag(spec, width, seed)
        else:
            blocks, conns = _group_neurons(_neuron_graph(spec, width, seed))
    except MemoryError:
        raise DagcError(f"{spec.path}: not enough memory for the network at width "
                        f"{width}") from None
    if spec.graph is not None:
        _release_freed_heap()
    return _finish(spec, width, blocks, conns)


def _checked(width, seed) -> tuple[int | None, int]:
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1
                              or width > expr.MAX_SIZE):
        raise DagcError(f"width must be a positive integer up to {expr.MAX_SIZE:,}, "
                        f"got {expr.show(width)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DagcError(f"graph_seed must be a non-negative integer, got {seed!r}")
    return width, seed


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

def uses_neuron_path(spec: Spec) -> bool:
    """Which compiled form an architecture takes (docs/design.md, "Neuron-level graphs"):
    block files keep per-block generated code; graph files and the `random_dag` generator
    become data for the shared neuron kernels (`build_neurons`), except a generator of at
    most GROUPED_LAYERS layers with one activation, whose few large layers group into a
    handful of blocks that run as fast as the neuron path (measured in bench/neurons.py)
    and keep their parameter layout (the bundled randdag's results, bit for bit)."""
    if spec.graph is None:
        return False
    return not (isinstance(spec.graph, RandomDag) and spec.graph.layers <= GROUPED_LAYERS)


#: The deepest `random_dag` that still compiles per block (see `uses_neuron_path`).
GROUPED_LAYERS = 8


def build_neurons(spec: Spec, width: int | None = None,
                  graph_seed: int | None = None) -> neurons.NeuronIR:
    """The neuron-level IR of a graph file or `random_dag` generator at `width`."""
    width, seed = _checked(width if width is not None else spec.width,
                           spec.graph_seed if graph_seed is None else graph_seed)
    try:
        raw = _neuron_graph(spec, width, seed)
        ir = neurons.build(raw, spec.name, spec, width if isinstance(spec.graph, RandomDag)
                           else spec.width, spec.path, spec.output_scale)
    except MemoryError:
        raise DagcError(f"{spec.path}: not enough memory for the network at width "
                        f"{width}") from None
    _release_freed_heap()
    return ir


def _neuron_graph(spec: Spec, width, seed: int) -> neurons.NeuronGraph:
    if isinstance(spec.graph, RandomDag):
        return _random_dag(spec.graph, width, seed, spec.path)
    graph = graphs.read(spec.graph, spec.path, spec.graph_data)
    return neurons.from_networkx(graph, spec.hidden_act, str(spec.graph))


# Neurons of a `random_dag`. Each neuron's predecessors are one numpy draw (the draws define
# the graph, so they cannot be batched without changing every generated graph): the build is
# linear but per neuron, and this bound keeps the largest one to minutes.
MAX_GENERATED = 10**7


def _random_dag(gen: RandomDag, width, seed: int, where: str) -> neurons.NeuronGraph:
    """Layers of `size` neurons after `inputs` inputs; each neuron of layer 2 on draws
    `fan_in` distinct predecessors among all earlier neurons, at least one in the previous
    layer. Linear in edges: numpy draws each row in O(fan_in) (Floyd's algorithm) or, when
    fan_in is over a fiftieth of a population of more than 10,000, O(50 fan_in)."""
    n_in = expr.evaluate(gen.inputs, width, f"{where}: graph: inputs")
    size = expr.evaluate(gen.size, width, f"{where}: graph: size")
    k = expr.evaluate(gen.fan_in, width, f"{where}: graph: fan_in")
    total = n_in + gen.layers * size + gen.outputs
    if total > MAX_GENERATED:
        raise DagcError(f"{where}: graph: {total:,} neurons are too many "
                        f"(at most {MAX_GENERATED:,})")
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
    indices[indptr[n_in]:indptr[starts[2]]] = np.tile(np.arange(n_in, dtype=np.uint32),
                                                         layer_sizes[1])
    for i in range(int(starts[2]), n):  # the first layer sees every input, as in the paper
        layer = layer_of[i]
        prev_lo, prev_hi = starts[layer - 1], starts[layer]
        chosen = rng.choice(prev_hi, size=k, replace=False)
        if not np.any(chosen >= prev_lo):  # keep the neuron in this layer
            chosen[0] = rng.integers(prev_lo, prev_hi)
        indices[indptr[i]:indptr[i + 1]] = np.sort(chosen)
    codes = np.full(n, neurons.CODES[gen.act], np.int64)
    codes[:n_in] = neurons.INPUT
    codes[n - gen.outputs:] = neurons.CODES["identity"]
    return neurons.NeuronGraph(range(n), layer_of.astype(np.int64), codes,
                               layer_of == len(layer_sizes) - 1, indptr, indices)


def _release_freed_heap() -> None:
    """Hand the heap that building a neuron DAG freed back to the OS. Its temporaries (index
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


def _group_neurons(raw: neurons.NeuronGraph):
    """Group neurons by (layer, act, output) into blocks, and split each block's
    predecessors per source group into ragged connections. Linear in edges up to sorting."""
    act_names = np.array([""] + list(neurons.CODES))  # code + 1 -> name; "" for inputs
    acts = act_names[raw.codes + 1]
    act_rank = np.searchsorted(np.sort(act_names), acts)  # groups sort by the act's name
    keys, group_of = np.unique(np.stack([raw.layer, raw.is_output.astype(np.int64), act_rank],
                                        axis=1), axis=0, return_inverse=True)
    group_of = group_of.reshape(-1)
    members = np.argsort(group_of, kind="stable")  # each group's neurons in neuron order
    bounds = np.searchsorted(group_of[members], np.arange(len(keys) + 1))
    local = np.empty(len(group_of), np.uint32)
    for g in range(len(keys)):
        local[members[bounds[g]:bounds[g + 1]]] = np.arange(bounds[g + 1] - bounds[g])
    groups = [(int(layer), str(acts[members[bounds[g]]]), bool(out))
              for g, (layer, out, _) in enumerate(keys.tolist())]
    names = _group_names(groups)
    degree = np.diff(raw.indptr)
    blocks, conns = [], []
    for g, (layer, act, is_out) in enumerate(groups):
        ids = members[bounds[g]:bounds[g + 1]]
        blocks.append(Block(names[g], len(ids), act, layer, degree[ids].astype(np.int64),
                            is_output=is_out, neurons=tuple(raw.names[i] for i in ids)))
        if act:
            conns += _ragged_connections(raw, ids, group_of, local, names, g)
    return blocks, conns


def _ragged_connections(raw: neurons.NeuronGraph, ids: np.ndarray, group_of, local, names,
                        g: int) -> list[Connection]:
    """The connections into group g (neurons `ids`), one per source group in group order,
    each a CSR over g's neurons with sources in neuron order."""
    degree = np.diff(raw.indptr)[ids]
    dst_row = np.repeat(np.arange(len(ids), dtype=np.int64), degree)
    src = raw.indices[np.repeat(raw.indptr[ids] - np.cumsum(degree) + degree, degree)
                      + np.arange(degree.sum())]
    src_group = group_of[src]
    order = np.lexsort((dst_row, src_group))  # stable: sources stay sorted within a row
    src, dst_row, src_group = src[order], dst_row[order], src_group[order]
    cuts = np.flatnonzero(np.diff(src_group)) + 1
    conns = []
    for lo, hi in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(src)]]),
                      strict=True):
        indptr = np.zeros(len(ids) + 1, np.int64)
        np.cumsum(np.bincount(dst_row[lo:hi], minlength=len(ids)), out=indptr[1:])
        conns.append(Connection(names[src_group[lo]], names[g], "ragged", 0,
                                (int(indptr[-1]),), indptr, local[src[lo:hi]]))
    return conns


def _group_names(keys) -> list[str]:
    """x for inputs, h<layer> for hidden groups, out<layer> for outputs; act appended if needed."""
    base = ["x" if not act else (f"out{layer}" if is_out else f"h{layer}")
            for layer, act, is_out in keys]
    count = Counter(base)
    names = [b if count[b] == 1 else f"{b}_{act}" for (_, act, _), b in zip(keys, base,
                                                                          strict=True)]
    if sum(1 for k in keys if k[2]) == 1:  # a single output group is simply `out`
        names = ["out" if k[2] else n for k, n in zip(keys, names, strict=True)]
    return names


# --- common -----------------------------------------------------------------------------------

def _finish(spec: Spec, width, blocks: list[Block], conns: list[Connection]) -> IR:
    """Assign parameter offsets in layout order and compute width m, depth and bottlenecks."""
    layout, placed, offset = [], [], 0
    incoming: dict[str, list[Connection]] = {}  # by destination: linear in blocks
    for conn in conns:
        incoming.setdefault(conn.dst, []).append(conn)
    for block in blocks:
        for conn in incoming.get(block.name, ()):
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
