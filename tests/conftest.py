"""Shared test helpers: the catalog of architectures the tests use, compiled networks shared by
the whole session, and `assert_close`.

Import the helpers directly (`from conftest import compiled, assert_close`: pytest puts tests/
on the path) or through the fixtures of the same names.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import pytest

import dagc
from dagc.frontend import spec
from dagc.frontend.spec import bundled_names
from dagc.ir import graph

BUNDLED: tuple[str, ...] = tuple(bundled_names())
"""The architectures shipped with dagc, addressable by name."""

INLINE: dict[str, str] = {
    # Exercises under numba what the bundled files do not: two input groups, three output
    # blocks (one non-linear, one in layer 1), biases, sparse connections from inputs,
    # add-skips (one from an input) and every activation.
    "kitchen_sink": """\
name: kitchen_sink
width: 8
inputs: {x: 5, u: width}
blocks:
  h1:  {size: width, act: tanh, from: [x, {block: u, fan_in: 3}], bias: true, add: [u]}
  h2:  {size: width, act: gelu, from: [{block: h1, fan_in: width/2}, x], add: [h1]}
  h3:  {size: width/2, act: sigmoid, from: [h2, u]}
  h4:  {size: width/2, act: erf, from: [{block: h2, fan_in: 2}, h3], bias: true, add: [h3]}
  h5:  {size: 3, act: sin, from: [h4, x]}
  h6:  {size: 3, act: relu, from: [h5, h1], add: [h5]}
  out: {size: 2, from: [h6, {block: h4, fan_in: 2}], bias: true}
  aux: {size: 3, act: softplus, from: [h5, h1], add: [h6]}
  lin: {size: 1, from: [{block: x, fan_in: 2}]}
outputs: [out, aux, lin]
""",
    # One tanh layer: a closed form y = W2 tanh(W1 x / sqrt(3)) / sqrt(width).
    "tiny": """\
name: tiny
width: 4
inputs: {x: 3}
blocks:
  h: {size: width, act: tanh, from: [x]}
  out: {size: 1, from: [h]}
""",
    # The smallest module with a bias, a sparse connection and two outputs: quick to compile
    # cold (one activation), for tests that start fresh processes.
    "tiny_sparse": """\
name: tiny_sparse
width: 5
inputs: {x: 3}
blocks:
  h: {size: width, act: tanh, from: [x], bias: true}
  out: {size: 2, from: [h, {block: x, fan_in: 2}]}
""",
}
"""Small architectures written inline, by name (their `name:` is the key)."""

ALL: tuple[str, ...] = (*BUNDLED, *INLINE)

_INLINE_DIR = Path(tempfile.mkdtemp(prefix="dagc-test-architectures-"))


def arch_path(name: str) -> str | Path:
    """What `dagc.compile` takes for a catalog entry: a bundled name, or an inline
    architecture's file (written once per session)."""
    if name in BUNDLED:
        return name
    path = _INLINE_DIR / f"{name}.yaml"
    if not path.exists():
        path.write_text(INLINE[name])
    return path


@functools.cache
def compiled(name: str, width: int = 8, jit: bool = True) -> dagc.CompiledNet:
    """A catalog architecture compiled at `width`, shared by every test of the session."""
    return dagc.compile(arch_path(name), width=width, jit=jit)


def relative_error(actual, expected) -> float:
    """max |actual - expected| over max |expected| (1e-300 if expected is all zeros)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-300)
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


def assert_close(actual, expected, rtol: float, atol: float = 0.0, what: str = "") -> None:
    """Equal shapes, finite values, and |actual - expected| <= atol + rtol * max |expected|
    everywhere (a norm-wise bound: per-element relative error is meaningless near zeros)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
    scale = float(np.max(np.abs(expected), initial=0.0))
    error = float(np.max(np.abs(actual - expected), initial=0.0))
    assert error <= atol + rtol * scale, (
        f"{what}: max error {error:.3e} > atol {atol:.0e} + rtol {rtol:.0e} * {scale:.3e} "
        f"(relative {relative_error(actual, expected):.3e})")


@pytest.fixture(scope="session", name="compiled")
def compiled_fixture():
    """`compiled(name, width=8, jit=True)`: the session's shared compiled networks."""
    return compiled


def graph_only(text: str, path: str, width: int):
    """A sweep cell's `load_net` that builds the real IR (name, width, m) and no code, for
    tests of sweep planning, the store and the CLI that need no compiled network."""
    return graph.build(spec.parse(text, path), width)


def fake_cell(measure_fn):
    """`sweep.run_cell` on `graph_only` networks, measured by `measure_fn(net, metric, seed,
    options) -> dict`."""
    from dagc.experiments import sweep

    return functools.partial(sweep.run_cell, load_net=graph_only, measure_fn=measure_fn)


def serial_fake_sweeps(monkeypatch, measure_fn) -> None:
    """Make `dagc sweep` run its cells in this process as `fake_cell(measure_fn)`."""
    from dagc.experiments import local

    monkeypatch.setattr(local, "make_executor", lambda jobs, fn=None: functools.partial(
        local.serial_executor, fn=fake_cell(measure_fn)))


@pytest.fixture(scope="session")
def tiny():
    """The catalog's tiny as plain Python: f(x) = s2 * sum_j v_j tanh(s1 * W_j . x),
    s1 = 1/sqrt(3), s2 = 1/sqrt(4)."""
    return compiled("tiny", 4, jit=False)


@pytest.fixture(scope="session")
def two_outputs():
    """Two outputs, a bias and a sparse connection (the catalog's tiny_sparse), plain Python."""
    return compiled("tiny_sparse", 5, jit=False)


@pytest.fixture(scope="session", name="assert_close")
def assert_close_fixture():
    return assert_close
