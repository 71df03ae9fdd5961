"""Tests of the metric registry and the measurement entry point: every metric returns exactly
its registered fields, bit-identically in any process; options and their checks; a cell's
options key holds only what its metric reads; docs/metrics.md is what the registry renders;
a non-finite result fails instead of being returned."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import compiled

from dagc import measure as M
from dagc.errors import DagcError
from dagc.experiments import sweep
from dagc.metrics import docs, registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mlp3_small():
    return compiled("mlp3", 8)


def test_every_metric_returns_its_registered_fields(two_outputs, mlp3_small):
    assert list(M.METRICS) == ["hessian", "hessian_ball", "hessian_hidden", "hessian_preact",
                               "gradient", "linearization", "ntk_gap", "ntk_change",
                               "lin_gap", "loss_hessian"]
    for name, metric in M.METRICS.items():
        # tiny_sparse has no hidden block outside layers 0 and 1 (Theorem 3.8's neurons), and
        # no infinite-width limit (a sparse connection from its fixed input)
        net = mlp3_small if name in ("hessian_hidden", "ntk_gap") else two_outputs
        result = M.measure(net, name, 1)
        assert list(result) == list(metric.fields), name
        # numbers, and lists of numbers (a training metric's loss curve)
        values = [x for v in result.values() for x in (v if isinstance(v, list) else [v])]
        assert all(isinstance(v, float) and math.isfinite(v) for v in values), name


def test_registry_entries_are_complete():
    options = {f.name for f in dataclasses.fields(M.Options)}
    for name, metric in M.METRICS.items():
        assert metric.name == name and metric.definition and metric.label
        assert metric.reads and set(metric.reads) <= options
        assert metric.slope_reason
    expected = {"hessian": -0.5, "hessian_ball": -0.5, "hessian_hidden": -0.5,
                "hessian_preact": -0.5, "gradient": 0.0, "linearization": -0.5,
                "ntk_change": -1.0, "lin_gap": -1.0, "loss_hessian": 0.0, "ntk_gap": -0.5}
    assert {n: m.expected_slope for n, m in M.METRICS.items()} == expected
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(M.METRICS["hessian"])
    with pytest.raises(ValueError, match="unknown option"):
        dataclasses.replace(M.METRICS["hessian"], reads=("radius", "nonsense"))


def test_docs_file_is_what_the_registry_renders():
    assert (ROOT / "docs" / "metrics.md").read_text() == docs.render(), \
        "run `python -m dagc.metrics.docs > docs/metrics.md`"
    text = docs.render()
    for name, metric in M.METRICS.items():
        assert f"## `{name}`" in text and metric.definition in text


def test_options_key_holds_only_the_options_a_metric_reads():
    # `--radius 2` used to give every cell a new key, so hessian cells were measured again.
    base, wider = sweep.make_options(), sweep.make_options(radius=2.0)
    assert sweep.options_key("hessian", base) == sweep.options_key("hessian", wider)
    assert sweep.options_key("gradient", base) == sweep.options_key("gradient", wider)
    assert sweep.options_key("hessian_ball", base) != sweep.options_key("hessian_ball", wider)
    assert sweep.options_key("linearization", base) != sweep.options_key("linearization", wider)
    assert M.options_for("gradient", base) == {"inputs": 4}
    assert M.options_for("ntk_change", M.Options()) == {
        "train_size": 0, "targets": "teacher", "loss_drop": 1000.0, "max_steps": 1000,
        "lr_factor": 0.5, "lr": 0.0, "batch_size": 0}
    arch = sweep.Architecture("a", "digest", "text", "/a.yaml")
    cells = {c.metric: c for c in sweep.plan([arch], [8], [0], ["hessian", "hessian_ball"],
                                             wider)}
    assert cells["hessian"].options_hash == sweep.options_key("hessian", base)[1]
    assert '"radius":2.0' in cells["hessian_ball"].options
    assert "radius" not in cells["hessian"].options


def test_run_cell_measures_with_the_stored_options(mlp3_small):
    arch = sweep.Architecture("mlp3", "digest", "text", "/mlp3.yaml")
    cell = sweep.plan([arch], [8], [3], ["hessian_ball"],
                      sweep.make_options(inputs=2, ball_points=2, radius=0.5))[0]
    result = sweep.run_cell(cell, load_net=lambda *_: mlp3_small)
    expected = M.measure(mlp3_small, "hessian_ball", 3,
                         M.Options(inputs=2, ball_points=2, radius=0.5))
    assert result.status == "ok", result.error
    assert result.value == expected["value"]


def test_a_non_finite_result_is_an_error(mlp3_small, monkeypatch):
    def nan_metric(net, seed, options):
        return {"value": 1.0, "spread": float("nan")}

    fake = dataclasses.replace(M.METRICS["gradient"], name="nan_metric", function=nan_metric)
    monkeypatch.setitem(registry.METRICS, "nan_metric", fake)
    with pytest.raises(DagcError, match="nan_metric: the result's spread is not finite"):
        M.measure(mlp3_small, "nan_metric", 0)


def test_same_call_is_bit_identical(mlp3_small):
    for metric in M.METRICS:
        first = M.measure(mlp3_small, metric, 11)
        second = M.measure(mlp3_small, metric, 11)
        # repr: a float's shortest round-trip text (equal exactly when the bits are), and
        # a list's (the loss curves)
        assert {k: repr(v) for k, v in first.items()} == {k: repr(v) for k, v in second.items()}
    assert M.measure(mlp3_small, "hessian", 12) != M.measure(mlp3_small, "hessian", 11)


def test_bit_identical_in_another_process(mlp3_small):
    script = textwrap.dedent("""\
        import dagc
        from dagc import measure as M
        net = dagc.compile("mlp3", width=8)
        print(net.module.__file__)
        for metric in M.METRICS:
            print(metric, sorted((k, repr(v)) for k, v in M.measure(net, metric, 11).items()))
        """)
    here = f"{mlp3_small.module.__file__}\n" + "".join(
        f"{metric} {sorted((k, repr(v)) for k, v in M.measure(mlp3_small, metric, 11).items())}\n"
        for metric in M.METRICS)
    there = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True, timeout=300).stdout
    if there.split("\n", 1)[0] != here.split("\n", 1)[0]:
        pytest.skip("the generated module changed (templates edited) during the test run")
    assert there == here


def test_options_round_trip_and_validation():
    options = M.Options(radius=2, tol=0)
    assert isinstance(options.radius, float) and options.radius == 2.0
    stored = dataclasses.asdict(options)
    assert M.Options.from_dict(stored) == options
    with pytest.raises(DagcError, match="unknown field"):
        M.Options.from_dict({**stored, "extra": 1})
    bad = [dict(inputs=0), dict(inputs=2.0), dict(ball_points=True), dict(radius=0.0),
           dict(radius=float("nan")), dict(loss_drop=1.0), dict(max_steps=-1), dict(tol=-1e-3),
           dict(hessian_method="power")]
    for kwargs in bad:
        with pytest.raises(DagcError, match=f"options.{next(iter(kwargs))}"):
            M.Options(**kwargs)


def test_measure_argument_errors(mlp3_small):
    with pytest.raises(DagcError, match="unknown metric 'hesian'.*hessian, hessian_ball"):
        M.measure(mlp3_small, "hesian", 0)
    for seed in (-1, 1.5, True):
        with pytest.raises(DagcError, match="seed"):
            M.measure(mlp3_small, "gradient", seed)
    with pytest.raises(DagcError, match="options"):
        M.measure(mlp3_small, "gradient", 0, {"inputs": 4})
    with pytest.raises(DagcError, match="net"):
        M.measure("mlp3", "gradient", 0)
    w = mlp3_small.init(0)
    with pytest.raises(DagcError, match="output"):
        M.hessian_norm(mlp3_small, w, np.ones(16), output=1)
    with pytest.raises(DagcError, match="x"):
        M.hessian_norm(mlp3_small, w, np.ones(15))
    with pytest.raises(DagcError, match="seed"):
        M.hessian_norm(mlp3_small, w, np.ones(16), seed=-1)
    with pytest.raises(DagcError, match="outputs"):
        mlp3_small.factored_hessian(w, np.ones((2, 16)), np.array([0, 1]))
    operator = mlp3_small.factored_hessian(w, np.ones((2, 16)))
    with pytest.raises(DagcError, match="C: expected shape"):
        operator.apply(np.ones((1, operator.size)))


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_init_rejects_a_bad_seed(mlp3_small, seed):
    # init(-1) and init(1.5) used to raise numpy's ValueError / TypeError.
    with pytest.raises(DagcError, match="^seed: expected an integer >= 0"):
        mlp3_small.init(seed)
