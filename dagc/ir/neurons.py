"""The neuron-level IR: a neuron DAG as arrays, so that its structure is data, not code.

Neurons are numbered in a topological order sorted by (layer, activation): inputs first (in
the file's order), then every layer's neurons in contiguous *runs* of one activation. Each
non-input neuron's incoming edges form one row of a CSR (int64 `indptr`, uint32 `indices`)
over a single activation buffer of all neurons, and its weights are the parameters at the
same positions: w[e] belongs to the edge indices[e] -> (the row holding e). A run's neurons
depend only on earlier layers, so the kernels compute a run's pre-activations and then apply
its activation to all of them at once (`dagc.backend.neurons`); no code depends on the
graph, so one compile serves every graph with the same activations (docs/design.md, "Neuron-
level graphs").

Everything here is linear in the number of edges: a graph of 10^8 edges builds in numpy
without Python loops over edges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from ..errors import DagcError
from ..frontend.spec import Spec, check_acyclic
from ..ops.activations import ACTIVATIONS

#: The activation code of a neuron: its activation's position in the registry. Inputs: -1.
CODES: dict[str, int] = {name: code for code, name in enumerate(ACTIVATIONS)}
INPUT = -1


@dataclass
class NeuronGraph:
    """A neuron DAG in arrays, before sorting: neurons in any topological order, their
    layers (longest path from an input), activation codes (INPUT for inputs), which are
    outputs, and their predecessors as CSR (int64 indptr, uint32 indices, empty rows for
    inputs)."""

    names: Sequence
    layer: np.ndarray
    codes: np.ndarray
    is_output: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray


@dataclass(frozen=True)
class NeuronIR:
    """A neuron DAG ready for the shared kernels (module docstring). `spec` is None for a
    networkx graph given directly."""

    name: str
    spec: Spec | None
    width: int | None  # the file's `width` parameter (the generator's), None for a fixed graph
    names: Sequence = field(repr=False)  # node ids in neuron order
    layer: np.ndarray = field(repr=False)  # (N,) int64
    codes: np.ndarray = field(repr=False)  # (N,) int64, INPUT for inputs
    indptr: np.ndarray = field(repr=False)  # (N + 1,) int64
    indices: np.ndarray = field(repr=False)  # (E,) uint32, sorted within each row
    scale: np.ndarray = field(repr=False)  # (N,) float64: 1/sqrt(in-degree), 0 for inputs
    runs: np.ndarray = field(repr=False)  # (R, 3) int64: first, end, activation code
    outputs: np.ndarray = field(repr=False)  # (n_out,) int64 neuron numbers, in neuron order
    q_index: np.ndarray = field(repr=False)  # (N,) int64: factored q coordinate, -1 if none
    n_in: int
    width_m: int | None  # the paper's width: min in-degree outside layers 0 and 1
    depth: int
    bottleneck_ids: np.ndarray = field(repr=False)  # neurons attaining width_m

    @property
    def n_neurons(self) -> int:
        return len(self.layer)

    @property
    def n_params(self) -> int:
        return len(self.indices)

    @property
    def n_out(self) -> int:
        return len(self.outputs)

    @property
    def acts(self) -> tuple[str, ...]:
        """The activations used, in registry order: all that the compiled code depends on."""
        names = list(ACTIVATIONS)
        return tuple(names[c] for c in np.unique(self.runs[:, 2]))

    @property
    def input_names(self) -> list:
        """The node ids of X's columns."""
        return [self.names[i] for i in range(self.n_in)]

    @property
    def output_names(self) -> list:
        """The node ids of f's outputs."""
        return [self.names[i] for i in self.outputs.tolist()]

    @property
    def bottlenecks(self) -> tuple[str, ...]:
        return tuple(str(self.names[i]) for i in self.bottleneck_ids.tolist())

    @property
    def layers(self) -> Mapping:
        """Node id -> layer, built on first lookup (a million-neuron dict is not free)."""
        return _NeuronLayers(self.names, self.layer)

    @property
    def layout(self) -> tuple[tuple, ...]:
        """One piece: every edge, in CSR order (`sources` gives its source neurons)."""
        return (("neurons", "neurons", "ragged", 0, (self.n_params,)),)

    @property
    def sources(self) -> dict:
        """{("neurons", "neurons"): (indptr, indices)}, read-only: the source neuron of w[e]
        is indices[e], its target the row e falls in (see `edges`)."""
        return {("neurons", "neurons"): (_read_only(self.indptr), _read_only(self.indices))}

    def edges(self) -> np.ndarray:
        """(E, 2) int64 neuron numbers (source, target) of every parameter, in order; the
        node ids are `names[number]`."""
        targets = np.repeat(np.arange(self.n_neurons), np.diff(self.indptr))
        return np.stack([self.indices.astype(np.int64), targets], axis=1)

    @property
    def factored_size(self) -> int:
        """Coordinates of the factored Hessian: p for every computed neuron, q for every
        hidden one (`dagc.backend.neurons`)."""
        return 2 * (self.n_neurons - self.n_in) - self.n_out

    def layer_summary(self) -> list[tuple[int, int, str, int, int]]:
        """Per layer: (layer, neurons, activations with their counts, min and max in-degree)
        (`dagc inspect`); linear in neurons."""
        degree = np.diff(self.indptr)
        names = list(CODES)
        rows = []
        bounds = np.flatnonzero(np.diff(self.layer)) + 1
        for first, end in zip(np.concatenate([[0], bounds]),
                              np.concatenate([bounds, [self.n_neurons]]), strict=True):
            codes, counts = np.unique(self.codes[first:end], return_counts=True)
            acts = ", ".join(("input" if c == INPUT else names[c]) + f" x{k}"
                             for c, k in zip(codes.tolist(), counts.tolist(), strict=True))
            rows.append((int(self.layer[first]), int(end - first), acts,
                         int(degree[first:end].min()), int(degree[first:end].max())))
        return rows

    @property
    def kernel_args(self) -> tuple:
        """The run-time description every pass of the shared kernels takes, last."""
        return (self.indptr, self.indices, self.scale, self.runs, self.outputs, self.q_index)


