"""The sweep's curvature flags (issue 26): --radius takes a list (each radius its own option
set, through the same mechanism as --lr-factor), --ascent-steps and --hidden-neurons reach
the stored cells, and every help shows the real default of its `Options` field."""

from __future__ import annotations

import pytest
from conftest import serial_fake_sweeps

from dagc import cli
from dagc.experiments import sweep
from dagc.experiments.store import Store
from dagc.metrics.options import Options


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGC_CACHE_DIR", str(tmp_path / "cache"))


def _measure(net, metric, seed, options):
    return {"value": options.radius / net.width}


@pytest.fixture
def fake(monkeypatch):
    serial_fake_sweeps(monkeypatch, _measure)


def _stored(db) -> list[dict]:
    with Store.open(db, readonly=True) as store:
        return store.rows()


def _sweep(tmp_path, *flags) -> list[dict]:
    db = tmp_path / "r.sqlite"
    assert cli.main(["sweep", "mlp3", "--widths", "4,8", "--seeds", "1", "--db", str(db),
                     "--no-progress", *flags]) == 0
    return _stored(db)


def test_a_radius_list_sweeps_every_radius_and_measures_other_metrics_once(tmp_path, fake,
                                                                          capsys):
    rows = _sweep(tmp_path, "--metrics", "hessian,hessian_ball", "--radius", "0.5,1,3.5")
    ball = [r for r in rows if r["metric"] == "hessian_ball"]
    assert sorted({r["options"]["radius"] for r in ball}) == [0.5, 1.0, 3.5]
    assert len(ball) == 3 * 2  # radii x widths
    assert sorted(r["value"] for r in ball if r["width"] == 4) == [0.5 / 4, 1 / 4, 3.5 / 4]
    # hessian does not read the radius: one cell per width, not one per radius
    assert len([r for r in rows if r["metric"] == "hessian"]) == 2
    assert "x 3 option sets" in capsys.readouterr().err


def test_radius_and_lr_factor_lists_give_every_combination(tmp_path, fake):
    # no metric reads both, so the grid's 2 x 2 sets collapse to 2 cells per metric and width
    rows = _sweep(tmp_path, "--metrics", "hessian_ball,ntk_change", "--radius", "1,2",
                  "--lr-factor", "0.5,1.5")
    assert {(r["metric"], r["options"].get("radius"), r["options"].get("lr_factor"))
            for r in rows} == {("hessian_ball", 1.0, None), ("hessian_ball", 2.0, None),
                               ("ntk_change", None, 0.5), ("ntk_change", None, 1.5)}
    assert len(rows) == 4 * 2
    sets = sweep.option_grid({"radius": [1.0, 2.0], "lr_factor": [0.5, 1.5]}, inputs=3)
    assert len(sets) == 4 and {s["inputs"] for s in sets} == {3}
    assert {(s["radius"], s["lr_factor"]) for s in sets} == {
        (1.0, 0.5), (1.0, 1.5), (2.0, 0.5), (2.0, 1.5)}


def test_ascent_steps_and_hidden_neurons_reach_the_cells(tmp_path, fake):
    rows = _sweep(tmp_path, "--metrics", "hessian_ball,hessian_hidden", "--ascent-steps", "3",
                  "--hidden-neurons", "2")
    options = {r["metric"]: r["options"] for r in rows}
    assert options["hessian_ball"]["ascent_steps"] == 3
    assert options["hessian_hidden"]["hidden_neurons"] == 2
    assert "ascent_steps" not in options["hessian_hidden"]


def test_help_shows_the_options_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    text = text[text.index("options:"):]  # the descriptions, past the usage line
    defaults = Options()
    for flag, value in (("--radius", defaults.radius), ("--ascent-steps", defaults.ascent_steps),
                        ("--hidden-neurons", defaults.hidden_neurons)):
        described = text[text.index(flag + " "):][:400]
        assert f"(default: {value}" in described, flag


@pytest.mark.parametrize("flags, message", [
    (["--radius", "1,-2"], "--radius: must be a positive number, got -2"),
    (["--radius", "1,,2"], "--radius: expected a comma-separated list"),
    (["--radius", "1,1"], "--radius: 1 is listed twice"),
    (["--ascent-steps", "-1"], "--ascent-steps: must be at least 0"),
    (["--hidden-neurons", "0"], "--hidden-neurons: must be at least 1"),
])
def test_bad_curvature_flags_are_one_line(tmp_path, fake, capsys, flags, message):
    db = tmp_path / "r.sqlite"
    assert cli.main(["sweep", "mlp3", "--db", str(db), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not db.exists()


def test_density_command_writes_png_and_svg(tmp_path, capsys):
    target = tmp_path / "spectrum.png"
    assert cli.main(["density", "mlp3", "--widths", "4,8", "--probes", "1", "--steps", "10",
                     "-o", str(target)]) == 0
    assert target.read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in target.with_suffix(".svg").read_bytes()[:1000]
    assert str(target) in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--widths", "4,0"], "--widths: must be at least 1"),
    (["--widths", "4", "--probes", "0"], "--probes: must be at least 1"),
    (["--widths", "4", "--seed", "x"], "--seed: expected an integer"),
])
def test_bad_density_flags_are_one_line(tmp_path, capsys, flags, message):
    assert cli.main(["density", "mlp3", *flags, "-o", str(tmp_path / "d.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "d.png").exists()
