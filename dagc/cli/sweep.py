"""The `dagc sweep`, `dagc report` and `dagc density` commands (docs/design.md, Command line).

Every argument, the results store and the architectures are checked before anything runs or
is written: bad input is a one-line `DagcError` and leaves the store untouched.
"""

from __future__ import annotations

import difflib
import json
import os
import sys

from .. import metrics
from ..errors import DagcError
from ..experiments import local, report, spectra_figure, store, sweep
from ..metrics.options import TARGETS, TRAVEL

DEFAULT_DB = "dagc-results.sqlite"
DEFAULT_REPORT_DIR = "report"
DEFAULT_WIDTHS = (64, 128, 256, 512)
DEFAULT_SEEDS = 3
DEFAULT_METRICS = ("hessian", "gradient")
DEFAULT_DENSITY_FILE = "density.png"


def add_commands(commands) -> None:
    """Register `dagc sweep` and `dagc report` on the top-level subparsers."""
    p = commands.add_parser(
        "sweep", help="measure architectures over widths and seeds into a results store",
        description="Measure each architecture at each width and seed. Every finished cell "
                    "is committed to the results store at once; a rerun skips finished cells "
                    "(an interrupted sweep resumes) and retries failed ones. Prints the report "
                    "at the end.")
    p.add_argument("arch", nargs="+", help="architecture files or bundled names")
    p.add_argument("--widths", metavar="W,W,...",
                   help="values of `width` (default: " + _csv(DEFAULT_WIDTHS) + "; --quick: "
                        + _csv(sweep.QUICK_WIDTHS) + ")")
    p.add_argument("--seeds", metavar="N", help=f"seeds 0..N-1 (default: {DEFAULT_SEEDS}; "
                                                  f"--quick: {sweep.QUICK_SEEDS})")
    p.add_argument("--metrics", metavar="M,M,...",
                   help=f"of {', '.join(sweep.METRICS)}, defined in docs/metrics.md "
                        f"(default: {_csv(DEFAULT_METRICS)})")
    p.add_argument("--inputs", metavar="N", help=_option_help("inputs"))
    p.add_argument("--radius", metavar="R,R,...", help=_option_help(
        "radius", f"several sweep every radius, e.g. 0.5,1,{TRAVEL}; each is its own option "
                  "set"))
    p.add_argument("--ball-points", metavar="N", help=_option_help("ball_points"))
    p.add_argument("--ascent-steps", metavar="N", help=_option_help("ascent_steps"))
    p.add_argument("--hidden-neurons", metavar="N", help=_option_help("hidden_neurons"))
    p.add_argument("--directions", metavar="N", help=_option_help("directions"))
    p.add_argument("--train-size", metavar="N", help=_option_help("train_size"))
    p.add_argument("--targets", choices=TARGETS, help=_option_help("targets"))
    p.add_argument("--loss-drop", metavar="F", help=_option_help("loss_drop"))
    p.add_argument("--max-steps", metavar="N", help=_option_help("max_steps"))
    p.add_argument("--lr-factor", metavar="C,C,...", help=_option_help(
        "lr_factor", "several sweep every factor, e.g. 0.5,1.5 for the lazy and catapult "
                     "regimes; each cell records its regime"))
    p.add_argument("--lr", metavar="ETA", help=_option_help("lr"))
    p.add_argument("--batch-size", metavar="N", help=_option_help("batch_size"))
    p.add_argument("--db", metavar="FILE", default=DEFAULT_DB,
                   help=f"results store (default: {DEFAULT_DB}; created if missing)")
    p.add_argument("--jobs", metavar="N", help="worker processes, each single-threaded "
                                               "(default: 1, in this process; --quick: "
                                               "up to 2)")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="run the cells on a Dask distributed cluster (tcp://HOST:PORT) "
                        "instead of here; needs dagc[dask]")
    p.add_argument("--scheduler-file", metavar="FILE",
                   help="as --scheduler, with the address from the file that "
                        "`dask scheduler --scheduler-file FILE` writes")
    p.add_argument("--quick", action="store_true",
                   help="a small sweep for a first look: widths " + _csv(sweep.QUICK_WIDTHS)
                        + f", {sweep.QUICK_SEEDS} seeds, metrics {_csv(sweep.QUICK_METRICS)}, "
                        "the usual measurement options (a normal run reuses its cells); "
                        f"writes the report to {DEFAULT_REPORT_DIR}/")
    p.add_argument("--report-dir", metavar="DIR",
                   help="also write the CSV, plot and JSON summary there")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_sweep)

    r = commands.add_parser(
        "report", help="table, fitted slopes, CSV and log-log figure of a results store",
        description="Summarize a results store (or a cells CSV a report wrote): per "
                    "architecture, metric and option set, the values over widths and seeds, "
                    "the slope b of log(value) = a + b log(x) with a 95% t-interval over the "
                    "per-seed slopes, the lack of fit, and a verdict against the exponent "
                    "theory expects (docs/reporting.md).")
    r.add_argument("db", metavar="FILE", help="results store, or a cells.csv of a report")
    r.add_argument("-o", "--output", metavar="DIR",
                   help=f"where to write {report.CSV_NAME}, {report.TABLE_NAME}, "
                        f"{report.JSON_NAME}, {report.PLOT_NAME} and {report.VECTOR_NAME} "
                        f"(default: {DEFAULT_REPORT_DIR}; with --json, only when given)")
    r.add_argument("--json", action="store_true",
                   help="print a JSON list, one object per (architecture, metric, options)")
    r.add_argument("--x", choices=report.X_AXES, default="m",
                   help="fit against the paper's width m or the file's width (default: m)")
    r.add_argument("--arch", metavar="A,A,...", help="only these architectures")
    r.add_argument("--metric", metavar="M,M,...", help="only these metrics")
    r.add_argument("--log-corrected", action="store_true",
                   help="also fit value ~ x^b log(x)^c")
    r.add_argument("--force", action="store_true",
                   help="overwrite a directory that holds a different report (or other files)")
    r.set_defaults(run=_report)

    d = commands.add_parser(
        "density", help="figure of the Hessian's spectral density at several widths",
        description="Plot the spectral density of the Hessian of an architecture's first "
                    "output at w0 and one input, by stochastic Lanczos quadrature, at each "
                    "width: against the eigenvalue and against the eigenvalue times sqrt(m) "
                    "(docs/metrics.md). Writes a PNG and an SVG.")
    d.add_argument("arch", help="architecture file or bundled name")
    d.add_argument("--widths", metavar="W,W,...", required=True, help="values of `width`")
    d.add_argument("--seed", metavar="S", default="0", help="draws w0 and the input "
                                                            "(default: 0)")
    d.add_argument("--probes", metavar="N", default="8",
                   help="Lanczos runs from random starts (default: 8)")
    d.add_argument("--steps", metavar="N", default="60",
                   help="Lanczos steps per run (default: 60)")
    d.add_argument("-o", "--output", metavar="FILE", default=DEFAULT_DENSITY_FILE,
                   help=f"the PNG; the SVG goes beside it (default: {DEFAULT_DENSITY_FILE})")
    d.set_defaults(run=_density)


