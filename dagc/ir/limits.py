"""Which pieces of each block grow with width, and their shares of its in-degree in the
infinite-width limit: the run-time numbers of the generated `limits` pass (docs/design.md,
infinite-width kernels). On the neuron path the `random_dag` generator's limit is one share
matrix over its layers (`neuron_limit`), the data of the shared module's `limits` pass.

A piece i of block B (a connection or the bias) has degree d_i(width): the source's size for
a dense connection, the fan-in for a sparse one, 1 for a bias. Its limit share is
r_i = lim d_i / d_B over the growing pieces; a piece whose degree stays finite has share 0
when any piece grows, and when none grows the exact degrees are the shares. Degrees are
evaluated exactly (rational arithmetic) at two astronomically large widths: a piece grows
when they differ, and a share is a ratio at the larger one, equal to its limit to far
below float64's precision for any size expression.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..errors import DagcError
from ..frontend import expr
from ..frontend.spec import RandomDag, Spec
from .graph import IR
from .neurons import NeuronIR

# Widths standing for infinity: divisible by every small denominator a size expression may
# hold, so that `width/3` and `width//4` grow exactly.
FAR = 2**64 * 3**40 * 5**27 * 7**22
FARTHER = 2 * FAR


def limit_shares(ir: IR) -> tuple[np.ndarray, ...]:
    """Per non-input block of `ir`, in its order: the limit shares of its incoming connections
    (in `ir.incoming` order), then of its bias if it has one. Raises DagcError for a network
    without a limit: a fixed graph file, a sparse connection from a block that does not
    grow, or an output scaling other than the NTK's d^-1/2."""
    spec = ir.spec
    _check_output_scale(spec)
    if spec.graph is None:
        per_block = _block_dag_shares(spec)
    elif isinstance(spec.graph, RandomDag):
        per_block = _random_dag_shares(spec, spec.graph, ir)
    else:
        raise _fixed_graph(spec.path)
    shares = []
    for block in ir.blocks:
        if block.is_input:
            continue
        by_source = per_block[block.name]
        row = [by_source.pop(c.src, 0.0) for c in ir.incoming(block.name)]
        if block.bias:
            row.append(by_source.pop(None))
        missing = {src: share for src, share in by_source.items() if share > 0.0}
        if missing:
            raise DagcError(f"{spec.path}: at width {ir.width} no edge joins "
                            f"{', '.join(map(str, missing))} to {block.name}, whose limit "
                            "mixes them in; compile at a larger width")
        shares.append(np.array(row, np.float64))
    return tuple(shares)


def neuron_limit(ir: NeuronIR) -> tuple[np.ndarray, np.ndarray]:
    """The limit of a neuron-path network as data for the module's graph-independent
    `limits` pass: the `random_dag` generator's layer shares (`random_dag_layer_shares`) and
    each layer's activation code (INPUT for layer 0, identity for the outputs' layer). Raises
    DagcError as `limit_shares` does: only the generator has a width to grow."""
    spec = ir.spec
    if spec is None or not isinstance(spec.graph, RandomDag):
        raise _fixed_graph(spec.path if spec is not None else ir.name)
    _check_output_scale(spec)
    shares = random_dag_layer_shares(spec, spec.graph)
    first_of_layer = np.searchsorted(ir.layer, np.arange(shares.shape[0]))
    return shares, ir.codes[first_of_layer]


def random_dag_layer_shares(spec: Spec, gen: RandomDag) -> np.ndarray:
    """R (layers + 2, layers + 1): R[l, j] is the limit share of generator layer j (0: the
    inputs) in the in-degree of a neuron of layer l (layers + 1: the outputs). A neuron of
    layer l >= 2 draws its fan-in from all earlier neurons, so in the limit it mixes the
    earlier layers in proportion to their sizes; layer 1 sees the inputs; row 0 is zero."""
    where = f"{spec.path}: graph"
    if not _grows(gen.size, f"{where}: size"):
        raise DagcError(f"{where}: size does not grow with width: no infinite-width limit")
    n_layers = gen.layers + 2
    shares = np.zeros((n_layers, n_layers - 1))
    shares[1, 0] = 1.0
    for layer in range(2, n_layers):
        degrees = {0: gen.inputs} | {j: gen.size for j in range(1, layer)}
        by_layer = _shares(degrees, f"{where}: layer {layer}")
        shares[layer, :layer] = [by_layer[j] for j in range(layer)]
    return shares


def _check_output_scale(spec: Spec) -> None:
    if spec.output_scale != 0.5:
        raise DagcError(f"{spec.path}: output_scale {spec.output_scale}: the output kernels "
                        "scale as d^(1 - 2 output_scale), so they have no finite, non-zero "
                        "infinite-width limit (only the NTK scaling 1/2 has one)")


def _fixed_graph(where: str) -> DagcError:
    return DagcError(f"{where}: a fixed neuron graph (a graph file, not the random_dag "
                     "generator) has no width to grow, so no infinite-width limit")


def _block_dag_shares(spec: Spec) -> dict[str, dict[str | None, float]]:
    """{block: {source (None for the bias): share}} of a block DAG."""
    sizes = dict(spec.inputs) | {b.name: b.size for b in spec.blocks}
    growing = {name: _grows(tree, f"{spec.path}: block {name}: size")
               for name, tree in sizes.items()}
    result = {}
    for b in spec.blocks:
        degrees = {}
        for s in b.sources:
            where = f"{spec.path}: block {b.name}: connection from {s.block}"
            if s.fan_in is not None and not growing[s.block]:
                raise DagcError(f"{where}: a sparse connection from a block that does not grow "
                                "with width has no infinite-width limit (which of its neurons "
                                "a neuron sees matters at every width)")
            degrees[s.block] = sizes[s.block] if s.fan_in is None else s.fan_in
        if b.bias:
            degrees[None] = ("num", 1)
        result[b.name] = _shares(degrees, f"{spec.path}: block {b.name}")
    return result


def _random_dag_shares(spec: Spec, gen: RandomDag, ir: IR) -> dict[str, dict[str, float]]:
    """{block: {source block: share}} of a grouped generator: one block per layer, whose
    shares are its layer's row of `random_dag_layer_shares`."""
    shares = random_dag_layer_shares(spec, gen)
    group_of_layer = {b.layer: b.name for b in ir.blocks}
    return {block.name: {group_of_layer[j]: float(shares[block.layer, j])
                         for j in range(block.layer)}
            for block in ir.blocks if not block.is_input}


def _shares(degrees: dict, where: str) -> dict:
    """Limit shares of pieces with the given degree expressions (module docstring)."""
    far = {key: _exact(tree, FAR, where) for key, tree in degrees.items()}
    grows = {key: _exact(tree, FARTHER, where) != far[key] for key, tree in degrees.items()}
    counted = {key: far[key] for key in degrees if grows[key] or not any(grows.values())}
    total = sum(counted.values())
    return {key: float(counted.get(key, Fraction(0)) / total) for key in degrees}


def _grows(tree: expr.Expr, where: str) -> bool:
    return _exact(tree, FARTHER, where) != _exact(tree, FAR, where)


def _exact(tree: expr.Expr, width: int, where: str) -> Fraction:
    value = expr.exact(tree, width, where)
    if value <= 0:
        raise DagcError(f"{where}: the size does not stay positive as width grows, so the "
                        "network has no infinite-width limit")
    return value
