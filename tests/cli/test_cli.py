"""The `dagc` command (docs/design.md, Command line): `inspect` and `compile`, and their errors.

Every bad input gives exit status 2 and exactly one line on stderr starting "dagc: error:",
with no traceback, and `compile` writes nothing. Every case runs as `python -m dagc compile`
in its own process (concurrently, to keep the test short), and through `dagc.cli.main` for
both commands.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import dagc
from dagc import cli, runtime

ARCH = """\
name: {name}
width: 8
inputs: {{x: 4}}
blocks:
{blocks}
"""
GOOD_BLOCKS = """\
  h1: {size: width, act: tanh, from: [x]}
  out: {size: 1, from: [h1]}"""
# case -> (the `blocks` of an architecture file, substrings of the error line)
FILE_CASES = {
    "cycle": ("  a: {size: 4, act: tanh, from: [x, b]}\n  b: {size: 4, act: tanh, from: [a]}\n"
              "  out: {size: 1, from: [b]}", ["cycle", "a", "b"]),
    "unknown-source": ("  out: {size: 1, from: [x, nope]}", ["out", "nope"]),
    "unknown-add": ("  out: {size: 4, from: [x], add: [nope]}", ["out", "nope"]),
    "unknown-activation": ("  h: {size: 4, act: tanhh, from: [x]}\n  out: {size: 1, from: [h]}",
                           ["h", "tanhh"]),
    "bad-name": ("  h-1: {size: 4, from: [x]}", ["h-1", "identifier"]),
    "size-zero": ("  out: {size: 0, from: [x]}", ["out", "size"]),
    "size-negative": ("  out: {size: -2, from: [x]}", ["out", "size"]),
    "size-width/3": ("  out: {size: width/3, from: [x]}", ["out", "8/3"]),
    "size-float": ("  out: {size: 1.5, from: [x]}", ["out", "1.5"]),
    "size-bool": ("  out: {size: true, from: [x]}", ["out", "True"]),
    "size-unparsable": ("  out: {size: 'width +* 2', from: [x]}", ["out", "width +* 2"]),
    "fan-in-too-large": ("  out: {size: 1, from: [{block: x, fan_in: 5}]}", ["out", "fan_in 5"]),
    "add-sizes": ("  h: {size: 4, act: tanh, from: [x]}\n  out: {size: 2, from: [h], add: [h]}",
                  ["out", "add: h"]),
    "input-feeds-nothing": ("  out: {size: 1, from: [x]}", ["input y feeds nothing"]),
    "duplicate-block": ("  out: {size: 1, from: [x]}\n  out: {size: 2, from: [x]}",
                        ["duplicate key 'out'"]),
    "unknown-key": ("  out: {size: 1, from: [x], activation: tanh}", ["out", "activation"]),
}
RAW_CASES = {  # whole files
    "empty": ("", ["empty"]),
    "malformed": ("name: [oops\n", ["invalid YAML"]),
    "not-a-mapping": ("- a\n- b\n", ["list"]),
    "python-tag": ("name: !!python/object/apply:os.system ['touch PWNED']\n", ["tag"]),
    "no-inputs": ("name: t\nblocks:\n  out: {size: 1, from: [x]}\n", ["inputs"]),
    "no-blocks": ("name: t\ninputs: {x: 4}\nblocks: {}\n", ["blocks"]),
    "graph-missing": ("name: g\ngraph: missing.json\n", ["missing.json", "not found"]),
    "graph-cyclic-json": ("name: g\ngraph: g.json\n", ["g.json", "cycle"]),
    "graph-cyclic-edgelist": ("name: g\ngraph: g.txt\n", ["g.txt", "cycle", "c -> a"]),
    "graph-cyclic-graphml": ("name: g\ngraph: g.graphml\n", ["g.graphml", "cycle"]),
    "graph-unreadable": ("name: g\ngraph: dir.json\n", ["dir.json", "cannot read"]),
    "graph-malformed": ("name: g\ngraph: bad.json\n", ["bad.json", "cannot read"]),
    "not-utf8": (b"name: \xff\n", ["cannot read"]),
}
GRAPH_FILES = {
    "g.json": json.dumps({"directed": True, "nodes": [{"id": n} for n in "abc"],
                          "links": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"},
                                    {"source": "c", "target": "b"}]}),
    "g.txt": "a b\nb c\nc a\n",
    "g.graphml": '<?xml version="1.0"?><graphml xmlns="http://graphml.graphdrawing.org/xmlns">'
                 '<graph edgedefault="directed"><node id="a"/><node id="b"/>'
                 '<edge source="a" target="b"/><edge source="b" target="a"/></graph></graphml>',
    "bad.json": "{not json",
}
ARG_CASES = {  # arguments after the command, substrings of the error line
    "width-not-int": (["mlp3", "--width", "abc"], ["--width", "abc"]),
    "width-zero": (["mlp3", "--width", "0"], ["width", "0"]),
    "width-negative": (["mlp3", "--width", "-3"], ["width", "-3"]),
    "width-huge": (["mlp3", "--width", "10000000000"], ["width", "100,000,000"]),
    "width-indivisible": (["sparse3", "--width", "3"], ["sparse3.yaml", "fan_in", "3/2"]),
    "graph-seed-negative": (["sparse3", "--graph-seed", "-1"], ["graph_seed", "-1"]),
    "unknown-arch": (["no_such_arch"], ["no_such_arch", "mlp3"]),
    "missing-file": (["nowhere/arch.yaml"], ["nowhere/arch.yaml"]),
    "directory": (["."], ["."]),
    "path-too-long": (["x" * 5000], ["no such architecture"]),
    "no-arch": ([], ["arch"]),
    "unknown-option": (["mlp3", "--widht", "3"], ["--widht"]),
}


def run_dagc(*args, cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGC_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "dagc", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


ALL_CASES = [*FILE_CASES, *RAW_CASES, *ARG_CASES]


def prepare(case: str, command: str, directory: Path) -> tuple[list, list[str]]:
    """Write the case's files into `directory`; return the command line and the expected
    substrings of the error line. `compile` writes to directory/out (or would)."""
    if case in ARG_CASES:
        args, expected = ARG_CASES[case]
        args = [command, *args]
    else:
        if case in FILE_CASES:
            blocks, expected = FILE_CASES[case]
            inputs = "{x: 4, y: 2}" if case == "input-feeds-nothing" else "{x: 4}"
            text = ARCH.format(name="t", blocks=blocks).replace("{x: 4}", inputs)
        else:
            text, expected = RAW_CASES[case]
        (directory / "arch.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
        for name, content in GRAPH_FILES.items():
            (directory / name).write_text(content)
        (directory / "dir.json").mkdir()
        args = [command, directory / "arch.yaml"]
    if command == "compile" and len(args) > 1:
        args += ["-o", directory / "out"]
    return args, expected


def check_error(case, directory, status, stdout, stderr, expected) -> None:
    assert status == 2, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and stderr.endswith("\n"), stderr
    assert lines[0].startswith("dagc: error: ")
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    if case not in ARG_CASES and not case.startswith("graph-"):
        assert str(directory / "arch.yaml") in lines[0]  # names the file
    # nothing written: no module, no cache, no side effect of a YAML tag
    assert not (directory / "out").exists()
    assert not (directory / "cache").exists()
    assert not (directory / "PWNED").exists()


@pytest.fixture(scope="module")
def compile_runs(tmp_path_factory):
    """`python -m dagc compile CASE -o DIR` for every case, in concurrent processes."""
    tasks = {}
    for case in ALL_CASES:
        directory = tmp_path_factory.mktemp(case.replace("/", "_"))
        tasks[case] = (directory, *prepare(case, "compile", directory))
    with ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 2)) as pool:
        futures = {case: pool.submit(run_dagc, *args, cwd=directory, cache=directory / "cache")
                   for case, (directory, args, _) in tasks.items()}
        return {case: (futures[case].result(), directory, expected)
                for case, (directory, _, expected) in tasks.items()}


@pytest.mark.parametrize("case", ALL_CASES)
def test_bad_input_exits_2_with_one_error_line(compile_runs, case):
    """In a real process: status 2, one line on stderr, no traceback, nothing written."""
    process, directory, expected = compile_runs[case]
    check_error(case, directory, process.returncode, process.stdout, process.stderr, expected)


@pytest.mark.parametrize("command", ["inspect", "compile"])
@pytest.mark.parametrize("case", ALL_CASES)
def test_bad_input_in_process(tmp_path, monkeypatch, capsys, command, case):
    """The same through dagc.cli.main, for both commands (fast: no interpreter start-up)."""
    args, expected = prepare(case, command, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGC_CACHE_DIR", str(tmp_path / "cache"))
    try:
        status = cli.main([str(a) for a in args])
    except SystemExit as exit_:  # argparse's usage errors
        status = exit_.code
    captured = capsys.readouterr()
    check_error(case, tmp_path, status, captured.out, captured.err, expected)


def test_inspect_runs_in_a_process_too(compile_runs, tmp_path):
    """A few cases through `python -m dagc inspect` (the in-process test covers them all)."""
    cases = ["cycle", "python-tag", "graph-cyclic-json", "width-indivisible", "no-arch"]
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        runs = {}
        for case in cases:
            directory = tmp_path / case
            directory.mkdir()
            args, expected = prepare(case, "inspect", directory)
            runs[case] = (pool.submit(run_dagc, *args, cwd=directory,
                                      cache=directory / "cache"), directory, expected)
        for case, (future, directory, expected) in runs.items():
            process = future.result()
            check_error(case, directory, process.returncode, process.stdout, process.stderr,
                        expected)


def test_write_errors_of_compile(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    for target in (blocker, blocker / "sub"):
        process = run_dagc("compile", "mlp3", "-o", target, cwd=tmp_path, cache=tmp_path / "c")
        assert process.returncode == 2
        assert process.stderr.startswith("dagc: error: ") and process.stderr.count("\n") == 1
        assert str(target) in process.stderr and "Traceback" not in process.stderr
    assert blocker.read_text() == "not a directory"


def test_inspect_densenet3(tmp_path):
    process = run_dagc("inspect", "densenet3", "--width", "64", cwd=tmp_path,
                       cache=tmp_path / "cache")
    assert process.returncode == 0, process.stderr
    assert process.stderr == ""
    out = process.stdout
    # densenet3: x(16) -> h1 -> h2(x, h1) -> h3(h1, h2) -> out(h1, h2, h3). The paper's width m
    # is the smallest in-degree beyond layer 1: h2's 16 + 64 = 80; depth 4; P as below.
    n_params = 64 * 16 + 64 * (16 + 64) + 64 * (64 + 64) + 1 * (64 * 3)
    assert re.search(r"width m = 80\b", out), out
    assert re.search(r"depth L = 4\b", out), out
    assert f"parameters P = {n_params:,}" in out and n_params == 14528
    assert "bottlenecks (in-degree = m): h2" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:7]}
    assert rows["h2"][1:5] == ["64", "tanh", "2", "80"]
    assert rows["out"][1:3] == ["1", "identity"]
    assert not (tmp_path / "cache").exists()  # inspect writes nothing


def test_inspect_user_file_outside_the_tree(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(ARCH.format(name="mine", blocks=GOOD_BLOCKS))
    process = run_dagc("inspect", path, "--width", "5", cwd=tmp_path, cache=tmp_path / "cache")
    assert process.returncode == 0, process.stderr
    assert "mine" in process.stdout and "parameters P = 25" in process.stdout


def test_compile_mlp3_prints_an_importable_module(tmp_path):
    out = tmp_path / "modules"
    process = run_dagc("compile", "mlp3", "-o", out, cwd=tmp_path, cache=tmp_path / "cache")
    assert process.returncode == 0, process.stderr
    assert process.stderr == ""
    lines = process.stdout.splitlines()
    assert len(lines) == 1
    path = Path(lines[0])
    assert path.is_file() and path.parent.resolve() == out.resolve()
    assert re.fullmatch(r"mlp3_[0-9a-f]{12}\.py", path.name)
    assert sorted(p.name for p in out.iterdir()) == [path.name]  # no temporary files left
    assert not (tmp_path / "cache").exists()  # -o, not the cache
    module = runtime.load_module(path, jit=False)
    assert callable(module.forward) and callable(module.hvp)
    # the printed module is the one the API uses for mlp3 (any width), and it computes
    net = dagc.compile("mlp3", width=6, directory=out, jit=False)
    assert Path(net.module.__file__).resolve() == path.resolve()
    y = net.forward(net.init(0), np.ones((2, 16)))
    assert y.shape == (2, 1) and np.isfinite(y).all()
    # compiling again prints the same path and leaves the file alone
    mtime = path.stat().st_mtime_ns
    again = run_dagc("compile", "mlp3", "--width", "32", "-o", out, cwd=tmp_path,
                     cache=tmp_path / "cache")
    assert again.returncode == 0 and again.stdout == process.stdout
    assert path.stat().st_mtime_ns == mtime


def test_compile_default_directory_is_the_cache(tmp_path):
    process = run_dagc("compile", "resnet3", cwd=tmp_path, cache=tmp_path / "cache")
    assert process.returncode == 0, process.stderr
    path = Path(process.stdout.strip())
    assert path.parent == tmp_path / "cache" / "generated" and path.is_file()


def test_help(tmp_path):
    process = run_dagc("--help", cwd=tmp_path, cache=tmp_path / "cache")
    assert process.returncode == 0
    assert "inspect" in process.stdout and "compile" in process.stdout