def _sweep(args) -> int:
    quick = args.quick
    widths = _widths(args.widths) if args.widths is not None else \
        (sweep.QUICK_WIDTHS if quick else DEFAULT_WIDTHS)
    seeds = _integer(args.seeds, "--seeds", 1) if args.seeds is not None else \
        (sweep.QUICK_SEEDS if quick else DEFAULT_SEEDS)
    metrics = _metrics(args.metrics) if args.metrics is not None else \
        (sweep.QUICK_METRICS if quick else DEFAULT_METRICS)
    overrides = _curvature_overrides(args)
    overrides.update(_training_overrides(args))
    if (args.scheduler is not None or args.scheduler_file is not None) \
            and args.jobs is not None:
        raise DagcError("give --jobs (local processes) or --scheduler (a Dask cluster), "
                        "not both")
    jobs = _integer(args.jobs, "--jobs", 1) if args.jobs is not None else \
        (max(1, min(2, os.cpu_count() or 1)) if quick else 1)
    report_dir = args.report_dir or (DEFAULT_REPORT_DIR if quick else None)
    option_sets = sweep.option_grid(_swept_options(args), **overrides)

    if report_dir and os.path.exists(report_dir) and not os.path.isdir(report_dir):
        raise DagcError(f"{report_dir}: cannot write the report: not a directory")
    store.check(args.db, must_exist=False)  # a bad store fails before any work
    archs = sweep.load_architectures(args.arch, widths)
    cells = sweep.plan_option_sets(archs, widths, range(seeds), metrics, option_sets)
    if args.scheduler is not None or args.scheduler_file is not None:
        # connects now: an unreachable cluster fails before work
        executor = _cluster_executor(args.scheduler, args.scheduler_file)
        where = getattr(executor, "description", f"on the Dask cluster at {args.scheduler}")
    else:
        executor = local.make_executor(jobs)
        where = f"{jobs} job(s)"
    with store.Store.open(args.db) as results:
        done = len(results.finished() & {c.key for c in cells})
        print(f"sweep: {len(cells)} cells ({len(archs)} architecture(s) x {len(widths)} widths "
              f"x {seeds} seeds x {len(metrics)} metrics{_sets(option_sets)}), {done} "
              f"already in {args.db}; "
              f"{where}", file=sys.stderr)
        try:
            outcome = sweep.run_sweep(cells, results, executor, progress=not args.no_progress)
        except KeyboardInterrupt:
            done = len(results.finished() & {c.key for c in cells})
            print(f"dagc: interrupted: {done} of {len(cells)} cells are stored in {args.db}; "
                  "run the same command again to resume", file=sys.stderr)
            return 130
        rows = results.rows(c.key for c in cells)
    summaries = report.summarize(rows)
    print(report.format_table(summaries), end="")
    if report_dir:
        print("wrote " + ", ".join(str(p) for p in _write(rows, summaries, report_dir)))
    if outcome.failed:
        print(f"dagc: {len(outcome.failed)} cell(s) failed (recorded in {args.db}; a rerun "
              "retries them)", file=sys.stderr)
        return 1
    return 0


