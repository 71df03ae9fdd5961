"""Reports: slopes against m or width with seed-cluster intervals, verdicts from the metric
registry, lack of fit, notes, failed cells, the figure, the files, and `dagc report`."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from dagc import cli
from dagc.errors import DagcError
from dagc.experiments import fit, report
from dagc.experiments.store import Store
from dagc.metrics import METRICS

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
    assert s.slope.contains(true_slope) and s.slope.contains(s.slope.value)
    assert s.slope.high - s.slope.low < 0.2
    assert abs(s.slope.value - true_slope) < 0.1
    assert math.exp(s.intercept) == pytest.approx(3.0, rel=0.5)
    assert s.slope.seeds == 8


def test_ci_does_not_cover_a_wrong_slope():
    (s,) = report.summarize(_rows(slope=-0.5, seeds=8))
    assert not s.slope.contains(-0.3) and not s.slope.contains(-0.7)


def test_the_interval_is_over_seeds_not_cells():
    """Seeds that disagree on the slope give a wide CI however many widths there are."""
    rows = _rows(slope=-0.5, seeds=4, noise=0.0)
    for r in rows:  # two seeds decay like -0.2, two like -0.8
        r["value"] = 3.0 * r["width"] ** (-0.2 if r["seed"] < 2 else -0.8)
    (s,) = report.summarize(rows)
    assert s.slope.value == pytest.approx(-0.5)
    half = 3.182446305284263 * math.sqrt(0.12) / 2  # t_{0.975, 3} * sd of (-.2,-.2,-.8,-.8)/2
    assert s.slope.low == pytest.approx(-0.5 - half) and s.slope.high == pytest.approx(-0.5 + half)


def test_fits_against_m_by_default_and_width_on_request():
    rows = _rows(slope=-0.5, seeds=3, noise=0.0, width_m=lambda w: w + 16)
    for r in rows:  # exactly m^-1/2 with m = width + 16 (densenet3's m)
        r["value"] = (r["width"] + 16) ** -0.5
    (by_m,) = report.summarize(rows)
    (by_width,) = report.summarize(rows, x="width")
    assert by_m.slope.value == pytest.approx(-0.5, abs=1e-12)
    assert by_width.slope.value > -0.49  # bent by the + 16
    assert by_m.x_values == [w + 16 for w in WIDTHS] and by_width.x_values == list(WIDTHS)
    assert report.to_json([by_m])[0]["x"] == "m" and report.to_json([by_width])[0]["x"] == \
        "width"
    with pytest.raises(DagcError, match="--x"):
        report.summarize(rows, x="depth")


@pytest.mark.parametrize("slope, low, high, expected, margin, verdict", [
    (-0.48, -0.52, -0.44, -0.5, 0.15, "consistent with m^-1/2"),
    (-0.44, -0.46, -0.42, -0.5, 0.15, "consistent with m^-1/2 up to a log factor"),
    (-0.44, -0.46, -0.42, -0.5, 0.0, "slower than m^-1/2"),
    (-0.90, -0.95, -0.85, -0.5, 0.15, "faster than m^-1/2"),
    (0.01, -0.03, 0.05, -0.5, 0.15, "does not decay (theory: m^-1/2)"),
    (0.20, 0.15, 0.25, -0.5, 0.0, "grows (theory: m^-1/2)"),
    (-0.4, -1.1, 0.3, -0.5, 0.15, "inconclusive: the 95% CI holds m^-1/2 and m^-1 (add seeds)"),
    (-0.3, -0.6, 0.05, -0.5, 0.15, "inconclusive: the 95% CI holds m^-1/2 and m^0 (add seeds)"),
    (-1.0, -1.43, -0.65, -1.0, 0.15, "consistent with m^-1"),
    (0.01, -0.01, 0.03, 0.0, 0.15, "consistent with m^0"),
    (-0.4, -0.45, -0.35, 0.0, 0.15, "decays (theory: m^0)"),
    (-1.0, -1.1, -0.9, -1.0, 0.15, "consistent with m^-1"),
    (-0.4, -0.45, -0.35, None, 0.15, "decays (theory gives no exponent)"),
    (0.0, -0.1, 0.1, None, 0.15, "no clear trend (theory gives no exponent)"),
])
def test_verdicts(slope, low, high, expected, margin, verdict):
    estimate = fit.Estimate(slope, low, high, 5)
    assert report.verdict(estimate, expected, margin) == verdict


def test_verdict_reads_the_metric_registry():
    for metric, expected in (("hessian", -0.5), ("gradient", 0.0), ("ntk_change", -1.0)):
        assert METRICS[metric].expected_slope == expected
        rows = _rows(metric=metric, slope=expected, seeds=5, noise=0.02)
        (s,) = report.summarize(rows)
        assert s.expected_slope == expected
        assert s.verdict.startswith("consistent with m^"), s.verdict
        assert report.metric_info(metric).label == METRICS[metric].label
    (unknown,) = report.summarize(_rows(metric="made_up", seeds=3))
    assert unknown.expected_slope is None and "theory gives no exponent" in unknown.verdict


def test_lack_of_fit_local_slopes_and_drift():
    rows = _rows(seeds=4, noise=0.0)
    for r in rows:  # m^-1/2 log(m)^0.8: bends, every local slope above -1/2
        r["value"] = r["width"] ** -0.5 * math.log(r["width"]) ** 0.8
    (s,) = report.summarize(rows, log_corrected=True)
    expected = [-0.5 + 0.8 * math.log(math.log(b) / math.log(a)) / math.log(b / a)
                for a, b in zip(WIDTHS, WIDTHS[1:], strict=False)]
    assert s.local_slopes == pytest.approx(expected)
    assert s.slope_drift.value < -0.01  # the log's slope 1/log m fades as m grows
    assert s.log_corrected.slope.value == pytest.approx(-0.5)
    assert s.log_corrected.log_power.value == pytest.approx(0.8)
    assert s.verdict == "consistent with m^-1/2 up to a log factor"
    text = report.format_table([s])
    assert "lack of fit: the local slope drifts by" in text
    assert "log-corrected fit m^b log(m)^c: b = -0.500" in text
    data = report.to_json([s])[0]
    assert data["local_slopes"] == pytest.approx(expected)
    assert data["log_corrected"]["log_power"]["value"] == pytest.approx(0.8)


def test_report_is_reproducible_and_groups_are_independent():
    a = report.summarize(_rows())
    b = report.summarize(_rows() + _rows(arch="resnet3", rng_seed=7))
    assert a[0].slope == b[0].slope
    assert report.to_json(a) == report.to_json(report.summarize(_rows()))


def test_table_lists_widths_m_spread_slope_and_verdict():
    rows = _rows(seeds=3) + _rows(metric="gradient", slope=0.0, seeds=3)
    text = report.format_table(report.summarize(rows))
    assert "mlp3  hessian" in text and "mlp3  gradient" in text
    assert text.index("mlp3  hessian") < text.index("mlp3  gradient")  # the registry's order
    for width in WIDTHS:
        assert f"  {width:>7} {width:>7}     3 " in text
    assert "slope b against m = -0.5" in text and "-> consistent with m^-1/2" in text
    assert "-> consistent with m^0" in text
    assert "95% t-intervals over the per-seed fits of 3 seeds (2 dof)" in text


def test_bottleneck_note():
    rows = _rows(width_m=lambda w: 1, arch="bottleneck3")
    (s,) = report.summarize(rows)
    assert s.width_m == [1] * len(WIDTHS)
    assert "stays 1 at every width (a bottleneck)" in s.note
    assert "bottleneck" in report.format_table([s])
    assert math.isnan(s.slope.value) and s.verdict.startswith("no fit against m")
    (by_width,) = report.summarize(rows, x="width")
    assert by_width.slope.contains(-0.5)
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


def test_one_seed_or_one_width_has_no_interval_or_no_fit():
    (one_seed,) = report.summarize(_rows(seeds=1))
    assert math.isfinite(one_seed.slope.value) and math.isnan(one_seed.slope.low)
    assert "needs two or more seeds" in one_seed.verdict
    assert report.to_json([one_seed])[0]["ci_low"] is None
    (one_width,) = report.summarize(_rows(widths=(64,)))
    assert math.isnan(one_width.slope.value) and "no fit" in one_width.verdict


def test_options_and_architecture_texts_never_mix():
    rows = (_rows() + _rows(options_hash="p" * 16, slope=-1.0)
            + _rows(digest="e" * 16, slope=0.0))
    summaries = report.summarize(rows)
    assert len(summaries) == 3
    by_key = {(s.digest, s.options_hash): s for s in summaries}
    assert by_key["d" * 16, "o" * 16].slope.value == pytest.approx(-0.5, abs=0.1)
    assert by_key["d" * 16, "p" * 16].slope.value == pytest.approx(-1.0, abs=0.1)
    assert by_key["e" * 16, "o" * 16].slope.value == pytest.approx(0.0, abs=0.1)
    text = report.format_table(summaries)
    assert "mlp3@dddddddd" in text and "mlp3@eeeeeeee" in text and "options pppppppp" in text


def test_table_rows_name_only_the_options_that_tell_series_apart():
    """Metrics that read different options share their architecture's row; two option sets
    of one metric get a row each, named by the option that differs."""
    def with_options(rows, **options):
        for r in rows:
            r["options"] = options
        return rows

    rows = (with_options(_rows(), inputs=2)
            + with_options(_rows(metric="ntk_change", options_hash="a" * 16), lr_factor=0.5)
            + with_options(_rows(metric="ntk_change", options_hash="b" * 16, slope=0.0),
                           lr_factor=1.5))
    table = report.markdown_table(report.summarize(rows))
    labels = [line.split("|")[1].strip() for line in table.splitlines()[2:]
              if line.startswith("| ")]
    assert labels == ["mlp3", "mlp3 (lr_factor=0.5)", "mlp3 (lr_factor=1.5)"]


def test_files(tmp_path):
    rows = _rows(seeds=3) + _rows(metric="gradient", slope=0.0, seeds=3) \
        + _rows(arch="bottleneck3", width_m=lambda w: 1, seeds=3)
    rows[0].update(status="failed", value=None, error="boom, with a comma\nand a newline")
    summaries = report.summarize(rows)
    paths = report.write(rows, summaries, tmp_path / "out")
    assert [p.name for p in paths] == ["cells.csv", "report.txt", "slopes.md", "summary.json",
                                       "loglog.png", "loglog.svg"]
    with open(tmp_path / "out" / "cells.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows)
    assert table[0]["status"] == "failed" and table[0]["error"].startswith("boom, with")
    assert float(table[1]["value"]) == rows[1]["value"]  # full precision
    assert json.loads(table[1]["options"]) == rows[1]["options"]
    assert (tmp_path / "out" / "loglog.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "out" / "loglog.svg").read_bytes()[:400]
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == \
        report.to_json(summaries)
    assert (tmp_path / "out" / "report.txt").read_text() == report.format_table(summaries)
    slopes = (tmp_path / "out" / "slopes.md").read_text()
    assert "| mlp3 | 16 .. 1024 | -0.5" in slopes and "| bottleneck3 | 1 .. 1 | no fit |" in slopes


def test_a_report_reads_back_its_own_csv(tmp_path):
    rows = _rows(seeds=2)
    rows[0].update(status="failed", value=None, error="boom")
    report.write_csv(rows, tmp_path / "cells.csv")
    again = report.load(tmp_path / "cells.csv")
    columns = set(again[0])
    assert [{k: r[k] for k in columns} for r in rows] == again
    assert report.to_json(report.summarize(again)) == report.to_json(report.summarize(rows))
    (tmp_path / "bad.csv").write_text("arch,width\nmlp3,16\n")
    with pytest.raises(DagcError, match="not a dagc cells CSV"):
        report.load(tmp_path / "bad.csv")


def _lines(axes, style):
    return [line for line in axes.get_lines() if line.get_linestyle() == style]


def test_figure_for_a_paper():
    rows = (_rows(seeds=3) + _rows(metric="gradient", slope=0.0, seeds=3)
            + _rows(metric="made_up", seeds=3) + _rows(arch="resnet3", seeds=3, rng_seed=4)
            + _rows(arch="bottleneck3", width_m=lambda w: 1, seeds=3))
    summaries = report.summarize(rows)
    figure = report.figure(summaries)
    panels = [a for a in figure.axes if a.get_xscale() == "log"]
    assert [a.get_title().split(":")[0] for a in panels] == ["hessian", "gradient", "made_up"]
    hessian, gradient, made_up = panels
    assert hessian.get_ylabel() == METRICS["hessian"].label
    assert METRICS["hessian"].definition[:20] in hessian.get_title().replace("\n", " ")
    assert hessian.get_xlabel().startswith("m ")
    # a fitted line per architecture; theory's guide only where it gives an exponent
    assert len(_lines(hessian, "-")) == 2 and len(_lines(made_up, "-")) == 1
    (guide,) = _lines(hessian, "--")
    x, y = guide.get_data()
    assert math.log(y[1] / y[0]) / math.log(x[1] / x[0]) == pytest.approx(-0.5)
    (flat,) = _lines(gradient, "--")
    assert flat.get_data()[1][0] == pytest.approx(flat.get_data()[1][1])
    assert _lines(made_up, "--") == []
    assert len(figure.legends) == 1
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "mlp3" in legend and "resnet3" in legend and "bottleneck3" not in legend
    assert any("95% t-interval" in t for t in legend)
    caption = figure.get_supxlabel() if hasattr(figure, "get_supxlabel") else \
        figure._supxlabel.get_text()
    caption = " ".join(caption.split())
    assert "3 seeds" in caption and "2 input(s)" in caption and "t-interval" in caption
    assert "Not shown (no fit against the x axis): bottleneck3" in caption
    strips = " ".join(t.get_text() for a in figure.axes for t in a.texts)
    assert "slope b [95% CI] against m" in strips


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


def test_cli_report_x_and_filters(tmp_path, capsys):
    rows = (_rows(seeds=3, width_m=lambda w: 2 * w) + _rows(metric="gradient", slope=0.0,
            seeds=3) + _rows(arch="resnet3", seeds=3))
    db = _store(tmp_path / "r.sqlite", rows)
    assert cli.main(["report", str(db), "--json", "--x", "width", "--arch", "mlp3",
                     "--metric", "hessian"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert (item["arch"], item["metric"], item["x"]) == ("mlp3", "hessian", "width")
    assert item["x_values"] == list(WIDTHS) and item["width_m"] == [2 * w for w in WIDTHS]
    assert cli.main(["report", str(db), "--json", "--arch", "mlp"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--arch: no cells of 'mlp' (did you mean 'mlp3'?" in err
    assert cli.main(["report", str(db), "--json", "--metric", "hessain"]) == 2
    assert "did you mean 'hessian'?" in capsys.readouterr().err


def test_cli_report_never_overwrites_another_report(tmp_path, capsys):
    one = _store(tmp_path / "one.sqlite", _rows(seeds=2))
    two = _store(tmp_path / "two.sqlite", _rows(seeds=2, slope=-1.0))
    out = tmp_path / "out"
    assert cli.main(["report", str(one), "-o", str(out)]) == 0
    assert cli.main(["report", str(one), "-o", str(out)]) == 0  # its own report: refreshed
    before = (out / "summary.json").read_text()
    assert cli.main(["report", str(two), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds a different report; use --force" in err and err.count("\n") == 1
    assert cli.main(["report", str(one), "-o", str(out), "--x", "width"]) == 2  # other fit
    assert (out / "summary.json").read_text() == before
    assert cli.main(["report", str(two), "-o", str(out), "--force"]) == 0
    assert json.loads((out / "summary.json").read_text())[0]["slope"] < -0.8
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("mine")
    assert cli.main(["report", str(one), "-o", str(other)]) == 2
    assert "holds files that are not a report" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["thesis.tex"]


def test_cli_report_reads_a_cells_csv(tmp_path, capsys):
    report.write_csv(_rows(seeds=3), tmp_path / "cells.csv")
    assert cli.main(["report", str(tmp_path / "cells.csv"), "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["verdict"] == "consistent with m^-1/2"


def test_panel_titles_keep_a_definition_up_to_its_first_top_level_semicolon():
    assert report._first_clause("max of ||H(w0; x)|| (by Lanczos); training: gd") == \
        "max of ||H(w0; x)|| (by Lanczos)"
    assert report._first_clause("no clause (a; b)") == "no clause (a; b)"
