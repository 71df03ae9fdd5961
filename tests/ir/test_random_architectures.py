"""Property tests: random valid architectures, compiled as plain Python (jit=False), against the
independent PyTorch reference.

Two families:
- block DAGs (YAML): 1-2 input groups, 2-5 blocks of sizes 1-6 listed in random order, dense and
  sparse connections, biases, add-skips between equal-size blocks (inputs included), all eight
  activations, several outputs, sometimes non-linear ones;
- neuron-level DAGs written as node-link JSON, GraphML or an edge list, with per-neuron `act`
  attributes and an optional top-level default activation. These are also evaluated straight
  from the networkx graph, which checks that the file was read, grouped and wired correctly.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import ACTIVATIONS, Reference

import dagc

ACTS = sorted(ACTIVATIONS)
RTOL = 1e-9
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# torch.func's internals warn about torch.jit.script; that is not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

_DIR = tempfile.TemporaryDirectory(prefix="dagc-random-")
WORK = Path(_DIR.name)  # architecture files and generated modules of this session
_counter = iter(range(10**9))


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.all(np.isfinite(actual)), "non-finite values"
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-12)
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


def assert_close(actual, expected, what: str, rtol: float = RTOL) -> None:
    err = relative_error(actual, expected)
    assert err <= rtol, f"{what}: relative error {err:.3e} > {rtol:.0e}"


def write(text: str, suffix: str) -> Path:
    path = WORK / f"arch{next(_counter)}{suffix}"
    path.write_text(text)
    return path


def compile_file(path: Path, **kwargs) -> dagc.CompiledNet:
    return dagc.compile(path, jit=False, directory=WORK / "generated", **kwargs)


# --- strategies ---------------------------------------------------------------------------


@st.composite
def block_architectures(draw, allow_add: bool = True) -> dict:
    """A valid block-DAG architecture as a YAML document (dict); blocks in random order."""
    width = draw(st.integers(1, 6))
    sizes: dict[str, int] = {}
    for name in ["x", "u"][:draw(st.integers(1, 2))]:
        sizes[name] = draw(st.integers(1, 6))
    inputs = list(sizes)
    blocks: dict[str, dict] = {}
    for j in range(draw(st.integers(2, 5))):
        earlier = list(sizes)
        size = draw(st.integers(1, 6))
        name = f"h{j}"
        sources = draw(st.lists(st.sampled_from(earlier), min_size=1,
                                max_size=min(3, len(earlier)), unique=True))
        entries = []
        for src in sources:
            if draw(st.booleans()):
                entries.append(src)
            else:
                k = draw(st.integers(1, sizes[src]))
                fan_in = "width" if k == width and draw(st.booleans()) else k
                entries.append({"block": src, "fan_in": fan_in})
        body = {"size": "width" if size == width and draw(st.booleans()) else size,
                "act": draw(st.sampled_from(ACTS)), "from": entries}
        if draw(st.booleans()):
            body["bias"] = True
        equal = [b for b in earlier if sizes[b] == size]
        if allow_add and equal and draw(st.booleans()):
            body["add"] = draw(st.lists(st.sampled_from(equal), min_size=1, max_size=2,
                                        unique=True))
        blocks[name] = body
        sizes[name] = size
    used = {s if isinstance(s, str) else s["block"] for b in blocks.values() for s in b["from"]}
    used |= {a for b in blocks.values() for a in b.get("add", [])}
    for name in inputs:
        if name not in used:  # every input must feed something
            target = draw(st.sampled_from(sorted(blocks)))
            blocks[target]["from"].append(name)
            used.add(name)
    for name, body in blocks.items():
        if name not in used and draw(st.booleans()):
            del body["act"]  # an output: identity by default
    order = draw(st.permutations(sorted(blocks)))
    doc = {"name": "random_blocks", "width": width,
           "inputs": {name: sizes[name] for name in inputs},
           "blocks": {name: blocks[name] for name in order}}
    if draw(st.booleans()):
        doc["graph_seed"] = draw(st.integers(0, 3))
    return doc


def block_facts(doc: dict) -> dict:
    """Sizes, fan-ins, in-degrees and outputs of a block document, computed directly."""
    width = doc["width"]

    def value(v):
        return width if v == "width" else int(v)

    sizes = {name: value(s) for name, s in doc["inputs"].items()}
    for name, body in doc["blocks"].items():
        sizes[name] = value(body["size"])
    pieces, degree = {}, {}
    for name, body in doc["blocks"].items():
        pieces[name] = []
        for entry in body["from"]:
            if isinstance(entry, str):
                pieces[name].append((entry, name, "dense", (sizes[name], sizes[entry])))
            else:
                pieces[name].append((entry["block"], name, "sparse",
                                     (sizes[name], value(entry["fan_in"]))))
        if body.get("bias"):
            pieces[name].append((None, name, "bias", (sizes[name],)))
        degree[name] = sum(p[3][1] for p in pieces[name] if p[2] != "bias") \
            + int(bool(body.get("bias")))
    feeders = {s if isinstance(s, str) else s["block"]
               for b in doc["blocks"].values() for s in b["from"]}
    feeders |= {a for b in doc["blocks"].values() for a in b.get("add", [])}
    outputs = {name for name in doc["blocks"] if name not in feeders}
    return {"sizes": sizes, "pieces": pieces, "degree": degree, "outputs": outputs}


@st.composite
def neuron_graphs(draw, int_names: bool = False) -> nx.DiGraph:
    """A random neuron DAG: every non-input neuron draws 1-4 predecessors among earlier ones;
    nodes are inserted in random (file) order; `act` attributes on some neurons."""
    n_in = draw(st.integers(1, 4))
    n_rest = draw(st.integers(1, 8))
    topo = [f"i{k}" for k in range(n_in)] + [f"n{k}" for k in range(n_rest)]
    if int_names:
        topo = [100 + 7 * k for k in range(len(topo))]
    edges = []
    for j in range(n_in, len(topo)):
        preds = draw(st.lists(st.integers(0, j - 1), min_size=1, max_size=min(4, j),
                              unique=True))
        edges += [(topo[p], topo[j]) for p in preds]
    for k in range(n_in):
        if not any(u == topo[k] for u, _ in edges):
            edges.append((topo[k], topo[draw(st.integers(n_in, len(topo) - 1))]))
    G = nx.DiGraph()
    for node in draw(st.permutations(topo)):
        G.add_node(node)
    for node in topo[n_in:]:
        if draw(st.booleans()):
            G.nodes[node]["act"] = draw(st.sampled_from(ACTS))
    G.add_edges_from(draw(st.permutations(edges)))
    return G


def write_graph(G: nx.DiGraph, fmt: str, default_act: str | None) -> Path:
    """Write G in format `fmt` and an architecture file pointing at it; returns the YAML path."""
    stem = f"graph{next(_counter)}"
    if fmt == "json":
        graph_file = WORK / f"{stem}.json"
        graph_file.write_text(json.dumps(nx.node_link_data(G, edges="links")))
    elif fmt == "graphml":
        graph_file = WORK / f"{stem}.graphml"
        nx.write_graphml(G, graph_file)
    else:
        graph_file = WORK / f"{stem}.edgelist"
        nx.write_edgelist(G, graph_file, data=False)
    doc = {"name": "random_graph", "graph": graph_file.name}
    if default_act is not None:
        doc["act"] = default_act
    return write(yaml.safe_dump(doc, sort_keys=False), ".yaml")


# --- the comparisons ----------------------------------------------------------------------


def check_against_reference(net: dagc.CompiledNet, seed: int) -> Reference:
    """forward, jacobian, vjp, hvp (every output) and ntk of `net` vs the torch reference."""
    ref = Reference(net)
    assert (ref.n_in, ref.n_out) == (net.n_in, net.n_out)
    rng = np.random.default_rng(seed)
    w = net.init(seed=seed)
    X = rng.standard_normal((3, net.n_in))
    X2 = rng.standard_normal((2, net.n_in))
    C = rng.standard_normal((3, net.n_out))
    v = rng.standard_normal(net.n_params)
    originals = [a.copy() for a in (w, X, X2, C, v)]

    Y = net.forward(w, X)
    assert Y.shape == (3, net.n_out)
    assert_close(Y, ref.forward(w, X), "forward")
    J_ref = ref.jacobian(w, X)
    assert_close(net.jacobian(w, X), J_ref, "jacobian")
    assert_close(net.vjp(w, X, C), ref.vjp(w, X, C), "vjp")
    assert_close(net.vjp(w, X, C), np.einsum("ik,ikp->p", C, J_ref), "vjp vs C.J")
    for output in range(net.n_out):
        assert_close(net.hvp(w, X[1], v, output=output), ref.hvp(w, X[1], v, output),
                     f"hvp output {output}")
    K = net.ntk(w, X, X2)
    expected = ref.ntk(w, X, X2)
    shape = (3, 2) if net.n_out == 1 else (3, 2, net.n_out, net.n_out)
    assert K.shape == expected.shape == shape
    assert_close(K, expected, "ntk")
    for before, after in zip(originals, (w, X, X2, C, v), strict=True):
        assert np.array_equal(before, after), "an argument was modified in place"
    return ref


# --- block DAGs ---------------------------------------------------------------------------


@settings(max_examples=60, **SETTINGS)
@given(doc=block_architectures(), seed=st.integers(0, 2**16))
def test_random_block_architecture(doc, seed):
    text = yaml.safe_dump(doc, sort_keys=False)
    net = compile_file(write(text, ".yaml"))
    facts = block_facts(doc)

    # IR order: inputs first in file order, then a topological order of the blocks
    names = [b.name for b in net.ir.blocks]
    assert names[:len(doc["inputs"])] == list(doc["inputs"])
    position = {name: i for i, name in enumerate(names)}
    for name, body in doc["blocks"].items():
        for src in [s if isinstance(s, str) else s["block"] for s in body["from"]] \
                + body.get("add", []):
            assert position[src] < position[name], (src, name)
    # docs/design.md, Parameter layout: per block in IR order, `from` in file order, then the bias
    expected = [p for name in names if name in doc["blocks"] for p in facts["pieces"][name]]
    assert [(s, d, k, tuple(sh)) for s, d, k, _, sh in net.layout] == expected
    assert {b.name for b in net.ir.blocks if b.is_output} == facts["outputs"]
    for b in net.ir.blocks:
        if b.name in doc["blocks"]:
            assert b.size == facts["sizes"][b.name]
            assert b.act == doc["blocks"][b.name].get("act", "identity")
    # sparse sources: K distinct in-range neurons per row
    for (src, _dst), idx in net.sources.items():
        assert all(len(set(row)) == len(row) for row in idx.tolist())
        assert idx.min() >= 0 and idx.max() < facts["sizes"][src]

    ref = check_against_reference(net, seed)
    for name, degree in ref.degree.items():  # in-degrees counted from the edges
        assert np.all(degree == facts["degree"][name]), name


def test_block_strategy_covers_the_features():
    """The strategy really produces what the properties are meant to exercise."""
    seen = {"sparse": 0, "bias": 0, "add": 0, "add_from_input": 0, "two_inputs": 0,
            "two_outputs": 0, "nonlinear_output": 0}
    acts = set()

    @settings(max_examples=150, database=None, **SETTINGS)
    @given(doc=block_architectures())
    def collect(doc):
        facts = block_facts(doc)
        blocks = doc["blocks"].values()
        seen["sparse"] += any(isinstance(s, dict) for b in blocks for s in b["from"])
        seen["bias"] += any(b.get("bias") for b in blocks)
        seen["add"] += any(b.get("add") for b in blocks)
        seen["add_from_input"] += any(a in doc["inputs"] for b in blocks for a in b.get("add", []))
        seen["two_inputs"] += len(doc["inputs"]) == 2
        seen["two_outputs"] += len(facts["outputs"]) >= 2
        seen["nonlinear_output"] += any(
            doc["blocks"][o].get("act", "identity") != "identity" for o in facts["outputs"])
        acts.update(b["act"] for b in blocks if "act" in b)

    collect()
    assert all(count > 0 for count in seen.values()), seen
    assert acts == set(ACTS)


# --- neuron-level DAGs --------------------------------------------------------------------


def evaluate_graph(G: nx.DiGraph, acts: dict, w: np.ndarray, X: np.ndarray, params: dict,
                   in_columns: list, out_columns: list) -> np.ndarray:
    """The paper's model evaluated straight from the networkx graph (docs/design.md, The model)."""
    a = {node: torch.from_numpy(X[:, col]) for col, node in enumerate(in_columns)}
    for node in nx.topological_sort(G):
        preds = list(G.predecessors(node))
        if not preds:
            continue
        z = sum(float(w[params[(u, node)]]) * a[u] for u in preds) / np.sqrt(len(preds))
        a[node] = ACTIVATIONS[acts[node]](z)
    return torch.stack([a[node] for node in out_columns], dim=1).numpy()


