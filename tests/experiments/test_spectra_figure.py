"""The spectral-density figure (issue 26): each width's SLQ density is a probability density
whose edge is the Hessian's norm, the right panel is the left one rescaled by sqrt(m), and
the figure is written as PNG and SVG."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dagc
from dagc import measure
from dagc.errors import DagcError
from dagc.experiments import spectra_figure
from dagc.metrics.inputs import sweep_inputs

WIDTHS = (4, 8)


@pytest.fixture(scope="module")
def curves():
    return spectra_figure.density_curves("mlp3", WIDTHS, seed=1, probes=2, steps=30)


def test_each_curve_is_a_density_whose_edge_is_the_hessian_norm(curves):
    assert [c.width for c in curves] == list(WIDTHS)
    for curve in curves:
        net = dagc.compile("mlp3", width=curve.width)
        x = sweep_inputs(net, 1, 1)[0]
        top = measure.hessian_eigs(net, net.init(1), x, k=1, seed=1)[0]
        # Lanczos' extreme Ritz value converges first: it is ||H|| to high accuracy
        assert curve.spectral_radius == pytest.approx(abs(top), rel=1e-6)
        assert curve.m == net.width and curve.n_params == net.n_params
        area = float(np.sum(curve.density) * (curve.eigenvalues[1] - curve.eigenvalues[0]))
        assert area == pytest.approx(1.0, abs=1e-3)
        assert np.all(curve.density >= 0)


def test_the_right_panel_is_the_left_rescaled_by_sqrt_m(curves, monkeypatch):
    monkeypatch.setattr(spectra_figure, "density_curves", lambda *args: curves)
    figure = spectra_figure.density_figure("mlp3", WIDTHS)
    raw, scaled = figure.axes
    assert raw.get_yscale() == "log"
    assert len(raw.lines) == len(scaled.lines) == len(WIDTHS)
    for curve, left, right in zip(curves, raw.lines, scaled.lines, strict=True):
        root = math.sqrt(curve.m)
        np.testing.assert_array_equal(left.get_xdata(), curve.eigenvalues)
        np.testing.assert_allclose(right.get_xdata(), left.get_xdata() * root)
        np.testing.assert_allclose(right.get_ydata(), left.get_ydata() / root)
    assert f"m = {curves[0].m} " in scaled.get_legend().get_texts()[0].get_text()


def test_written_as_png_and_svg(curves, monkeypatch, tmp_path):
    monkeypatch.setattr(spectra_figure, "density_curves", lambda *args: curves)
    paths = spectra_figure.write_density_figure(
        spectra_figure.density_figure("mlp3", WIDTHS), tmp_path / "density.png")
    assert [p.name for p in paths] == ["density.png", "density.svg"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in paths[1].read_bytes()[:1000]


@pytest.mark.parametrize("kwargs, message", [
    (dict(widths=()), "widths: expected at least one width"),
    (dict(widths=(4,), probes=0), "probes: expected an integer >= 1"),
    (dict(widths=(4,), seed=-1), "seed: expected an integer >= 0"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(DagcError, match=message):
        spectra_figure.density_curves("mlp3", **kwargs)
