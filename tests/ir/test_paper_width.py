"""The paper's width m, depth L, parameter count P and bottlenecks (docs/design.md, The
model), checked against a direct networkx computation on the neuron graph; and reproducibility
of the random graphs (same file, width and graph_seed -> same `net.sources`).

Layer of a neuron = longest path from an input neuron (in-degree 0); m = minimum in-degree over
neurons in layers >= 2 (None when there are none); L = longest path; P = number of edges. A bias
is an edge from a constant-1 input neuron. Block architectures are expanded to their neuron
graphs from `net.sources` (sparse) and the block sizes (dense).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from test_random_architectures import (
    SETTINGS,
    block_architectures,
    compile_file,
    neuron_graphs,
    write,
    write_graph,
)

import dagc
from dagc.frontend.spec import bundled_names

BIAS = ("<bias>", 0)


def paper_facts(G: nx.DiGraph) -> dict:
    """Layers, width m, depth, P and the neurons attaining m, straight from networkx."""
    layer = {}
    for node in nx.topological_sort(G):
        preds = list(G.predecessors(node))
        layer[node] = 1 + max(layer[p] for p in preds) if preds else 0
    deep = [v for v in G if layer[v] >= 2]
    m = min(G.in_degree(v) for v in deep) if deep else None
    return {
        "layer": layer,
        "width_m": m,
        "depth": nx.dag_longest_path_length(G),
        "n_params": G.number_of_edges(),
        "bottlenecks": {v for v in deep if G.in_degree(v) == m},
    }


def block_neuron_graph(net: dagc.CompiledNet) -> nx.DiGraph:
    """The neuron graph of a block architecture, neurons named (block, index)."""
    G = nx.DiGraph()
    for b in net.ir.blocks:
        G.add_nodes_from((b.name, i) for i in range(b.size))
    for src, dst, kind, _, shape in net.layout:
        if kind == "bias":
            G.add_edges_from((BIAS, (dst, i)) for i in range(shape[0]))
        elif kind == "dense":
            G.add_edges_from(((src, j), (dst, i)) for i in range(shape[0])
                             for j in range(shape[1]))
        else:
            rows = np.asarray(net.sources[(src, dst)]).tolist()
            assert len(rows) == shape[0]
            for i, row in enumerate(rows):
                assert len(set(row)) == len(row) == shape[1]
                G.add_edges_from(((src, j), (dst, i)) for j in row)
    return G


def check_block_architecture(net: dagc.CompiledNet) -> dict:
    G = block_neuron_graph(net)  # add-skips carry no weight: they are not edges
    facts = paper_facts(G)
    assert net.n_params == facts["n_params"]
    assert net.depth == facts["depth"]
    assert net.width_m == facts["width_m"]
    for b in net.ir.blocks:
        assert {facts["layer"][(b.name, i)] for i in range(b.size)} == {net.layers[b.name]}, \
            b.name
    expected = {name for name, _ in facts["bottlenecks"]}
    assert set(net.ir.bottlenecks) == expected
    assert len(net.ir.bottlenecks) == len(expected)
    return facts


@pytest.mark.parametrize("name", [n for n in bundled_names() if n != "randdag"])
def test_bundled_block_architectures(name):
    for width in (4, 8):
        check_block_architecture(dagc.compile(name, width=width, jit=False))


def test_add_skip_is_not_an_edge():
    """An identity skip has no weight, so it is no edge of the paper's graph (docs/design.md,
    The model):
    h2 below sees only the input through weights, so it is in layer 1, and m is out's
    in-degree, `width`. (dagc up to 32555d1 counted the skip as an edge: h2 in layer 2, m = 4
    = the input's size however wide the network, h2 a spurious bottleneck, depth 3.)"""
    text = """\
name: skip_from_hidden
width: 8
inputs: {x: 4}
blocks:
  h1:  {size: width, act: tanh, from: [x]}
  h2:  {size: width, act: tanh, from: [x], add: [h1]}
  out: {size: 1, from: [h2]}
"""
    net = compile_file(write(text, ".yaml"))
    assert (net.width_m, net.ir.bottlenecks, net.depth) == (8, ("out",), 2)
    assert net.layers == {"x": 0, "h1": 1, "h2": 1, "out": 2}


def test_bottleneck3_is_the_negative_control():
    for width in (8, 32):
        net = dagc.compile("bottleneck3", width=width, jit=False)
        assert (net.width_m, net.ir.bottlenecks, net.depth) == (1, ("h3",), 4)


def test_mlp3_width_is_the_hidden_width():
    for width in (8, 32):
        net = dagc.compile("mlp3", width=width, jit=False)
        assert (net.width_m, net.ir.bottlenecks, net.depth) == (width, ("h2", "h3", "out"), 4)
        assert net.n_params == 16 * width + 2 * width * width + width


@settings(max_examples=40, **SETTINGS)
@given(doc=block_architectures())
def test_random_block_architectures(doc):
    net = compile_file(write(yaml.safe_dump(doc, sort_keys=False), ".yaml"))
    check_block_architecture(net)


def test_randdag():
    for width in (4, 8):
        net = dagc.compile("randdag", width=width, jit=False)
        G = nx.DiGraph()
        name = {(b.name, i): n for b in net.ir.blocks for i, n in enumerate(b.neurons)}
        G.add_nodes_from(name.values())
        for src, dst, kind, _, _ in net.layout:
            assert kind == "ragged"
            indptr, indices = net.sources[(src, dst)]
            for row in range(len(indptr) - 1):
                G.add_edges_from((name[(src, int(j))], name[(dst, row)])
                                 for j in indices[indptr[row]:indptr[row + 1]])
        facts = paper_facts(G)
        assert (net.width_m, net.depth, net.n_params) == \
            (facts["width_m"], facts["depth"], facts["n_params"])
        assert set(net.ir.bottlenecks) == {str(v) for v in facts["bottlenecks"]}
        # the file: 16 inputs, 3 layers of `width`, one output; fan-in width/2 from layer 2 on
        assert net.width_m == width // 2 and net.depth == 4
        assert sorted(facts["layer"].values()) == [0] * 16 + [1] * width + [2] * width \
            + [3] * width + [4]


@settings(max_examples=40, **SETTINGS)
@given(G=neuron_graphs(), fmt=st.sampled_from(["json", "graphml", "edgelist"]))
def test_random_neuron_graphs(G, fmt):
    net = compile_file(write_graph(G, fmt, None))
    facts = paper_facts(G)
    assert net.n_params == facts["n_params"]
    assert net.depth == facts["depth"]
    assert net.width_m == facts["width_m"]
    assert set(net.ir.bottlenecks) == {str(v) for v in facts["bottlenecks"]}
    assert len(net.ir.bottlenecks) == len(facts["bottlenecks"])
    if facts["width_m"] is None:
        assert net.ir.bottlenecks == ()
    assert {str(n): int(layer) for n, layer in zip(net.ir.names, net.ir.layer, strict=True)} \
        == {str(n): layer for n, layer in facts["layer"].items()}


def test_neuron_graph_without_deep_neurons_has_no_width():
    G = nx.DiGraph([("a", "c"), ("b", "c"), ("a", "d")])
    net = compile_file(write_graph(G, "json", None))
    assert (net.width_m, net.ir.bottlenecks, net.depth, net.n_params) == (None, (), 1, 3)


# --- reproducible random graphs ----------------------------------------------------------


def sources_digest(net: dagc.CompiledNet) -> str:
    h = hashlib.sha256()
    for key in sorted(net.sources):
        h.update(repr(key).encode())
        value = net.sources[key]
        for array in (value if isinstance(value, tuple) else (value,)):
            h.update(np.ascontiguousarray(array, np.int64).tobytes())
    return h.hexdigest()


def same_sources(a: dagc.CompiledNet, b: dagc.CompiledNet) -> bool:
    return sources_digest(a) == sources_digest(b)


@pytest.mark.parametrize("name", ["sparse3", "randdag"])
def test_graph_seed_determines_the_graph(name):
    net = dagc.compile(name, width=8, jit=False)
    assert net.sources, "expected sparse connections"
    assert same_sources(net, dagc.compile(name, width=8, jit=False))
    assert same_sources(net, dagc.compile(name, width=8, graph_seed=0, jit=False))
    other = dagc.compile(name, width=8, graph_seed=1, jit=False)
    assert not same_sources(net, other)
    assert same_sources(other, dagc.compile(name, width=8, graph_seed=1, jit=False))
    # the file's own graph_seed key is the same seed
    text = dagc.frontend.spec.load(name).text + "\ngraph_seed: 1\n"
    assert same_sources(other, compile_file(write(text, ".yaml"), width=8))


def test_same_graph_in_another_process():
    """Nothing process-dependent (hash randomization) enters the graph."""
    names = ["sparse3", "randdag"]
    here = {name: sources_digest(dagc.compile(name, width=8, jit=False)) for name in names}
    code = "\n".join([
        "import hashlib, json",
        "import numpy as np",
        "import dagc",
        inspect.getsource(sources_digest),
        f"print(json.dumps({{n: sources_digest(dagc.compile(n, width=8, jit=False)) "
        f"for n in {names!r}}}))",
    ])
    env = dict(os.environ, PYTHONHASHSEED="12345")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == here
