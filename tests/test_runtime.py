"""CompiledNet: one compile per structure, argument checks, memory refusal, layout views."""

import numpy as np
import pytest
from conftest import compiled

import dagc
from dagc import DagcError


@pytest.fixture(scope="module")
def net():
    return compiled("densenet3", 8)


def test_a_second_width_reuses_the_compiled_module(net):
    net.forward(net.init(0), np.ones((2, net.n_in)))
    signatures = len(net.module.forward.signatures)
    wider = dagc.compile("densenet3", width=24)
    assert wider.module is net.module
    wider.forward(wider.init(0), np.ones((3, wider.n_in)))
    assert len(net.module.forward.signatures) == signatures


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda n, w: n.forward(w[:-1], np.ones((2, 16))), "w"),
        (lambda n, w: n.forward(w.astype(complex), np.ones((2, 16))), "w"),
        (lambda n, w: n.forward(w, np.ones((2, 15))), "X"),
        (lambda n, w: n.forward(w, [[1.0] * 15]), "X"),
        (lambda n, w: n.forward(w, np.ones(16)), "X"),
        (lambda n, w: n.vjp(w, np.ones((2, 16)), np.ones((3, 1))), "C"),
        (lambda n, w: n.vjp(w, np.ones((2, 16)), np.ones((2, 1)), out=w[::2]), "out"),
        (lambda n, w: n.mse_gradient(w, np.ones((2, 16)), np.ones((2, 2))), "Y"),
        (lambda n, w: n.mse_gradient(w, np.ones((2, 16)), np.ones(2)), "Y"),
        (lambda n, w: n.hvp(w, np.ones((1, 16)), w), "x"),
        (lambda n, w: n.hvp(w, np.ones(16), w[:3]), "v"),
        (lambda n, w: n.hvp(w, np.ones(16), w, output=1), "output"),
        (lambda n, w: n.hvp(w, np.ones(16), w, out=np.empty(3)), "out"),
        (lambda n, w: n.ntk(w, np.ones((2, 16)), np.ones((2, 4))), "X2"),
    ],
)
def test_bad_arguments_name_the_argument(net, call, argument):
    with pytest.raises(DagcError, match=rf"^{argument}:"):
        call(net, net.init(0))


def test_init_refuses_a_network_that_does_not_fit_before_allocating():
    huge = dagc.compile("mlp3", width=10**6)
    with pytest.raises(DagcError, match=r"GB"):
        huge.init(0)


def test_init_is_seeded_standard_normal(net):
    w = net.init(3)
    assert np.array_equal(w, net.init(3)) and not np.array_equal(w, net.init(4))
    big = dagc.compile("densenet3", width=256).init(0)
    assert abs(big.mean()) < 0.01 and abs(big.std() - 1) < 0.01


def test_unflatten_returns_views_in_layout_order(net):
    w = net.init(0)
    pieces = net.unflatten(w)
    assert list(pieces) == [(src, dst) for src, dst, *_ in net.layout]
    assert sum(p.size for p in pieces.values()) == net.n_params
    pieces[("x", "h1")][0, 0] = 123.0
    assert w[0] == 123.0
    for (_, _, kind, _, shape), piece in zip(net.layout, pieces.values(), strict=True):
        assert piece.shape == shape and kind == "dense"


@pytest.mark.parametrize("name", ["sparse3", "randdag"])
def test_sparse_indices_are_stored_once_and_read_only(name):
    """One uint32 copy of each connection's source indices, which the kernels read and
    `net.sources` shows: at width 4096 a second (int64) copy was 1.5x sparse3's weights."""
    sparse = compiled(name, 16, jit=False)
    views = [v if isinstance(v, tuple) else (v,) for v in sparse.sources.values()]
    indices = [v[-1] for v in views]
    assert all(i.dtype == np.uint32 and not i.flags.writeable for i in indices)
    kernel_indices = sparse._args[3]
    assert len(kernel_indices) == len(indices)
    assert all(np.shares_memory(a, b) for a, b in zip(kernel_indices, indices, strict=True))
    with pytest.raises(ValueError, match="read-only"):
        indices[0][0] = 0


def test_hvp_reuses_the_out_buffer(net):
    w = net.init(0)
    out = np.empty(net.n_params)
    result = net.hvp(w, np.ones(16), w, out=out)
    assert result is out


@pytest.mark.parametrize("name", ["densenet3", "resnet3", "sparse3"])
def test_vjp_overwrites_every_entry_of_a_reused_out_buffer(name):
    """Dense, bias and sparse pieces: a buffer full of NaN comes back as the fresh result."""
    net = compiled(name, 8)
    w = net.init(0)
    X = np.random.default_rng(0).standard_normal((3, net.n_in))
    C = np.ones((3, net.n_out))
    out = np.full(net.n_params, np.nan)
    assert net.vjp(w, X, C, out=out) is out
    assert np.array_equal(out, net.vjp(w, X, C))


@pytest.mark.parametrize("name", ["densenet3", "resnet3", "sparse3", "softout"])
def test_mse_gradient_is_forward_then_vjp_to_the_bit(name):
    """One sweep pair in place of two: the same outputs and gradient, for dense, bias, sparse
    and non-linear-output networks, into a reused buffer full of NaN."""
    net = compiled(name, 8)
    w = net.init(0)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((5, net.n_in)), rng.standard_normal((5, net.n_out))
    out = np.full(net.n_params, np.nan)
    outputs, gradient = net.mse_gradient(w, X, Y, out=out)
    assert gradient is out
    assert np.array_equal(outputs, net.forward(w, X))
    assert np.array_equal(gradient, net.vjp(w, X, (net.forward(w, X) - Y) / len(X)))
