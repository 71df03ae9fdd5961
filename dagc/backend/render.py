"""IR -> Python source through the jinja2 templates (naming and writing the module:
`dagc.backend.cache`).

The rendered module depends only on the IR's structure (blocks, connections, kinds,
activations), never on sizes, so every width of a sweep shares one module and one numba
compile. It holds only what varies per architecture: the loops every architecture shares are
imported by name from `dagc.backend.kernels`, the activations from `dagc.ops.activations`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import jinja2
from numba.core.dispatcher import Dispatcher

from ..errors import DagcError
from ..ir.graph import IR
from . import kernels


def templates_dir() -> Path:
    """The per-architecture templates, shipped inside the package."""
    return Path(__file__).parent / "templates"


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(templates_dir()),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # noqa: S701 - renders Python, and only validated identifiers reach it
)


def render(ir: IR) -> str:
    """The generated module's source for this IR's structure."""
    return _ENV.get_template("module.py.j2").render(**_context(ir))


def kernel_imports(body: str) -> str:
    """The import of every shared kernel that `body` (the generated functions) calls."""
    used = [name for name in _KERNEL_NAMES if re.search(rf"(?<![\w.]){name}\(", body)]
    if not used:
        return ""
    return "from dagc.backend.kernels import (\n" + "".join(f"    {n},\n" for n in used) + ")"


_KERNEL_NAMES = sorted(name for name, value in vars(kernels).items()
                       if isinstance(value, Dispatcher)
                       and value.py_func.__module__ == kernels.__name__)
_ENV.globals["kernel_imports"] = kernel_imports


def _context(ir: IR) -> dict:
    inputs = _with_starts([b for b in ir.blocks if b.is_input])
    outputs = _with_starts(list(ir.outputs))  # column order
    conn_vars = {}
    for k, c in enumerate(ir.connections):
        conn_vars[(c.src, c.dst)] = f"{k}_{c.src}_{c.dst}"
    input_names = {b.name for b in ir.blocks if b.is_input}
    computed = []
    for b in ir.blocks:
        if b.is_input:
            continue
        conns = [{"src": c.src, "var": conn_vars[(c.src, c.dst)], "sparse": c.kind != "dense",
                  "from_input": c.src in input_names} for c in ir.incoming(b.name)]
        computed.append({"name": b.name, "act": b.act, "bias": b.bias, "add": list(b.add),
                         "is_output": b.is_output,
                         "conns": conns, "comment": _comment(b, conns)})
    pieces = _pieces(ir, conn_vars)
    last = pieces[-1]
    segments = [{"kind": kind, "name": b.name} for kind, b in ir.factored_blocks]
    offset = "0"
    for segment in segments:
        segment["offset"] = offset
        offset = f"o{segment['kind']}_{segment['name']} + n_{segment['name']}"
    q_blocks = {s["name"] for s in segments if s["kind"] == "q"}
    for b in computed:
        b["is_source"] = b["name"] in q_blocks
    return {
        "name": ir.name,
        "summary": _summary(ir),
        "blocks": [{"name": b.name} for b in ir.blocks],
        "inputs": inputs,
        "outputs": outputs,
        "computed": computed,
        "input_names": input_names,
        "sparse": [{"var": conn_vars[(c.src, c.dst)]} for c in ir.connections if c.kind != "dense"],
        "dense_sources": list(dict.fromkeys(c.src for c in ir.connections if c.kind == "dense")),
        "pieces": pieces,
        "segments": segments,
        "acts": sorted({b.act for b in ir.blocks if b.act not in ("", "identity")}),
        "n_in_expr": " + ".join(f"n_{b['name']}" for b in inputs),
        "n_out_expr": _total(outputs),
        "n_params_expr": f"{last['offset_var']} + {last['size_expr']}",
    }


def _with_starts(blocks) -> list[dict]:
    """Blocks with `start`: their first column among the inputs (or outputs), as code."""
    out, start = [], "0"
    for b in blocks:
        end = f"n_{b.name}" if start == "0" else f"{start} + n_{b.name}"
        out.append({"name": b.name, "start": start, "end": end})
        start = end
    return out


def _total(blocks: list[dict]) -> str:
    names = [f"n_{b['name']}" for b in blocks]
    return names[0] if len(names) == 1 else f"({' + '.join(names)})"


# The first parameter offset: offsets reach kernels (`matrix`), and a literal 0 would make
# numba compile a second, Literal[int](0) specialization of each.
_TYPED_ZERO = "np.int64(0)"


def _pieces(ir: IR, conn_vars: dict) -> list[dict]:
    pieces, previous = [], None
    for p in ir.layout:
        if p.kind == "bias":
            var, size, shape = f"b_{p.dst}", f"n_{p.dst}", ""
        else:
            var = conn_vars[(p.src, p.dst)]
            if p.kind == "dense":
                size, shape = f"n_{p.dst} * n_{p.src}", f"n_{p.dst}, n_{p.src}"
            else:
                size, shape = f"idx{var}.size", ""
        offset = (_TYPED_ZERO if previous is None
                  else f"{previous['offset_var']} + {previous['size_expr']}")
        previous = {"var": var, "kind": "dense" if p.kind == "dense" else "flat",
                    "offset_var": f"o{var}", "offset_expr": offset, "size_expr": size,
                    "shape_expr": shape}
        pieces.append(previous)
    return pieces


def _comment(block, conns: list[dict]) -> str:
    terms = [f"W {c['src']}" if not c["sparse"] else f"W {c['src']} (sparse)" for c in conns]
    if block.bias:
        terms.append("b")
    text = f"{block.name} = {block.act}(s * ({' + '.join(terms)}))"
    return text + "".join(f" + {a}" for a in block.add)


def _summary(ir: IR) -> str:
    lines = ["Blocks in topological order:"]
    for b in ir.blocks:
        if b.is_input:
            lines.append(f"    {b.name}: input")
        else:
            conns = [{"src": c.src, "sparse": c.kind != "dense"} for c in ir.incoming(b.name)]
            lines.append(f"    {_comment(b, conns)}" + ("  [output]" if b.is_output else ""))
    return "\n".join(lines)



# --- neuron-level graphs: one module per activation set ---------------------------------------

def render_neurons(acts: tuple[str, ...]) -> str:
    """The source of the neuron path's passes for graphs using the activations `acts`
    (registry names). Nothing else about a graph reaches the code: its structure is data.
    The text carries a digest of the shared kernels it calls, so that a changed kernel gives
    a new module name and numba never loads stale machine code."""
    from ..ir.neurons import CODES

    unknown = [a for a in acts if a not in CODES]
    if unknown:
        raise DagcError(f"unknown activation {unknown[0]!r} (known: {', '.join(CODES)})")
    kernels_file = Path(__file__).with_name("neurons.py")
    return _ENV.get_template("neurons.py.j2").render(
        acts=sorted(set(acts), key=CODES.__getitem__), codes=CODES,
        kernels_digest=hashlib.sha256(kernels_file.read_bytes()).hexdigest()[:16])


def write_neuron_module(acts: tuple[str, ...], directory: str | Path) -> Path:
    """Write `neurons_<hash>.py` for the activation set `acts` into `directory` (atomically
    and verified, as every generated module): every graph with these activations shares it
    and its numba cache."""
    from . import cache

    source = render_neurons(acts)
    directory = Path(directory)
    path = directory / f"neurons_{cache.content_hash(source)}.py"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not cache.is_intact(path, source):
            cache._write_atomically(path, source)
    except OSError as err:
        raise DagcError(f"{directory}: cannot write the generated module: "
                        f"{err.strerror or err}") from None
    return path
