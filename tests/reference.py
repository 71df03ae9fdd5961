"""An independent PyTorch (float64) reference of a compiled network, at the neuron level.

Built only from public facts of a `CompiledNet` (docs/design.md, The model; Parameter layout;
Python API):

- `net.layout`: (src, dst, kind, offset, shape) per parameter piece, src None for a bias;
- `net.sources[(src, dst)]`: the source indices of sparse connections ((size_dst, fan_in)
  int arrays) and of neuron-graph ragged ones (CSR (indptr, indices) over destination rows);
- `net.ir.blocks`: name, size, act ("" for inputs), add and is_output, in topological order.

From these it builds an explicit edge list (destination neuron, source neuron, parameter
index) and counts every neuron's in-degree d_v from it (plus one for a bias): nothing of the
compiler's own in-degrees, scales or generated code is used. The model is then evaluated edge
by edge:

    z_v = d_v^(-1/2) * sum_{u -> v} w_uv a_u   (+ the bias weight times 1)
    a_v = act_v(z_v) + sum of the add-skip sources' a_v

and every derivative comes from PyTorch's autograd (torch.func).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

_SQRT1_2 = 1.0 / math.sqrt(2.0)

ACTIVATIONS = {
    "identity": lambda z: z,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    # log(1 + e^z) exactly; F.softplus switches to the identity above a threshold.
    "softplus": lambda z: torch.logaddexp(z, torch.zeros_like(z)),
    "erf": torch.erf,
    "gelu": lambda z: 0.5 * z * (1.0 + torch.erf(z * _SQRT1_2)),  # exact erf form
    "sin": torch.sin,
    "relu": torch.relu,
}


@dataclass(frozen=True)
class Edges:
    """The weighted edges of one layout piece: src_index -1 means the constant-1 bias neuron."""

    src: str | None
    dst: str
    dst_index: np.ndarray  # (E,) int64, neuron of dst
    src_index: np.ndarray  # (E,) int64, neuron of src (or -1)
    param: np.ndarray  # (E,) int64, index into w


@dataclass(frozen=True)
class BlockInfo:
    name: str
    size: int
    act: str
    add: tuple[str, ...]
    is_output: bool
    neurons: tuple | None


def edge_list(net) -> list[Edges]:
    """Every parameter of `net` as an explicit edge, from `net.layout` and `net.sources`."""
    out = []
    for src, dst, kind, offset, shape in net.layout:
        if kind == "bias":
            (n_dst,) = shape
            dst_index = np.arange(n_dst)
            src_index = np.full(n_dst, -1)
            param = offset + np.arange(n_dst)
        elif kind == "dense":
            n_dst, n_src = shape
            dst_index = np.repeat(np.arange(n_dst), n_src)
            src_index = np.tile(np.arange(n_src), n_dst)
            param = offset + np.arange(n_dst * n_src)
        elif kind == "sparse":
            idx = np.asarray(net.sources[(src, dst)])
            assert idx.shape == tuple(shape), (src, dst, idx.shape, shape)
            n_dst, k = shape
            dst_index = np.repeat(np.arange(n_dst), k)
            src_index = idx.reshape(-1)
            param = offset + np.arange(n_dst * k)
        elif kind == "ragged":
            indptr, indices = (np.asarray(a) for a in net.sources[(src, dst)])
            (n_edges,) = shape
            assert indices.shape == (n_edges,) and indptr[-1] == n_edges, (src, dst)
            dst_index = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            src_index = indices
            param = offset + np.arange(n_edges)
        else:
            raise AssertionError(f"unknown kind {kind!r}")
        out.append(Edges(src, dst, dst_index.astype(np.int64), src_index.astype(np.int64),
                         param.astype(np.int64)))
    return out


def neuron_blocks(ir) -> tuple[list[BlockInfo], list[Edges]]:
    """A neuron-level IR as blocks of one neuron each (named n0, n1, ... in the IR's order,
    which is topological) and one `Edges` per edge, read from its edge view: the structure
    only, every formula stays this file's own."""
    from dagc.ir.neurons import CODES, INPUT

    act_of = {code: name for name, code in CODES.items()} | {INPUT: ""}
    outputs = set(ir.outputs.tolist())
    blocks = [BlockInfo(f"n{i}", 1, act_of[int(code)], (), i in outputs, (name,))
              for i, (name, code) in enumerate(zip(ir.names, ir.codes.tolist(), strict=True))]
    zero = np.zeros(1, np.int64)
    edges = [Edges(f"n{s}", f"n{t}", zero, zero, np.array([e], np.int64))
             for e, (s, t) in enumerate(ir.edges().tolist())]
    return blocks, edges


