"""The front door: architecture files that say which blocks are outputs, column names, every
form `dagc.compile` accepts, and inputs converted from any real dtype (issue 22, items 4-5)."""

from __future__ import annotations

import warnings

import networkx as nx
import numpy as np
import pytest
import yaml
from conftest import fake_cell

import dagc
from dagc.frontend import spec

TWO_HEADS = """\
name: two_heads
width: 4
inputs: {x: 3}
blocks:
  h: {size: width, act: tanh, from: [x]}
  a: {size: 2, from: [h]}
  b: {size: 1, from: [h]}
"""


def _compile(text: str) -> dagc.CompiledNet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unlisted outputs' warning has its own test
        return dagc.compile(text, jit=False)


# --- outputs: which blocks, in which order ---------------------------------------------------

def test_outputs_key_orders_the_columns():
    plain, swapped = _compile(TWO_HEADS), _compile(TWO_HEADS + "outputs: [b, a]\n")
    assert plain.output_names == ["a[0]", "a[1]", "b[0]"]
    assert swapped.output_names == ["b[0]", "a[0]", "a[1]"]
    assert plain.input_names == ["x[0]", "x[1]", "x[2]"]
    w, X = plain.init(0), np.random.default_rng(0).standard_normal((2, 3))
    F, G = plain.forward(w, X), swapped.forward(w, X)  # one layout: the same weights
    assert np.array_equal(G, F[:, [2, 0, 1]])
    C = np.random.default_rng(1).standard_normal((2, 3))
    assert np.allclose(swapped.vjp(w, X, C[:, [2, 0, 1]]), plain.vjp(w, X, C), rtol=1e-13)


@pytest.mark.parametrize("line, message", [
    ("outputs: [a]\n", "block b feeds nothing and is not in `outputs`"),
    ("outputs: [h, a, b]\n", "outputs: block h feeds another block"),
    ("outputs: [a, zz, b]\n", "outputs: unknown block 'zz'"),
    ("outputs: [a, a, b]\n", "outputs: a is listed twice"),
    ("outputs: a\n", "outputs: expected a non-empty list"),
])
def test_outputs_key_errors_name_the_block(line, message):
    with pytest.raises(dagc.DagcError, match=message):
        spec.parse(TWO_HEADS + line, "heads.yaml")


