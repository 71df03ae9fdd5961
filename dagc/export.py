"""A compiled network in PyTorch or JAX: the same function of the same weights, for training
loops, autodiff checks and interop (docs/design.md, Python API).

One plan, read off the IR, says what every block computes; one evaluator runs it with a
framework's primitives (`_Ops`), so the PyTorch and JAX versions cannot drift apart. Each
block computes z = scale * (sum over its connections of W a_src + bias), then
a = act(z) + the blocks it adds; activations come from the registry's array forms
(`Activation.array(z, xp)`). Parameters are keyed "SRC->DST" and "bias->DST" and listed in
the flat vector's layout order (`CompiledNet.layout`), so flattening them in order gives
`w` and their gradients give `net.vjp`; `split_weights` goes from a flat `w` (in any of the
frameworks) to those pieces. A neuron-level IR (`dagc.ir.neurons`) runs through its edge
view: one step per run of neurons, one piece "neurons->neurons" of every edge.

Sparse and ragged connections run one of two ways (`sparse=`): "gather" indexes each
neuron's sources and sums (work and memory in proportion to the edges), "masked" scatters the
weights into a dense (size_dst, size_src) matrix and multiplies (a BLAS product: faster while
the connection is not very sparse, memory in proportion to size_dst * size_src).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .errors import DagcError
from .ops.activations import ACTIVATIONS
from .runtime import layout_pieces

if TYPE_CHECKING:
    from .runtime import CompiledNet


@dataclass(frozen=True)
class _Term:
    """One connection into a block: its parameter key, source and sparsity pattern."""

    key: str
    src: str
    kind: str  # "dense" | "sparse" (index (n_dst, k)) | "ragged" (rows and cols per edge)
    index: tuple[np.ndarray, ...]
    span: tuple[int, int] | None = None  # the term's weights: params[key][span], else all

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of a sparse or ragged term: weight e joins source neuron cols[e] to
        destination neuron rows[e]; a sparse term's rows are (n_dst, 1), broadcasting against
        its (n_dst, k) cols and weights."""
        if self.kind == "sparse":
            return np.arange(len(self.index[0]))[:, None], self.index[0]
        return self.index


@dataclass(frozen=True)
class _Step:
    """What one computed block does, in topological order."""

    name: str
    act: str
    scale: np.ndarray  # (size,): d^-1/2 (d^-p for outputs: the file's output_scale)
    size: int
    terms: tuple[_Term, ...]
    bias: str | None  # parameter key of the bias
    add: tuple[str, ...]
    extends: str | None = None  # a buffer of all activations so far, appended to (neurons)


@dataclass(frozen=True)
class _Plan:
    inputs: tuple[tuple[str, int], ...]  # (block, size) in the column order of X
    steps: tuple[_Step, ...]
    outputs: tuple[str, ...]  # in column order
    output_columns: np.ndarray | None = None  # neurons: the outputs' columns of the buffer


def parameter_key(src: str | None, dst: str) -> str:
    """The name of a layout piece: "SRC->DST", or "bias->DST" for a bias."""
    return f"{'bias' if src is None else src}->{dst}"


def _plan(net: CompiledNet) -> _Plan:
    ir = net.ir
    if not hasattr(ir, "blocks"):
        return _neuron_plan(ir)
    from .runtime import _neuron_scales  # the scales the compiled kernels take: one home

    steps = []
    computed = [b for b in ir.blocks if not b.is_input]
    for block, scale in zip(computed, _neuron_scales(ir), strict=True):
        terms = tuple(_term(c) for c in ir.incoming(block.name))
        steps.append(_Step(block.name, block.act, scale, block.size, terms,
                           parameter_key(None, block.name) if block.bias else None, block.add))
    return _Plan(tuple((b.name, b.size) for b in ir.inputs), tuple(steps),
                 tuple(b.name for b in ir.outputs))


def _neuron_plan(ir) -> _Plan:
    """A neuron-level IR (`dagc.ir.neurons`) through its edge view: one step per run of
    neurons with one layer and activation, reading the buffer of every earlier neuron (inputs
    first) and appending to it; the weights are one piece, the edges in CSR order."""
    acts = list(ACTIVATIONS)
    key = parameter_key(*ir.layout[0][:2])
    steps = []
    for k, (first, end, code) in enumerate(ir.runs.tolist()):
        lo, hi = int(ir.indptr[first]), int(ir.indptr[end])
        rows = np.repeat(np.arange(end - first), np.diff(ir.indptr[first:end + 1]))
        term = _Term(key, "neurons", "ragged", (rows, ir.indices[lo:hi].astype(np.int64)),
                     (lo, hi))
        steps.append(_Step(f"run{k}", acts[code], ir.scale[first:end], end - first, (term,),
                           None, (), extends="neurons"))
    return _Plan((("neurons", ir.n_in),), tuple(steps), (), ir.outputs.astype(np.int64))


