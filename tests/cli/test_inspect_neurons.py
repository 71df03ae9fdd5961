"""`dagc inspect` of neuron-level graphs: a per-layer table from the neuron IR (never grouped
into blocks), the paper's numbers, and the compiled form; block files and shallow generators
keep the block listing (docs/design.md, "Neuron-level graphs")."""

import re

from dagc import cli
from dagc.ir import graph

GRAPHML = """\
<?xml version="1.0"?>
<graphml xmlns="http://graphml.graphdrawing.org/xmlns">
<key id="act" for="node" attr.name="act" attr.type="string"/>
<graph edgedefault="directed">
<node id="x1"/><node id="x2"/>
<node id="s"><data key="act">sin</data></node>
<node id="t"><data key="act">tanh</data></node>
<node id="r"><data key="act">relu</data></node>
<node id="y"/>
<edge source="x1" target="s"/><edge source="x2" target="s"/>
<edge source="x1" target="t"/><edge source="x2" target="t"/>
<edge source="s" target="r"/><edge source="t" target="r"/><edge source="x1" target="r"/>
<edge source="r" target="y"/><edge source="t" target="y"/>
</graph></graphml>
"""


def _inspect(capsys, *args) -> list[str]:
    assert cli.main(["inspect", *map(str, args)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out.splitlines()


def _table(lines: list[str]) -> dict[str, list[str]]:
    """The layer rows by layer number, cells split on runs of two or more spaces."""
    return {cells[0]: cells for line in lines
            if (cells := re.split(r"\s{2,}", line.strip())) and cells[0].isdigit()}


def test_deep_random_dag_prints_its_layers(tmp_path, capsys):
    layers = graph.GROUPED_LAYERS + 2
    path = tmp_path / "deep.yaml"
    path.write_text("name: deep\nwidth: 8\ngraph: {generator: random_dag, inputs: 3, layers: "
                    f"{layers}, size: width, fan_in: 4, outputs: 2, act: relu}}\n")
    lines = _inspect(capsys, path, "--width", "6")
    assert lines[0] == f"deep ({path}), width = 6, {3 + 6 * layers + 2} neurons"
    assert re.split(r"\s{2,}", lines[1].strip()) == ["layer", "neurons", "activations",
                                                     "in-degree", "outputs"]
    rows = _table(lines)
    assert len(rows) == layers + 2
    assert rows["0"] == ["0", "3", "input x3"]
    assert rows["1"] == ["1", "6", "relu x6", "3"]
    assert rows[str(layers)] == [str(layers), "6", "relu x6", "4"]
    assert rows[str(layers + 1)] == [str(layers + 1), "2", "identity x2", "4", "2"]
    n_params = 6 * 3 + 6 * 4 * (layers - 1) + 2 * 4
    assert f"width m = 4   depth L = {layers + 1}   parameters P = {n_params:,}" in lines[-4]
    assert f"edges = {n_params:,}" in lines[-4]
    assert lines[-3].startswith("bottlenecks (in-degree = m): ") and "more" in lines[-3]
    assert lines[-2].startswith("note: relu's second derivative is 0")
    assert lines[-1].startswith("runs on the shared neuron kernels of the activations "
                                "identity, relu: the graph is data")
    assert not any(line.lstrip().startswith("h1 ") for line in lines)  # no blocks


def test_graphml_file_prints_its_layers_not_blocks(tmp_path, capsys, monkeypatch):
    (tmp_path / "g.graphml").write_text(GRAPHML)
    (tmp_path / "mixed.yaml").write_text("name: mixed\ngraph: g.graphml\n")
    monkeypatch.setattr(graph, "build", None)  # never grouped into blocks
    lines = _inspect(capsys, tmp_path / "mixed.yaml")
    assert lines[0].endswith("no width (a fixed graph), 6 neurons")
    rows = _table(lines)
    assert rows["1"] == ["1", "2", "tanh x1, sin x1", "2"]
    assert rows["2"] == ["2", "1", "relu x1", "3"]
    assert rows["3"] == ["3", "1", "identity x1", "2", "1"]
    assert "width m = 2   depth L = 3   parameters P = 9" in lines[-4]
    assert "activations identity, tanh, sin, relu" in lines[-1]


def test_deep_tables_elide_their_middle(tmp_path, capsys):
    layers = 3 * cli.SHOWN_LAYERS
    path = tmp_path / "chain.yaml"
    path.write_text("name: chain\nwidth: 2\ngraph: {generator: random_dag, inputs: 1, layers: "
                    f"{layers}, size: width, fan_in: 2, outputs: 1, act: tanh}}\n")
    lines = _inspect(capsys, path)
    assert len(_table(lines)) == 2 * cli.SHOWN_LAYERS
    assert f"({layers + 2 - 2 * cli.SHOWN_LAYERS} more layers)" in "\n".join(lines)


def test_block_files_and_shallow_generators_keep_the_block_listing(capsys):
    lines = _inspect(capsys, "randdag", "--width", "16")
    assert lines[1].split() == ["block", "size", "act", "layer", "in-degree", "from"]
    assert lines[3].split()[:2] == ["h1", "16"]
    assert not any("shared neuron kernels" in line for line in lines)
