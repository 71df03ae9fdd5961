"""Graph file readers: a neuron-level DAG in a file -> a validated `networkx.DiGraph`.

A small registry keyed by format; the file's suffix picks the reader (`.json`: node-link,
`.graphml`: GraphML, anything else: an edge list). Every reader returns a directed graph
with at most one edge per pair of nodes; what the nodes mean (inputs, outputs, activations,
layers) is the IR's business (`dagc.ir.neurons`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import networkx as nx

from ..errors import DagcError
from ..untrusted import printable, read_regular

MAX_BYTES = 1 << 30  # of a graph file: about 50 million edges in an edge list


def _read_node_link(source: io.BytesIO) -> nx.MultiDiGraph:
    data = json.loads(source.read())
    if not isinstance(data, dict):
        raise ValueError(f"expected a node-link JSON object, got {type(data).__name__}")
    edges = "links" if "links" in data else "edges"  # networkx >= 3.4 writes "edges"
    # Read as a multigraph so that a repeated edge is seen (and refused), not merged.
    return nx.node_link_graph({**data, "multigraph": True}, directed=True, edges=edges)


def _read_graphml(source: io.BytesIO) -> nx.Graph:
    return nx.read_graphml(source)


def _read_edge_list(source: io.BytesIO) -> nx.MultiDiGraph:
    return nx.read_edgelist(source, create_using=nx.MultiDiGraph, nodetype=str)


READERS: dict[str, Callable[[io.BytesIO], nx.Graph]] = {
    "node-link": _read_node_link,
    "graphml": _read_graphml,
    "edgelist": _read_edge_list,
}

SUFFIXES = {".json": "node-link", ".graphml": "graphml"}


def file_format(path: Path) -> str:
    """The registered format of a graph file, from its suffix (an edge list by default)."""
    return SUFFIXES.get(path.suffix.lower(), "edgelist")


def read_bytes(path: Path, where: str) -> bytes:
    """The bytes of the graph file `path` (a regular file of at most MAX_BYTES); `where` (the
    architecture file) names a missing one."""
    try:
        return read_regular(path, MAX_BYTES)
    except FileNotFoundError:
        raise DagcError(f"{where}: graph file {printable(path)} not found") from None


def read(path: Path, where: str, data: bytes | None = None) -> nx.DiGraph:
    """The directed graph in `path`, parsed from `data` when given (the bytes already read
    by `read_bytes`); `where` (the architecture file) names a missing file.

    Raises a one-line DagcError for a missing or unreadable file, an undirected graph or an
    edge listed twice; it quotes at most a short prefix of the parser's message.
    """
    path = Path(path)
    data = read_bytes(path, where) if data is None else data
    try:
        graph = READERS[file_format(path)](io.BytesIO(data))
    except Exception as err:  # networkx and its parsers raise many types for bad files
        message = printable(" ".join(f"{type(err).__name__}: {err}".split()), 200)
        raise DagcError(f"{printable(path)}: cannot read graph: {message}") from None
    return checked(graph, printable(path))


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
