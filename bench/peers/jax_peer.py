"""The network in JAX (float64, jit): the function of `dagc.export.to_jax` applied to the
pieces of the flat weights (`dagc.export.split_weights`); forward, VJP, HVP (jvp of grad)
and the NTK as the contraction J J^T of per-example Jacobians (vmap of jacrev), as a JAX user
would write them. The sparsity patterns are constants of the jitted programs (export's
function closes over them, as a user's program would); one jit per op and variant, traced once
for the benchmark's shapes.
"""

from __future__ import annotations

import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402  (after enabling float64)

from dagc import export  # noqa: E402

from . import Bound, as_reported, export_mode, variant_name  # noqa: E402


def _jit(fn, op: str):
    return jax.jit(fn, static_argnames="output") if op == "hvp" else jax.jit(fn)


class Peer:
    framework = "jax"

    def __init__(self, net, mode: str):
        self.net = net
        self.mode = mode
        self.name = variant_name(self.framework, mode)
        network, _ = export.to_jax(net, np.zeros(net.n_params), sparse=export_mode(mode))

        def apply(w, X):
            return network(export.split_weights(net, w), X)

        def vjp(w, X, C):
            return jax.vjp(lambda u: apply(u, X), w)[1](C)[0]

        def hvp(w, x, v, output):
            def f(u):
                return apply(u, x[None, :])[0, output]
            return jax.jvp(jax.grad(f), (w,), (v,))[1]

        def ntk(w, X):
            def f(u, x):
                return apply(u, x[None, :])[0]
            J = jax.vmap(jax.jacrev(f), in_axes=(None, 0))(w, X)  # (n, n_out, P)
            return jnp.einsum("iap,jbp->ijab", J, J)

        self._raw = {"forward": apply, "vjp": vjp, "hvp": hvp, "ntk": ntk}
        self._jit = {op: _jit(fn, op) for op, fn in self._raw.items()}

    def _args(self, op: str, arrays: dict) -> tuple[tuple, dict]:
        dev = {k: jnp.asarray(v) for k, v in arrays.items() if k != "output"}
        if op == "forward":
            return (dev["w"], dev["X"]), {}
        if op == "vjp":
            return (dev["w"], dev["X"], dev["C"]), {}
        if op == "hvp":
            return (dev["w"], dev["x"], dev["v"]), {"output": int(arrays["output"])}
        if op == "ntk":
            return (dev["w"], dev["X"]), {}
        raise ValueError(op)

    def bind(self, op: str, **arrays) -> Bound:
        args, kwargs = self._args(op, arrays)
        fn = self._jit[op]

        def run():
            return fn(*args, **kwargs).block_until_ready()

        def to_numpy(result):
            return as_reported(op, self.net.n_out, np.asarray(result))

        return Bound(run, to_numpy)

    def compile_seconds(self, op: str, **arrays) -> float:
        """Trace, lower and compile `op` for these shapes (not cached: a fresh jit)."""
        args, kwargs = self._args(op, arrays)
        raw = self._raw[op]
        fn = _jit(lambda *a, **k: raw(*a, **k), op)  # a new function: nothing cached
        start = time.perf_counter()
        fn.lower(*args, **kwargs).compile()
        return time.perf_counter() - start

    def hvp_operator(self, w: np.ndarray, x: np.ndarray, output: int = 0):
        """v (numpy) -> H v (numpy), for scipy's eigsh."""
        fn = self._jit["hvp"]
        w_dev, x_dev = jnp.asarray(w), jnp.asarray(x)

        def matvec(v):
            v = jnp.asarray(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
            return np.asarray(fn(w_dev, x_dev, v, output=output))

        return matvec


def cores_used(seconds: float = 0.5) -> float:
    """CPU seconds per wall second of a jitted float64 product chain (64 x 528 by 528 x 528):
    more than 1 means JAX ran on more than one core, whatever its thread flags say."""
    W = jnp.asarray(np.random.default_rng(0).standard_normal((528, 528)))
    A = jnp.asarray(np.random.default_rng(1).standard_normal((64, 528)))
    chain = jax.jit(lambda A, W: jnp.tanh(A @ W.T) @ W.T)
    chain(A, W).block_until_ready()
    wall, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        chain(A, W).block_until_ready()
    return (time.process_time() - cpu) / (time.perf_counter() - wall)
