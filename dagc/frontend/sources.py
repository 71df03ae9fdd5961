"""Everything `dagc.compile` accepts as an architecture -> one validated `Spec`.

A path or bundled name is read as a file; a dict in the file's schema or a YAML string is
parsed as that file's text would be; a networkx DiGraph (node attribute `act`) becomes a
neuron-graph file. Each goes through `spec.parse`, so every form gets the same checks and
the same one-line errors, and a compiled network always carries the text it came from.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import networkx as nx
import yaml

from ..errors import DagcError
from . import graphs, spec

#: Where DiGraphs given to `dagc.compile` are written, under the module cache.
GRAPH_DIR = "graphs"


def to_spec(arch, act: str = "tanh") -> spec.Spec:
    """The `Spec` of a path, bundled name, YAML text, dict or DiGraph. `act` is the hidden
    neurons' default activation of a DiGraph (a node's `act` attribute overrides it)."""
    if isinstance(arch, nx.Graph):
        return _from_graph(arch, act)
    if isinstance(arch, dict):
        return _from_dict(arch)
    if isinstance(arch, str) and "\n" in arch:  # no file or bundled name holds a newline
        return spec.read_graph(spec.parse(arch, "<yaml>"))
    if isinstance(arch, (str, os.PathLike)):
        return spec.load(arch)
    raise DagcError(f"architecture: expected a file path, bundled name, YAML text, dict or "
                    f"networkx DiGraph, got {type(arch).__name__}")


def _from_dict(doc: dict) -> spec.Spec:
    doc = {"name": "network", **doc}  # a file is named by its stem; a dict has none
    try:
        text = yaml.safe_dump(doc, sort_keys=False)
    except yaml.YAMLError as err:
        raise DagcError(f"<dict>: not in the architecture file's schema: "
                        f"{' '.join(str(err).split())}") from None
    return spec.read_graph(spec.parse(text, "<dict>"))


def _from_graph(graph: nx.Graph, act: str) -> spec.Spec:
    """Written as node-link JSON named by its content (so equal graphs share one compiled
    module) and compiled as a `graph:` file naming it."""
    graph = graphs.checked(graph, "<graph>")
    for node in graph.nodes:
        if isinstance(node, bool) or not isinstance(node, (str, int)):
            raise DagcError(f"<graph>: node {node!r}: ids must be strings or integers "
                            "(networkx.convert_node_labels_to_integers relabels a graph)")
    data = {"directed": True, "multigraph": False, "graph": {},
            "nodes": [{"id": n, **({"act": a} if (a := graph.nodes[n].get("act")) else {})}
                      for n in graph.nodes],
            "edges": [{"source": u, "target": v} for u, v in graph.edges]}
    try:
        text = json.dumps(data, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise DagcError(f"<graph>: the `act` attributes must be activation names: {err}") \
            from None
    path = _graph_file(text)
    return spec.read_graph(spec.parse(
        f"name: graph\nact: {json.dumps(act)}\ngraph: {json.dumps(str(path))}\n", "<graph>"))


def _graph_file(text: str) -> Path:
    from ..backend import cache  # the module cache's directory: one place for generated files

    directory = Path(cache.cache_dir()) / GRAPH_DIR
    path = directory / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    if not path.is_file():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(text)
            temporary.replace(path)  # atomic: a concurrent reader never sees half a file
        except OSError as err:
            raise DagcError(f"{directory}: cannot write the graph: {err.strerror or err}") \
                from None
    return path
