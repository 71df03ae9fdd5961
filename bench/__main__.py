"""`python -m bench`: dagc against JAX and PyTorch on the same networks; see --help."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_ARCHS = "densenet3,sparse3,randdag"
DEFAULT_WIDTHS = "128,512,2048"
QUICK_WIDTHS = "32,64"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.json"
NOTES = ROOT / "bench" / "notes.md"
DOCS_PAGE = ROOT / "docs" / "benchmarks.md"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Time dagc's forward, VJP, HVP, NTK, Hessian norms and compile against "
                    "equivalent JAX (jit) and PyTorch (torch.func) networks, float64.")
    parser.add_argument("--archs", default=DEFAULT_ARCHS,
                        help=f"comma-separated architectures (default {DEFAULT_ARCHS})")
    parser.add_argument("--widths", default=None,
                        help=f"comma-separated widths (default {DEFAULT_WIDTHS}; add 4096 where "
                             f"memory allows; --quick: {QUICK_WIDTHS})")
    parser.add_argument("--quick", action="store_true",
                        help="small widths, few rounds, short timings")
    parser.add_argument("--peers", default="jax,torch", help="frameworks to compare with")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"),
                        help="directory for latest.md and latest.json (default bench/results)")
    parser.add_argument("--memory-widths", default=None,
                        help="comma-separated widths of the peak-memory probe (default "
                             "2048,4096; --quick: the largest width; 0 skips it)")
    parser.add_argument("--no-compile", action="store_true",
                        help="skip compile-time measurements (fresh processes, slow)")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (default 7)")
    parser.add_argument("--render", metavar="JSON", default=None,
                        help="only re-render the markdown report of a saved JSON result")
    parser.add_argument("--render-docs", action="store_true",
                        help=f"only write {DOCS_PAGE.relative_to(ROOT)} from "
                             f"{RESULTS.relative_to(ROOT)} and {NOTES.relative_to(ROOT)}")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every library (BLAS, OpenMP, numba, torch, XLA); "
                             "default: each library's own default")
    return parser.parse_args(argv)


def _set_threads(n: int) -> None:
    """Must run before numpy, numba, torch or jax is imported.

    jaxlib 0.10 keeps more than one core busy despite its thread flags (1.4 CPU seconds per
    second measured on a jitted matrix product). The process is not pinned to one CPU to stop
    that: pinned, JAX's threads contend for the core and its VJP took 5x longer, which would
    flatter dagc. So JAX's times may use up to about 1.4 cores.
    """
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "NUMBA_NUM_THREADS"):
        os.environ[name] = str(n)
    if n == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()


def docs_page() -> str:
    """The text of docs/benchmarks.md, from the saved latest run and the hand-written notes."""
    import json

    from . import report

    return report.docs_page(json.loads(RESULTS.read_text()), NOTES.read_text())


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    unknown = set(args.peers.split(",")) - {"", "jax", "torch"}
    if unknown:
        print(f"--peers: unknown framework(s) {', '.join(sorted(unknown))} (known: jax, torch)",
              file=sys.stderr)
        return 2
    if args.render_docs:
        DOCS_PAGE.write_text(docs_page())
        print(f"wrote {DOCS_PAGE}", file=sys.stderr)
        return 0
    if args.render:
        import json

        from . import report

        print(report.markdown(json.loads(Path(args.render).read_text())))
        return 0
    if args.threads:
        _set_threads(args.threads)
    from . import report, suite
    from .timing import Settings

    widths = [int(w) for w in (args.widths or (QUICK_WIDTHS if args.quick
                                               else DEFAULT_WIDTHS)).split(",")]
    settings = Settings(rounds=3, target=0.05, max_seconds=10.0) if args.quick else Settings()
    if args.rounds:
        settings.rounds = args.rounds
    memory_widths = [int(w) for w in (args.memory_widths or (
        str(max(widths)) if args.quick else "2048,4096")).split(",") if int(w)]
    config = suite.Config(
        archs=[a for a in args.archs.split(",") if a],
        widths=widths,
        frameworks=[p for p in args.peers.split(",") if p],
        settings=settings,
        memory_widths=memory_widths,
        compile=not args.no_compile,
        quick=args.quick,
    )
    if args.quick:
        config.lanczos_budget = 15.0
    if args.threads:
        try:
            import torch
        except ImportError:
            pass
        else:
            torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results = suite.run(config, log)
    md, js = report.write(results, Path(args.out))
    print(md.read_text())
    log(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
