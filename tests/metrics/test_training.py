"""Tests of dagc.metrics.training: the NTK matrix of several outputs, ntk_change's trend with
width, one step of `train` against gradient descent by hand, non-finite arguments; the
linearized model against the network and against its own weight-space definition; the
catapult of the two-layer linear model f = u . v / sqrt(m), whose kernel and output follow a
known two-dimensional map; the PL* ratio on it; the regime rule; options, keys, the loss
curve in the store; and the output scale d^-p."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dagc
from dagc import measure as M
from dagc.errors import DagcError
from dagc.experiments import store, sweep
from dagc.frontend import spec
from dagc.metrics import training as T

# f(x) = u . v x / sqrt(m): one identity hidden layer fed by one input (Lewkowycz et al. 2020)
UV_MODEL = """\
name: uv_model
width: 32
inputs: {x: 1}
blocks:
  h: {size: width, act: identity, from: [x]}
  out: {size: 1, from: [h]}
"""


# ------------------------------------------------------------------------------------------
# ntk_change


def test_ntk_matrix_flattens_several_outputs(two_outputs):
    net = two_outputs
    w = net.init(0)
    X = M.sweep_inputs(net, 0, 3)
    J = net.jacobian(w, X).reshape(3 * net.n_out, net.n_params)
    np.testing.assert_allclose(M.ntk_matrix(net, w, X), J @ J.T, rtol=1e-12, atol=1e-12)


def test_ntk_change_trains_and_shrinks_with_width():
    options = M.Options()
    results = {}
    for width in (16, 256):
        net = dagc.compile("mlp3", width=width)
        r = results[width] = M.measure(net, "ntk_change", 0, options)
        assert r["converged"] == 1.0
        assert r["loss_ratio"] <= 1 / options.loss_drop
        assert 1 <= r["steps"] <= options.max_steps
        assert r["value"] > 0 and r["weight_change"] > 0
    # Transition to linearity: the relative NTK change decays (like 1/width, see
    # docs/metrics.md), while the weights move by O(1) at every width.
    assert results[256]["value"] < 0.5 * results[16]["value"]
    assert results[256]["min_eig_change"] < results[16]["min_eig_change"]
    assert 1 / 3 < results[256]["weight_change"] / results[16]["weight_change"] < 3


def test_train_follows_gradient_descent(tiny):
    X, Y = M.regression_set(tiny, 0, 6)
    assert np.sqrt(np.mean(Y**2)) == pytest.approx(1.0)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), math.sqrt(tiny.n_in))
    w0 = tiny.init(0)
    one = M.train(tiny, w0, X, Y, loss_drop=1e9, max_steps=1)
    K0 = M.ntk_matrix(tiny, w0, X)
    assert one.eta == pytest.approx(1 / np.linalg.eigvalsh(K0 / 6)[-1])
    J = tiny.jacobian(w0, X)[:, 0, :]
    residual = tiny.forward(w0, X) - Y
    np.testing.assert_allclose(one.w, w0 - one.eta * J.T @ residual[:, 0] / 6, atol=1e-13)
    assert one.steps == 1 and one.loss < one.loss0



def test_train_raises_on_non_finite_arguments(tiny):
    # NaN targets used to reach LAPACK (LinAlgError) or train on silently.
    X, Y = M.regression_set(tiny, 0, 6)
    w0 = tiny.init(0)
    for name, index in (("w0", 0), ("X", 1), ("Y", 2), ("K0", 3)):
        args = [w0.copy(), X.copy(), Y.copy(), M.ntk_matrix(tiny, w0, X)]
        args[index].reshape(-1)[1] = np.nan
        with pytest.raises(DagcError, match=f"^{name}: contains NaN or inf"):
            M.train(tiny, *args[:3], loss_drop=10.0, max_steps=5, K0=args[3])


# ------------------------------------------------------------------------------------------
# The linearized model


def _linear_gap(net, eta: float, steps: int) -> tuple[T.LinearizedModel, T.TrainResult]:
    X, Y = M.regression_set(net, 0, 6)
    X_all = np.concatenate([X, M.sweep_inputs(net, 1, 4)])
    w0 = net.init(0)
    linear = T.LinearizedModel(net, w0, X_all, Y, T.ntk_matrix(net, w0, X_all, X), eta)
    result = M.train(net, w0, X, Y, loss_drop=1e9, max_steps=steps, eta=eta,
                     on_step=linear.on_step)
    return linear, result


def test_linearized_model_is_gradient_descent_on_f0_plus_J0_dw(tiny):
    """The output-space recursion equals training f_lin(w) = f(w0) + J0 (w - w0) in weights."""
    net, eta, steps = tiny, 0.3, 5
    X, Y = M.regression_set(net, 0, 6)
    X_all = np.concatenate([X, M.sweep_inputs(net, 1, 4)])
    linear, _ = _linear_gap(net, eta, steps)
    w0 = net.init(0)
    J = net.jacobian(w0, X_all)[:, 0, :]
    f0 = net.forward(w0, X_all)[:, 0]
    w = w0.copy()
    for _ in range(steps):
        residual = f0[:6] + J[:6] @ (w - w0) - Y[:, 0]
        w -= eta * J[:6].T @ residual / 6
    np.testing.assert_allclose(linear.outputs, f0 + J @ (w - w0), rtol=1e-12, atol=1e-12)


def test_linearized_model_agrees_with_the_network_to_first_order(tiny):
    # After a fixed number of steps of size eta, w - w0 = O(eta), so f - f_lin = O(eta^2).
    gaps = [_linear_gap(tiny, eta, 4)[0].gap for eta in (0.02, 0.01, 0.005)]
    assert 0 < gaps[-1] < 1e-3
    for big, small in zip(gaps, gaps[1:], strict=False):
        assert 3.5 < big / small < 4.5


def test_lin_gap_shrinks_with_width_in_the_lazy_regime():
    options = M.Options(train_size=8, loss_drop=100.0)
    gaps = [M.measure(dagc.compile("mlp3", width=w), "lin_gap", 0, options) for w in (16, 256)]
    for r in gaps:
        assert r["regime"] == T.LAZY and r["converged"] == 1.0
        assert r["lin_loss"] < 0.1 * r["loss"] / r["loss_ratio"]  # the linear model trains too
    assert gaps[1]["value"] < 0.3 * gaps[0]["value"]


# ------------------------------------------------------------------------------------------
# The catapult of the u . v model, analytically


@pytest.fixture(scope="module")
def uv_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("uv") / "uv_model.yaml"
    path.write_text(UV_MODEL)
    return dagc.compile(path, width=32, jit=False)


def _uv_map(f: float, lam: float, eta: float, m: int, steps: int) -> tuple[list, list]:
    """(f_t, lambda_t) of GD on (f - 0)^2 / 2 at x = 1: f' = f (1 - eta lam + eta^2 f^2 / m),
    lam' = lam + eta f^2 (eta lam - 4) / m (Lewkowycz et al. 2020, eqs. 3-4)."""
    fs, lams = [f], [lam]
    for _ in range(steps):
        f, lam = f * (1 - eta * lam + eta**2 * f**2 / m), lam + eta * f**2 * (eta * lam - 4) / m
        fs.append(f)
        lams.append(lam)
    return fs, lams


