"""The command line's front door (issue 22, item 6): --version, close-match hints, `compile
--jit`, width-free architectures, the --quick preset a normal run reuses, and the sweep's
progress line (compiling ARCH, an estimate from measured cells only)."""

from __future__ import annotations

import functools
import re

import pytest
from conftest import fake_cell, serial_fake_sweeps

import dagc
from dagc import cli
from dagc.backend import cache
from dagc.experiments import sweep
from dagc.experiments.store import Store
from dagc.frontend import spec

TINY = """\
name: tiny_cli
width: 4
inputs: {x: 3}
blocks:
  h: {size: width, act: tanh, from: [x], bias: true}
  out: {size: 1, from: [h]}
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGC_CACHE_DIR", str(tmp_path / "cache"))


def _measure(net, metric, seed, options):
    return {"value": (1.0 + seed) / net.width}


FAKE_CELL = fake_cell(_measure)


@pytest.fixture
def fake(monkeypatch):
    serial_fake_sweeps(monkeypatch, _measure)


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"dagc {dagc.__version__}"


@pytest.mark.parametrize("argv, hint", [
    (["inspect", "mlp33"], "did you mean 'mlp3'?"),
    (["sweep", "densnet3", "--db", "x.sqlite"], "did you mean 'densenet3'?"),
    (["sweep", "mlp3", "--metrics", "hesian", "--db", "x.sqlite"], "did you mean 'hessian'?"),
])
def test_misspelled_names_get_a_close_match(argv, hint, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert hint in err and err.count("\n") == 1


def test_compile_jit_warms_every_pass_with_a_progress_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cache, "load_module",
                        functools.partial(cache.load_module, jit=False))  # no numba here
    (tmp_path / "t.yaml").write_text(TINY)
    assert cli.main(["compile", str(tmp_path / "t.yaml"), "--jit"]) == 0
    err = capsys.readouterr().err
    passes = re.findall(r"compiling tiny_cli: (\w+) \((\d)/(\d)\)", err)
    assert [name for name, _, _ in passes] == ["forward", "vjp", "mse_gradient", "jacobian",
                                               "hvp", "factored_hessian", "ntk"]
    assert cli.main(["compile", str(tmp_path / "t.yaml")]) == 0
    assert "compiling" not in capsys.readouterr().err  # only on request


def test_width_free_architecture_refuses_several_widths(tmp_path, capsys):
    (tmp_path / "g.txt").write_text("a h\nb h\nh o\n")
    (tmp_path / "g.yaml").write_text("name: g\ngraph: g.txt\n")
    argv = ["sweep", str(tmp_path / "g.yaml"), "--db", str(tmp_path / "r.sqlite")]
    assert cli.main([*argv, "--widths", "32,64,128"]) == 2
    err = capsys.readouterr().err
    assert "does not depend on `width`" in err and err.count("\n") == 1
    assert not (tmp_path / "r.sqlite").exists()
    fixed = TINY.replace("size: width", "size: 5")
    assert spec.parse(fixed).width_free and not spec.parse(TINY).width_free


def test_a_normal_run_reuses_the_quick_cells(tmp_path, fake, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sweep", "mlp3", "--quick", "--jobs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert cli.main(["sweep", "mlp3", "--no-progress", "--report-dir", "full"]) == 0
    err = capsys.readouterr().err
    # widths 64, 128, 256 and seeds 0, 1 of the quick run, for both metrics
    assert "24 cells" in err and "12 already in" in err


def test_progress_names_the_compiling_architecture_and_estimates_from_measured_cells(
        tmp_path, capsys):
    archs = sweep.load_architectures(["mlp3"], [8])
    cells = sweep.plan(archs, [8, 16], range(2), ["gradient"], sweep.make_options())
    labels = []

    def executor(todo, on_start):
        for cell in todo:
            on_start(cell)
            labels.append(capsys.readouterr().err)
            yield FAKE_CELL(cell)

    with Store.open(tmp_path / "r.sqlite") as store:
        sweep.run_sweep(cells, store, executor, progress=True)
    assert "compiling mlp3" in labels[0] and "left" not in labels[0]
    assert "mlp3 width=8 seed=1 gradient" in labels[1]
    assert "s left" in labels[2]  # one measured cell after the first


def test_unlisted_outputs_warn_in_one_line_and_listed_ones_are_checked(tmp_path, capsys):
    two = TINY + "  aux: {size: 1, act: tanh, from: [h]}\n"
    (tmp_path / "two.yaml").write_text(two)
    assert cli.main(["inspect", str(tmp_path / "two.yaml")]) == 0
    err = capsys.readouterr().err
    assert err == (f"dagc: warning: {tmp_path / 'two.yaml'}: blocks out, aux feed nothing, so "
                   "all are outputs; say so with `outputs: [out, aux]`\n")
    (tmp_path / "one.yaml").write_text(two + "outputs: [out]\n")
    assert cli.main(["inspect", str(tmp_path / "one.yaml")]) == 2
    assert "block aux feeds nothing and is not in `outputs`" in capsys.readouterr().err
