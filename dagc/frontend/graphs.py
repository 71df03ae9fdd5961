"""Graph file readers: a neuron-level DAG in a file -> a validated `networkx.DiGraph`.

A small registry keyed by format; the file's suffix picks the reader (`.json`: node-link,
`.graphml`: GraphML, anything else: an edge list). Every reader returns a directed graph
with at most one edge per pair of nodes; what the nodes mean (inputs, outputs, activations,
layers) is the IR's business (`dagc.ir.neurons`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import networkx as nx

from ..errors import DagcError


def _read_node_link(path: Path) -> nx.MultiDiGraph:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise DagcError(f"{path}: expected a node-link JSON object, got {type(data).__name__}")
    edges = "links" if "links" in data else "edges"  # networkx >= 3.4 writes "edges"
    # Read as a multigraph so that a repeated edge is seen (and refused), not merged.
    return nx.node_link_graph({**data, "multigraph": True}, directed=True, edges=edges)


def _read_graphml(path: Path) -> nx.Graph:
    return nx.read_graphml(path)


def _read_edge_list(path: Path) -> nx.MultiDiGraph:
    return nx.read_edgelist(path, create_using=nx.MultiDiGraph, nodetype=str)


READERS: dict[str, Callable[[Path], nx.Graph]] = {
    "node-link": _read_node_link,
    "graphml": _read_graphml,
    "edgelist": _read_edge_list,
}

SUFFIXES = {".json": "node-link", ".graphml": "graphml"}


def file_format(path: Path) -> str:
    """The registered format of a graph file, from its suffix (an edge list by default)."""
    return SUFFIXES.get(path.suffix.lower(), "edgelist")


def read(path: Path, where: str) -> nx.DiGraph:
    """The directed graph in `path`; `where` (the architecture file) names a missing file.

    Raises a one-line DagcError for a missing or unreadable file, an undirected graph or an
    edge listed twice.
    """
    path = Path(path)
    try:
        if path.exists() and not path.is_file():  # a directory, or a device that never ends
            raise DagcError(f"{path}: cannot read graph: not a regular file")
        graph = READERS[file_format(path)](path)
    except FileNotFoundError:
        raise DagcError(f"{where}: graph file {path} not found") from None
    except DagcError:
        raise
    except Exception as err:  # networkx and its parsers raise many types for bad files
        message = " ".join(f"{type(err).__name__}: {err}".split())
        raise DagcError(f"{path}: cannot read graph: {message}") from None
    return checked(graph, str(path))


def checked(graph: nx.Graph, what: str) -> nx.DiGraph:
    """`graph` as a DiGraph, refusing undirected graphs and repeated edges."""
    if not graph.is_directed():
        raise DagcError(f"{what}: the graph is undirected; dagc needs directed edges "
                        "(from inputs towards outputs)")
    if graph.is_multigraph():
        for u, v in graph.edges():
            if graph.number_of_edges(u, v) > 1:
                raise DagcError(f"{what}: the edge {u!r} -> {v!r} is listed more than once")
    return nx.DiGraph(graph)
