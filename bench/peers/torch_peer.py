"""The network in PyTorch (float64, eager, torch.func): the module of `dagc.export.to_torch`
as a function of the flat weights (its `forward_with` on `dagc.export.split_weights`, which
`torch.func.functional_call` would compute with a swap of every parameter per call); forward
under no_grad, VJP with torch.func.vjp, HVP as torch.func.jvp of torch.func.grad
(forward-over-reverse), and the NTK as the contraction J J^T of per-example Jacobians (vmap
of jacrev).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import grad, jacrev, jvp, vjp, vmap

from dagc import export

from . import Bound, as_reported, export_mode, variant_name


class Peer:
    framework = "torch"

    def __init__(self, net, mode: str):
        self.net = net
        self.mode = mode
        self.name = variant_name(self.framework, mode)
        # Its own weights are never used: every call passes the pieces of its w.
        self.module = export.to_torch(net, np.zeros(net.n_params), sparse=export_mode(mode))

    def apply(self, w: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """Outputs (n, n_out) at the rows of X, a differentiable function of the flat w."""
        return self.module.forward_with(export.split_weights(self.net, w), X)

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
            return as_reported(op, self.net.n_out, result.detach().numpy())

        return Bound(run, to_numpy)

    def hvp_operator(self, w: np.ndarray, x: np.ndarray, output: int = 0):
        """v (numpy) -> H v (numpy), for scipy's eigsh."""
        w_t, x_t = torch.from_numpy(w), torch.from_numpy(x)

        def matvec(v):
            v = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
            return self._hvp(w_t, x_t, v, output).numpy()

        return matvec
