"""The neuron-level IR (dagc.ir.neurons) and the passes compiled from it, against an
independent neuron-by-neuron PyTorch reference written here (it reads only the graph and
the weights, never dagc's formulas), and the bundled randdag against its grouped form."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

from dagc.backend import cache, render
from dagc.errors import DagcError
from dagc.frontend import graphs, spec
from dagc.ir import graph as block_graph
from dagc.ir import neurons
from dagc.ops.activations import ACTIVATIONS

torch.set_default_dtype(torch.float64)

TORCH_ACTS = {
    "identity": lambda z: z,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": torch.nn.functional.softplus,
    "erf": torch.erf,
    "gelu": lambda z: torch.nn.functional.gelu(z, approximate="none"),
    "sin": torch.sin,
    "relu": torch.relu,
}


def mixed_graph() -> nx.DiGraph:
    """Every activation, several per layer, skips across many layers, outputs in three
    different layers (one non-linear), and node ids that are not in topological order."""
    rng = np.random.default_rng(5)
    acts = list(ACTIVATIONS)
    graph = nx.DiGraph()
    inputs = ["in_b", "in_a", "in_c"]
    graph.add_nodes_from(inputs)
    layers = [inputs]
    for depth in range(1, 7):
        layer = []
        for j in range(4):
            node = f"z{7 - depth}_{j}"  # names sort against the topological order
            graph.add_node(node, act=acts[(3 * depth + j) % len(acts)])
            earlier = [n for lay in layers for n in lay]
            preds = set(rng.choice(earlier, size=min(3, len(earlier)), replace=False))
            preds.add(layers[-1][j % len(layers[-1])])  # stay in this layer
            graph.add_edges_from((p, node) for p in preds)
            layer.append(node)
        layers.append(layer)
    graph.add_edge("in_a", "z1_3")  # a skip from an input across six layers
    graph.add_edge("z6_0", "z1_2")  # and from layer 1 to layer 6
    for node in ["z6_3", "z4_1", "z2_2"]:  # ensure outputs in layers 1, 3 and 5 too
        for succ in list(graph.successors(node)):
            graph.remove_edge(node, succ)
    graph.add_node("out_sig", act="sigmoid")
    graph.add_edges_from([("z1_0", "out_sig"), ("z3_1", "out_sig"), ("in_c", "out_sig")])
    graph.add_edges_from([("z3_0", "out_lin"), ("in_c", "out_lin")])  # identity by default
    for node in list(graph.nodes):  # a neuron left without inputs would be another input
        if graph.in_degree(node) == 0 and node not in inputs:
            graph.add_edge("in_b", node)
    return graph


def _ir(graph: nx.DiGraph) -> neurons.NeuronIR:
    return neurons.build(neurons.from_networkx(graph, "tanh", "test graph"), "test", None,
                         None, "test graph")


def _module(ir: neurons.NeuronIR, jit: bool):
    """The shared module of ir's activations, in the cache every run of the tests reuses."""
    return cache.load_module(render.write_neuron_module(ir.acts, cache.cache_dir()), jit)


# --- the IR ----------------------------------------------------------------------------------

def test_neurons_are_sorted_into_runs_of_one_layer_and_activation():
    graph = mixed_graph()
    ir = _ir(graph)
    assert ir.input_names == ["in_b", "in_a", "in_c"]  # the file's order
    assert np.all(np.diff(ir.layer) >= 0)
    names = ir.names
    number = {n: i for i, n in enumerate(names)}
    for u, v in graph.edges:  # still a topological order
        assert number[u] < number[v]
    covered = np.zeros(ir.n_neurons, bool)
    for first, end, code in ir.runs:
        assert len(set(ir.layer[first:end])) == 1 and set(ir.codes[first:end]) == {code}
        covered[first:end] = True
    assert not covered[:ir.n_in].any() and covered[ir.n_in:].all()
    assert set(ir.output_names) == {n for n in graph if graph.out_degree(n) == 0}
    assert set(ir.acts) == set(ACTIVATIONS)