def test_unlisted_sinks_warn_without_outputs_key():
    with pytest.warns(UserWarning, match="blocks a, b feed nothing, so all are outputs"):
        spec.parse(TWO_HEADS, "heads.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # listed: nothing to warn about
        spec.parse(TWO_HEADS + "outputs: [a, b]\n", "heads.yaml")
        spec.load("mlp3")  # one output: nothing ambiguous


def test_outputs_key_is_for_block_dags():
    with pytest.raises(dagc.DagcError, match="`outputs` belongs to block DAGs"):
        spec.parse("name: g\ngraph: g.txt\noutputs: [o]\n")


def test_neuron_graph_names_are_node_ids():
    graph = nx.DiGraph([("in1", "h"), ("in2", "h"), ("h", "y")])
    net = dagc.compile(graph, jit=False)
    assert net.input_names == ["in1", "in2"] and net.output_names == ["y"]


# --- what dagc.compile accepts ----------------------------------------------------------------

def test_compile_takes_a_dict_yaml_text_or_digraph():
    from_file = dagc.compile("mlp3", width=4, jit=False)
    doc = yaml.safe_load(spec.load("mlp3").text)
    w, X = from_file.init(0), np.ones((1, 16))
    for arch in (doc, spec.load("mlp3").text):
        net = dagc.compile(arch, width=4, jit=False)
        assert np.array_equal(net.forward(w, X), from_file.forward(w, X))
    graph = nx.DiGraph()
    graph.add_edges_from([(0, 2), (1, 2), (0, 3), (2, 3)])
    graph.nodes[2]["act"] = "sin"
    net = dagc.compile(graph, jit=False)
    x = np.array([0.3, -0.7])
    w = np.array([0.5, -1.0, 2.0, 0.25])  # edges 0->2, 1->2, then 0->3, 2->3 (layout order)
    hidden = np.sin((0.5 * x[0] - 1.0 * x[1]) / np.sqrt(2))
    assert np.isclose(net.forward(w, x[None])[0, 0], (2.0 * x[0] + 0.25 * hidden) / np.sqrt(2))


@pytest.mark.parametrize("arch, message", [
    ({"name": "d", "inputs": {"x": 2}, "blocks": {"o": {"size": 1, "from": ["y"]}}},
     "<dict>: block o: unknown source 'y'"),
    ({"inputs": {"x": 2}, "blocks": {"o": {"size": 1, "from": ["x"]}}, "colour": 1},
     "<dict>: unknown key"),
    (nx.Graph([(0, 1)]), "<graph>: the graph is undirected"),
    (nx.DiGraph([((0, 1), 2)]), "ids must be strings or integers"),
    (nx.DiGraph([(0, 1), (1, 0)]), "form a cycle"),
    (3.5, "architecture: expected a file path"),
])
def test_compile_refuses_bad_architectures_in_one_line(arch, message):
    with pytest.raises(dagc.DagcError, match=message) as caught:
        dagc.compile(arch, jit=False)
    assert "\n" not in str(caught.value)


def test_digraph_activation_attribute_is_checked():
    graph = nx.DiGraph([("a", "b"), ("b", "c")])
    graph.nodes["b"]["act"] = "swish"
    with pytest.raises(dagc.DagcError, match="unknown activation 'swish'"):
        dagc.compile(graph, jit=False)


# --- inputs of any real dtype ----------------------------------------------------------------

def test_inputs_of_any_real_dtype_or_lists_are_converted():
    net = dagc.compile("mlp3", width=4, jit=False)
    w = net.init(0)
    X = np.arange(32).reshape(2, 16) / 8.0
    expected = net.forward(w, X)
    for value in (X.astype(np.float32), X.tolist(), np.asfortranarray(X)):
        assert np.array_equal(net.forward(w, value), expected)
    ints = np.arange(32).reshape(2, 16)
    assert np.array_equal(net.forward(w, ints), net.forward(w, ints.astype(float)))
    assert np.array_equal(net.forward(w.tolist(), X), expected)


@pytest.mark.parametrize("value, message", [
    (np.ones((1, 16), complex), "X: expected real numbers, got dtype complex128"),
    (np.array([[object()] * 16]), "X: expected real numbers, got dtype object"),
    ([[1.0] * 16, [1.0]], "X: expected an array of numbers"),
    ([["a"] * 16], "X: expected real numbers"),
])
def test_complex_object_and_ragged_inputs_are_refused(value, message):
    net = dagc.compile("mlp3", width=4, jit=False)
    with pytest.raises(dagc.DagcError, match=message):
        net.forward(net.init(0), value)


# --- results as a DataFrame -------------------------------------------------------------------

def _measure(net, metric, seed, options):
    if seed == 1 and net.width == 16:
        raise RuntimeError("a failing cell")
    return {"value": 2.0 / net.width}


def test_load_results_has_one_row_per_cell(tmp_path):
    pytest.importorskip("pandas")

    from dagc.experiments import report, store, sweep

    archs = sweep.load_architectures(["densenet3"], [8, 16])
    cells = sweep.plan(archs, [8, 16], range(2), ["hessian", "gradient"], sweep.make_options())
    run = fake_cell(_measure)
    with store.Store.open(tmp_path / "r.sqlite") as results:
        sweep.run_sweep(cells, results, lambda todo, on_start: map(run, todo), progress=False)
    frame = dagc.load_results(tmp_path / "r.sqlite")
    assert list(frame.columns[:8]) == ["arch", "width", "m", "seed", "metric", "value",
                                       "options", "status"]
    assert len(frame) == len(cells) == 8
    ok = frame[frame.status == "ok"]
    assert set(ok.m) == {16, 32}  # the paper's m (h3's in-degree 2 width here), not the width
    assert np.allclose(ok.value, 2.0 / ok.width)
    failed = frame[frame.status == "failed"]
    assert len(failed) == 2 and failed.value.isna().all() and (failed.width == 16).all()
    assert frame.groupby("options").ngroups == 2  # one option set per metric
    report.write_csv(report.load(tmp_path / "r.sqlite"), tmp_path / "cells.csv")
    from_csv = dagc.load_results(tmp_path / "cells.csv")
    assert from_csv[["arch", "width", "m", "seed", "metric", "status"]].equals(
        frame[["arch", "width", "m", "seed", "metric", "status"]])


def test_float64_inputs_are_not_copied_and_others_are_copied_once():
    from dagc.runtime import _float_array

    X = np.ones((2, 3))
    assert _float_array(X, "X", 2) is X
    converted = _float_array(np.asfortranarray(X, np.float32), "X", 2)
    assert converted.dtype == np.float64 and converted.flags.c_contiguous
    assert converted.base is None  # one new array, not a view of an intermediate copy
