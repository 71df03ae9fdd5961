"""Load a generated module and wrap it as a `CompiledNet` with checked arguments."""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import ModuleType

import networkx as nx
import numpy as np

from .arguments import check_seed
from .backend import cache
from .backend import render as codegen
from .backend.cache import cache_dir, load_module  # noqa: F401 - public API, re-exported
from .errors import DagcError
from .frontend import sources, spec
from .ir import graph, limits
from .ir.neurons import NeuronIR


def compile(arch: str | Path | dict | nx.DiGraph, width: int | None = None,
            graph_seed: int | None = None, directory: str | Path | None = None,
            jit: bool = True) -> CompiledNet:
    """Compile an architecture at `width` into a `CompiledNet`: a bundled name, a file path,
    YAML text, a dict in the file's schema, or a networkx DiGraph whose nodes may carry an
    `act` attribute (hidden neurons default to tanh, outputs to identity).

    The generated module is shared by every width with the same structure, and numba's
    on-disk cache makes a second process load it instead of compiling again. With
    `jit=False` the generated functions run as plain Python (no compile; for tests and
    stepping through in a debugger).
    """
    return compile_spec(sources.to_spec(arch), width, graph_seed, directory, jit)


def compile_spec(architecture: spec.Spec, width: int | None = None,
                 graph_seed: int | None = None, directory: str | Path | None = None,
                 jit: bool = True) -> CompiledNet:
    """As `compile`, from an already parsed `Spec` (sweeps carry the file text)."""
    ir, path = generate(architecture, width, graph_seed, directory)
    return CompiledNet(ir, cache.load_module(path, jit))


def generate(architecture: spec.Spec, width: int | None = None, graph_seed: int | None = None,
             directory: str | Path | None = None) -> tuple[graph.IR | NeuronIR, Path]:
    """The IR of `architecture` at `width` and its module's path, written if needed: per-block
    code for block files; for neuron-level graphs (`graph.uses_neuron_path`), the graph as data
    and the shared module of its activation set (docs/design.md, "Neuron-level graphs")."""
    if graph.uses_neuron_path(architecture):
        ir = graph.build_neurons(architecture, width, graph_seed)
        return ir, codegen.write_neuron_module(ir.acts, directory or cache.cache_dir())
    ir = graph.build(architecture, width, graph_seed)  # errors before the cache is touched
    return ir, cache.write_module(ir, directory or cache.cache_dir())


def layout_pieces(layout, w) -> dict:
    """{(src, dst): the slice of the flat vector `w` that holds that piece, in its shape} for
    every entry of a network's `layout`. `w` may be any array with slicing and reshape (numpy,
    PyTorch, JAX), so `dagc.export` splits a framework's vector the same way."""
    # math.prod, not np.prod: this runs on every call of an exported function of w
    return {(src, dst): w[offset:offset + math.prod(shape)].reshape(shape)
            for src, dst, _, offset, shape in layout}


