"""`dagc sweep --radius` takes the word travel beside numbers (issue 26)."""

from __future__ import annotations

import pytest
from conftest import serial_fake_sweeps

from dagc import cli
from dagc.experiments.store import Store


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGC_CACHE_DIR", str(tmp_path / "cache"))


def _measure(net, metric, seed, options):
    return {"value": 1.0 if options.radius == "travel" else options.radius}


def test_radius_list_with_travel_gives_one_option_set_each(tmp_path, monkeypatch, capsys):
    serial_fake_sweeps(monkeypatch, _measure)
    db = tmp_path / "r.sqlite"
    assert cli.main(["sweep", "mlp3", "--widths", "4", "--seeds", "1", "--db", str(db),
                     "--no-progress", "--metrics", "hessian_ball", "--radius", "1,travel"]) == 0
    with Store.open(db, readonly=True) as store:
        rows = store.rows()
    assert sorted(str(r["options"]["radius"]) for r in rows) == ["1.0", "travel"]
    travel = next(r["options"] for r in rows if r["options"]["radius"] == "travel")
    assert travel["max_steps"] == 1000  # R = travel reads the training options
    assert "x 2 option sets" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["1,far", "Travel"])
def test_another_word_is_refused_in_one_line(tmp_path, capsys, text):
    db = tmp_path / "r.sqlite"
    assert cli.main(["sweep", "mlp3", "--db", str(db), "--no-progress", "--radius", text]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--radius: expected a positive number or 'travel'" in err
    assert not db.exists()
