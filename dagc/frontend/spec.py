"""Architecture file -> validated `Spec` (docs/design.md, Architecture files).

Everything that can be checked without knowing the width is checked here: identifiers,
unknown keys, unknown sources, activations, cycles, inputs that feed nothing. Sizes stay
expressions in `width`; `graph.build` resolves them.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import networkx as nx
import yaml

from ..errors import DagcError
from ..ops import activations
from ..untrusted import printable, read_regular
from . import expr, graphs
from .expr import show

ACTIVATIONS = activations.names()  # the registry's (a tuple: a YAML value may be unhashable)
BUNDLED_DIR = Path(__file__).parent.parent / "architectures"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_NAME = 100  # characters: module and numba cache file names must stay below 255 bytes
MAX_FILE_BYTES = 1 << 20  # an architecture file: the largest bundled one is under 1 KiB
MAX_BLOCKS = 10_000  # inputs and blocks of a file: each becomes code in the generated module
MAX_LAYERS = 100_000  # of `random_dag`: each is a layer of neurons in the IR
_SHOWN_KEYS = 10  # unknown keys named in an error before "and N more"
_TOP_KEYS = {"name", "width", "inputs", "blocks", "graph", "graph_seed", "act", "outputs",
             "output_scale"}
_BLOCK_KEYS = {"size", "act", "from", "bias", "add"}
_GENERATOR_KEYS = {"generator", "inputs", "layers", "size", "fan_in", "outputs", "act"}


@dataclass(frozen=True)
class Source:
    """One entry of a block's `from`: dense when `fan_in` is None."""

    block: str
    fan_in: expr.Expr | None


@dataclass(frozen=True)
class BlockSpec:
    name: str
    size: expr.Expr
    act: str
    sources: tuple[Source, ...]
    bias: bool
    add: tuple[str, ...]


@dataclass(frozen=True)
class RandomDag:
    """`graph: {generator: random_dag, ...}`: a neuron-level DAG drawn from `graph_seed`."""

    inputs: expr.Expr
    layers: int
    size: expr.Expr
    fan_in: expr.Expr
    outputs: int
    act: str


@dataclass(frozen=True)
class Spec:
    """A validated architecture file. Exactly one of `blocks` and `graph` is set."""

    name: str
    path: str
    text: str
    width: int | None
    graph_seed: int
    inputs: tuple[tuple[str, expr.Expr], ...]
    blocks: tuple[BlockSpec, ...]
    graph: Path | RandomDag | None
    hidden_act: str = "tanh"  # neuron graphs: activation of hidden neurons without an `act`
    outputs: tuple[str, ...] | None = None  # block DAGs: the `outputs` key, in its order
    # p of the output neurons' scale d^-p: 1/2 is the paper's NTK scaling, 1 the mean-field
    # (muP-style) output that docs/metrics.md uses as a negative control of lin_gap.
    output_scale: float = 0.5
    # The graph file's bytes as read once (`read_graph`): what is hashed is what is compiled.
    graph_data: bytes | None = field(default=None, repr=False)

    @property
    def width_free(self) -> bool:
        """Whether `width` changes nothing: a fixed graph file, or no size that uses it."""
        if isinstance(self.graph, Path):
            return True
        if isinstance(self.graph, RandomDag):
            sizes = [self.graph.inputs, self.graph.size, self.graph.fan_in]
        else:
            sizes = [size for _, size in self.inputs] + [b.size for b in self.blocks] + [
                s.fan_in for b in self.blocks for s in b.sources if s.fan_in is not None]
        return not any(expr.uses_width(size) for size in sizes)

    @property
    def digest(self) -> str:
        """Hash of the file text, and of the graph file's bytes once read (`read_graph`):
        identifies exactly what was compiled."""
        text = self.text.encode()
        if self.graph_data is not None:
            text += b"\0" + self.graph_data
        return hashlib.sha256(text).hexdigest()[:16]


def bundled_names() -> list[str]:
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml"))


