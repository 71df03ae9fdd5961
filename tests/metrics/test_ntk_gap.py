"""The ntk_gap metric: the empirical NTK's relative distance from its infinite-width limit."""

import numpy as np
import pytest

import dagc
from dagc.metrics import METRICS, Options, measure
from dagc.metrics.inputs import sweep_inputs
from dagc.metrics.limits import ntk_gap

TWO_OUTPUTS = """\
name: two_outputs
width: 8
inputs: {x: 4}
blocks:
  h:   {size: width, act: erf, from: [x]}
  out: {size: 2, from: [h]}
"""


def _mean_gap(arch, width, seeds=3):
    net = dagc.compile(arch, width=width)
    return np.mean([measure(net, "ntk_gap", seed, Options())["value"] for seed in range(seeds)])


def test_registered_with_the_expected_slope():
    assert METRICS["ntk_gap"].expected_slope == -0.5
    assert METRICS["ntk_gap"].reads == ("inputs",)


def test_gap_is_the_frobenius_distance_over_all_output_pairs(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(TWO_OUTPUTS)
    net = dagc.compile(str(path), width=16)
    w, X = net.init(3), sweep_inputs(net, 3, 4)
    gap, scale = ntk_gap(net, w, X)
    empirical = net.ntk(w, X)  # (n, n, 2, 2)
    limit = net.ntk_limit(X)
    off_diagonal = empirical[:, :, 0, 1]
    expected = np.sqrt(np.sum((empirical[:, :, 0, 0] - limit[..., 0]) ** 2)
                       + np.sum((empirical[:, :, 1, 1] - limit[..., 1]) ** 2)
                       + 2 * np.sum(off_diagonal ** 2)) / np.linalg.norm(limit)
    assert gap == pytest.approx(expected, rel=1e-12)
    assert scale == pytest.approx(np.linalg.norm(limit), rel=1e-14)


def test_gap_shrinks_with_width_where_the_limit_exists():
    assert _mean_gap("mlp3", 512) < 0.5 * _mean_gap("mlp3", 32)


def test_gap_stays_through_a_bottleneck():
    """One neuron in the middle: the kernel stays random however wide the rest is."""
    assert _mean_gap("bottleneck3", 512) > 0.3
