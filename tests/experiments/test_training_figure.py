"""The loss-curve figure of training cells (dagc.experiments.training_figure) and the training
set size the reports state: which cells it draws, its panels, colours, legend and caption,
`dagc report` writing it only for a store with training cells, and the effective n of the
default train_size 0 (2 n_in) in the cells and in the report's caption."""

from __future__ import annotations

import numpy as np
from conftest import compiled

from dagc import cli
from dagc.experiments import report
from dagc.experiments import training_figure as F
from dagc.experiments.store import Store
from dagc.metrics import measure
from dagc.metrics.options import Options

CURVES = {0.5: [1.0, 0.5, 0.1, 0.001], 1.5: [1.0, 3.0, 0.2, 0.01, 0.0009],
          3.0: [1.0, 40.0, 9e3, 2e6]}
REGIME = {0.5: 0.0, 1.5: 1.0, 3.0: 2.0}


def _cell(arch="densenet3", width=64, seed=0, factor=0.5, metric="ntk_change", train_points=32,
          train_size=0, curve=True):
    extras = {"regime": REGIME[factor]}
    if curve:
        extras["loss_curve"] = [x * (1 + seed / 10) for x in CURVES[factor]]
    if train_points is not None:
        extras["train_points"] = float(train_points)
    return dict(arch=arch, digest="d" * 16, width=width, seed=seed, metric=metric,
                options_hash=f"{factor}-{train_size}".ljust(16, "o"), status="ok", value=0.2,
                extras=extras, error=None, width_m=width + 16, depth=4, n_params=100,
                arch_text=f"name: {arch}\n",
                options={"lr_factor": factor, "train_size": train_size},
                dagc_version="0.1.0", elapsed=1.0, host="h",
                timestamp="2024-01-01T00:00:00+00:00")


def _training_rows(archs=("densenet3",), widths=(64,), seeds=(0,)):
    return [_cell(arch=a, width=w, seed=s, factor=f, metric=m) for a in archs for w in widths
            for s in seeds for f in CURVES for m in ("ntk_change", "lin_gap")]


def _caption(figure) -> str:
    return figure.get_supxlabel() if hasattr(figure, "get_supxlabel") else \
        figure._supxlabel.get_text()


def test_curves_are_the_training_cells_at_the_largest_width_once_per_run():
    rows = _training_rows(widths=(32, 64), seeds=(0, 1))
    rows.append(dict(_cell(), metric="hessian", extras={}))  # not a training cell
    rows.append(dict(_cell(seed=5), status="failed"))
    curves = F.loss_curves(rows)
    # ntk_change and lin_gap of one (seed, factor) train the same run: drawn once
    assert [(c.lr_factor, c.seed) for c in curves] == \
        [(f, s) for f in sorted(CURVES) for s in (0, 1)]
    assert {c.width for c in curves} == {64}
    assert {c.width for c in F.loss_curves(rows, width=32)} == {32}
    first = curves[0]
    assert first.losses == tuple(CURVES[0.5]) and first.regime == "lazy"
    assert [c.regime for c in curves[::2]] == ["lazy", "catapult", "divergent"]
    assert F.loss_curves([dict(_cell(), extras={})]) == []


def test_figure_has_a_log_loss_panel_per_architecture_coloured_by_lr_factor():
    figure = F.figure(F.loss_curves(_training_rows(archs=("densenet3", "sparse3"))))
    panels = [a for a in figure.axes if a.get_title()]
    assert [a.get_title().split(",")[0] for a in panels] == ["densenet3", "sparse3"]
    axes = panels[0]
    assert axes.get_yscale() == "log"
    assert "width 64 (m = 80)" in axes.get_title()
    lines = [line for line in axes.get_lines() if len(line.get_xdata()) > 1]
    assert [list(line.get_ydata()) for line in lines] == [CURVES[f] for f in sorted(CURVES)]
    colours = [tuple(line.get_color()) for line in lines]
    assert len(set(colours)) == 3
    labels = [t.get_text() for t in axes.get_legend().get_texts()]
    assert labels == ["c = 0.5: lazy", "c = 1.5: catapult", "c = 3: divergent"]
    caption = _caption(figure)
    assert "n = 32 training points" in caption and "1 seed(s)" in caption


def test_caption_says_2_n_in_when_the_cells_did_not_record_n():
    curves = F.loss_curves([_cell(train_points=None)])
    assert "n = 2 n_in training points" in F.caption(curves)
    assert "n = 24 training" in F.caption(F.loss_curves([_cell(train_points=None,
                                                                train_size=24)]))


def test_report_writes_the_loss_curves_only_for_training_cells(tmp_path):
    training, other = tmp_path / "train.sqlite", tmp_path / "other.sqlite"
    for path, rows in ((training, _training_rows()),
                       (other, [dict(_cell(curve=False), metric="hessian")])):
        with Store.open(path) as store:
            for row in rows:
                store.record(row)
    assert cli.main(["report", str(training), "-o", str(tmp_path / "a")]) == 0
    png = (tmp_path / "a" / F.PLOT_NAME).read_bytes()
    assert png.startswith(b"\x89PNG") and (tmp_path / "a" / F.VECTOR_NAME).exists()
    assert cli.main(["report", str(other), "-o", str(tmp_path / "b")]) == 0
    assert not (tmp_path / "b" / F.PLOT_NAME).exists()
    assert (tmp_path / "b" / report.PLOT_NAME).exists()


def test_report_caption_states_the_effective_training_set_size():
    rows = [_cell(width=w, seed=s, factor=0.5, train_points=32) for w in (64, 128)
            for s in (0, 1)]
    for r in rows:
        r["value"] = 1.0 / r["width"] + 0.01 * r["seed"]
    caption = _caption(report.figure(report.summarize(rows)))
    assert "(32 training points" in caption and "(0 training points" not in caption
    (summary,) = report.summarize(rows)
    assert summary.train_points == [32] and summary.to_json()["train_points"] == [32]
    for r in rows:  # an older store: train_size 0 without the recorded n
        del r["extras"]["train_points"]
    assert "(2 n_in training points" in _caption(report.figure(report.summarize(rows)))


def test_training_cells_record_the_effective_training_set_size():
    net = compiled("tiny", 4, jit=False)
    result = measure(net, "ntk_change", 0, Options(max_steps=3))
    assert result["train_points"] == 2 * net.n_in
    result = measure(net, "lin_gap", 0, Options(max_steps=3, train_size=5))
    assert result["train_points"] == 5
    assert np.isfinite(result["value"])
