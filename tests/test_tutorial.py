"""docs/tutorial.md runs as written: its blocks in order, in one fresh directory and one
namespace. ```yaml blocks are saved under the name the text before them gives ("Save this as
`FILE`"), ```bash lines run as `dagc` commands in this process, ```python blocks are
executed; a block after `<!-- needs: MODULE -->` is skipped when MODULE is missing."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from dagc import cli

TUTORIAL = Path(__file__).parent.parent / "docs" / "tutorial.md"
_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def _blocks() -> list[tuple[str, str, str]]:
    """(language, code, the text before the block) for every fenced block, in order."""
    text = TUTORIAL.read_text()
    blocks, end = [], 0
    for match in _BLOCK.finditer(text):
        blocks.append((match.group(1), match.group(2), text[end:match.start()]))
        end = match.end()
    return blocks


def test_the_tutorial_has_every_kind_of_block():
    languages = [language for language, _, _ in _blocks()]
    assert {"yaml", "bash", "python"} <= set(languages)


def test_tutorial_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "tutorial"}
    for language, code, before in _blocks():
        needs = re.findall(r"<!-- needs: (\w+) -->\s*$", before)
        if needs and importlib.util.find_spec(needs[0]) is None:
            continue
        if language == "yaml":
            (name,) = re.findall(r"Save this as\s+`([^`]+)`", before)
            Path(name).write_text(code)
        elif language == "bash":
            for line in code.strip().splitlines():
                argv = shlex.split(line)
                assert argv[0] == "dagc", line
                assert cli.main(argv[1:]) == 0, f"{line}: {capsys.readouterr().err}"
        else:
            exec(compile(code, f"{TUTORIAL.name}:{language}", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "report" / "loglog.png").exists()
    assert (tmp_path / "twohead.png").stat().st_size > 0
    assert "twohead" in capsys.readouterr().out  # the sweep's and the report's tables


@pytest.mark.parametrize("link", ["docs/tutorial.md"])
def test_readme_links_the_tutorial(link):
    assert f"({link})" in (TUTORIAL.parent.parent / "README.md").read_text()