def test_edge_view_maps_every_parameter_to_its_edge():
    graph = mixed_graph()
    ir = _ir(graph)
    edges = [(ir.names[s], ir.names[t]) for s, t in ir.edges()]
    assert len(edges) == ir.n_params == graph.number_of_edges()
    assert set(edges) == set(graph.edges)
    (key, (indptr, indices)), = ir.sources.items()
    assert ir.layout == ((*key, "ragged", 0, (ir.n_params,)),)
    assert not indices.flags.writeable and np.array_equal(indices, ir.edges()[:, 0])


def test_paper_width_depth_bottlenecks_and_layers():
    graph = nx.DiGraph([("a", "h"), ("b", "h"), ("a", "k"), ("h", "k"), ("b", "k"),
                        ("h", "o"), ("k", "o")])
    ir = _ir(graph)
    assert (ir.width_m, ir.depth) == (2, 3)
    assert ir.bottlenecks == ("o",)  # k has in-degree 3; h is in layer 1
    assert dict(ir.layers) == {"a": 0, "b": 0, "h": 1, "k": 2, "o": 3}
    assert np.allclose(ir.scale, [0, 0, 2 ** -0.5, 3 ** -0.5, 2 ** -0.5])
    assert ir.layer_summary() == [(0, 2, "input x2", 0, 0), (1, 1, "tanh x1", 2, 2),
                                  (2, 1, "tanh x1", 3, 3), (3, 1, "identity x1", 2, 2)]


def test_graph_errors_name_the_culprit(tmp_path):
    lonely = nx.DiGraph([("a", "o")])
    lonely.add_node("lonely")
    with pytest.raises(DagcError, match="input neuron 'lonely' feeds nothing"):
        _ir(lonely)
    cyclic = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "b")])
    with pytest.raises(DagcError, match="form a cycle"):
        _ir(cyclic)
    bad = nx.DiGraph([("a", "o")])
    bad.nodes["o"]["act"] = "swish"
    with pytest.raises(DagcError, match="neuron 'o': unknown activation 'swish'"):
        _ir(bad)
    twice = tmp_path / "twice.edges"
    twice.write_text("a b\na b\n")
    with pytest.raises(DagcError, match="listed more than once"):
        graphs.read(twice, "arch.yaml")
    with pytest.raises(DagcError, match="arch.yaml: graph file .* not found"):
        graphs.read(tmp_path / "missing.graphml", "arch.yaml")


def test_every_reader_gives_the_same_network(tmp_path):
    graph = mixed_graph()
    nx.write_graphml(graph, tmp_path / "g.graphml")
    (tmp_path / "g.json").write_text(__import__("json").dumps(
        nx.node_link_data(graph, edges="links")))
    read = [_ir(graphs.read(tmp_path / f"g.{ext}", "arch")) for ext in ("graphml", "json")]
    for ir in read:
        assert ir.names == _ir(graph).names
        assert np.array_equal(ir.indices, _ir(graph).indices)
        assert np.array_equal(ir.codes, _ir(graph).codes)
    assert graphs.file_format(tmp_path / "g.txt") == "edgelist"


# --- against the PyTorch reference -----------------------------------------------------------

def torch_outputs(graph: nx.DiGraph, weights: dict, x: torch.Tensor, inputs: list,
                  outputs: list) -> torch.Tensor:
    """The paper's network neuron by neuron: z_v = sum_u w_uv a_u / sqrt(d_v), a_v =
    act_v(z_v); identity for outputs without an `act`, tanh for other neurons."""
    a = {name: x[i] for i, name in enumerate(inputs)}
    for node in nx.topological_sort(graph):
        preds = list(graph.predecessors(node))
        if not preds:
            continue
        z = sum(weights[(u, node)] * a[u] for u in preds) / len(preds) ** 0.5
        default = "identity" if graph.out_degree(node) == 0 else "tanh"
        a[node] = TORCH_ACTS[graph.nodes[node].get("act", default)](z)
    return torch.stack([a[name] for name in outputs])


def _reference(graph, ir):
    """f(w, x) as a torch function of the flat weights, mapped through the edge view."""
    edges = [(ir.names[s], ir.names[t]) for s, t in ir.edges()]

    def f(w, x):
        weights = {edge: w[e] for e, edge in enumerate(edges)}
        return torch_outputs(graph, weights, x, ir.input_names, ir.output_names)
    return f