@settings(max_examples=60, **SETTINGS)
@given(G=st.one_of(neuron_graphs(), neuron_graphs(int_names=True)),
       fmt=st.sampled_from(["json", "graphml", "edgelist"]),
       default_act=st.one_of(st.none(), st.sampled_from(ACTS)),
       seed=st.integers(0, 2**16))
def test_random_neuron_graph(G, fmt, default_act, seed):
    net = compile_file(write_graph(G, fmt, default_act))
    ref = check_against_reference(net, seed)

    # the file's graph, neuron by neuron: names are strings once written to GraphML or edges
    G = nx.relabel_nodes(G, str)
    name_of = {(b.name, i): str(n) for b in ref.blocks for i, n in enumerate(b.neurons)}
    assert sorted(name_of.values()) == sorted(G.nodes)
    edges = [(name_of[s], name_of[d], p) for s, d, p in ref.neuron_edges()]
    assert sorted((u, v) for u, v, _ in edges) == sorted(G.edges)
    params = {(u, v): p for u, v, p in edges}
    assert sorted(params.values()) == list(range(net.n_params))

    acts = {}
    for node in G:
        if G.in_degree(node) == 0:
            continue
        attribute = G.nodes[node].get("act") if fmt != "edgelist" else None
        default = "identity" if G.out_degree(node) == 0 else (default_act or "tanh")
        acts[node] = attribute or default
    for b in ref.blocks:
        for n in b.neurons:
            assert b.act == acts.get(str(n), ""), (n, b.act, acts.get(str(n)))
            assert b.is_output == (G.out_degree(str(n)) == 0 and G.in_degree(str(n)) > 0)

    in_columns = [name_of[(b.name, i)] for b in ref.inputs for i in range(b.size)]
    out_columns = [name_of[(b.name, i)] for b in ref.outputs for i in range(b.size)]
    assert sorted(in_columns) == sorted(n for n in G if G.in_degree(n) == 0)
    assert sorted(out_columns) == sorted(n for n in G if G.out_degree(n) == 0)
    rng = np.random.default_rng(seed + 1)
    w = net.init(seed=seed)
    X = rng.standard_normal((3, net.n_in))
    expected = evaluate_graph(G, acts, w, X, params, in_columns, out_columns)
    assert_close(net.forward(w, X), expected, "forward vs the networkx graph")


