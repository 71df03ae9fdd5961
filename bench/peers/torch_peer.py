"""The network in PyTorch (float64, eager, torch.func): forward under no_grad, VJP with
torch.func.vjp, HVP as torch.func.jvp of torch.func.grad (forward-over-reverse), and the NTK
as the contraction J J^T of per-example Jacobians (vmap of jacrev).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch.func import grad, jacrev, jvp, vjp, vmap

from dagc.ops.activations import ACTIVATIONS

from ..network import Description
from . import Bound

# The primitives the registry's array forms (`Activation.array(z, xp)`) are written in.
_XP = SimpleNamespace(tanh=torch.tanh, sigmoid=torch.sigmoid,
                      softplus=torch.nn.functional.softplus, erf=torch.erf, sin=torch.sin,
                      maximum=lambda z, floor: torch.clamp(z, min=floor))


class Peer:
    framework = "torch"

    def __init__(self, desc: Description, mode: str):
        self.desc = desc
        self.mode = mode
        self.name = "torch" if mode == "dense" else f"torch-{mode}"
        self.aux = []
        for block in desc.blocks:
            indices = []
            for conn in block.conns:
                if conn.kind == "dense":
                    indices.append(None)
                elif mode == "masked":
                    flat = conn.rows * conn.size_src + conn.cols
                    indices.append(torch.from_numpy(flat))
                elif conn.kind == "sparse":
                    indices.append(torch.from_numpy(conn.gather_index))
                else:
                    indices.append((torch.from_numpy(conn.rows), torch.from_numpy(conn.cols)))
            self.aux.append((torch.from_numpy(block.scale), indices))

    def apply(self, w: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """Outputs (n, n_out) at the rows of X."""
        desc = self.desc
        values, column = {}, 0
        for name, size in desc.inputs:
            values[name] = X[:, column:column + size]
            column += size
        n = X.shape[0]
        for block, (scale, indices) in zip(desc.blocks, self.aux, strict=True):
            z = None
            for conn, index in zip(block.conns, indices, strict=True):
                piece = w[conn.offset:conn.offset + conn.n_weights]
                a = values[conn.src]
                if conn.kind == "dense":
                    term = a @ piece.reshape(conn.size_dst, conn.size_src).T
                elif self.mode == "masked":
                    dense = w.new_zeros(conn.size_dst * conn.size_src).index_put((index,), piece)
                    term = a @ dense.reshape(conn.size_dst, conn.size_src).T
                elif conn.kind == "sparse":
                    term = (a[:, index] * piece.reshape(index.shape)).sum(-1)
                else:
                    rows, cols = index
                    term = w.new_zeros((n, block.size)).index_add(1, rows, a[:, cols] * piece)
                z = term if z is None else z + term
            if block.bias_offset is not None:
                z = z + w[block.bias_offset:block.bias_offset + block.size]
            a = ACTIVATIONS[block.act].array(z * scale, _XP)
            for src in block.add:
                a = a + values[src]
            values[block.name] = a
        return torch.cat([values[name] for name in desc.outputs], dim=1)

    def _forward(self, w, X):
        with torch.no_grad():
            return self.apply(w, X)

    def _vjp(self, w, X, C):
        return vjp(lambda u: self.apply(u, X), w)[1](C)[0]

    def _hvp(self, w, x, v, output):
        def f(u):
            return self.apply(u, x[None, :])[0, output]
        return jvp(grad(f), (w,), (v,))[1]

    def _ntk(self, w, X):
        def f(u, x):
            return self.apply(u, x[None, :])[0]
        J = vmap(jacrev(f), in_dims=(None, 0))(w, X)  # (n, n_out, P)
        return torch.einsum("iap,jbp->ijab", J, J)

    def bind(self, op: str, **arrays) -> Bound:
        t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()
             if k != "output"}
        if op == "forward":
            def run():
                return self._forward(t["w"], t["X"])
        elif op == "vjp":
            def run():
                return self._vjp(t["w"], t["X"], t["C"])
        elif op == "hvp":
            output = int(arrays["output"])

            def run():
                return self._hvp(t["w"], t["x"], t["v"], output)
        elif op == "ntk":
            def run():
                return self._ntk(t["w"], t["X"])
        else:
            raise ValueError(op)

        def to_numpy(result):
            result = result.detach().numpy()
            if op == "ntk" and self.desc.n_out == 1:
                return result[:, :, 0, 0]
            return result

        return Bound(run, to_numpy)

    def hvp_operator(self, w: np.ndarray, x: np.ndarray, output: int = 0):
        """v (numpy) -> H v (numpy), for scipy's eigsh."""
        w_t, x_t = torch.from_numpy(w), torch.from_numpy(x)

        def matvec(v):
            v = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
            return self._hvp(w_t, x_t, v, output).numpy()

        return matvec
