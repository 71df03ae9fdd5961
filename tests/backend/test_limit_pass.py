"""The infinite-width NNGP and NTK pass (`net.nngp_limit`, `net.ntk_limit`): against
neural-tangents' kernel_fn for the architectures its stax combinators express (skipped where
neural-tangents is not installed: it needs a JAX of its era, see the `limits` extra), against
the Monte Carlo mean of dagc's own empirical NTK over seeds, and its argument errors."""

import numpy as np
import pytest
from conftest import compiled

import dagc
from dagc.errors import DagcError

CHAIN_ERF = """\
name: chain_erf
width: 8
inputs: {x: 6}
blocks:
  h1:  {size: width, act: erf, from: [x], bias: true}
  h2:  {size: width, act: erf, from: [h1]}
  out: {size: 2, from: [h2]}
"""

# DenseNet-style: h3 reads the concatenation of the equal-width h1 and h2.
DENSE_TANH = """\
name: dense_tanh
width: 8
inputs: {x: 6}
blocks:
  h1:  {size: width, act: tanh, from: [x]}
  h2:  {size: width, act: tanh, from: [h1]}
  h3:  {size: width, act: tanh, from: [h1, h2]}
  out: {size: 1, from: [h3]}
"""

# Skips around activations of non-zero mean: the limit's mean cross terms.
SKIP_MEANS = """\
name: skip_means
width: 8
inputs: {x: 5}
blocks:
  h1:  {size: width, act: sigmoid, from: [x], bias: true}
  h2:  {size: width, act: softplus, from: [h1], add: [h1]}
  h3:  {size: width, act: gelu, from: [h2], add: [h2]}
  out: {size: 1, from: [h3]}
"""


def _net(tmp_path, text, width=8):
    path = tmp_path / "arch.yaml"
    path.write_text(text)
    return dagc.compile(str(path), width=width)


def _inputs(n, d, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d))
    return X * np.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True)


# --- against neural-tangents ---------------------------------------------------------------

def _neural_tangents():
    nt = pytest.importorskip("neural_tangents")
    import jax

    jax.config.update("jax_enable_x64", True)
    return nt.stax


def test_chain_with_bias_and_two_outputs_matches_neural_tangents(tmp_path):
    stax = _neural_tangents()
    net = _net(tmp_path, CHAIN_ERF)
    X1, X2 = _inputs(5, 6, 1), _inputs(3, 6, 2)
    # Layer 1: 6 inputs and a bias, none grows: shares 6/7 and 1/7 (W_std^2 and b_std^2).
    _, _, kernel_fn = stax.serial(stax.Dense(8, W_std=np.sqrt(6 / 7), b_std=np.sqrt(1 / 7)),
                                  stax.Erf(), stax.Dense(8), stax.Erf(), stax.Dense(1))
    expected = kernel_fn(X1, X2, ("nngp", "ntk"))
    for k in range(2):
        np.testing.assert_allclose(net.nngp_limit(X1, X2)[..., k], expected.nngp, atol=1e-13)
        np.testing.assert_allclose(net.ntk_limit(X1, X2)[..., k], expected.ntk, atol=1e-13)


def test_dense_concatenation_with_tanh_matches_neural_tangents(tmp_path):
    stax = _neural_tangents()
    import jax.numpy as jnp

    net = _net(tmp_path, DENSE_TANH)
    X = _inputs(6, 6, 3)
    # NT integrates tanh by Gauss-Hermite quadrature; degree 150 is below 1e-9 relative here.
    layer = stax.serial(stax.Dense(8), stax.ElementwiseNumerical(jnp.tanh, deg=150))
    _, _, kernel_fn = stax.serial(layer, stax.FanOut(2), stax.parallel(stax.Identity(), layer),
                                  stax.FanInConcat(), layer, stax.Dense(1))
    expected = kernel_fn(X, None, ("nngp", "ntk"))
    scale = np.abs(expected.ntk).max()
    np.testing.assert_allclose(net.nngp_limit(X)[..., 0], expected.nngp, atol=1e-9 * scale)
    np.testing.assert_allclose(net.ntk_limit(X)[..., 0], expected.ntk, atol=1e-9 * scale)


# --- against dagc's own empirical kernels ----------------------------------------------------

@pytest.mark.parametrize("arch", ["densenet3", "sparse3", "resnet3", "skip_means"])
def test_limit_is_the_mean_of_the_empirical_ntk(tmp_path, arch):
    """The empirical NTK at width 512, averaged over seeds, within 4 standard errors of the
    limit, plus the O(1/m) bias of a finite width's mean."""
    width, seeds = 512, 16
    net = _net(tmp_path, SKIP_MEANS, width) if arch == "skip_means" \
        else dagc.compile(arch, width=width)
    X = _inputs(4, net.n_in, 5)
    samples = np.array([net.ntk(net.init(seed), X) for seed in range(seeds)])
    mean = samples.mean(axis=0)
    error = samples.std(axis=0, ddof=1) / np.sqrt(seeds)
    limit = net.ntk_limit(X)[..., 0]
    assert np.all(np.abs(mean - limit) <= 4 * error + 4 / width * np.abs(limit).max())


def test_nngp_is_the_second_moment_of_the_outputs(tmp_path):
    width, seeds = 256, 400
    net = _net(tmp_path, SKIP_MEANS, width)
    X = _inputs(3, net.n_in, 6)
    outputs = np.array([net.forward(net.init(seed), X)[:, 0] for seed in range(seeds)])
    products = outputs[:, :, None] * outputs[:, None, :]
    error = products.std(axis=0, ddof=1) / np.sqrt(seeds)
    limit = net.nngp_limit(X)[..., 0]
    assert np.all(np.abs(products.mean(axis=0) - limit)
                  <= 4 * error + 4 / width * np.abs(limit).max())


# --- shapes, symmetry, errors ---------------------------------------------------------------

def test_shapes_and_symmetry(tmp_path):
    net = _net(tmp_path, CHAIN_ERF)
    X1, X2 = _inputs(4, 6, 7), _inputs(3, 6, 8)
    square = net.ntk_limit(X1)
    assert square.shape == (4, 4, 2)
    np.testing.assert_array_equal(square, square.transpose(1, 0, 2))
    stacked = np.concatenate([X1, X2])
    np.testing.assert_allclose(net.ntk_limit(X1, X2), net.ntk_limit(stacked)[:4, 4:],
                               rtol=1e-13, atol=1e-15)
    assert net.nngp_limit(X1, X2).shape == (4, 3, 2)


def test_limit_does_not_depend_on_the_width_compiled():
    X = _inputs(3, 16, 9)
    np.testing.assert_allclose(compiled("sparse3", 8).ntk_limit(X),
                               compiled("sparse3", 16).ntk_limit(X), rtol=1e-14)


@pytest.mark.parametrize("name", ["X1", "X2"])
def test_bad_inputs_are_named(name):
    net = compiled("mlp3", 8)
    good = _inputs(2, 16)
    bad = {"X1": (good[:, :3], None), "X2": (good, good[:, :5])}[name]
    with pytest.raises(DagcError, match=name):
        net.ntk_limit(*bad)
    with pytest.raises(DagcError, match=name):
        net.nngp_limit(*bad)


def test_sparse_connection_from_an_input_has_no_limit():
    net = compiled("kitchen_sink", 8)
    with pytest.raises(DagcError, match="block lin: connection from x: a sparse connection"):
        net.ntk_limit(_inputs(2, net.n_in))
