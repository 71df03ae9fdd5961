"""Reports: the fitted slope and its bootstrap CI, verdicts, notes, failed cells, CSV, plot,
JSON, and the `dagc report` command."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from dagc import cli
from dagc.experiments import report
from dagc.experiments.store import Store

WIDTHS = (16, 32, 64, 128, 256, 512, 1024)


def _rows(slope=-0.5, seeds=5, widths=WIDTHS, arch="mlp3", metric="hessian", noise=0.1,
          width_m=None, options_hash="o" * 16, digest="d" * 16, rng_seed=1):
    """Synthetic cells: value = 3 * width^slope * exp(seed effect + cell noise)."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for seed in range(seeds):
        seed_effect = rng.normal(0, noise)
        seed_tilt = rng.normal(0, noise / 4)  # each seed has its own slope, a little off
        for width in widths:
            value = 3.0 * width ** (slope + seed_tilt) * math.exp(seed_effect
                                                                 + rng.normal(0, noise / 2))
            rows.append(dict(
                arch=arch, digest=digest, width=width, seed=seed, metric=metric,
                options_hash=options_hash, status="ok", value=value, extras={}, error=None,
                width_m=width if width_m is None else width_m(width), depth=4, n_params=10,
                arch_text=f"name: {arch}\n", options={"inputs": 2, "hash": options_hash},
                dagc_version="0.1.0", elapsed=0.5, host="h",
                timestamp="2024-01-01T00:00:00+00:00"))
    return rows


def _store(path, rows):
    with Store.open(path) as store:
        for row in rows:
            store.record(row)
    return path


@pytest.mark.parametrize("true_slope", [-0.5, -1.0, 0.0, 0.3])
def test_known_power_law_is_recovered_within_the_ci(true_slope):
    (s,) = report.summarize(_rows(slope=true_slope, seeds=8))
    assert s.ci_low < true_slope < s.ci_high
    assert s.ci_low < s.slope < s.ci_high
    assert s.ci_high - s.ci_low < 0.2
    assert abs(s.slope - true_slope) < 0.1
    assert math.exp(s.intercept) == pytest.approx(3.0, rel=0.5)
    if true_slope <= -0.5:
        assert s.verdict == f"decays like width^{s.slope:.2f}"
    else:
        assert s.verdict == "does not decay"


def test_ci_does_not_cover_a_wrong_slope():
    (s,) = report.summarize(_rows(slope=-0.5, seeds=8))
    assert not s.ci_low < -0.3 < s.ci_high
    assert not s.ci_low < -0.7 < s.ci_high


def test_bootstrap_resamples_seeds_not_cells():
    """Seeds that disagree on the slope give a wide CI however many widths there are."""
    rows = _rows(slope=-0.5, seeds=4, noise=0.0)
    for r in rows:  # two seeds decay like -0.2, two like -0.8
        r["value"] = 3.0 * r["width"] ** (-0.2 if r["seed"] < 2 else -0.8)
    (s,) = report.summarize(rows)
    assert s.slope == pytest.approx(-0.5)
    assert s.ci_low < -0.7 and s.ci_high > -0.3


def test_report_is_reproducible_and_groups_are_independent():
    a = report.summarize(_rows())
    b = report.summarize(_rows() + _rows(arch="resnet3", rng_seed=7))
    assert (a[0].ci_low, a[0].ci_high) == (b[0].ci_low, b[0].ci_high)
    assert report.to_json(a) == report.to_json(report.summarize(_rows()))


def test_table_lists_widths_m_spread_slope_and_verdict():
    rows = _rows(seeds=3) + _rows(metric="gradient", slope=0.0, seeds=3)
    text = report.format_table(report.summarize(rows))
    assert "mlp3  hessian" in text and "mlp3  gradient" in text
    assert text.index("mlp3  hessian") < text.index("mlp3  gradient")  # the registry's order
    for width in WIDTHS:
        assert f"  {width:>7} {width:>7}     3 " in text
    assert "95% CI [" in text and "decays like width^-0.5" in text
    assert "does not decay" in text