def _train_uv(net, factor: float, steps: int = 200):
    X, Y = np.ones((1, 1)), np.zeros((1, 1))
    w0 = net.init(3)
    K0 = T.ntk_matrix(net, w0, X)
    path = T.KernelPath(net, X, K0)
    eta = factor * T.critical_step(K0, 1)
    result = M.train(net, w0, X, Y, loss_drop=1e8, max_steps=steps, eta=eta,
                     on_step=path.on_step)
    path.finish(result)
    return result, path, eta


@pytest.mark.parametrize("factor", [0.5, 1.5])
def test_uv_model_follows_its_known_map(uv_model, factor):
    net = uv_model
    result, path, eta = _train_uv(net, factor, steps=60)
    f0 = float(net.forward(net.init(3), np.ones((1, 1)))[0, 0])
    fs, lams = _uv_map(f0, path.max0, eta, 32, result.steps)
    np.testing.assert_allclose(result.losses, 0.5 * np.array(fs)**2, rtol=1e-8, atol=1e-14)
    assert path.max_end == pytest.approx(lams[-1], rel=1e-10)
    # PL*: lambda falls monotonically while eta lambda < 4, so its minimum over the sampled
    # steps is its last value, lambda_T / lambda_0 from the map.
    assert all(b < a for a, b in zip(lams, lams[1:], strict=False))
    assert path.pl_ratio == pytest.approx(lams[-1] / lams[0], rel=1e-10)