def _term(conn) -> _Term:
    key = parameter_key(conn.src, conn.dst)
    indices = None if conn.indices is None else conn.indices.astype(np.int64)
    if conn.kind == "dense":
        return _Term(key, conn.src, "dense", ())
    if conn.kind == "sparse":
        return _Term(key, conn.src, "sparse", (indices.reshape(conn.shape),))
    rows = np.repeat(np.arange(len(conn.indptr) - 1), np.diff(conn.indptr))
    return _Term(key, conn.src, "ragged", (rows, indices))


SparseMode = Literal["gather", "masked"]
SPARSE_MODES = ("gather", "masked")


def split_weights(net: CompiledNet, w) -> dict[str, Any]:
    """The flat weight vector `w` as {"SRC->DST" or "bias->DST": piece of its layout shape},
    in layout order: the parameters `to_torch` and `to_jax` take.

    `w` may be a numpy, PyTorch or JAX vector of `net.n_params` entries; the pieces are its
    slices (views where the framework has them), so a function of the pieces is a
    differentiable function of `w`, e.g.
    `torch.func.functional_call(module, {"weights." + k: p for k, p in
    split_weights(net, w).items()}, (X,))` or `f(split_weights(net, w), X)`. Concatenating
    the pieces' ravels in order gives `w` back.
    """
    return {parameter_key(src, dst): piece
            for (src, dst), piece in layout_pieces(net.layout, w).items()}


def _pieces(net: CompiledNet, w: np.ndarray) -> dict[str, np.ndarray]:
    """The weights `w` as {key: array of the piece's shape}, in layout order (copies)."""
    return {key: piece.copy() for key, piece in split_weights(net, w).items()}


def _sparse_mode(sparse: str) -> SparseMode:
    if sparse not in SPARSE_MODES:
        raise DagcError(f"sparse: expected one of {', '.join(SPARSE_MODES)}, got {sparse!r}")
    return sparse


def _evaluate(plan: _Plan, params, X, ops: _Ops, index: dict, sparse: SparseMode):
    """The network's outputs at the rows of X, in any framework `ops` implements; `index`
    holds the sparsity patterns converted to that framework's integer arrays (`_index`)."""
    values, column = {}, 0
    for name, size in plan.inputs:
        values[name] = X[:, column:column + size]
        column += size
    for step in plan.steps:
        z = None
        for term in step.terms:
            a, W = values[term.src], params[term.key]
            if term.span is not None:
                W = W[term.span[0]:term.span[1]]
            pattern = index[step.name, term.key]
            if term.kind == "dense":
                part = a @ W.T
            elif sparse == "masked":
                rows, cols = pattern
                part = a @ ops.scatter(W, rows, cols, (step.size, a.shape[1])).T
            elif term.kind == "sparse":
                # einsum, not multiply-and-sum: XLA differentiates it as one batched product
                part = ops.einsum("njk,jk->nj", a[:, pattern[0]], W)
            else:
                rows, cols = pattern
                part = ops.segment_sum(a[:, cols] * W, rows, step.size)
            z = part if z is None else z + part
        if step.bias is not None:
            z = z + params[step.bias]
        a = ACTIVATIONS[step.act].array(z * index[step.name], ops)
        for src in step.add:
            a = a + values[src]
        values[step.name] = a
        if step.extends is not None:
            values[step.extends] = ops.concatenate([values[step.extends], a])
    if plan.output_columns is not None:
        return values[plan.inputs[0][0]][:, index["outputs"]]
    return ops.concatenate([values[name] for name in plan.outputs])


class _Ops(SimpleNamespace):
    """A framework's primitives: the activations' (tanh, sigmoid, softplus, erf, sin,
    maximum), `segment_sum(values (n, E), rows (E,), size)` summing columns into rows
    (rows ascending: edges are in CSR order),
    `scatter(values, rows, cols, shape)` a zero matrix with `values` added at (rows, cols)
    (broadcast), `einsum` and `concatenate(list of (n, k))` along columns."""


