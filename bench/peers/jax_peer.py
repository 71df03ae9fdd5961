"""The network in JAX (float64, jit): forward, VJP, HVP (jvp of grad) and the NTK as the
contraction J J^T of per-example Jacobians (vmap of jacrev), as a JAX user would write them.

Index arrays and scales are arguments of the jitted functions, not closed-over constants, so
XLA does not embed megabytes of indices in the program.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402  (after enabling float64)
from jax.scipy.special import erf  # noqa: E402

from dagc.ops.activations import ACTIVATIONS  # noqa: E402

from ..network import Description  # noqa: E402
from . import Bound  # noqa: E402

# The primitives the registry's array forms (`Activation.array(z, xp)`) are written in.
_XP = SimpleNamespace(tanh=jnp.tanh, sigmoid=jax.nn.sigmoid, softplus=jax.nn.softplus, erf=erf,
                      sin=jnp.sin, maximum=jnp.maximum)


def _apply(desc: Description, mode: str, w, X, aux):
    """Outputs (n, n_out) at the rows of X; `aux` holds scales and index arrays per block."""
    values, column = {}, 0
    for name, size in desc.inputs:
        values[name] = X[:, column:column + size]
        column += size
    n = X.shape[0]
    for block, (scale, indices) in zip(desc.blocks, aux, strict=True):
        z = jnp.zeros((n, block.size), X.dtype)
        for conn, index in zip(block.conns, indices, strict=True):
            piece = w[conn.offset:conn.offset + conn.n_weights]
            a = values[conn.src]
            if conn.kind == "dense":
                z = z + a @ piece.reshape(conn.size_dst, conn.size_src).T
            elif mode == "masked":
                rows, cols = index
                dense = jnp.zeros((conn.size_dst, conn.size_src), w.dtype).at[rows, cols].set(piece)
                z = z + a @ dense.T
            elif conn.kind == "sparse":
                z = z + jnp.einsum("njk,jk->nj", a[:, index], piece.reshape(index.shape))
            else:  # ragged: gather each edge's source, sum per destination neuron
                rows, cols = index
                summed = jax.ops.segment_sum((a[:, cols] * piece).T, rows, block.size,
                                             indices_are_sorted=True)
                z = z + summed.T
        if block.bias_offset is not None:
            z = z + w[block.bias_offset:block.bias_offset + block.size]
        a = ACTIVATIONS[block.act].array(z * scale, _XP)
        for src in block.add:
            a = a + values[src]
        values[block.name] = a
    return jnp.concatenate([values[name] for name in desc.outputs], axis=1)


def _jit(fn, op: str):
    return jax.jit(fn, static_argnames="output") if op == "hvp" else jax.jit(fn)


class Peer:
    framework = "jax"

    def __init__(self, desc: Description, mode: str):
        self.desc = desc
        self.mode = mode
        self.name = "jax" if mode == "dense" else f"jax-{mode}"
        aux = []
        for block in desc.blocks:
            indices = []
            for conn in block.conns:
                if conn.kind == "dense":
                    indices.append(None)
                elif mode == "gather" and conn.kind == "sparse":
                    indices.append(jnp.asarray(conn.gather_index))
                else:
                    indices.append((jnp.asarray(conn.rows), jnp.asarray(conn.cols)))
            aux.append((jnp.asarray(block.scale), tuple(indices)))
        self.aux = tuple(aux)

        def apply(w, X, aux):
            return _apply(desc, mode, w, X, aux)

        def vjp(w, X, C, aux):
            return jax.vjp(lambda u: apply(u, X, aux), w)[1](C)[0]

        def hvp(w, x, v, aux, output):
            def f(u):
                return apply(u, x[None, :], aux)[0, output]
            return jax.jvp(jax.grad(f), (w,), (v,))[1]

        def ntk(w, X, aux):
            def f(u, x):
                return apply(u, x[None, :], aux)[0]
            J = jax.vmap(jax.jacrev(f), in_axes=(None, 0))(w, X)  # (n, n_out, P)
            return jnp.einsum("iap,jbp->ijab", J, J)

        self._raw = {"forward": apply, "vjp": vjp, "hvp": hvp, "ntk": ntk}
        self._jit = {op: _jit(fn, op) for op, fn in self._raw.items()}

    def _args(self, op: str, arrays: dict) -> tuple[tuple, dict]:
        dev = {k: jnp.asarray(v) for k, v in arrays.items() if k != "output"}
        if op == "forward":
            return (dev["w"], dev["X"], self.aux), {}
        if op == "vjp":
            return (dev["w"], dev["X"], dev["C"], self.aux), {}
        if op == "hvp":
            return (dev["w"], dev["x"], dev["v"], self.aux), {"output": int(arrays["output"])}
        if op == "ntk":
            return (dev["w"], dev["X"], self.aux), {}
        raise ValueError(op)

    def bind(self, op: str, **arrays) -> Bound:
        args, kwargs = self._args(op, arrays)
        fn = self._jit[op]

        def run():
            return fn(*args, **kwargs).block_until_ready()

        def to_numpy(result):
            result = np.asarray(result)
            if op == "ntk" and self.desc.n_out == 1:
                return result[:, :, 0, 0]
            return result

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
            return np.asarray(fn(w_dev, x_dev, v, self.aux, output=output))

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