def test_bottleneck_note():
    rows = _rows(width_m=lambda w: 1, arch="bottleneck3")
    (s,) = report.summarize(rows)
    assert s.width_m == [1] * len(WIDTHS)
    assert "stays 1 at every width (a bottleneck)" in s.note
    assert "bottleneck" in report.format_table([s])
    (grows,) = report.summarize(_rows(width_m=lambda w: w // 2))
    assert grows.note is None
    (stalls,) = report.summarize(_rows(width_m=lambda w: min(w, 64)))
    assert "does not grow" in stalls.note


def test_failed_and_unusable_cells_are_listed():
    rows = _rows(seeds=2)
    rows[0].update(status="failed", value=None, error="RuntimeError: out of memory")
    rows[1].update(value=0.0)
    (s,) = report.summarize(rows)
    assert s.failed == [dict(width=16, seed=0, error="RuntimeError: out of memory")]
    assert s.excluded == 1
    text = report.format_table([s])
    assert "FAILED width 16 seed 0: RuntimeError: out of memory" in text
    assert "left out of the fit" in text
    assert "1 failed cell(s)" in text
    assert report.to_json([s])[0]["failed"] == s.failed


def test_few_seeds_are_flagged():
    (few,) = report.summarize(_rows(seeds=2))
    (many,) = report.summarize(_rows(seeds=5))
    assert few.few_seeds and not many.few_seeds
    assert "resamples only 2 seeds" in report.format_table([few])
    assert "resamples only" not in report.format_table([many])
    assert report.to_json([few])[0]["few_seeds"] is True


def test_one_seed_or_one_width_has_no_interval_or_no_fit():
    (one_seed,) = report.summarize(_rows(seeds=1))
    assert math.isfinite(one_seed.slope) and math.isnan(one_seed.ci_low)
    assert "needs two or more seeds" in one_seed.verdict
    assert report.to_json([one_seed])[0]["ci_low"] is None
    (one_width,) = report.summarize(_rows(widths=(64,)))
    assert math.isnan(one_width.slope) and "no fit" in one_width.verdict


def test_options_and_architecture_texts_never_mix():
    rows = (_rows() + _rows(options_hash="p" * 16, slope=-1.0)
            + _rows(digest="e" * 16, slope=0.0))
    summaries = report.summarize(rows)
    assert len(summaries) == 3
    by_key = {(s.digest, s.options_hash): s for s in summaries}
    assert by_key["d" * 16, "o" * 16].slope == pytest.approx(-0.5, abs=0.1)
    assert by_key["d" * 16, "p" * 16].slope == pytest.approx(-1.0, abs=0.1)
    assert by_key["e" * 16, "o" * 16].slope == pytest.approx(0.0, abs=0.1)
    text = report.format_table(summaries)
    assert "mlp3@dddddddd" in text and "mlp3@eeeeeeee" in text and "options pppppppp" in text


def test_files(tmp_path):
    rows = _rows(seeds=3) + _rows(metric="gradient", slope=0.0, seeds=3) \
        + _rows(arch="bottleneck3", width_m=lambda w: 1, seeds=3)
    rows[0].update(status="failed", value=None, error="boom, with a comma\nand a newline")
    summaries = report.summarize(rows)
    paths = report.write(rows, summaries, tmp_path / "out")
    assert [p.name for p in paths] == ["cells.csv", "loglog.png", "summary.json"]
    with open(tmp_path / "out" / "cells.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows)
    assert table[0]["status"] == "failed" and table[0]["error"].startswith("boom, with")
    assert float(table[1]["value"]) == rows[1]["value"]  # full precision
    assert json.loads(table[1]["options"]) == rows[1]["options"]
    assert (tmp_path / "out" / "loglog.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == \
        report.to_json(summaries)


def test_cli_report_json_structure(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = _store(tmp_path / "r.sqlite", _rows(seeds=3) + _rows(metric="gradient", slope=0.0,
                                                             seeds=3))
    assert cli.main(["report", str(db), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data, list) and len(data) == 2
    for item in data:
        assert {"arch", "metric", "slope", "ci_low", "ci_high", "widths", "seeds", "width_m",
                "verdict"} <= set(item)
        assert item["arch"] == "mlp3"
        assert item["widths"] == list(WIDTHS) and item["width_m"] == list(WIDTHS)
        assert item["seeds"] == [0, 1, 2]
        assert all(isinstance(item[k], float) for k in ("slope", "ci_low", "ci_high"))
    assert [item["metric"] for item in data] == ["hessian", "gradient"]
    assert data[0]["ci_high"] < -0.15 and data[0]["verdict"].startswith("decays like")
    assert data[1]["verdict"] == "does not decay"
    assert not (tmp_path / "report").exists()  # --json alone writes no files


def test_cli_report_table_and_files(tmp_path, capsys):
    db = _store(tmp_path / "r.sqlite", _rows(seeds=2))
    before = db.read_bytes()
    assert cli.main(["report", str(db), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "mlp3  hessian" in out and "slope b = " in out and "cells.csv" in out
    assert (tmp_path / "out" / "loglog.png").exists()
    assert db.read_bytes() == before  # a report only reads


@pytest.mark.parametrize("content, message", [
    (None, "no such results store"),
    (b"", "empty"),
    (b"SQLite format 2, honest\n" * 20, "not an SQLite database"),
])
def test_cli_report_bad_store(tmp_path, capsys, content, message):
    db = tmp_path / "r.sqlite"
    if content is not None:
        db.write_bytes(content)
    assert cli.main(["report", str(db), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dagc: error: ") and err.count("\n") == 1 and message in err
    assert (db.read_bytes() == content) if content is not None else not db.exists()
