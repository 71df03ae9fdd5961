"""The benchmark's peers (bench/peers) run the network of `dagc.export` and agree with dagc on
every operation they time, in both sparse variants (the benchmark refuses to time a peer that
disagrees; this keeps it from finding out only then)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, compiled

from bench import peers
from bench.network import describe

pytest.importorskip("torch")


def _arrays(net, rows: int = 3) -> dict:
    rng = np.random.default_rng(2)
    w, X = net.init(0), rng.standard_normal((rows, net.n_in))
    return {"forward": {"w": w, "X": X},
            "vjp": {"w": w, "X": X, "C": rng.standard_normal((rows, net.n_out))},
            "hvp": {"w": w, "x": X[0].copy(), "v": rng.standard_normal(net.n_params),
                    "output": net.n_out - 1},
            "ntk": {"w": w, "X": X}}


def _dagc(net, op: str, a: dict) -> np.ndarray:
    if op == "forward":
        return net.forward(a["w"], a["X"])
    if op == "vjp":
        return net.vjp(a["w"], a["X"], a["C"])
    if op == "hvp":
        return net.hvp(a["w"], a["x"], a["v"], a["output"])
    return net.ntk(a["w"], a["X"])


# Each JAX op is a jit compile of its own: forward and hvp (differentiated twice) keep the test
# short; the benchmark checks every op before timing it.
OPS = {"torch": ("forward", "vjp", "hvp", "ntk"), "jax": ("forward", "hvp")}


@pytest.mark.parametrize("framework", peers.FRAMEWORKS)
def test_peers_agree_with_dagc(framework):
    pytest.importorskip(framework)
    net = compiled("sparse3", 8, jit=False)
    desc = describe(net)
    variants = peers.load(framework, desc)
    assert desc.sparse and [p.name for p in variants] == [f"{framework}-gather",
                                                          f"{framework}-masked"]
    arrays = _arrays(net)
    for peer in variants:
        for op in OPS[framework]:
            a = arrays[op]
            bound = peer.bind(op, **a)
            assert_close(bound.to_numpy(bound.run()), _dagc(net, op, a), 1e-12,
                         what=f"{peer.name} {op}")
        hvp = arrays["hvp"]
        matvec = peer.hvp_operator(hvp["w"], hvp["x"], output=hvp["output"])
        assert_close(matvec(hvp["v"]), _dagc(net, "hvp", hvp), 1e-12,
                     what=f"{peer.name} hvp_operator")


def test_description_counts_every_edge_weight():
    net = compiled("sparse3", 8, jit=False)
    desc = describe(net)
    biases = sum(int(np.prod(shape)) for *_, kind, _, shape in net.layout if kind == "bias")
    assert desc.n_edge_weights == net.n_params - biases
    assert desc.net is net and desc.n_out == net.n_out