def _index(plan: _Plan, convert, sparse: SparseMode) -> dict:
    """Sparsity patterns per (step, parameter key) (`_Term.index` to gather, `_Term.edges()`
    to scatter), scales per step and the neuron outputs' columns, as framework arrays."""
    index = {(s.name, t.key): tuple(convert(i) for i in (
        t.edges() if sparse == "masked" and t.kind != "dense" else t.index))
        for s in plan.steps for t in s.terms}
    index.update({s.name: convert(s.scale) for s in plan.steps})
    if plan.output_columns is not None:
        index["outputs"] = convert(plan.output_columns)
    return index


def to_torch(net: CompiledNet, w, sparse: SparseMode = "gather") -> Any:
    """A `torch.nn.Module` (float64) computing `net.forward(w, X)` as `module(X)`.

    Its parameters are the pieces of `w` in layout order (named "SRC->DST", "bias->DST" in
    its ParameterDict `weights`), so `torch.cat([p.grad.ravel() for p in
    module.parameters()])` after a backward pass of `(C * module(X)).sum()` equals
    `net.vjp(w, X, C)`; `module.forward_with(params, X)` computes it with other weights.
    `sparse` ("gather" or "masked") says how sparse and ragged connections run (module
    docstring). Needs PyTorch (`dagc[torch]`).
    """
    torch = _import("torch", "torch")
    sparse = _sparse_mode(sparse)
    plan = _plan(net)
    ops = _Ops(tanh=torch.tanh, sigmoid=torch.sigmoid,
               softplus=torch.nn.functional.softplus, erf=torch.erf, sin=torch.sin,
               maximum=lambda z, floor: torch.clamp(z, min=floor),
               segment_sum=lambda v, rows, size: v.new_zeros((v.shape[0], size))
               .index_add(1, rows, v),
               scatter=lambda v, rows, cols, shape: v.new_zeros(shape)
               .index_put((rows, cols), v, accumulate=True),
               einsum=torch.einsum, concatenate=lambda parts: torch.cat(parts, dim=1))
    index = _index(plan, torch.from_numpy, sparse)

    class DagcModule(torch.nn.Module):
        """The network `net.name` with trainable float64 weights."""

        def __init__(self):
            super().__init__()
            # pairs, not a dict: ParameterDict sorts a dict's keys, losing the layout order
            self.weights = torch.nn.ParameterDict(
                [(key, torch.nn.Parameter(torch.from_numpy(piece)))
                 for key, piece in _pieces(net, w).items()])

        def forward(self, X):
            return _evaluate(plan, self.weights, X, ops, index, sparse)

        def forward_with(self, params, X):
            """The network with `params` ({key: tensor}, e.g. `split_weights(net, w)`) in
            place of its own weights: `to_jax`'s `f(params, X)`, a pure function for
            torch.func transforms without `functional_call`'s swap of every parameter."""
            return _evaluate(plan, params, X, ops, index, sparse)

    module = DagcModule()
    module.input_names, module.output_names = net.input_names, net.output_names
    return module


def to_jax(net: CompiledNet, w, sparse: SparseMode = "gather") -> tuple[Any, dict]:
    """`(f, params)` with `f(params, X)` equal to `net.forward(w, X)`; `params` maps
    "SRC->DST" and "bias->DST" to the pieces of `w` (JAX arrays, float64: x64 is enabled).
    `sparse` ("gather" or "masked") says how sparse and ragged connections run (module
    docstring). Needs JAX (`dagc[jax]`)."""
    jax = _import("jax", "jax")
    sparse = _sparse_mode(sparse)
    jax.config.update("jax_enable_x64", True)  # float64, as the compiled network
    jnp, special = _import("jax.numpy", "jax"), _import("jax.scipy.special", "jax")
    plan = _plan(net)
    ops = _Ops(tanh=jnp.tanh, sigmoid=jax.nn.sigmoid, softplus=jax.nn.softplus,
               erf=special.erf, sin=jnp.sin, maximum=jnp.maximum,
               segment_sum=lambda v, rows, size: jax.ops.segment_sum(
                   v.T, rows, size, indices_are_sorted=True).T,
               scatter=lambda v, rows, cols, shape: jnp.zeros(shape, v.dtype)
               .at[rows, cols].add(v),
               einsum=jnp.einsum, concatenate=lambda parts: jnp.concatenate(parts, axis=1))
    index = _index(plan, jnp.asarray, sparse)

    def f(params: dict, X):
        return _evaluate(plan, params, jnp.asarray(X), ops, index, sparse)

    return f, {key: jnp.asarray(piece) for key, piece in _pieces(net, w).items()}


def _import(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DagcError(f"{module} is not installed (pip install 'dagc[{extra}]')") from None
