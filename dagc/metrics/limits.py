"""The distance of the network's tangent kernel at initialization from its infinite-width
limit (``ntk_gap``): how far a finite width is from the kernel regime that transition to
linearity leads to (docs/design.md, infinite-width kernels).
"""

from __future__ import annotations

import numpy as np

from ..runtime import CompiledNet
from .inputs import sweep_inputs
from .options import Options, check_matrix, check_vector
from .registry import Metric, register

__all__ = ["ntk_gap"]


def ntk_gap(net: CompiledNet, w: np.ndarray, X: np.ndarray) -> tuple[float, float]:
    """(||K_m(w) - K_inf||_F / ||K_inf||_F, ||K_inf||_F) over the inputs X: the empirical NTK
    over all output pairs, (n, n, o, o), against the limit on the output diagonal (distinct
    outputs are uncorrelated in the limit)."""
    X, w = check_matrix(X, "X", net.n_in), check_vector(w, "w", net.n_params)
    empirical = net.ntk(w, X).reshape(len(X), len(X), net.n_out, net.n_out)
    limit = np.zeros_like(empirical)
    diagonal = np.arange(net.n_out)
    limit[:, :, diagonal, diagonal] = net.ntk_limit(X)
    scale = float(np.linalg.norm(limit))
    return float(np.linalg.norm(empirical - limit)) / scale, scale


def _measure_ntk_gap(net: CompiledNet, seed: int, options: Options) -> dict[str, float]:
    gap, scale = ntk_gap(net, net.init(seed), sweep_inputs(net, seed, options.inputs))
    return {"value": gap, "limit_norm": scale}


register(Metric(
    name="ntk_gap",
    function=_measure_ntk_gap,
    reads=("inputs",),
    definition="||K_m(w0) - K_inf||_F / ||K_inf||_F over the inputs, K_m the empirical NTK "
               "(n, n, o, o) and K_inf its infinite-width limit on the output diagonal",
    label="||K_m - K_inf|| / ||K_inf||",
    expected_slope=-0.5,
    slope_reason="K_m(w0) is an average over m neurons of i.i.d. terms whose mean is K_inf, "
                 "so its fluctuation is O(m^-1/2). Through a bottleneck of fixed size or a "
                 "non-linear output the kernel stays random and the gap does not decay.",
    fields={"value": "the relative Frobenius distance of the empirical NTK from the limit",
            "limit_norm": "||K_inf||_F over the inputs"},
))
