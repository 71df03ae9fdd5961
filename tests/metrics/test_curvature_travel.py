"""R = travel (issue 26): hessian_ball's and linearization's radius can be the distance that
gradient descent to convergence travels from w0 under the cell's training options."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import compiled

from dagc import measure as M
from dagc.errors import DagcError

# few steps and a small ball search: a fraction of a second per call at width 16 (where
# training is lazy: at width 6 it diverges)
TRAVEL = M.Options(radius="travel", inputs=1, ball_points=1, ascent_steps=2, max_steps=40)


@pytest.fixture(scope="module")
def net():
    return compiled("mlp3", 16)


def test_travel_radius_is_the_training_metrics_weight_change(net):
    travelled = M.measure(net, "ntk_change", 1, TRAVEL)["weight_change"]
    assert travelled > 0
    assert M.ball_radius(net, 1, TRAVEL) == travelled
    assert M.measure(net, "hessian_ball", 1, TRAVEL)["radius"] == travelled
    assert M.measure(net, "linearization", 1, TRAVEL)["radius"] == travelled
    # other training options travel elsewhere
    further = dataclasses.replace(TRAVEL, max_steps=80)
    assert M.ball_radius(net, 1, further) != travelled


def test_a_number_is_its_own_radius(net):
    assert M.ball_radius(net, 1, dataclasses.replace(TRAVEL, radius=2.5)) == 2.5


def test_the_ascent_with_travel_radius_stays_in_the_ball_and_never_loses(net):
    w0 = net.init(1)
    radius = M.ball_radius(net, 1, TRAVEL)
    for x in M.sweep_inputs(net, 1, 2):
        result = M.ball_ascent(net, w0, x, 0, radius, steps=3)
        assert np.linalg.norm(result.w - w0) <= radius * (1 + 1e-12)
        assert result.value >= result.at_center


def test_training_that_does_not_move_gives_the_norm_at_w0(net):
    still = dataclasses.replace(TRAVEL, max_steps=0)
    result = M.measure(net, "hessian_ball", 1, still)
    assert result["radius"] == 0.0
    assert result["value"] == pytest.approx(result["at_w0"], rel=1e-6)


def test_travel_cells_are_their_own_option_set_and_read_the_training_options():
    numeric = M.options_for("hessian_ball", dataclasses.replace(TRAVEL, radius=1.0))
    travel = M.options_for("hessian_ball", TRAVEL)
    assert travel["radius"] == "travel"
    assert "max_steps" in travel and "lr_factor" in travel
    assert "max_steps" not in numeric  # a numeric radius keeps its old key
    assert M.options_for("linearization", TRAVEL)["max_steps"] == 40


@pytest.mark.parametrize("bad", ["far", "Travel", "", "1.0"])
def test_any_other_word_is_refused_naming_radius(bad):
    with pytest.raises(DagcError, match=r"^options\.radius: expected a number > 0 or 'travel'"):
        M.Options(radius=bad)
