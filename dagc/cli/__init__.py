"""The `dagc` command: inspect, compile, sweep, report.

Errors in the user's input are one line on stderr and exit status 2, never a traceback. What
the user wrote (paths, node ids) is printed with its control characters escaped, and an
error line is cut to MAX_MESSAGE characters (docs/guarantees.md).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
import warnings

import numpy as np

from .. import __version__
from ..backend import cache, locations
from ..errors import DagcError
from ..frontend import spec
from ..ir import graph
from ..ops.activations import ACTIVATIONS
from ..untrusted import MAX_MESSAGE, printable


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():  # restores the usual display when main returns
            warnings.showwarning = _one_line_warning
            return args.run(args) or 0
    except DagcError as err:
        print(f"dagc: error: {printable(err, MAX_MESSAGE)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dagc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dagc report --json | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings are one line too, like errors (no source line, no location in dagc)."""
    print(f"dagc: warning: {message}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line too, like every other error (status 2, no usage dump)."""

    def error(self, message: str):
        self.exit(2, f"dagc: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dagc", description="Compile DAG neural networks to numba code and measure "
                                 "their transition to linearity.")
    parser.add_argument("--version", action="version", version=f"dagc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="blocks, sizes, layers, width m, depth, P")
    _arch_arguments(inspect)
    inspect.set_defaults(run=_inspect)

    comp = commands.add_parser("compile", help="generate the module and print its path")
    _arch_arguments(comp)
    comp.add_argument("-o", "--output", metavar="DIR",
                      help="directory for the module (default: "
                           f"{printable(locations.configured_root() / 'generated')})")
    comp.add_argument("--jit", action="store_true",
                      help="also compile every pass now (numba's cache keeps them for later "
                           "runs), one progress line per pass on stderr")
    comp.set_defaults(run=_compile)

    from . import sweep as sweep_cli  # the sweep and report commands

    sweep_cli.add_commands(commands)
    return parser


def _arch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("arch", help="architecture file or bundled name "
                                     f"({', '.join(spec.bundled_names())})")
    parser.add_argument("--width", type=int, help="value of `width` (default: the file's "
                                                   "`width`)")
    parser.add_argument("--graph-seed", type=int, help="seed of sparse connections "
                                                        "(default: the file's graph_seed, else 0)")


def _inspect(args) -> None:
    architecture = spec.load(args.arch)
    if graph.uses_neuron_path(architecture):  # never grouped: that is slow and meaningless
        _inspect_neurons(graph.build_neurons(architecture, args.width, args.graph_seed))
        return
    ir = graph.build(architecture, args.width, args.graph_seed)
    rows = [("block", "size", "act", "layer", "in-degree", "from")]
    for b in ir.blocks:
        degree = "" if b.is_input else _degree_text(b.in_degree)
        sources = ", ".join(
            f"{c.src}" + ("" if c.kind == "dense" else f" ({c.kind})") for c in ir.incoming(b.name))
        sources += (", bias" if b.bias else "") + "".join(f" + {a}" for a in b.add)
        act = "input" if b.is_input else b.act + (" (output)" if b.is_output else "")
        rows.append((b.name, str(b.size), act, str(b.layer), degree, sources))
    print(f"{ir.name} ({printable(ir.spec.path)}), width = {ir.width}")
    _print_table(rows)
    print(f"width m = {ir.width_m}   depth L = {ir.depth}   parameters P = {ir.n_params:,}")
    _print_bottlenecks_and_kinks(ir.bottlenecks, {b.act for b in ir.blocks if b.act})


def _inspect_neurons(ir) -> None:
    """A neuron-level graph (docs/design.md, "Neuron-level graphs"): one row per layer, and
    the compiled form it takes, the shared module of its activation set."""
    outputs_in = collections.Counter(ir.layer[ir.outputs].tolist())
    rows = [("layer", "neurons", "activations", "in-degree", "outputs")]
    for layer, count, acts, low, high in ir.layer_summary():
        degree = "" if layer == 0 else (str(low) if low == high else f"{low}..{high}")
        rows.append((str(layer), f"{count:,}", acts, degree, str(outputs_in.get(layer, ""))))
    if len(rows) > 1 + 2 * SHOWN_LAYERS:
        hidden = len(rows) - 1 - 2 * SHOWN_LAYERS
        rows = [*rows[:1 + SHOWN_LAYERS], (f"({hidden:,} more layers)", "", "", "", ""),
                *rows[-SHOWN_LAYERS:]]
    width = "no width (a fixed graph)" if ir.width is None else f"width = {ir.width}"
    print(f"{ir.name} ({printable(ir.spec.path)}), {width}, {ir.n_neurons:,} neurons")
    _print_table(rows)
    print(f"width m = {ir.width_m}   depth L = {ir.depth}   parameters P = {ir.n_params:,}"
          f"   edges = {ir.n_params:,} (one parameter each)")
    _print_bottlenecks_and_kinks(ir.bottlenecks, set(ir.acts))
    print(f"runs on the shared neuron kernels of the activations {', '.join(ir.acts)}: the "
          "graph is data, so one compiled module serves every graph with these activations")


# Layers shown at each end of a neuron graph's table; the middle of a deeper one is elided.
SHOWN_LAYERS = 20


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _print_bottlenecks_and_kinks(bottlenecks: tuple[str, ...], acts: set[str]) -> None:
    shown = ", ".join(printable(name, 60) for name in bottlenecks[:10]) + (
        f" and {len(bottlenecks) - 10:,} more" if len(bottlenecks) > 10 else "")
    print(f"bottlenecks (in-degree = m): {shown or 'none (no neuron beyond layer 1)'}")
    for name in sorted(a for a in acts if not ACTIVATIONS[a].smooth):
        print(f"note: {name}'s second derivative is 0 almost everywhere; its Hessian misses "
              "the kinks")


def _degree_text(degree) -> str:
    low, high = int(degree.min()), int(degree.max())
    return str(low) if low == high else f"{low}..{high}"


def _compile(args) -> None:
    from ..runtime import generate  # the module dagc.compile uses (neuron graphs: shared)

    architecture = spec.load(args.arch)
    try:
        ir, path = generate(architecture, args.width, args.graph_seed, args.output)
    except OSError as err:
        directory = args.output or cache.cache_dir()
        raise DagcError(f"{directory}: cannot write the module: {err.strerror or err}") from None
    if args.jit:
        from ..runtime import CompiledNet

        _warm(CompiledNet(ir, cache.load_module(path)))
    print(path)


def _warm(net) -> None:
    """Call every pass once on a small input, so numba compiles (or loads) each now."""
    w, X = net.init(0), np.full((2, net.n_in), 0.5)
    C = np.ones((2, net.n_out))
    passes = {
        "forward": lambda: net.forward(w, X),
        "vjp": lambda: net.vjp(w, X, C),
        "mse_gradient": lambda: net.mse_gradient(w, X, C),
        "jacobian": lambda: net.jacobian(w, X),
        "hvp": lambda: net.hvp(w, X[0], w),
        "factored_hessian": lambda: _apply_factored(net.factored_hessian(w, X)),
        "ntk": lambda: (net.ntk(w, X), net.ntk(w, X, X[:1])),
    }
    for k, (name, run) in enumerate(passes.items(), start=1):
        start = time.perf_counter()
        print(f"compiling {net.name}: {name} ({k}/{len(passes)})", end="", file=sys.stderr,
              flush=True)
        run()
        print(f" {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def _apply_factored(hessian) -> None:
    hessian.apply(np.ones((hessian.rows, hessian.size)))


if __name__ == "__main__":
    sys.exit(main())