class CompiledNet:
    """A compiled architecture at one width: exact forward pass and derivatives in float64.

    Attributes: `width` (the file's width parameter), `width_m` (the paper's width: minimum
    in-degree outside layers 0 and 1), `depth`, `n_params`, `n_in`, `n_out`, `input_names`
    and `output_names` (one per column of X and of the outputs: `head[1]`), `layers`
    (block name -> layer), `layout` (docs/design.md, parameter layout), `sources` (sparse
    index arrays), `module` (the generated module) and `ir`.
    """

    def __init__(self, ir: graph.IR, module: ModuleType):
        self.ir = ir
        self.module = module
        self.name = ir.name
        self.width = ir.width
        self.width_m = ir.width_m
        self.depth = ir.depth
        self.n_params = ir.n_params
        self.n_in = ir.n_in
        self.n_out = ir.n_out
        self.input_names = ir.input_names
        self.output_names = ir.output_names
        self._limit_shares = None  # on first use: compiling must not fail without a limit
        if isinstance(ir, NeuronIR):  # the shared neuron module: the graph is data
            self.layers, self.layout, self.sources = ir.layers, ir.layout, ir.sources
            self.factored_size = ir.factored_size
            self._args = ir.kernel_args
            return
        self.factored_size = sum(block.size for _, block in ir.factored_blocks)
        self.layers = {b.name: b.layer for b in ir.blocks}
        self.layout = tuple((p.src, p.dst, p.kind, p.offset, p.shape) for p in ir.layout)
        self.sources = {(c.src, c.dst): _sources(c) for c in ir.connections if c.kind != "dense"}
        sparse = [c for c in ir.connections if c.kind != "dense"]
        self._args = (
            np.array([b.size for b in ir.blocks], np.int64),
            _neuron_scales(ir),
            tuple(c.indptr for c in sparse),
            tuple(c.indices for c in sparse),  # uint32 (see graph.Connection): no copy
        )

    def __repr__(self) -> str:
        return (f"CompiledNet({self.name!r}, width={self.width}, width_m={self.width_m}, "
                f"depth={self.depth}, n_params={self.n_params})")

    def init(self, seed: int = 0) -> np.ndarray:
        """Weights i.i.d. N(0, 1) (NTK parameterization), shape (P,), from `seed`."""
        check_seed(seed)
        _check_memory(self.n_params, f"the {self.n_params:,} parameters of {self.name}")
        return np.random.default_rng(seed).standard_normal(self.n_params)

    def forward(self, w: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Outputs (n, n_out) at the rows of X (n, n_in)."""
        return self.module.forward(self._w(w), self._batch(X, "X"), *self._args)

    def vjp(self, w: np.ndarray, X: np.ndarray, C: np.ndarray,
            out: np.ndarray | None = None) -> np.ndarray:
        """sum_i C[i] . df(X[i])/dw, shape (P,); C has shape (n, n_out).

        Pass `out` (P,) to reuse a buffer across calls (faster for large P).
        """
        return self._sweeps(w, X, C, "C", False, out)[1]

    def mse_gradient(self, w: np.ndarray, X: np.ndarray, Y: np.ndarray,
                     out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The outputs f(X) (n, n_out) and the gradient (P,) of the mean squared error
        L(w) = 1/(2n) sum_i |f(X[i]) - Y[i]|^2, from one forward and one backward sweep (a
        `forward` and then a `vjp` with C = (f(X) - Y) / n would sweep forward twice).

        Pass `out` (P,) to reuse a buffer across calls, as in `vjp`.
        """
        return self._sweeps(w, X, Y, "Y", True, out)

    def _sweeps(self, w, X, C, name: str, fit: bool, out) -> tuple[np.ndarray, np.ndarray]:
        """(f(X), gradient) from the generated `backward`: C (n, n_out), called `name` in
        errors, holds the outputs' adjoints, or with `fit` the regression targets."""
        X = self._batch(X, "X")
        C = _float_array(C, name, 2)
        if C.shape != (X.shape[0], self.n_out):
            raise DagcError(f"{name}: expected shape {(X.shape[0], self.n_out)}, got {C.shape}")
        out = self._out(out)
        F = np.empty((len(X), self.n_out))
        self.module.backward(self._w(w), X, C, fit, False, out.reshape(1, -1), F, *self._args)
        return F, out

    def jacobian(self, w: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Per-sample Jacobian (n, n_out, P)."""
        X = self._batch(X, "X")
        w = self._w(w)
        _check_memory(X.shape[0] * self.n_out * self.n_params, "the Jacobian")
        J = np.empty((X.shape[0], self.n_out, self.n_params))
        for k in range(self.n_out):  # one backward sweep per output, one row per sample
            C = np.zeros((X.shape[0], self.n_out))
            C[:, k] = 1.0
            J[:, k] = self.module.backward(w, X, C, False, True,
                                           np.zeros((len(X), self.n_params)),
                                           np.empty((len(X), self.n_out)), *self._args)
        return J

    def hvp(self, w: np.ndarray, x: np.ndarray, v: np.ndarray, output: int = 0,
            out: np.ndarray | None = None) -> np.ndarray:
        """Hessian of output `output` at the single input x (n_in,), times v (P,).

        Pass `out` (P,) to reuse a buffer across calls (faster for large P).
        """
        x = _float_array(x, "x", 1)
        if x.shape != (self.n_in,):
            raise DagcError(f"x: expected shape ({self.n_in},), got {x.shape}")
        v = self._w(v, "v")
        if isinstance(output, bool) or not isinstance(output, (int, np.integer)) \
                or not 0 <= output < self.n_out:
            raise DagcError(f"output: expected an integer in [0, {self.n_out}), got {output!r}")
        return self.module.hvp(self._w(w), x, v, int(output), self._out(out), *self._args)

    def factored_hessian(self, w: np.ndarray, X: np.ndarray,
                         outputs: np.ndarray | None = None) -> FactoredHessian:
        """The Hessians of output ``outputs[i]`` (default 0) at the inputs ``X[i]`` (n, n_in),
        as one batched operator on the coordinates where they act (see `FactoredHessian`)."""
        X = self._batch(X, "X")
        if outputs is None:
            outputs = np.zeros(len(X), np.int64)
        if not (isinstance(outputs, np.ndarray) and outputs.shape == (len(X),)
                and np.issubdtype(outputs.dtype, np.integer)) \
                or np.any(outputs < 0) or np.any(outputs >= self.n_out):
            raise DagcError(f"outputs: expected an integer array of shape ({len(X)},) with "
                            f"values in [0, {self.n_out})")
        w = self._w(w)
        no_preactivation = np.full(len(X), -1, np.int64)
        state = self.module.hessian_state(w, X, outputs.astype(np.int64), no_preactivation,
                                          *self._args)
        return FactoredHessian(self, w, state)

    def preactivation_hessian(self, w: np.ndarray, X: np.ndarray, blocks: list[str],
                              neurons: np.ndarray) -> FactoredHessian:
        """As `factored_hessian`, for the pre-activation z (before the activation) of neuron
        ``neurons[i]`` of block ``blocks[i]`` at ``X[i]`` instead of an output: the Hessians
        of Theorem 3.8 (docs/design.md)."""
        X = self._batch(X, "X")
        if isinstance(self.ir, NeuronIR):
            return self._neuron_preactivation_hessian(w, X, blocks, neurons)
        computed = [b for b in self.ir.blocks if not b.is_input]
        index = {b.name: k for k, b in enumerate(computed)}
        if len(blocks) != len(X) or any(name not in index for name in blocks):
            raise DagcError(f"blocks: expected {len(X)} names of computed blocks, one of "
                            f"{', '.join(index)}")
        sizes = np.array([computed[index[name]].size for name in blocks])
        if not (isinstance(neurons, np.ndarray) and neurons.shape == (len(X),)
                and np.issubdtype(neurons.dtype, np.integer)) \
                or np.any(neurons < 0) or np.any(neurons >= sizes):
            raise DagcError(f"neurons: expected an integer array of shape ({len(X)},), each "
                            "in [0, size of its block)")
        w = self._w(w)
        block_index = np.array([index[name] for name in blocks], np.int64)
        state = self.module.hessian_state(w, X, neurons.astype(np.int64), block_index,
                                          *self._args)
        return FactoredHessian(self, w, state)

    def _neuron_preactivation_hessian(self, w, X, blocks, numbers) -> FactoredHessian:
        """A neuron graph's `preactivation_hessian`: its one block is "neurons", and
        numbers[i] is a computed neuron's number (`ir.names[numbers[i]]` its node id)."""
        if len(blocks) != len(X) or any(name != "neurons" for name in blocks):
            raise DagcError(f'blocks: expected {len(X)} times "neurons" (a neuron graph\'s '
                            "one block)")
        if not (isinstance(numbers, np.ndarray) and numbers.shape == (len(X),)
                and np.issubdtype(numbers.dtype, np.integer)) \
                or np.any(numbers < self.ir.n_in) or np.any(numbers >= self.ir.n_neurons):
            raise DagcError(f"neurons: expected an integer array of shape ({len(X)},), each "
                            f"a computed neuron's number in [{self.ir.n_in}, "
                            f"{self.ir.n_neurons})")
        w = self._w(w)
        state = self.module.hessian_state(w, X, numbers.astype(np.int64),
                                          np.zeros(len(X), np.int64), *self._args)
        return FactoredHessian(self, w, state)

    def ntk(self, w: np.ndarray, X1: np.ndarray, X2: np.ndarray | None = None) -> np.ndarray:
        """Empirical NTK: (n1, n2) for one output, else (n1, n2, n_out, n_out)."""
        X1 = self._batch(X1, "X1")
        same = X2 is None  # the kernel of X1 with itself: one sweep over X1, not two
        X2 = X1 if same else self._batch(X2, "X2")
        K = self.module.ntk(self._w(w), X1, X2, same, *self._args)
        if self.n_out == 1:
            return K[0, 0]
        return np.ascontiguousarray(K.transpose(2, 3, 0, 1))

    def nngp_limit(self, X1: np.ndarray, X2: np.ndarray | None = None) -> np.ndarray:
        """The infinite-width NNGP E[f_k(x) f_k(x')] of every output k at the pairs (X1[i],
        X2[j]), shape (n1, n2, n_out); X2 defaults to X1 (docs/design.md, infinite-width
        kernels). Raises DagcError for a network without a limit."""
        return self._limit_kernels(X1, X2)[0]

    def ntk_limit(self, X1: np.ndarray, X2: np.ndarray | None = None) -> np.ndarray:
        """The infinite-width NTK of every output, shape (n1, n2, n_out): the limit of `ntk`
        on its output diagonal (distinct outputs are uncorrelated in the limit)."""
        return self._limit_kernels(X1, X2)[1]

    def _limit_kernels(self, X1, X2) -> tuple[np.ndarray, np.ndarray]:
        """(NNGP, NTK) from the generated `limits` pass; both come from one recursion. On the
        neuron path the pass is the shared module's, with the generator's layer shares and
        activation codes as data (`limits.neuron_limit`)."""
        X1 = self._batch(X1, "X1")
        same = X2 is None
        X2 = X1 if same else self._batch(X2, "X2")
        if isinstance(self.ir, NeuronIR):
            if self._limit_shares is None:
                self._limit_shares = limits.neuron_limit(self.ir)
            shares, layer_codes = self._limit_shares
            # the pass keeps two (n1, n2) kernels per layer: every layer feeds all later ones
            _check_memory(2 * shares.shape[0] * len(X1) * len(X2),
                          f"the limit kernels of {shares.shape[0]} layers")
            return self.module.limits(X1, X2, same, shares, layer_codes, self.n_out)
        if self._limit_shares is None:
            self._limit_shares = limits.limit_shares(self.ir)
        return self.module.limits(X1, X2, same, self._args[0], self._limit_shares)

    def to_torch(self, w: np.ndarray):
        """A `torch.nn.Module` computing `forward(w, X)` (see `dagc.export.to_torch`)."""
        from . import export

        return export.to_torch(self, self._w(w))

    def to_jax(self, w: np.ndarray):
        """`(f, params)` with `f(params, X)` = `forward(w, X)` (see `dagc.export.to_jax`)."""
        from . import export

        return export.to_jax(self, self._w(w))

    def unflatten(self, w: np.ndarray) -> dict:
        """The parameter pieces as views: {(src, dst): array}, with (None, dst) for biases."""
        return layout_pieces(self.layout, self._w(w))

    def _w(self, w, name: str = "w") -> np.ndarray:
        w = _float_array(w, name, 1)
        if w.shape != (self.n_params,):
            raise DagcError(f"{name}: expected shape ({self.n_params},), got {w.shape}")
        return w

    def _out(self, out) -> np.ndarray:
        """A (P,) result buffer: the caller's, checked, or a new one (numpy's, not numba's:
        see the generated `backward`)."""
        if out is None:
            return np.empty(self.n_params)
        if not (isinstance(out, np.ndarray) and out.dtype == np.float64
                and out.shape == (self.n_params,) and out.flags.c_contiguous
                and out.flags.writeable):  # numba refuses a read-only one with a TypingError
            raise DagcError(f"out: expected a writable contiguous float64 array of shape "
                            f"({self.n_params},)")
        return out

    def _batch(self, X, name: str) -> np.ndarray:
        X = _float_array(X, name, 2)
        if X.shape[1] != self.n_in or X.shape[0] == 0:
            raise DagcError(f"{name}: expected shape (n, {self.n_in}) with n >= 1, got {X.shape}")
        return X


class FactoredHessian:
    """Hessians of a network with respect to its weights, one per row, in factored coordinates.

    The Hessian piece of a connection A -> B is tg_B a_A^T + g_B t_A^T, where a_A and the
    adjoint g_B are fixed by the point (w, x, output) and only tg_B, t_A depend on the vector
    v: every H v, and so every eigenvector with a nonzero eigenvalue, is U c for coordinates
    c = (p_B for every block, q_A for every block that feeds a connection). These are
    r = `size` numbers instead of P (a few per neuron instead of one per edge).

    `apply(C)` maps the coordinates C (rows, r) of v = U C to those of H v, HC, and also
    returns GC = U^T U C, the Gram matrix applied to C, so that |v|^2 = C . GC: a Krylov method
    on (HC, GC) works in r dimensions and reads each weight matrix twice per step, with every
    row of a batch sharing the reads. HC is self-adjoint for the inner product C . GC.
    """

    def __init__(self, net: CompiledNet, w: np.ndarray, state: tuple):
        self.net = net
        self.rows = len(state[0])
        self.size = net.factored_size
        self._w = w
        self._state = state

    def apply(self, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(HC, GC) for coordinates C (rows, size), one Hessian per row."""
        C = _float_array(C, "C", 2)
        if C.shape != (self.rows, self.size):
            raise DagcError(f"C: expected shape {(self.rows, self.size)}, got {C.shape}")
        return self.net.module.hvp_factored(self._w, self._state, C, *self.net._args)

    def select(self, rows: np.ndarray) -> FactoredHessian:
        """The operator of a subset of the rows (a Krylov method drops converged ones)."""
        return FactoredHessian(self.net, self._w,
                               tuple(np.ascontiguousarray(a[rows]) for a in self._state))


def _neuron_scales(ir: graph.IR) -> tuple[np.ndarray, ...]:
    """Per computed block, each neuron's scale d_v^-1/2 (docs/design.md, The model); output
    neurons use d_v^-p with p the file's `output_scale` (1/2 unless it says otherwise)."""
    powers = (ir.spec.output_scale if b.is_output else 0.5 for b in ir.blocks)
    return tuple(_scale(b.in_degree.astype(np.float64), p)
                 for b, p in zip(ir.blocks, powers, strict=True) if not b.is_input)


def _scale(in_degree: np.ndarray, power: float) -> np.ndarray:
    # 1/sqrt for p = 1/2: the exact expression every stored result was computed with
    return 1.0 / np.sqrt(in_degree) if power == 0.5 else in_degree ** -power


def _float_array(value, name: str, ndim: int) -> np.ndarray:
    """`value` as a C-contiguous float64 array: itself if it is one, else one copy (an array
    of any integer or real dtype, or nested lists read into an array first)."""
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except (ValueError, TypeError) as err:  # ragged lists
            raise DagcError(f"{name}: expected an array of numbers: {err}") from None
    if value.dtype.kind not in "iuf":
        raise DagcError(f"{name}: expected real numbers, got dtype {value.dtype}")
    if value.ndim != ndim:
        raise DagcError(f"{name}: expected {ndim} dimension(s), got shape {value.shape}")
    return np.asarray(value, dtype=np.float64, order="C")


def _sources(conn: graph.Connection):
    """Block sparse: (size_dst, fan_in) indices; neuron-graph ragged: (indptr, indices).
    Read-only views: the kernels read the same arrays."""
    if conn.kind == "sparse":
        return _read_only(conn.indices.reshape(conn.shape))
    return _read_only(conn.indptr), _read_only(conn.indices)


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


def _check_memory(n_floats: int, what: str) -> None:
    needed = 8 * n_floats
    available = _available_memory()
    if available is not None and needed > available:
        raise DagcError(f"{what} need {needed / 1e9:.1f} GB but only {available / 1e9:.1f} GB "
                        "of memory is available")


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