def test_uv_model_regimes(uv_model):
    """eta lambda_0 < 2: lazy; 2 < eta lambda_0 < 4: the loss spikes, lambda falls below
    2 / eta and training converges (catapult); eta lambda_0 > 4: lambda grows, divergence."""
    regimes = {}
    for factor in (0.5, 1.5, 2.5):
        result, path, eta = _train_uv(uv_model, factor)
        edge0, edge_end = eta * path.max0 / 2, eta * path.max_end / 2
        regimes[factor] = T.regime(result, edge0, edge_end)
        if factor == 1.5:
            assert result.losses.max() > 10 * result.loss0  # the spike
            assert edge_end < 1.0 and result.loss < 1e-6 * result.loss0
    assert regimes == {0.5: T.LAZY, 1.5: T.CATAPULT, 2.5: T.DIVERGENT}


# ------------------------------------------------------------------------------------------
# The regime rule, options and the store


def _result(losses, diverged=False):
    losses = np.array(losses, dtype=float)
    return T.TrainResult(w=np.zeros(1), eta=1.0, steps=len(losses) - 1, loss0=losses[0],
                         loss=losses[-1], losses=losses, diverged=diverged)


def test_regime_rule():
    assert T.regime(_result([1.0, 0.5, 0.1]), 0.5, 0.5) == T.LAZY
    assert T.regime(_result([1.0, 3.0, 0.1]), 0.9, 0.5) == T.CATAPULT  # the loss spiked
    assert T.regime(_result([1.0, 0.9, 0.1]), 1.2, 0.9) == T.CATAPULT  # step above the edge
    assert T.regime(_result([1.0, 0.9, 0.1]), 1.2, 1.1) == T.DIVERGENT  # still above it
    assert T.regime(_result([1.0, 5.0, 2.0]), 1.2, 0.9) == T.DIVERGENT  # ended above start
    assert T.regime(_result([1.0, 1e7], diverged=True), 3.0, 9.0) == T.DIVERGENT
    assert T.regime(_result([1.0]), 0.5, 0.5) == T.LAZY  # no step taken


def test_training_options_are_checked_and_keyed():
    for bad in (dict(lr_factor=0.0), dict(lr=-1.0), dict(targets="labels"),
                dict(batch_size=-1), dict(train_size=1.5)):
        with pytest.raises(DagcError, match=f"^options.{next(iter(bad))}: "):
            M.Options(**bad)
    for metric in ("ntk_change", "lin_gap"):
        assert set(M.options_for(metric, M.Options())) == {
            "train_size", "targets", "loss_drop", "max_steps", "lr_factor", "lr", "batch_size"}
        assert sweep.options_key(metric, sweep.make_options(lr_factor=1.5)) \
            != sweep.options_key(metric, sweep.make_options())
    assert sweep.options_key("hessian", sweep.make_options(lr_factor=1.5)) \
        == sweep.options_key("hessian", sweep.make_options())


def test_sgd_uses_its_batches_and_the_linear_model_follows_them(tiny):
    X, Y = M.regression_set(tiny, 0, 6, targets="signs")
    assert set(np.unique(Y)) <= {-1.0, 1.0}
    w0 = tiny.init(0)
    seen = []
    result = M.train(tiny, w0, X, Y, loss_drop=1e9, max_steps=3, eta=0.1, batch_size=2,
                     rng=np.random.default_rng(0), on_step=lambda t, w, b: seen.append(b))
    first = np.sort(np.random.default_rng(0).choice(6, 2, replace=False))
    J = tiny.jacobian(w0, X[first])[:, 0, :]
    step = 0.1 * J.T @ (tiny.forward(w0, X[first]) - Y[first])[:, 0] / 2
    np.testing.assert_array_equal(seen[0], first)
    assert len(seen) == result.steps == 3 and len(result.losses) == 4
    with pytest.raises(DagcError, match="^batch_size: 7 is more than the 6"):
        M.train(tiny, w0, X, Y, 10.0, 3, eta=0.1, batch_size=7, rng=np.random.default_rng(0))
    one = M.train(tiny, w0, X, Y, 1e9, 1, eta=0.1, batch_size=2, rng=np.random.default_rng(0))
    np.testing.assert_allclose(one.w, w0 - step, atol=1e-13)


