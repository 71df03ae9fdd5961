"""Hessian spectral norms: dagc's own (`dagc.measure`, when it exists) and the peers' (scipy's
eigsh, the whole Lanczos, on each framework's HVP)."""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np
from scipy.sparse.linalg import LinearOperator, eigsh

# scipy's eigsh for k=1 keeps ncv = max(2k + 1, 20) Lanczos vectors of length P.
NCV = 20
TOL = 1e-6


def dagc_measure() -> ModuleType | None:
    """`dagc.measure` if another part of dagc provides it (and it has what we call)."""
    try:
        module = importlib.import_module("dagc.measure")
    except ImportError:
        return None
    needed = ("hessian_norm", "hessian_norms")
    return module if all(hasattr(module, n) for n in needed) else None


def spectral_norm(matvec, n_params: int, seed: int = 0, tol: float = TOL) -> dict:
    """Largest |eigenvalue| of the symmetric operator `matvec` by scipy's eigsh (Lanczos)."""
    calls = [0]

    def counted(v):
        calls[0] += 1
        return matvec(v)

    op = LinearOperator((n_params, n_params), matvec=counted, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n_params)
    value = eigsh(op, k=1, which="LM", v0=v0, tol=tol, ncv=NCV, return_eigenvectors=False)
    return {"norm": float(abs(value[0])), "matvecs": calls[0]}


def as_float(result) -> float:
    """A norm from whatever dagc.measure returns: a number, a mapping or an object."""
    if isinstance(result, dict):
        for key in ("norm", "value", "hessian", "max"):
            if key in result:
                return float(result[key])
    for attr in ("norm", "value"):
        if hasattr(result, attr):
            return float(getattr(result, attr))
    return float(np.max(np.asarray(result, dtype=np.float64)))


class CountingNet:
    """A CompiledNet stand-in that counts HVP calls made through it (dagc.measure's matvecs)."""

    def __init__(self, net):
        self._net = net
        self.hvp_calls = 0

    def hvp(self, *args, **kwargs):
        self.hvp_calls += 1
        return self._net.hvp(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._net, name)