@pytest.mark.parametrize("jit", [False, True], ids=["plain", "compiled"])
def test_every_pass_matches_the_torch_reference(jit):
    graph = mixed_graph()
    ir = _ir(graph)
    module = _module(ir, jit)
    f = _reference(graph, ir)
    rng = np.random.default_rng(3)
    w = rng.standard_normal(ir.n_params)
    X = rng.standard_normal((3, ir.n_in))
    v = rng.standard_normal(ir.n_params)
    args = ir.kernel_args
    tw = torch.tensor(w)
    Y = torch.stack([f(tw, torch.tensor(x)) for x in X]).numpy()
    np.testing.assert_allclose(module.forward(w, X, *args), Y, rtol=1e-13, atol=1e-14)
    J = np.stack([torch.autograd.functional.jacobian(lambda w_, x=x: f(w_, torch.tensor(x)),
                                                     tw).numpy() for x in X])  # (n, out, P)
    for k in range(ir.n_out):
        C = np.zeros((3, ir.n_out))
        C[:, k] = 1.0
        Jk = module.backward(w, X, C, False, True, np.zeros((3, ir.n_params)),
                             np.empty((3, ir.n_out)), *args)
        np.testing.assert_allclose(Jk, J[:, k], rtol=1e-12, atol=1e-13)
        _, Hv = torch.autograd.functional.hvp(lambda w_, k=k: f(w_, torch.tensor(X[1]))[k], tw,
                                              torch.tensor(v))
        np.testing.assert_allclose(module.hvp(w, X[1], v, k, np.empty(ir.n_params), *args),
                                   Hv.numpy(), rtol=1e-11, atol=1e-12)
    K = module.ntk(w, X, X[:2], False, *args)
    np.testing.assert_allclose(K, np.einsum("ikp,jlp->klij", J, J[:2]), rtol=1e-12,
                               atol=1e-12)


# --- randdag: the neuron path against the grouped one ----------------------------------------

def test_randdag_neuron_path_equals_grouped_path_to_rounding():
    """The same graph and parameter order either way (so the same w draws the same network);
    every pass agrees to a few ulps of its largest entry."""
    arch = spec.load("randdag")
    grouped_ir = block_graph.build(arch, 8)
    ir = block_graph.build_neurons(arch, 8)
    assert not block_graph.uses_neuron_path(arch)
    grouped = cache.load_module(cache.write_module(grouped_ir, cache.cache_dir()), jit=False)
    module = _module(ir, jit=False)
    ids = [n for b in grouped_ir.blocks for n in b.neurons]
    assert ids == list(ir.names)  # the same numbering
    # the grouped layout's edges, in its parameter order
    order = []
    for c in grouped_ir.connections:
        src = {b.name: b for b in grouped_ir.blocks}[c.src].neurons
        dst = {b.name: b for b in grouped_ir.blocks}[c.dst].neurons
        rows = np.repeat(np.arange(len(dst)), np.diff(c.indptr))
        order += list(zip([src[i] for i in c.indices], [dst[r] for r in rows], strict=True))
    position = {(int(s), int(t)): e for e, (s, t) in enumerate(ir.edges())}
    perm = np.array([position[edge] for edge in order])  # neuron w = grouped w[...]
    rng = np.random.default_rng(0)
    wg = rng.standard_normal(ir.n_params)
    w = np.empty_like(wg)
    w[perm] = wg
    X = rng.standard_normal((3, ir.n_in))
    from dagc.runtime import CompiledNet

    net = CompiledNet(grouped_ir, grouped)
    np.testing.assert_allclose(module.forward(w, X, *ir.kernel_args), net.forward(wg, X),
                               rtol=0, atol=1e-14)
    vg = rng.standard_normal(ir.n_params)
    v = np.empty_like(vg)
    v[perm] = vg
    Hv = module.hvp(w, X[0], v, 0, np.empty(ir.n_params), *ir.kernel_args)
    np.testing.assert_allclose(Hv[perm], net.hvp(wg, X[0], vg), rtol=0,
                               atol=1e-14 * np.abs(Hv).max())
    K = module.ntk(w, X, X, True, *ir.kernel_args)[0, 0]
    np.testing.assert_allclose(K, net.ntk(wg, X), rtol=1e-13)
    state = module.hessian_state(w, X, np.zeros(3, np.int64), np.full(3, -1),
                                 *ir.kernel_args)
    H = net.factored_hessian(wg, X)
    assert H.size == ir.factored_size
    C = rng.standard_normal((3, H.size))
    for mine, theirs in zip(module.hvp_factored(w, state, C, *ir.kernel_args), H.apply(C),
                            strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-13 * np.abs(theirs).max())