def test_the_loss_curve_round_trips_through_the_store(tiny, tmp_path):
    arch = sweep.Architecture("tiny", "digest", "text", "/tiny.yaml")
    cell = sweep.plan([arch], [4], [0], ["lin_gap"], sweep.make_options(train_size=6))[0]
    result = sweep.run_cell(cell, load_net=lambda *_: tiny)
    assert result.status == "ok", result.error
    with store.Store.open(tmp_path / "s.sqlite") as results:
        results.record(result.row())
        (row,) = results.rows()
    curve = row["extras"]["loss_curve"]
    assert curve == result.extras["loss_curve"] and len(curve) == row["extras"]["steps"] + 1
    assert all(isinstance(x, float) for x in curve) and curve[-1] < curve[0]


# ------------------------------------------------------------------------------------------
# Output scaling


def test_output_scale_is_d_to_the_minus_p(tmp_path):
    net = {}
    for p in (0.5, 1.0):
        path = tmp_path / f"uv{int(2 * p)}.yaml"
        path.write_text(UV_MODEL + f"output_scale: {p}\n")
        net[p] = dagc.compile(path, width=16, jit=False)
    w, X = net[0.5].init(0), np.ones((1, 1))
    assert net[1.0].forward(w, X)[0, 0] == pytest.approx(net[0.5].forward(w, X)[0, 0] / 4)
    # an absolute lr is scaled by d^(2p-1); lr_factor is relative to the kernel's own edge
    K0 = T.ntk_matrix(net[1.0], w, X)
    assert T.step_size(net[1.0], M.Options(lr=0.1), K0, 1) == pytest.approx(0.1 * 16)
    assert T.step_size(net[0.5], M.Options(lr=0.1), K0, 1) == 0.1
    eta = T.step_size(net[1.0], M.Options(lr_factor=1.5), K0, 1)
    assert eta * K0[0, 0] / 2 == pytest.approx(1.5)
    for bad in ("2", "0.25", "true", "'half'"):
        with pytest.raises(DagcError, match="output_scale: expected a number p in"):
            spec.parse(UV_MODEL + f"output_scale: {bad}\n")



# ------------------------------------------------------------------------------------------
# The sweep's training options


def test_sweep_spans_learning_rate_factors(tmp_path, capsys):
    from conftest import arch_path

    from dagc.cli import main

    db = tmp_path / "s.sqlite"
    argv = ["sweep", str(arch_path("tiny")), "--widths", "4", "--seeds", "1", "--metrics",
            "ntk_change,gradient", "--train-size", "6", "--db", str(db), "--no-progress"]
    assert main([*argv, "--lr-factor", "0.5,1.5"]) == 0
    with store.Store.open(db) as results:
        rows = results.rows()
    factors = sorted(r["options"]["lr_factor"] for r in rows if r["metric"] == "ntk_change")
    assert factors == [0.5, 1.5] and [r["metric"] for r in rows].count("gradient") == 1
    by_factor = {r["options"]["lr_factor"]: r["extras"] for r in rows
                 if r["metric"] == "ntk_change"}
    assert by_factor[0.5]["edge_start"] == pytest.approx(0.5)
    assert by_factor[1.5]["edge_start"] == pytest.approx(1.5)
    capsys.readouterr()
    for bad, message in (("0", "--lr-factor: must be a positive number"),
                         ("0.5,0.5", "--lr-factor: 0.5 is listed twice")):
        assert main([*argv, "--lr-factor", bad]) != 0
        assert message in capsys.readouterr().err
