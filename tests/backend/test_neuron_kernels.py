"""The neuron path's passes (backend/neurons.py kernels through templates/neurons.py.j2) on
random graphs from hypothesis, run as plain Python (nothing compiles), against finite
differences and the factored Hessian's own identities; and one compiled module shared by
graphs with the same activations."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagc.backend import cache, render
from dagc.ir import neurons
from dagc.ops.activations import ACTIVATIONS

SMOOTH = [name for name, a in ACTIVATIONS.items() if a.smooth]


@st.composite
def neuron_graphs(draw) -> nx.DiGraph:
    """A DAG of 1-3 inputs and 1-7 further neurons, each fed by 1-4 earlier ones, with
    smooth activations (relu's kink would spoil the finite differences)."""
    n_in = draw(st.integers(1, 3))
    n_more = draw(st.integers(1, 7))
    graph = nx.DiGraph()
    graph.add_nodes_from(f"x{i}" for i in range(n_in))
    for i in range(n_more):
        earlier = list(graph.nodes)
        k = draw(st.integers(1, min(4, len(earlier))))
        preds = draw(st.lists(st.sampled_from(earlier), min_size=k, max_size=k, unique=True))
        graph.add_node(f"n{i}", act=draw(st.sampled_from(SMOOTH)))
        graph.add_edges_from((p, f"n{i}") for p in preds)
    dangling = [n for n in graph.nodes if graph.out_degree(n) == 0 and graph.in_degree(n) == 0]
    graph.add_edges_from((n, f"n{n_more - 1}") for n in dangling if n != f"n{n_more - 1}")
    return graph


def _ir(graph: nx.DiGraph) -> neurons.NeuronIR:
    raw = neurons.from_networkx(graph, "tanh", "test graph")
    return neurons.build(raw, "test", None, None, "test graph")


def _module(ir: neurons.NeuronIR, directory, jit: bool):
    return cache.load_module(render.write_neuron_module(ir.acts, directory), jit)


def _gradient(module, ir, w, x, output):
    C = np.zeros((1, ir.n_out))
    C[0, output] = 1.0
    grad = np.zeros((1, ir.n_params))
    module.backward(w, x[None], C, False, False, grad, np.empty((1, ir.n_out)),
                    *ir.kernel_args)
    return grad[0]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=neuron_graphs(), seed=st.integers(0, 2**16))
def test_plain_passes_match_finite_differences(tmp_path_factory, graph, seed):
    ir = _ir(graph)
    module = _module(ir, tmp_path_factory.getbasetemp() / "plain", jit=False)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(ir.n_params)
    X = rng.standard_normal((2, ir.n_in))
    v = rng.standard_normal(ir.n_params)
    args = ir.kernel_args
    eps = 1e-6
    # gradient of every output against central differences of the forward pass
    for k in range(ir.n_out):
        fd = (module.forward(w + eps * v, X[:1], *args)
              - module.forward(w - eps * v, X[:1], *args))[0, k] / (2 * eps)
        assert np.isclose(_gradient(module, ir, w, X[0], k) @ v, fd, rtol=1e-5, atol=1e-7)
    # HVP against central differences of the gradient
    Hv = module.hvp(w, X[0], v, 0, np.empty(ir.n_params), *args)
    fd = (_gradient(module, ir, w + eps * v, X[0], 0)
          - _gradient(module, ir, w - eps * v, X[0], 0)) / (2 * eps)
    np.testing.assert_allclose(Hv, fd, rtol=1e-4, atol=1e-6)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=neuron_graphs(), seed=st.integers(0, 2**16))