# --- through dagc.compile --------------------------------------------------------------------

def _graph_arch(tmp_path, graph: nx.DiGraph, stem: str) -> str:
    nx.write_graphml(graph, tmp_path / f"{stem}.graphml")
    (tmp_path / f"{stem}.yaml").write_text(f"name: {stem}\ngraph: {stem}.graphml\n")
    return tmp_path / f"{stem}.yaml"


def test_graph_files_compile_to_the_shared_neuron_module(tmp_path):
    """A graph file's CompiledNet: the neuron IR, its names and layout, every pass of the
    public API, and one module for two graphs with the same activations."""
    import dagc
    from dagc import measure

    graph = mixed_graph()
    net = dagc.compile(_graph_arch(tmp_path, graph, "mixed"))
    assert isinstance(net.ir, neurons.NeuronIR)
    assert net.input_names == ["in_b", "in_a", "in_c"] and net.n_in == 3
    assert set(net.output_names) == {n for n in graph if graph.out_degree(n) == 0}
    assert net.width is None and net.layers["in_a"] == 0 and net.depth == net.ir.depth
    assert net.layout == net.ir.layout and net.n_params == graph.number_of_edges()
    w = net.init(0)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, net.n_in))
    J = net.jacobian(w, X)
    C = rng.standard_normal((3, net.n_out))
    np.testing.assert_allclose(net.vjp(w, X, C), np.einsum("ik,ikp->p", C, J), atol=1e-12)
    F, g = net.mse_gradient(w, X, C)
    np.testing.assert_allclose(F, net.forward(w, X), atol=0)
    np.testing.assert_allclose(g, np.einsum("ik,ikp->p", (F - C) / 3, J), atol=1e-12)
    np.testing.assert_allclose(net.ntk(w, X), np.einsum("ikp,jlp->ijkl", J, J), atol=1e-12)
    H = net.factored_hessian(w, X, np.array([0, 1, 2]))
    norms = measure.lanczos_norms(H, rng.standard_normal((3, H.size)), 1e-10)
    for i in range(3):
        dense = np.stack([net.hvp(w, X[i], e, output=i) for e in np.eye(net.n_params)])
        assert np.isclose(norms[i], np.abs(np.linalg.eigvalsh(dense)).max(), rtol=1e-8)
    identity = [k for k, o in enumerate(net.ir.outputs) if net.ir.codes[o] == 0]
    by_preact = net.preactivation_hessian(w, X, ["neurons"] * 3,
                                          np.full(3, net.ir.outputs[identity[0]]))
    by_output = net.factored_hessian(w, X, np.full(3, identity[0]))
    C = rng.standard_normal((3, by_output.size))
    np.testing.assert_allclose(by_preact.apply(C), by_output.apply(C), atol=1e-13)
    with pytest.raises(DagcError, match="neurons: expected"):
        net.preactivation_hessian(w, X, ["neurons"] * 3, np.zeros(3, np.int64))
    other = mixed_graph()
    other.remove_edge("in_a", "z1_3")
    assert dagc.compile(_graph_arch(tmp_path, other, "other")).module is net.module


def test_deep_random_dag_takes_the_neuron_path(tmp_path):
    import dagc

    text = ("name: deep\nwidth: 6\ngraph: {generator: random_dag, inputs: 3, layers: "
            f"{block_graph.GROUPED_LAYERS + 1}, size: width, fan_in: 4, outputs: 2, act: sin}}\n")
    (tmp_path / "deep.yaml").write_text(text)
    net = dagc.compile(tmp_path / "deep.yaml", width=6)
    assert isinstance(net.ir, neurons.NeuronIR) and net.ir.acts == ("identity", "sin")
    assert (net.width, net.width_m, net.depth) == (6, 4, block_graph.GROUPED_LAYERS + 2)
    assert net.output_names == [net.ir.n_neurons - 2, net.ir.n_neurons - 1]
    X = np.random.default_rng(0).standard_normal((2, 3))
    assert net.forward(net.init(0), X).shape == (2, 2)
