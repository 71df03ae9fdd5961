"""The documentation says what the code does: every example in README.md and
docs/architectures.md runs, docs/benchmarks.md is what the generator writes, the README's
results table is the checked-in report's, and every `docs/design.md, <heading>` that the code
cites exists."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dagc.frontend import spec
from dagc.ir import graph
from dagc.ops.activations import ACTIVATIONS
from dagc.runtime import compile_spec

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
DOCUMENTED = (README, DOCS / "architectures.md")
SMALL_WIDTH = 8  # every size expression of the documented files is an integer here
README_MAX_LINES = 200

_FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```$", re.S | re.M)


def fenced(path: Path, language: str) -> list[tuple[str, str]]:
    """(info after the language, body) of every ``` block of `path` in `language`."""
    return [(info.strip(), body) for lang, info, body in _FENCE.findall(path.read_text())
            if lang == language]


def attached_files(path: Path) -> dict[str, str]:
    """Blocks written ```json file=NAME: files that the page's YAML examples refer to."""
    found = {}
    for _, info, body in _FENCE.findall(path.read_text()):
        match = re.fullmatch(r"file=(\S+)", info.strip())
        if match:
            found[match.group(1)] = body
    return found


YAML_EXAMPLES = [pytest.param(path, i, id=f"{path.name}-yaml{i}")
                 for path in DOCUMENTED for i in range(len(fenced(path, "yaml")))]


def test_the_pages_have_yaml_examples():
    assert {p.values[0].name for p in YAML_EXAMPLES} == {d.name for d in DOCUMENTED}


@pytest.mark.parametrize(("path", "index"), YAML_EXAMPLES)
def test_yaml_example_parses_and_compiles(path, index, tmp_path):
    for name, text in attached_files(path).items():
        (tmp_path / name).write_text(text)
    text = fenced(path, "yaml")[index][1]
    architecture = spec.parse(text, str(tmp_path / "example.yaml"))
    # Plain Python (jit=False): renders and loads the module without a numba compile.
    net = compile_spec(architecture, width=SMALL_WIDTH, directory=tmp_path, jit=False)
    w = net.init(seed=0)
    X = np.random.default_rng(0).standard_normal((3, net.n_in))
    Y = net.forward(w, X)
    assert Y.shape == (3, net.n_out) and np.all(np.isfinite(Y))


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_architectures_compile(path, tmp_path):
    """The control architectures of the README's results (examples/) stay valid files."""
    net = compile_spec(spec.load(str(path)), width=SMALL_WIDTH, directory=tmp_path, jit=False)
    Y = net.forward(net.init(seed=0), np.random.default_rng(0).standard_normal((3, net.n_in)))
    assert Y.shape == (3, 1) and np.all(np.isfinite(Y))


def test_readme_python_examples_run(capsys):
    blocks = fenced(README, "python")
    assert blocks, "the README has a worked example"
    for _, body in blocks:
        exec(compile(body, str(README), "exec"), {"__name__": "readme_example"})  # noqa: S102
    assert "CompiledNet(" in capsys.readouterr().out


def test_readme_is_a_short_guide():
    lines = README.read_text().splitlines()
    assert lines[0] == "# dagc"
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", README.read_text()), "dates go to benchmarks.md"


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    text = README.read_text()
    section = text[text.index("## Quick start"):]
    language, body = _FENCE.search(section).group(1, 3)
    commands = body.strip().splitlines()
    assert language == "bash" and len(commands) == 2
    assert commands[0].startswith("pip install . && dagc sweep ")
    ci = (ROOT / ".ci" / "run").read_text().replace("pip install -q ", "pip install ")
    assert commands[1] in ci, ".ci/run must run the README's test command"


def test_readme_results_tables_are_the_checked_in_reports():
    """Every row of the README's result tables is a row `dagc report` wrote into one of the
    checked-in reports (docs/results and its subfolders), so no slope is typed by hand."""
    written = {line for path in (DOCS / "results").rglob("slopes.md")
               for line in path.read_text().splitlines() if line.startswith("| ")}
    text = README.read_text()
    section = text[text.index("## Results"):text.index("\n## ", text.index("## Results") + 1)]
    table = [line for line in section.splitlines() if line.startswith("| ")]
    assert len(table) > 4
    assert [line for line in table if line not in written] == []


