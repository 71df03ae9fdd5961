"""`net.to_torch(w)` and `net.to_jax(w)`: the same network as `net.forward`, to 1e-12, with
gradients equal to `net.vjp` (dagc.export)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, compiled

import dagc
from dagc import export

torch = pytest.importorskip("torch")

# Every connection kind and feature: kitchen_sink (two inputs, sparse from an input, biases,
# add-skips, every activation, three outputs), randdag (ragged connections of a neuron DAG).
EXPORTED = ("kitchen_sink", "randdag", "resnet3")


def _point(net, rows: int = 3, seed: int = 1):
    rng = np.random.default_rng(seed)
    return (net.init(seed), rng.standard_normal((rows, net.n_in)),
            rng.standard_normal((rows, net.n_out)))


def _assert_module_is_the_network(module, net, w, X, C):
    """The torch module's outputs equal net.forward and its parameters' gradients of
    sum(C * F), concatenated in layout order, equal net.vjp, to 1e-12."""
    F = module(torch.from_numpy(X))
    assert_close(F.detach().numpy(), net.forward(w, X), 1e-12, what="forward")
    (torch.from_numpy(C) * F).sum().backward()
    grad = torch.cat([p.grad.ravel() for p in module.parameters()]).numpy()
    assert_close(grad, net.vjp(w, X, C), 1e-12, what="vjp")


def _assert_torch_function_of_w_is_the_network(apply, net, w, X, C):
    """`apply(u)`, a torch function of the flat weights, equals net.forward at w, and its
    pullback of C equals net.vjp, to 1e-12."""
    F, pullback = torch.func.vjp(apply, torch.from_numpy(w))
    assert_close(F.detach().numpy(), net.forward(w, X), 1e-12, what="forward")
    assert_close(pullback(torch.from_numpy(C))[0].numpy(), net.vjp(w, X, C), 1e-12,
                 what="vjp")


@pytest.mark.parametrize("name", EXPORTED)
def test_torch_module_equals_forward_and_vjp(name):
    net = compiled(name, 8, jit=False)
    w, X, C = _point(net)
    module = net.to_torch(w)
    _assert_module_is_the_network(module, net, w, X, C)
    assert module.output_names == net.output_names


def test_torch_parameters_follow_the_layout():
    net = compiled("kitchen_sink", 8, jit=False)
    w = net.init(0)
    module = net.to_torch(w)
    flat = torch.cat([p.detach().ravel() for p in module.parameters()]).numpy()
    assert np.array_equal(flat, w)
    assert list(module.weights)[:2] == ["x->h1", "u->h1"] and "bias->h1" in module.weights
    w[0] += 1.0  # the module holds copies: changing w afterwards changes nothing
    assert module.weights["x->h1"].detach().numpy().ravel()[0] == flat[0]


def test_jax_function_equals_forward_and_vjp():
    jax = pytest.importorskip("jax")
    net = compiled("kitchen_sink", 8, jit=False)
    w, X, C = _point(net)
    f, params = net.to_jax(w)
    assert_close(np.asarray(f(params, X)), net.forward(w, X), 1e-12, what="forward")
    grads = jax.grad(lambda p: (C * f(p, X)).sum())(params)
    flat = np.concatenate([np.asarray(grads[key]).ravel() for key in params])
    assert_close(flat, net.vjp(w, X, C), 1e-12, what="vjp")


def test_export_refuses_bad_weights():
    net = compiled("tiny", 4, jit=False)
    with pytest.raises(dagc.DagcError, match="w: expected shape"):
        net.to_torch(np.zeros(3))


def test_torch_module_follows_output_scale():
    text = compiled("tiny", 4, jit=False).ir.spec.text + "output_scale: 1\n"
    net = dagc.compile(text, jit=False)
    w, X, _ = _point(net)
    assert_close(net.to_torch(w)(torch.from_numpy(X)).detach().numpy(), net.forward(w, X),
                 1e-12, what="forward")


@pytest.mark.parametrize("sparse", export.SPARSE_MODES)
def test_neuron_graph_exports_through_its_edges(sparse):
    import networkx as nx

    graph = nx.DiGraph([("a", "h"), ("b", "h"), ("a", "g"), ("h", "y"), ("g", "y"), ("b", "y")])
    graph.nodes["g"]["act"] = "relu"
    net = dagc.compile(graph, jit=False)
    w, X, C = _point(net, rows=4)
    module = export.to_torch(net, w, sparse=sparse)
    _assert_module_is_the_network(module, net, w, X, C)


@pytest.mark.parametrize("sparse", export.SPARSE_MODES)
def test_a_neuron_level_network_exports_through_its_edge_view(sparse):
    """A network on the neuron path (`dagc.ir.neurons`: runs of one layer and activation over
    one CSR) against the shared neuron kernels, run as plain Python."""
    from types import SimpleNamespace

    import networkx as nx

    from dagc.backend import cache, render
    from dagc.ir import neurons

    graph = nx.DiGraph([("a", "h"), ("b", "h"), ("a", "g"), ("h", "k"), ("g", "k"),
                        ("h", "y"), ("k", "y"), ("b", "z"), ("g", "z")])
    graph.nodes["g"]["act"] = "sin"
    ir = neurons.build(neurons.from_networkx(graph, "tanh", "g"), "g", None, None, "g")
    module = cache.load_module(render.write_neuron_module(ir.acts, cache.cache_dir()), False)
    net = SimpleNamespace(name="g", ir=ir, layout=ir.layout, input_names=ir.input_names,
                          output_names=ir.output_names)
    rng = np.random.default_rng(4)
    w, X = rng.standard_normal(ir.n_params), rng.standard_normal((3, ir.n_in))
    C = rng.standard_normal((3, ir.n_out))
    torch_net = export.to_torch(net, w, sparse=sparse)
    F = torch_net(torch.from_numpy(X))
    assert_close(F.detach().numpy(), module.forward(w, X, *ir.kernel_args), 1e-12,
                 what="forward")
    (torch.from_numpy(C) * F).sum().backward()
    grad = np.zeros((1, ir.n_params))
    module.backward(w, X, C, False, False, grad, np.empty((3, ir.n_out)), *ir.kernel_args)
    assert_close(torch_net.weights["neurons->neurons"].grad.numpy(), grad[0], 1e-12, what="vjp")


@pytest.mark.parametrize("name", EXPORTED)
def test_masked_torch_module_equals_forward_and_vjp(name):
    """sparse="masked" (weights scattered into dense matrices) is the same function."""
    net = compiled(name, 8, jit=False)
    w, X, C = _point(net)
    module = export.to_torch(net, w, sparse="masked")
    _assert_module_is_the_network(module, net, w, X, C)


@pytest.mark.parametrize("sparse", export.SPARSE_MODES)
def test_jax_function_of_split_weights_equals_vjp(sparse):
    """`f(split_weights(net, w), X)` is differentiable in the flat w, in both sparse modes."""
    jax = pytest.importorskip("jax")
    net = compiled("randdag", 8, jit=False)
    w, X, C = _point(net)
    f, _ = export.to_jax(net, w, sparse=sparse)
    F, pullback = jax.vjp(lambda u: f(export.split_weights(net, u), X), jax.numpy.asarray(w))
    assert_close(np.asarray(F), net.forward(w, X), 1e-12, what="forward")
    assert_close(np.asarray(pullback(C)[0]), net.vjp(w, X, C), 1e-12, what="vjp")


def test_split_weights_are_the_layout_pieces_of_flat_w():
    net = compiled("kitchen_sink", 8, jit=False)
    w = net.init(0)
    pieces = export.split_weights(net, w)
    assert list(pieces) == list(net.to_torch(w).weights)
    assert np.array_equal(np.concatenate([p.ravel() for p in pieces.values()]), w)
    assert np.shares_memory(pieces["x->h1"], w)  # views: no copy of the weights


def test_torch_functional_call_on_split_weights_equals_vjp():
    """The module as a function of the flat w (what a torch.func user writes)."""
    net = compiled("kitchen_sink", 8, jit=False)
    w, X, C = _point(net)
    module = net.to_torch(np.zeros_like(w))  # its own weights are replaced: zeros show that

    def apply(u):
        params = {f"weights.{key}": p for key, p in export.split_weights(net, u).items()}
        return torch.func.functional_call(module, params, (torch.from_numpy(X),))

    _assert_torch_function_of_w_is_the_network(apply, net, w, X, C)


def test_torch_forward_with_split_weights_equals_vjp():
    """`module.forward_with(params, X)`: the module as `to_jax`'s f(params, X)."""
    net = compiled("randdag", 8, jit=False)
    w, X, C = _point(net)
    module = net.to_torch(np.zeros_like(w))

    def apply(u):
        return module.forward_with(export.split_weights(net, u), torch.from_numpy(X))

    _assert_torch_function_of_w_is_the_network(apply, net, w, X, C)


def test_export_refuses_an_unknown_sparse_mode():
    net = compiled("tiny", 4, jit=False)
    with pytest.raises(dagc.DagcError, match="sparse: expected one of gather, masked"):
        export.to_torch(net, net.init(0), sparse="dense")