class Reference:
    """The network of a `CompiledNet`, re-implemented neuron by neuron in PyTorch."""

    def __init__(self, net):
        self.n_params = int(net.n_params)
        if hasattr(net.ir, "blocks"):
            self.blocks = [BlockInfo(b.name, int(b.size), b.act, tuple(b.add),
                                     bool(b.is_output), b.neurons) for b in net.ir.blocks]
            self.edges = edge_list(net)
        else:
            self.blocks, self.edges = neuron_blocks(net.ir)
        by_name = {b.name: b for b in self.blocks}
        self.incoming: dict[str, list[Edges]] = {b.name: [] for b in self.blocks}
        for e in self.edges:
            self.incoming[e.dst].append(e)
        # in-degrees by counting edges, bias included
        self.degree = {}
        for b in self.blocks:
            if b.act == "":
                assert not self.incoming[b.name], f"input {b.name} has incoming edges"
                continue
            counts = np.zeros(b.size, np.int64)
            for e in self.incoming[b.name]:
                assert e.src is None or e.src in by_name, e.src
                np.add.at(counts, e.dst_index, 1)
            assert counts.min() > 0, f"a neuron of {b.name} has no incoming edge"
            self.degree[b.name] = counts
        self.scale = {name: torch.from_numpy(1.0 / np.sqrt(d)) for name, d in self.degree.items()}
        self.inputs = [b for b in self.blocks if b.act == ""]
        self.outputs = [b for b in self.blocks if b.is_output]
        self.n_in = sum(b.size for b in self.inputs)
        self.n_out = sum(b.size for b in self.outputs)
        self._torch_edges = {
            name: [(e.src, torch.from_numpy(e.dst_index), torch.from_numpy(e.src_index),
                    torch.from_numpy(e.param)) for e in es]
            for name, es in self.incoming.items()
        }

    def neuron_edges(self) -> list[tuple[tuple, tuple, int]]:
        """(source neuron, destination neuron, parameter) with neurons as (block, index);
        the bias neuron is (None, 0)."""
        out = []
        for e in self.edges:
            for d, s, p in zip(e.dst_index.tolist(), e.src_index.tolist(), e.param.tolist(),
                               strict=True):
                out.append(((e.src, 0) if e.src is None else (e.src, s), (e.dst, d), p))
        return out

    # --- forward --------------------------------------------------------------------------

    def _forward(self, w: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        n = X.shape[0]
        a: dict[str, torch.Tensor] = {}
        column = 0
        for b in self.blocks:
            if b.act == "":
                a[b.name] = X[:, column:column + b.size]
                column += b.size
                continue
            z = torch.zeros(n, b.size, dtype=w.dtype)
            for src, dst_index, src_index, param in self._torch_edges[b.name]:
                if src is None:
                    contribution = w[param].expand(n, -1)
                else:
                    contribution = a[src][:, src_index] * w[param]
                z = z.index_add(1, dst_index, contribution)
            value = ACTIVATIONS[b.act](z * self.scale[b.name])
            for src in b.add:
                value = value + a[src]
            a[b.name] = value
        return torch.cat([a[b.name] for b in self.outputs], dim=1)

    def _check(self, w, X=None):
        w = torch.as_tensor(np.asarray(w, np.float64))
        assert w.shape == (self.n_params,)
        if X is None:
            return w
        X = torch.as_tensor(np.asarray(X, np.float64))
        assert X.ndim == 2 and X.shape[1] == self.n_in
        return w, X

    def forward(self, w, X) -> np.ndarray:
        """(n, n_out)."""
        w, X = self._check(w, X)
        with torch.no_grad():
            return self._forward(w, X).numpy()

    def jacobian(self, w, X) -> np.ndarray:
        """(n, n_out, P)."""
        w, X = self._check(w, X)
        return torch.func.jacrev(lambda u: self._forward(u, X))(w).detach().numpy()

    def vjp(self, w, X, C) -> np.ndarray:
        """(P,) = sum_i C[i] . df(X[i])/dw, by reverse-mode autograd."""
        w, X = self._check(w, X)
        C = torch.as_tensor(np.asarray(C, np.float64))
        _, pullback = torch.func.vjp(lambda u: self._forward(u, X), w)
        return pullback(C)[0].detach().numpy()

    def _scalar(self, x: torch.Tensor, output: int):
        return lambda u: self._forward(u, x[None, :])[0, output]

    def hvp(self, w, x, v, output: int = 0) -> np.ndarray:
        """(P,) Hessian of output `output` at the single input x, times v (double backward)."""
        w, X = self._check(w, np.asarray(x)[None, :])
        v = self._check(v)
        w = w.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self._scalar(X[0], output)(w), w, create_graph=True)
        if not grad.requires_grad:  # the gradient does not depend on w: H = 0
            return np.zeros(self.n_params)
        (Hv,) = torch.autograd.grad(grad @ v, w, allow_unused=True)
        return np.zeros(self.n_params) if Hv is None else Hv.detach().numpy()

    def hessian(self, w, x, output: int = 0) -> np.ndarray:
        """(P, P) dense Hessian of output `output` at the single input x (reverse over reverse)."""
        w, X = self._check(w, np.asarray(x)[None, :])
        f = self._scalar(X[0], output)
        return torch.func.jacrev(torch.func.jacrev(f))(w).detach().numpy()

    def ntk(self, w, X1, X2) -> np.ndarray:
        """J1 J2^T: (n1, n2) with one output, else (n1, n2, n_out, n_out) indexed [i, j, k, l]."""
        J1 = self.jacobian(w, X1)
        J2 = self.jacobian(w, X2)
        K = np.einsum("ikp,jlp->ijkl", J1, J2)
        return K[:, :, 0, 0] if self.n_out == 1 else K
