"""Limit shares of every block's pieces, and the networks that have no limit."""

import numpy as np
import pytest

from dagc.errors import DagcError
from dagc.frontend import sources, spec
from dagc.ir import graph
from dagc.ir.limits import limit_shares, neuron_limit, random_dag_layer_shares
from dagc.ir.neurons import CODES, INPUT


def _shares(text_or_name, tmp_path=None, width=8):
    if tmp_path is not None:
        path = tmp_path / "arch.yaml"
        path.write_text(text_or_name)
        text_or_name = str(path)
    ir = graph.build(spec.load(text_or_name), width)
    names = [b.name for b in ir.blocks if not b.is_input]
    return dict(zip(names, (s.tolist() for s in limit_shares(ir)), strict=True))


def test_finite_pieces_have_no_share_once_any_piece_grows():
    shares = _shares("densenet3")
    assert shares["h1"] == [1.0]  # 16 inputs, nothing grows: the exact degrees
    assert shares["h2"] == [0.0, 1.0]  # x stays 16 wide while h1 grows
    assert shares["h3"] == [0.5, 0.5]
    assert shares["out"] == pytest.approx([1 / 3] * 3, abs=1e-16)


def test_exact_degrees_when_nothing_grows_and_bias_counts():
    assert _shares("resnet3")["h1"] == pytest.approx([16 / 17, 1 / 17], abs=1e-16)


def test_sparse_shares_follow_the_fan_in():
    shares = _shares("sparse3")
    assert shares["h3"] == pytest.approx([2 / 3, 1 / 3], abs=1e-16)  # width/2 and width/4
    assert shares["out"] == pytest.approx([0.8, 0.2], abs=1e-16)  # width and width/4


def test_shares_do_not_depend_on_the_width_compiled():
    assert _shares("sparse3", width=8) == _shares("sparse3", width=64)


def test_lower_order_growth_has_no_share(tmp_path):
    text = """\
name: quad
width: 4
inputs: {x: 3}
blocks:
  a: {size: width, act: tanh, from: [x]}
  b: {size: width*width + 1, act: tanh, from: [x]}
  out: {size: 1, from: [a, b]}
"""
    assert _shares(text, tmp_path)["out"] == pytest.approx([0.0, 1.0], abs=1e-30)


def test_random_dag_mixes_earlier_layers_by_size():
    shares = _shares("randdag", width=16)
    assert shares["h1"] == [1.0]
    assert shares["h2"] == [0.0, 1.0]
    assert shares["h3"] == [0.0, 0.5, 0.5]
    # the output draws from x, h1, h2, h3; at this width none of its edges may come from x
    assert sorted(shares["out"])[-3:] == pytest.approx([1 / 3] * 3, abs=1e-16)


def test_sparse_connection_from_a_fixed_block_is_refused(tmp_path):
    text = """\
name: fixed_sparse
width: 8
inputs: {x: 6}
blocks:
  h: {size: width, act: tanh, from: [{block: x, fan_in: 3}]}
  out: {size: 1, from: [h]}
"""
    with pytest.raises(DagcError, match=r"block h: connection from x: a sparse connection"):
        _shares(text, tmp_path)


def test_graph_file_is_refused(tmp_path):
    edges = tmp_path / "g.edgelist"
    edges.write_text("a c\nb c\nc d\n")
    text = f"name: fixed\ngraph: {edges}\n"
    with pytest.raises(DagcError, match="fixed neuron graph .* no infinite-width limit"):
        _shares(text, tmp_path)


def test_size_that_turns_negative_is_refused(tmp_path):
    text = """\
name: shrinking
width: 8
inputs: {x: 3}
blocks:
  h: {size: 100 - width, act: tanh, from: [x]}
  out: {size: 1, from: [h]}
"""
    with pytest.raises(DagcError, match="block h: size: the size does not stay positive"):
        _shares(text, tmp_path)


def test_every_share_row_sums_to_one():
    for name in ("densenet3", "sparse3", "resnet3", "bottleneck3", "randdag"):
        for row in _shares(name, width=16).values():
            assert np.sum(row) == pytest.approx(1.0, abs=1e-15)


def test_mean_field_output_scaling_is_refused(tmp_path):
    text = """\
name: mean_field
width: 8
output_scale: 1
inputs: {x: 3}
blocks:
  h: {size: width, act: tanh, from: [x]}
  out: {size: 1, from: [h]}
"""
    with pytest.raises(DagcError, match="output_scale 1"):
        _shares(text, tmp_path)


def _generator(tmp_path, inputs):
    path = tmp_path / "gen.yaml"
    path.write_text(f"name: gen\nwidth: 8\ngraph: {{generator: random_dag, inputs: {inputs}, "
                    "layers: 3, size: width, fan_in: width/2, outputs: 2, act: tanh}\n")
    return spec.load(str(path))


def test_random_dag_layer_shares_by_size(tmp_path):
    fixed = _generator(tmp_path, 4)  # inputs that do not grow count in layer 1 only
    fixed_inputs = random_dag_layer_shares(fixed, fixed.graph)
    np.testing.assert_array_equal(fixed_inputs, [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0],
                                                 [0, 0.5, 0.5, 0], [0, 1 / 3, 1 / 3, 1 / 3]])
    growing = _generator(tmp_path, "width/2")  # inputs count once they grow: width/2 : width
    shares = random_dag_layer_shares(growing, growing.graph)
    np.testing.assert_allclose(shares[1:], [[1, 0, 0, 0], [1 / 3, 2 / 3, 0, 0],
                                            [0.2, 0.4, 0.4, 0], [1 / 7, 2 / 7, 2 / 7, 2 / 7]],
                               rtol=1e-15)


def test_grouped_generator_shares_are_rows_of_the_layer_matrix(tmp_path):
    growing = _generator(tmp_path, "width/2")
    ir = graph.build(growing, 16)
    matrix = random_dag_layer_shares(growing, growing.graph)
    computed = [b for b in ir.blocks if not b.is_input]
    layer_of = {b.name: b.layer for b in ir.blocks}
    for block, row in zip(computed, limit_shares(ir), strict=True):
        sources = [layer_of[c.src] for c in ir.incoming(block.name)]
        np.testing.assert_array_equal(row, matrix[block.layer, sources])


def test_neuron_limit_refuses_graphs_without_width(tmp_path):
    import networkx as nx

    edges = tmp_path / "g.edgelist"
    edges.write_text("a c\nb c\nc d\n")
    path = tmp_path / "fixed.yaml"
    path.write_text(f"name: fixed\ngraph: {edges}\n")
    with pytest.raises(DagcError, match="fixed.yaml: a fixed neuron graph .* no infinite"):
        neuron_limit(graph.build_neurons(spec.load(str(path))))
    direct = sources.to_spec(nx.DiGraph([("a", "c"), ("b", "c")]))
    with pytest.raises(DagcError, match="a fixed neuron graph .* no infinite-width limit"):
        neuron_limit(graph.build_neurons(direct))


def test_neuron_limit_gives_each_layers_activation(tmp_path):
    generator = _generator(tmp_path, 4)
    shares, codes = neuron_limit(graph.build_neurons(generator, 8))
    assert shares.shape == (5, 4)
    assert codes.tolist() == [INPUT, CODES["tanh"], CODES["tanh"], CODES["tanh"],
                              CODES["identity"]]