def test_architectures_page_lists_every_registered_activation():
    text = (DOCS / "architectures.md").read_text()
    missing = [name for name in ACTIVATIONS if f"`{name}`" not in text]
    assert not missing


def test_bundled_table_lists_every_bundled_architecture_with_its_numbers():
    text = (DOCS / "architectures.md").read_text()
    rows = {}
    for line in text[text.index("## Bundled architectures"):].splitlines():
        match = re.match(r"\| `(\w+)` \|[^|]*\| (\d+) \| (\d+) \| ([\d,]+) \|", line)
        if match:
            rows[match.group(1)] = tuple(int(g.replace(",", "")) for g in match.groups()[1:])
    assert set(rows) == set(spec.bundled_names())
    for name, numbers in rows.items():
        ir = graph.build(spec.load(name))
        assert numbers == (ir.width_m, ir.depth, ir.n_params), name


def test_benchmarks_page_is_what_the_generator_writes():
    sys.path.insert(0, str(ROOT))
    try:
        from bench.__main__ import docs_page
    finally:
        sys.path.remove(str(ROOT))
    assert (DOCS / "benchmarks.md").read_text() == docs_page(), \
        "run `python -m bench --render-docs`"


def _design_headings() -> list[str]:
    return [line.lstrip("#").strip().lower()
            for line in (DOCS / "design.md").read_text().splitlines()
            if line.startswith("## ") or line.startswith("### ")]


def _citations(text: str) -> list[str]:
    """What follows every `docs/design.md, ` in `text`: a quoted heading or the words up to
    the next ')' or '.'; comment markers and hyphenation of wrapped lines are undone."""
    text = re.sub(r"-\n\s*(?:#\s*)?", "-", text)
    text = re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)
    found = []
    for match in re.finditer(r"docs/design\.md, (\"[^\"]+\"|[^).;:\"]+)", text):
        found.append(match.group(1).strip('"').strip().lower())
    return found


def test_every_design_citation_names_a_heading():
    headings = _design_headings()
    for path in _code_files():
        for cited in _citations(path.read_text()):
            assert any(h.startswith(cited) for h in headings), \
                f"{path.relative_to(ROOT)} cites docs/design.md, {cited!r}: no such heading"


def test_code_cites_the_repository_design_by_heading():
    """The code cites docs/design.md by heading; a bare `design.md` or a section number points
    outside the repository or goes stale when sections move."""
    offenders = [str(path.relative_to(ROOT)) for path in _code_files()
                 if re.search(r"(?<!docs/)design\.md|design\.md,? sections? \d",
                              path.read_text())]
    assert not offenders


def _code_files() -> list[Path]:
    return [path for folder in ("dagc", "tests", "bench") for pattern in ("*.py", "*.j2")
            for path in (ROOT / folder).rglob(pattern) if path.name != "test_docs.py"]


def test_relative_links_of_the_docs_resolve():
    for page in [README, *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: {target}"


@pytest.mark.parametrize("path", DOCUMENTED, ids=lambda p: p.name)
def test_inspect_transcripts_are_current(path, tmp_path):
    """Every `$ dagc inspect ...` transcript is what the command prints today (the file's path
    aside), with the page's own YAML examples saved as <name>.yaml beside it."""
    for _, text in fenced(path, "yaml"):
        (tmp_path / f"{spec.parse(text).name}.yaml").write_text(text)
    transcripts = [body for _, body in fenced(path, "") if body.startswith("$ dagc inspect")]
    assert transcripts
    for transcript in transcripts:
        command, *shown = transcript.splitlines()
        with contextlib.chdir(tmp_path):
            printed = subprocess.run([sys.executable, "-m", "dagc", *command.split()[2:]],
                                     capture_output=True, text=True, check=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
        assert _without_paths(shown) == _without_paths(printed.splitlines()), command


def _without_paths(lines: list[str]) -> list[str]:
    return [re.sub(r"\([^)]*\.yaml\)", "(FILE)", line) for line in lines]
