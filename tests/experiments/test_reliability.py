"""Reliability of sweeps and stores (docs/guarantees.md): a graph file changed mid-sweep, grids
too large to plan, special files, read-only stores, corrupt rows, kill -9 at random moments,
concurrent sweeps and a full disk."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dagc import cli, runtime
from dagc.errors import DagcError
from dagc.experiments import sweep
from dagc.experiments.store import Store

GRAPH_A = "a h\nb h\nh o\n"
GRAPH_B = "a h\nb h\na o\nh o\n"


def _graph_arch(tmp_path: Path, edges: str) -> Path:
    (tmp_path / "g.txt").write_text(edges)
    arch = tmp_path / "gnet.yaml"
    arch.write_text("name: gnet\ngraph: g.txt\n")
    return arch


# --- item 1: a graph file is read once per group and checked against the planned digest ----

def test_a_graph_file_changed_mid_sweep_fails_its_cells_instead_of_mixing(tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(runtime, "compile_spec",
                        lambda parsed, width: compiled.append(parsed.graph_data) or parsed)
    arch = _graph_arch(tmp_path, GRAPH_A)
    (planned,) = sweep.load_architectures([str(arch)], [1])
    first, second = sweep.plan([planned], [1, 2], [0], ["gradient"], sweep.make_options())
    sweep.compile_net(first.text, first.path, first.width, first.digest)
    assert compiled == [GRAPH_A.encode()]  # built from the bytes that were hashed

    (tmp_path / "g.txt").write_text(GRAPH_B)
    with pytest.raises(DagcError, match=r"g\.txt: the graph file changed since the sweep"):
        sweep.compile_net(second.text, second.path, second.width, second.digest)
    result = sweep.run_cell(second)
    assert result.status == "failed" and "changed since the sweep" in result.error
    assert compiled == [GRAPH_A.encode()]


# --- item 5: bounds on what a flag can ask for ----------------------------------------------

def test_a_grid_of_a_billion_seeds_is_refused_before_it_is_made(tmp_path):
    (arch,) = sweep.load_architectures(["mlp3"], [4])
    with pytest.raises(DagcError, match=r"too many for one sweep \(at most 1,000,000\)"):
        sweep.plan([arch], [4, 8], range(10**9), ["gradient"], sweep.make_options())
    endless = iter(int, 1)  # an iterator that never ends
    with pytest.raises(DagcError, match="too many for one sweep"):
        sweep.plan([arch], [4], endless, ["gradient"], sweep.make_options())
    assert len(sweep.plan([arch], [4], range(3), ["gradient"], sweep.make_options())) == 3
