"""The neuron path's infinite-width kernels: the shared module's graph-independent `limits`
pass, fed the `random_dag` generator's layer shares (docs/design.md, infinite-width kernels).
Against the block path on a generator both paths compile, against the Monte Carlo mean of the
empirical NTK of a deep generator, through the `ntk_gap` metric, and its errors."""

import numpy as np
import pytest

import dagc
from dagc.errors import DagcError
from dagc.ir import graph
from dagc.ir.neurons import NeuronIR
from dagc.metrics import Options, measure


def _generator(tmp_path, layers, inputs="width/2", outputs=2):
    """A tanh generator (the module of randdag's activations, so the tests share it)."""
    path = tmp_path / f"gen{layers}.yaml"
    path.write_text(f"name: gen{layers}\nwidth: 16\ngraph: {{generator: random_dag, inputs: "
                    f"{inputs}, layers: {layers}, size: width, fan_in: width/2, outputs: "
                    f"{outputs}, act: tanh}}\n")
    return path


def _inputs(n, d, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X * np.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True)


def test_shallow_generator_gives_the_block_paths_limit(tmp_path, monkeypatch):
    """Inputs that grow, so every layer mixes all earlier ones with non-zero shares."""
    path = _generator(tmp_path, 3)
    grouped = dagc.compile(path, width=16)
    monkeypatch.setattr(graph, "GROUPED_LAYERS", 0)
    net = dagc.compile(path, width=16)
    assert isinstance(net.ir, NeuronIR) and not isinstance(grouped.ir, NeuronIR)
    X1, X2 = _inputs(5, net.n_in, 1), _inputs(3, net.n_in, 2)
    for X in [(X1,), (X1, X2)]:
        for kernel in ("nngp_limit", "ntk_limit"):
            mine, theirs = getattr(net, kernel)(*X), getattr(grouped, kernel)(*X)
            assert mine.shape == (len(X1), len(X[-1]), 2)
            np.testing.assert_allclose(mine, theirs, rtol=0,
                                       atol=1e-12 * np.abs(theirs).max())


def test_deep_generator_limit_is_the_mean_of_the_empirical_ntk(tmp_path):
    """Eleven layers (the neuron path): the empirical NTK at width 128, averaged over seeds,
    within 4 standard errors of the limit plus the O(1/m) bias of a finite width's mean."""
    width, seeds = 128, 12
    net = dagc.compile(_generator(tmp_path, 11, inputs=6, outputs=1), width=width)
    assert isinstance(net.ir, NeuronIR)
    X = _inputs(4, net.n_in, 5)
    samples = np.array([net.ntk(net.init(seed), X) for seed in range(seeds)])
    error = samples.std(axis=0, ddof=1) / np.sqrt(seeds)
    limit = net.ntk_limit(X)[..., 0]
    assert np.all(np.abs(samples.mean(axis=0) - limit)
                  <= 4 * error + 4 / width * np.abs(limit).max())
    assert np.all(np.linalg.eigvalsh(limit) > 0)  # a kernel, not noise around zero


def test_ntk_gap_measures_a_deep_generator(tmp_path):
    path = _generator(tmp_path, 10, inputs=6, outputs=2)
    gaps = {width: measure(dagc.compile(path, width=width), "ntk_gap", 0, Options())
            for width in (16, 256)}
    assert all(np.isfinite(g["value"]) and g["limit_norm"] > 0 for g in gaps.values())
    assert gaps[256]["value"] < gaps[16]["value"]


def test_errors_are_those_of_the_block_path(tmp_path):
    net = dagc.compile(_generator(tmp_path, 10), width=8)
    good = _inputs(2, net.n_in)
    with pytest.raises(DagcError, match=r"X1: expected shape \(n, 4\)"):
        net.ntk_limit(good[:, :3])
    with pytest.raises(DagcError, match=r"X2: expected shape \(n, 4\)"):
        net.nngp_limit(good, good[:, :1])
    edges = tmp_path / "g.edgelist"
    edges.write_text("a c\nb c\nc d\n")
    fixed = dagc.compile(f"name: fixed\ngraph: {edges}\n")
    with pytest.raises(DagcError, match="a fixed neuron graph .* no infinite-width limit"):
        fixed.ntk_limit(np.ones((1, 2)))
