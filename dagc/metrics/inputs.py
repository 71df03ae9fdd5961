"""The random draws of the metrics: one numpy Generator per (seed, purpose).

Every draw comes from ``np.random.default_rng([seed, purpose])`` where ``purpose`` is a fixed
constant per use (inputs, Lanczos start, ball points, directions, training set, teacher,
held-out points, SGD batches, random-sign targets).
Draws for different purposes are therefore independent streams: changing how many points one
metric draws never shifts another metric's draws, and the same cell gives bit-identical
numbers in any process.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DagcError
from ..runtime import CompiledNet
from .options import check_seed

__all__ = ["PURPOSES", "generator", "sphere_points", "unit_vector", "sweep_inputs",
           "regression_set", "heldout_inputs"]

# Never renumber these: stored results depend on them.
PURPOSES = {
    "inputs": 1,
    "lanczos": 2,
    "ball": 3,
    "directions": 4,
    "train_inputs": 5,
    "teacher": 6,
    # issue 25's training draws
    "heldout_inputs": 7,
    "sgd_batches": 8,
    "sign_targets": 9,
    # issue 26's curvature instruments (numbered from 21: other families add theirs below)
    "hidden_neurons": 21,
    "trace": 22,
    "density": 23,
}

# The teacher of ntk_change: a random one-hidden-layer tanh network with this many features.
_TEACHER_FEATURES = 32


def generator(seed: int, purpose: str) -> np.random.Generator:
    """The Generator the metrics use for ``purpose`` (one of `PURPOSES`) at ``seed``:
    ``np.random.default_rng([seed, PURPOSES[purpose]])``."""
    check_seed(seed)
    if purpose not in PURPOSES:
        raise DagcError(f"purpose: unknown {purpose!r}; known: {', '.join(PURPOSES)}")
    return np.random.default_rng([seed, PURPOSES[purpose]])


def sphere_points(rng: np.random.Generator, count: int, dim: int,
                  radius: float = 1.0) -> np.ndarray:
    """``count`` points uniform on the sphere of ``radius`` in R^dim, shape (count, dim)."""
    # A standard Gaussian is rotation invariant, so its direction is uniform on the sphere.
    points = rng.standard_normal((count, dim))
    points *= radius / np.linalg.norm(points, axis=1, keepdims=True)
    return points


def unit_vector(rng: np.random.Generator, dim: int) -> np.ndarray:
    """One point uniform on the unit sphere of R^dim, shape (dim,). Drawn one at a time so
    that a metric never holds more than one P-vector of directions."""
    return sphere_points(rng, 1, dim)[0]


def sweep_inputs(net: CompiledNet, seed: int, count: int) -> np.ndarray:
    """The inputs every metric except ``ntk_change`` uses: (count, n_in), uniform on the
    sphere of radius sqrt(n_in), so each coordinate has unit mean square like the paper's
    normalized data."""
    return sphere_points(generator(seed, "inputs"), count, net.n_in, math.sqrt(net.n_in))


def regression_set(net: CompiledNet, seed: int, size: int,
                   targets: str = "teacher") -> tuple[np.ndarray, np.ndarray]:
    """The synthetic regression set of the training metrics: X (size, n_in) uniform on the
    sphere of radius sqrt(n_in), and targets Y (size, n_out) from a fixed random teacher
    (``targets="teacher"``) or random signs +-1 (``"signs"``).

    The teacher is a one-hidden-layer tanh network independent of ``net``: y = tanh(X A^T /
    sqrt(n_in)) B / sqrt(h) with A (h, n_in), B (h, n_out) i.i.d. N(0, 1), h = 32, then scaled
    so that the targets have unit root mean square over the set. Non-linear, so the data is
    not fitted by a linear model in x, and of order one like the network's outputs at init,
    so the initial loss is O(1) at every width. Random signs have no structure at all: the
    network must fit every NTK eigendirection, the hardest case for the PL* argument.
    """
    X = sphere_points(generator(seed, "train_inputs"), size, net.n_in, math.sqrt(net.n_in))
    if targets == "signs":
        signs = generator(seed, "sign_targets").integers(0, 2, (size, net.n_out))
        return X, 2.0 * signs - 1.0
    if targets != "teacher":
        raise DagcError(f"targets: unknown {targets!r}; known: teacher, signs")
    rng = generator(seed, "teacher")
    A = rng.standard_normal((_TEACHER_FEATURES, net.n_in))
    B = rng.standard_normal((_TEACHER_FEATURES, net.n_out))
    Y = np.tanh(X @ A.T / math.sqrt(net.n_in)) @ B / math.sqrt(_TEACHER_FEATURES)
    rms = math.sqrt(float(np.mean(Y**2)))
    return X, (Y / rms if rms > 0.0 else Y)


def heldout_inputs(net: CompiledNet, seed: int, size: int) -> np.ndarray:
    """Points of lin_gap that training never sees: (size, n_in), drawn like the training
    set's inputs from their own stream."""
    return sphere_points(generator(seed, "heldout_inputs"), size, net.n_in, math.sqrt(net.n_in))