@pytest.mark.parametrize("fmt", ["json", "graphml", "edgelist"])
def test_neuron_graph_formats_agree(fmt):
    """One fixed graph read from each format gives the same network (same columns, P)."""
    G = nx.DiGraph([("a", "c"), ("b", "c"), ("a", "d"), ("c", "d"), ("c", "e"), ("d", "e"),
                    ("b", "e")])
    net = compile_file(write_graph(G, fmt, "sin"))
    assert net.n_params == G.number_of_edges() == 7
    assert (net.n_in, net.n_out, net.depth, net.width_m) == (2, 1, 3, 2)
    check_against_reference(net, 0)


@pytest.mark.parametrize("act", ["sigmoid", "softplus"])
def test_plain_python_mode_saturates_like_numba(act):
    """jit=False runs the generated functions as plain Python. Its sigmoid and softplus call
    math.exp(-z), which raises OverflowError for z < -709 where numba returns inf (and the
    activation correctly saturates): the two modes must agree on every finite input."""
    doc = {"name": "saturate", "width": 1, "inputs": {"x": 1},
           "blocks": {"h": {"size": 1, "act": act, "from": ["x"]}, "out": {"size": 1,
                                                                            "from": ["h"]}}}
    net = compile_file(write(yaml.safe_dump(doc, sort_keys=False), ".yaml"))
    ref = Reference(net)
    w = np.ones(net.n_params)
    X = np.array([[-1000.0], [-30.0], [1000.0]])
    assert_close(net.forward(w, X), ref.forward(w, X), f"{act} forward")
    assert_close(net.jacobian(w, X), ref.jacobian(w, X), f"{act} jacobian")