def _report(args) -> int:
    directory = args.output or (None if args.json else DEFAULT_REPORT_DIR)
    archs = _items(args.arch, "--arch") if args.arch is not None else None
    metrics = _items(args.metric, "--metric") if args.metric is not None else None
    source = None
    if directory:
        # recorded beside the report, so a rerun may refresh it and another report may not
        source = dict(source=os.path.relpath(os.path.abspath(args.db), os.path.abspath(directory)),
                      x=args.x, arch=archs, metric=metrics, log_corrected=args.log_corrected)
        report.check_directory(directory, source, force=args.force)
    rows = report.select(report.load(args.db), archs, metrics)
    summaries = report.summarize(rows, x=args.x, log_corrected=args.log_corrected)
    if args.json:
        print(json.dumps(report.to_json(summaries), indent=1))
    else:
        print(report.format_table(summaries), end="")
    if directory:
        paths = _write(rows, summaries, directory, source)
        if not args.json:
            print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _density(args) -> int:
    figure = spectra_figure.density_figure(
        args.arch, _widths(args.widths), seed=_integer(args.seed, "--seed", 0),
        probes=_integer(args.probes, "--probes", 1), steps=_integer(args.steps, "--steps", 1))
    paths = spectra_figure.write_density_figure(figure, args.output)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _cluster_executor(address: str | None, scheduler_file: str | None = None):
    try:
        from ..experiments import dask as cluster
    except ImportError as err:
        raise DagcError(f"--scheduler: Dask cluster support is not available ({err})") from None
    if scheduler_file is not None:
        return cluster.dask_executor(address, scheduler_file)
    return cluster.dask_executor(address)


def _write(rows, summaries, directory, source=None) -> list:
    try:
        return report.write(rows, summaries, directory, source)
    except OSError as err:
        raise DagcError(f"{directory}: cannot write the report: {err.strerror or err}") from None