class _NeuronLayers(Mapping):
    """Node id -> layer, as a read-only mapping over the IR's arrays."""

    def __init__(self, names: Sequence, layer: np.ndarray):
        self._names = names
        self._layer = layer
        self._number: dict | None = None

    def __getitem__(self, name):
        if self._number is None:
            self._number = {n: i for i, n in enumerate(self._names)}
        return int(self._layer[self._number[name]])

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._layer)


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


# --- from a networkx graph -------------------------------------------------------------------

def from_networkx(graph: nx.DiGraph, default_act: str, what: str) -> NeuronGraph:
    """The neurons of `graph` (inputs: in-degree 0; outputs: out-degree 0; a node attribute
    `act` sets the activation, else identity for outputs and `default_act` otherwise), in a
    topological order that keeps the graph's node order among independent nodes."""
    if graph.number_of_nodes() == 0:
        raise DagcError(f"{what}: the graph has no neurons")
    check_acyclic(graph, f"{what}: the neurons")
    rank = {n: i for i, n in enumerate(graph.nodes)}
    order = list(nx.lexicographical_topological_sort(graph, key=rank.__getitem__))
    number = {n: i for i, n in enumerate(order)}
    layer = np.zeros(len(order), np.int64)
    codes = np.full(len(order), INPUT, np.int64)
    rows = []
    for i, node in enumerate(order):
        pred = sorted(number[p] for p in graph.predecessors(node))
        rows.append(pred)
        if not pred:
            if graph.out_degree(node) == 0:
                raise DagcError(f"{what}: input neuron {node!r} feeds nothing")
            continue
        layer[i] = 1 + layer[pred].max()
        act = graph.nodes[node].get("act")
        if act is not None and not (isinstance(act, str) and act in CODES):
            raise DagcError(f"{what}: neuron {node!r}: unknown activation {act!r} "
                            f"(known: {', '.join(CODES)})")
        is_out = graph.out_degree(node) == 0
        codes[i] = CODES[act or ("identity" if is_out else default_act)]
    is_output = np.array([graph.out_degree(n) == 0 and graph.in_degree(n) > 0 for n in order])
    indptr = np.zeros(len(order) + 1, np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    indices = np.fromiter((p for r in rows for p in r), np.uint32, count=int(indptr[-1]))
    return NeuronGraph(order, layer, codes, is_output, indptr, indices)


# --- NeuronGraph -> NeuronIR -----------------------------------------------------------------

def build(raw: NeuronGraph, name: str, spec: Spec | None, width: int | None,
          where: str, output_scale: float = 0.5) -> NeuronIR:
    """Sort the neurons by (layer, activation), renumber the edges, and compute the scales
    (d_v^-1/2, d_v^-output_scale for outputs), runs, outputs and the paper's width m, depth
    and bottlenecks."""
    if not raw.is_output.any():
        raise DagcError(f"{where}: the network has no outputs")
    if len(raw.indptr) - 1 > np.iinfo(np.uint32).max:
        raise DagcError(f"{where}: {len(raw.layer):,} neurons are too many for uint32 indices")
    raw = _sorted(raw)
    degree = np.diff(raw.indptr)
    computed = raw.codes != INPUT
    n_in = int(np.count_nonzero(~computed))  # the inputs: layer 0, so first
    scale = np.zeros(len(degree))
    scale[computed] = 1.0 / np.sqrt(degree[computed].astype(np.float64))
    if output_scale != 0.5:  # 1/sqrt otherwise: the exact expression of the block path
        scale[raw.is_output] = degree[raw.is_output].astype(np.float64) ** -output_scale
    hidden = computed & ~raw.is_output
    q_index = np.full(len(degree), -1, np.int64)
    q_index[hidden] = (len(degree) - n_in) + np.arange(np.count_nonzero(hidden))
    deep = raw.layer >= 2
    width_m = int(degree[deep].min()) if deep.any() else None
    bottlenecks = (np.flatnonzero(deep & (degree == width_m)) if deep.any()
                   else np.empty(0, np.int64))
    return NeuronIR(name, spec, width, raw.names, raw.layer, raw.codes, raw.indptr, raw.indices,
                    scale, _runs(raw.layer, raw.codes, n_in), np.flatnonzero(raw.is_output),
                    q_index, n_in, width_m, int(raw.layer.max()), bottlenecks)


def _sorted(raw: NeuronGraph) -> NeuronGraph:
    """`raw` renumbered in the order (layer, code, current number); itself if already so.
    Sorting by layer keeps the order topological (every edge goes up at least one layer)."""
    order = np.lexsort((raw.codes, raw.layer))  # stable: ties keep the current order
    if np.array_equal(order, np.arange(len(order))):
        return raw
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    degree = np.diff(raw.indptr)[order]
    indptr = np.zeros(len(order) + 1, np.int64)
    np.cumsum(degree, out=indptr[1:])
    # positions of the moved rows' edges in the old CSR, row after row
    first = np.repeat(raw.indptr[:-1][order] - indptr[:-1], degree)
    old = first + np.arange(indptr[-1])
    row = np.repeat(np.arange(len(order), dtype=np.int64), degree)
    sources = rank[raw.indices[old]]
    sources = sources[np.lexsort((sources, row))]  # sorted within each row
    names = [raw.names[i] for i in order.tolist()]
    return NeuronGraph(names, raw.layer[order], raw.codes[order], raw.is_output[order],
                       indptr, sources.astype(np.uint32))


def _runs(layer: np.ndarray, codes: np.ndarray, n_in: int) -> np.ndarray:
    """(first, end, code) of every maximal run of computed neurons with one layer and code."""
    layer, codes = layer[n_in:], codes[n_in:]
    change = np.flatnonzero((np.diff(layer) != 0) | (np.diff(codes) != 0)) + 1
    first = np.concatenate([[0], change])
    end = np.concatenate([change, [len(layer)]])
    return np.stack([first + n_in, end + n_in, codes[first]], axis=1).astype(np.int64)