def test_plain_factored_hessian_is_the_hvp_in_coordinates(tmp_path_factory, graph, seed):
    """v = U C for the coordinates C: U(HC) = H v, and C . GC = |v|^2, per row."""
    ir = _ir(graph)
    module = _module(ir, tmp_path_factory.getbasetemp() / "plain", jit=False)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(ir.n_params)
    X = rng.standard_normal((2, ir.n_in))
    rows_output = rng.integers(0, ir.n_out, 2)
    args = ir.kernel_args
    state = module.hessian_state(w, X, rows_output, np.full(2, -1), *args)
    C = rng.standard_normal((2, ir.factored_size))
    HC, GC = module.hvp_factored(w, state, C, *args)
    A, G = state[0], state[4]
    src, dst = ir.edges().T
    for i in range(2):
        def expand(c, i=i):
            q = np.concatenate([np.zeros(ir.n_neurons), [0.0]])
            hidden = ir.q_index >= 0
            q[np.flatnonzero(hidden)] = c[ir.q_index[hidden]]
            p = c[dst - ir.n_in]
            return p * A[i, src] + G[i, dst] * q[src]
        v = expand(C[i])
        Hv = module.hvp(w, X[i], v, int(rows_output[i]), np.empty(ir.n_params), *args)
        np.testing.assert_allclose(expand(HC[i]), Hv, rtol=1e-9, atol=1e-12)
        assert np.isclose(C[i] @ GC[i], v @ v, rtol=1e-12)
    # an identity output's pre-activation is the output itself: the same Hessians
    linear = [k for k in range(ir.n_out) if ir.codes[ir.outputs[k]] == neurons.CODES["identity"]]
    if linear:
        k = linear[0]
        by_output = module.hessian_state(w, X, np.full(2, k), np.full(2, -1), *args)
        by_preact = module.hessian_state(w, X, np.full(2, ir.outputs[k]), np.zeros(2), *args)
        np.testing.assert_allclose(module.hvp_factored(w, by_preact, C, *args),
                                   module.hvp_factored(w, by_output, C, *args), atol=1e-13)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=neuron_graphs(), seed=st.integers(0, 2**16))
def test_plain_ntk_and_jacobian_agree(tmp_path_factory, graph, seed):
    ir = _ir(graph)
    module = _module(ir, tmp_path_factory.getbasetemp() / "plain", jit=False)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(ir.n_params)
    X = rng.standard_normal((3, ir.n_in))
    args = ir.kernel_args
    J = np.empty((ir.n_out, 3, ir.n_params))
    for k in range(ir.n_out):
        C = np.zeros((3, ir.n_out))
        C[:, k] = 1.0
        J[k] = module.backward(w, X, C, False, True, np.zeros((3, ir.n_params)),
                               np.empty((3, ir.n_out)), *args)
        for i in range(3):
            np.testing.assert_allclose(J[k, i], _gradient(module, ir, w, X[i], k), atol=1e-14)
    K = module.ntk(w, X, X[:2], False, *args)
    np.testing.assert_allclose(K, np.einsum("kip,ljp->klij", J, J[:, :2]), atol=1e-12)
    np.testing.assert_allclose(module.ntk(w, X, X, True, *args),
                               np.einsum("kip,ljp->klij", J, J), atol=1e-12)


def _chain(acts: list[str], length: int) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_edge("x", "n0")
    for i in range(length):
        graph.nodes[f"n{i}"]["act"] = acts[i % len(acts)]
        graph.add_edge(f"n{i}", f"n{i + 1}")
        graph.add_edge("x", f"n{i + 1}")
    return graph


def test_graphs_with_the_same_activations_share_one_compiled_module(tmp_path):
    """Two different graphs (sizes, depths, edges) with the same activations: one module
    file, one loaded module, and the second graph compiles nothing new."""
    small, large = _ir(_chain(["sin", "tanh"], 3)), _ir(_chain(["tanh", "sin"], 40))
    assert small.acts == large.acts and small.n_params != large.n_params
    path = render.write_neuron_module(small.acts, tmp_path)
    assert render.write_neuron_module(large.acts, tmp_path) == path
    module = cache.load_module(path)
    w = np.ones(small.n_params)
    module.forward(w, np.ones((2, 1)), *small.kernel_args)
    signatures = list(module.forward.signatures)
    module.forward(np.ones(large.n_params), np.ones((2, 1)), *large.kernel_args)
    assert list(module.forward.signatures) == signatures  # no recompile for the new graph
    assert cache.load_module(render.write_neuron_module(large.acts, tmp_path)) is module


def test_module_text_does_not_depend_on_the_graph():
    assert render.render_neurons(("tanh", "sin")) == render.render_neurons(("sin", "tanh"))
    assert render.render_neurons(("tanh",)) != render.render_neurons(("tanh", "sin"))


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        render.render_neurons(("tanh", "swish"))