def _curvature_overrides(args) -> dict:
    """The measurement options of the curvature metrics given on the command line, but the
    swept radius (docs/metrics.md, hessian_ball)."""
    overrides = {}
    for name, minimum in (("inputs", 1), ("ball_points", 1), ("directions", 1),
                          ("ascent_steps", 0), ("hidden_neurons", 1)):
        if getattr(args, name) is not None:
            option = "--" + name.replace("_", "-")
            overrides[name] = _integer(getattr(args, name), option, minimum)
    return overrides


def _training_overrides(args) -> dict:
    """The training options given on the command line (docs/metrics.md, ntk_change)."""
    overrides = {}
    for name, minimum in (("train_size", 1), ("max_steps", 0), ("batch_size", 1)):
        if getattr(args, name) is not None:
            option = "--" + name.replace("_", "-")
            overrides[name] = _integer(getattr(args, name), option, minimum)
    for name in ("loss_drop", "lr"):
        if getattr(args, name) is not None:
            option = "--" + name.replace("_", "-")
            overrides[name] = _positive_float(getattr(args, name), option)
    if args.targets is not None:
        overrides["targets"] = args.targets
    return overrides


# The options whose flags take a list, each value its own option set.
SWEPT_OPTIONS = ("lr_factor", "radius")


def _swept_options(args) -> dict[str, list[float | str]]:
    """{option: its values} for each of SWEPT_OPTIONS given on the command line (--radius
    0.5,1,travel); the others keep their default."""
    swept = {}
    for name in SWEPT_OPTIONS:
        text = getattr(args, name)
        if text is not None:
            option = "--" + name.replace("_", "-")
            parse = _radius if name == "radius" else _positive_float
            swept[name] = [parse(item, option) for item in _items(text, option)]
    return swept


def _radius(text: str, option: str) -> float | str:
    """A positive number, or the word travel (docs/metrics.md, hessian_ball)."""
    if text == TRAVEL:
        return text
    try:
        float(text)
    except ValueError:
        raise DagcError(f"{option}: expected a positive number or {TRAVEL!r}, got "
                        f"{text!r}") from None
    return _positive_float(text, option)


def _sets(option_sets: list[dict]) -> str:
    return f" x {len(option_sets)} option sets" if len(option_sets) > 1 else ""


def _option_help(name: str, note: str = "") -> str:
    """A measurement option's help, from the metric registry: what it is, which metrics read
    it (only their cells' keys change with it) and its default."""
    default = sweep.default_options()[name]
    return (f"{metrics.option_help()[name]}; read by {', '.join(metrics.readers(name))} "
            f"(default: {default}{'; ' + note if note else ''})")


def _csv(items) -> str:
    return ",".join(str(i) for i in items)


def _items(text: str, option: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise DagcError(f"{option}: expected a comma-separated list, got {text!r}")
    seen = set()
    for item in items:
        if item in seen:
            raise DagcError(f"{option}: {item} is listed twice")
        seen.add(item)
    return items


def _widths(text: str) -> tuple[int, ...]:
    widths = tuple(_integer(item, "--widths", 1) for item in _items(text, "--widths"))
    if len(set(widths)) != len(widths):
        raise DagcError(f"--widths: a width is listed twice in {text!r}")
    return widths


def _metrics(text: str) -> tuple[str, ...]:
    known = sweep.METRICS
    metrics = tuple(_items(text, "--metrics"))
    for metric in metrics:
        if metric not in known:
            close = difflib.get_close_matches(metric, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise DagcError(f"--metrics: unknown metric {metric!r} ({hint}known: "
                            f"{', '.join(known)})")
    return metrics


def _integer(text: str, option: str, minimum: int) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise DagcError(f"{option}: expected an integer, got {text!r}") from None
    if value < minimum:
        raise DagcError(f"{option}: must be at least {minimum}, got {value}")
    return value


def _positive_float(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DagcError(f"{option}: expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise DagcError(f"{option}: must be a positive number, got {text}")
    return value