def resolve(arch: str | Path) -> Path:
    """A path to an existing file, or the name of a bundled architecture."""
    if not isinstance(arch, (str, os.PathLike)):
        raise DagcError(f"architecture: expected a file path or the name of a bundled "
                        f"architecture, got {type(arch).__name__}")
    try:
        path = Path(arch)
        if path.is_file():
            return path
    except (OSError, ValueError, TypeError):  # too long, NUL bytes, bytes paths
        pass
    if isinstance(arch, str) and arch in bundled_names():
        return BUNDLED_DIR / f"{arch}.yaml"
    close = difflib.get_close_matches(str(arch), bundled_names(), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise DagcError(f"{printable(arch, 200) or repr('')}: no such architecture file or "
                    f"bundled architecture ({hint}bundled: {', '.join(bundled_names())})")


def load(arch: str | Path) -> Spec:
    """Read and validate an architecture file (path or bundled name), and read the graph
    file it names, if any (`read_graph`)."""
    path = resolve(arch)
    try:
        text = read_regular(path, MAX_FILE_BYTES).decode()
    except (OSError, UnicodeDecodeError) as err:
        raise DagcError(f"{printable(path)}: cannot read: {printable(err, 200)}") from None
    return read_graph(parse(text, str(path)))


def read_graph(parsed: Spec) -> Spec:
    """`parsed` holding its graph file's bytes, read once: the network is built from these
    bytes and `digest` covers them, so a file changed later can never be mixed in."""
    if not isinstance(parsed.graph, Path):
        return parsed
    return replace(parsed, graph_data=graphs.read_bytes(parsed.graph, parsed.path))


def parse(text: str, path: str = "<string>") -> Spec:
    """Validate the text of an architecture file; `path` names it in errors."""
    doc = _load_yaml(text, path)
    _check_keys(doc, _TOP_KEYS, path)
    name = _identifier(doc.get("name", Path(path).stem), f"{path}: name")
    width = _optional_positive_int(doc.get("width"), f"{path}: width")
    graph_seed = doc.get("graph_seed", 0)
    if isinstance(graph_seed, bool) or not isinstance(graph_seed, int) or graph_seed < 0:
        raise DagcError(f"{path}: graph_seed must be a non-negative integer, "
                        f"got {show(graph_seed)}")
    if ("blocks" in doc) == ("graph" in doc):
        raise DagcError(f"{path}: give exactly one of `blocks` (block DAG) and `graph` "
                        "(neuron DAG)")
    output_scale = _output_scale(doc.get("output_scale", 0.5), f"{path}: output_scale")
    common = dict(name=name, path=path, text=text, width=width, graph_seed=graph_seed,
                  output_scale=output_scale)
    if "graph" in doc:
        for key, what in (("inputs", "inputs are its neurons of in-degree 0"),
                          ("outputs", "outputs are its neurons of out-degree 0")):
            if key in doc:
                raise DagcError(f"{path}: `{key}` belongs to block DAGs; a neuron graph's "
                                f"{what}")
        hidden_act = _activation(doc.get("act", "tanh"), f"{path}: act")
        return Spec(inputs=(), blocks=(), graph=_graph_source(doc["graph"], path),
                    hidden_act=hidden_act, **common)
    if "act" in doc:
        raise DagcError(f"{path}: a top-level `act` is for neuron graphs; blocks set their own")
    inputs = _inputs(doc.get("inputs"), path)
    blocks = _blocks(doc["blocks"], path)
    outputs = _outputs(doc["outputs"], path) if "outputs" in doc else None
    _check_graph(inputs, blocks, path)
    _check_outputs(blocks, outputs, path)
    # _check_graph made sure that only output blocks may omit `act`: they default to identity.
    blocks = tuple(b if b.act else replace(b, act="identity") for b in blocks)
    return Spec(inputs=inputs, blocks=blocks, graph=None, outputs=outputs, **common)


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe loader that rejects duplicate keys (a repeated block name is a silent bug)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: the explicit keys override the merged ones
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a list or mapping cannot be a key", key_node.start_mark) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _load_yaml(text: str, path: str) -> dict:
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise DagcError(f"{path}: invalid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise DagcError(f"{path}: invalid YAML: nested too deeply") from None
    except Exception as err:  # bad typed scalars: 2001-13-45, !!int abc, 5000-digit integers
        message = " ".join(f"{type(err).__name__}: {err}".split())
        raise DagcError(f"{path}: invalid YAML: {message}") from None
    if doc is None:
        raise DagcError(f"{path}: the file is empty")
    if not isinstance(doc, dict):
        raise DagcError(f"{path}: expected a mapping at the top level, got {type(doc).__name__}")
    return doc


def _check_keys(mapping: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(k if isinstance(k, str) else show(k) for k in mapping if k not in allowed)
    if unknown:
        named = ", ".join(printable(k, 60) for k in unknown[:_SHOWN_KEYS])
        if len(unknown) > _SHOWN_KEYS:
            named += f" and {len(unknown) - _SHOWN_KEYS:,} more"
        raise DagcError(f"{where}: unknown key(s) {named} "
                        f"(allowed: {', '.join(sorted(allowed))})")


def _identifier(value, where: str) -> str:
    if isinstance(value, bool):
        raise DagcError(f"{where}: {value!r} is not an identifier (YAML reads unquoted yes, no, "
                        "on, off, true and false as booleans: quote the name)")
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise DagcError(f"{where}: {show(value)} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)")
    if len(value) > MAX_NAME:
        raise DagcError(f"{where}: {show(value)} is too long ({len(value)} characters, "
                        f"at most {MAX_NAME})")
    return value


def _activation(value, where: str) -> str:
    if value not in ACTIVATIONS:
        raise DagcError(f"{where}: unknown activation {show(value)} "
                        f"(known: {', '.join(ACTIVATIONS)})")
    return value


def _output_scale(value, where: str) -> float:
    """The exponent p of the output scale d^-p: a number in [1/2, 1] (the NTK and the
    mean-field ends; outside them the output blows up or vanishes with width)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0.5 <= value <= 1.0:
        raise DagcError(f"{where}: expected a number p in [0.5, 1] (outputs scaled by d^-p), "
                        f"got {show(value)}")
    return float(value)


def _optional_positive_int(value, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DagcError(f"{where}: must be a positive integer, got {show(value)}")
    if value > expr.MAX_SIZE:
        raise DagcError(f"{where}: {show(value)} is too large (at most {expr.MAX_SIZE:,})")
    return value


def _inputs(raw, path: str) -> tuple[tuple[str, expr.Expr], ...]:
    if not isinstance(raw, dict) or not raw:
        raise DagcError(f"{path}: `inputs` must be a non-empty mapping of input names to sizes")
    _check_count(raw, "inputs", path)
    return tuple((_identifier(name, f"{path}: input"), expr.parse(size, f"{path}: input {name}"))
                 for name, size in raw.items())


def _blocks(raw, path: str) -> tuple[BlockSpec, ...]:
    if not isinstance(raw, dict) or not raw:
        raise DagcError(f"{path}: `blocks` must be a non-empty mapping of block names to blocks")
    _check_count(raw, "blocks", path)
    return tuple(_block(_identifier(name, f"{path}: block"), body, f"{path}: block {name}")
                 for name, body in raw.items())


def _check_count(mapping: dict, key: str, path: str) -> None:
    if len(mapping) > MAX_BLOCKS:
        raise DagcError(f"{path}: {len(mapping):,} {key}, more than the {MAX_BLOCKS:,} dagc "
                        "compiles (a neuron-level graph belongs in a `graph:` file)")


def _block(name: str, body, where: str) -> BlockSpec:
    if not isinstance(body, dict):
        raise DagcError(f"{where}: expected a mapping with size, act, from")
    _check_keys(body, _BLOCK_KEYS, where)
    if "size" not in body:
        raise DagcError(f"{where}: missing `size`")
    act = body.get("act")
    if act is not None:
        _activation(act, f"{where}: act")
    sources = body.get("from")
    if not isinstance(sources, list) or not sources:
        raise DagcError(f"{where}: `from` must be a non-empty list of source blocks")
    bias = body.get("bias", False)
    if not isinstance(bias, bool):
        raise DagcError(f"{where}: `bias` must be true or false, got {show(bias)}")
    add = body.get("add", [])
    if not isinstance(add, list):
        raise DagcError(f"{where}: `add` must be a list of block names")
    return BlockSpec(
        name=name,
        size=expr.parse(body["size"], f"{where}: size"),
        act=act or "",
        sources=tuple(_source(entry, where) for entry in sources),
        bias=bias,
        add=tuple(_identifier(a, f"{where}: add") for a in add),
    )


def _source(entry, where: str) -> Source:
    if isinstance(entry, str):
        return Source(_identifier(entry, f"{where}: from"), None)
    if isinstance(entry, dict) and set(entry) == {"block", "fan_in"}:
        block = _identifier(entry["block"], f"{where}: from")
        return Source(block, expr.parse(entry["fan_in"], f"{where}: fan_in from {block}"))
    raise DagcError(f"{where}: each `from` entry is a block name or {{block: NAME, fan_in: K}}, "
                    f"got {show(entry)}")


def _outputs(raw, path: str) -> tuple[str, ...]:
    where = f"{path}: outputs"
    if not isinstance(raw, list) or not raw:
        raise DagcError(f"{where}: expected a non-empty list of block names")
    names = tuple(_identifier(name, where) for name in raw)
    for name in names:
        if names.count(name) > 1:
            raise DagcError(f"{where}: {name} is listed twice")
    return names


def _check_outputs(blocks: tuple[BlockSpec, ...], outputs: tuple[str, ...] | None,
                   path: str) -> None:
    """The outputs are the blocks that feed nothing (docs/design.md, Architecture files).
    With an `outputs` key they must be exactly the listed blocks, so a forgotten edge is an
    error naming the block it cut off; without one, several such blocks are a warning, since
    each silently becomes another output column."""
    fed = {s.block for b in blocks for s in b.sources} | {a for b in blocks for a in b.add}
    sinks = [b.name for b in blocks if b.name not in fed]
    if outputs is None:
        if len(sinks) > 1:
            warnings.warn(f"{path}: blocks {', '.join(sinks)} feed nothing, so all are outputs; "
                          f"say so with `outputs: [{', '.join(sinks)}]`", UserWarning,
                          stacklevel=4)
        return
    names = {b.name for b in blocks}
    for name in outputs:
        if name not in names:
            raise DagcError(f"{path}: outputs: unknown block {name!r}")
        if name in fed:
            raise DagcError(f"{path}: outputs: block {name} feeds another block; an output "
                            "must feed nothing")
    for name in sinks:
        if name not in outputs:
            raise DagcError(f"{path}: block {name} feeds nothing and is not in `outputs` "
                            "(a missing edge, or add it to `outputs`)")


def _check_graph(inputs, blocks: tuple[BlockSpec, ...], path: str) -> None:
    input_names = [name for name, _ in inputs]
    known = set(input_names)
    for block in blocks:
        if block.name in known:
            raise DagcError(f"{path}: block {block.name}: the name is already used by an input")
        known.add(block.name)
    graph = nx.DiGraph()
    graph.add_nodes_from(known)
    for block in blocks:
        seen = set()
        for src in [s.block for s in block.sources] + list(block.add):
            if src not in known:
                raise DagcError(f"{path}: block {block.name}: unknown source {src!r}")
            graph.add_edge(src, block.name)
        for src in (s.block for s in block.sources):
            if src in seen:
                raise DagcError(f"{path}: block {block.name}: source {src!r} is listed twice")
            seen.add(src)
        for src in block.add:
            if block.add.count(src) > 1:
                raise DagcError(f"{path}: block {block.name}: `add: {src}` is listed twice")
    check_acyclic(graph, f"{path}: the blocks")
    for name in input_names:
        if graph.out_degree(name) == 0:
            raise DagcError(f"{path}: input {name} feeds nothing")
    for block in blocks:
        if graph.out_degree(block.name) > 0 and not block.act:
            raise DagcError(f"{path}: block {block.name}: `act` is required on a block that "
                            "feeds another")


def check_acyclic(graph: nx.DiGraph, what: str) -> None:
    """Raise a DagcError naming the nodes on a cycle, if `graph` has one."""
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    names = [str(u) for u, _ in cycle] + [str(cycle[0][0])]
    raise DagcError(f"{what} form a cycle: {' -> '.join(names)}")


def _graph_source(raw, path: str) -> Path | RandomDag:
    if isinstance(raw, str):
        return (Path(path).parent / raw) if not Path(raw).is_absolute() else Path(raw)
    where = f"{path}: graph"
    if not isinstance(raw, dict) or raw.get("generator") != "random_dag":
        raise DagcError(f"{where}: expected a file name or {{generator: random_dag, ...}}")
    _check_keys(raw, _GENERATOR_KEYS, where)
    layers = raw.get("layers", 3)
    outputs = raw.get("outputs", 1)
    for key, value, most in (("layers", layers, MAX_LAYERS), ("outputs", outputs, expr.MAX_SIZE)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DagcError(f"{where}: {key} must be a positive integer, got {show(value)}")
        if value > most:
            raise DagcError(f"{where}: {key} {show(value)} is too many (at most {most:,})")
    return RandomDag(
        inputs=expr.parse(raw.get("inputs", 16), f"{where}: inputs"),
        layers=layers,
        size=expr.parse(raw.get("size", "width"), f"{where}: size"),
        fan_in=expr.parse(raw.get("fan_in", "width"), f"{where}: fan_in"),
        outputs=outputs,
        act=_activation(raw.get("act", "tanh"), f"{where}: act"),
    )
