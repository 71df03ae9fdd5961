"""The activation registry: every entry's value and derivatives against high-precision mpmath,
compiled and as plain Python, and the registry as the only list of activations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dagc.ops import activations as act
from dagc.ops.activations import ACTIVATIONS

mpmath = pytest.importorskip("mpmath")

# mpmath definitions, independent of dagc's formulas
EXACT = {
    "identity": lambda t: t,
    "tanh": mpmath.tanh,
    "sigmoid": lambda t: 1 / (1 + mpmath.exp(-t)),
    "softplus": lambda t: mpmath.log1p(mpmath.exp(t)),
    "erf": mpmath.erf,
    "gelu": lambda t: t * mpmath.ncdf(t),
    "sin": mpmath.sin,
    "relu": lambda t: mpmath.mpf(max(t, 0)),
}
# relu's derivatives are defined piecewise (0 at the kink, by convention)
RELU_DERIVATIVES = (lambda t: mpmath.mpf(1 if t > 0 else 0), lambda t: mpmath.mpf(0))

POINTS = np.concatenate([
    np.linspace(-6.0, 6.0, 97), [0.0, 1e-300, -1e-300, 1e-8, -1e-8, 0.625, -0.625, 19.0, 30.0],
    [-40.0, 40.0, -300.0, 300.0, 700.0, -700.0, 1e4, -1e4],
])
TOLERANCE = {0: 4e-16, 1: 1e-14, 2: 1e-13}  # relative to max(1, |exact|): values, first, second


def exact(name: str, order: int, t: float) -> float:
    with mpmath.workdps(50):
        x = mpmath.mpf(float(t))
        if name == "relu" and order:
            return float(RELU_DERIVATIVES[order - 1](x))
        return float(mpmath.diff(EXACT[name], x, order) if order else EXACT[name](x))


def evaluate(activation, t: float, jit: bool) -> tuple[float, float, float]:
    value, first, second = (activation.value, activation.first, activation.second)
    if not jit:
        value, first, second = value.py_func, first.py_func, second.py_func
    y = value(t)
    p = first(t, y)
    return y, p, second(t, y, p)


def points(name: str) -> np.ndarray:
    # sin's derivatives at 1e4 are fine, but mpmath.diff's step loses digits far out on the
    # periodic function only through its argument reduction; keep |t| <= 700 for it
    return POINTS[np.abs(POINTS) <= 700] if name == "sin" else POINTS


@pytest.mark.parametrize("jit", [True, False], ids=["compiled", "py_func"])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_value_and_derivatives_match_mpmath(name, jit):
    activation = ACTIVATIONS[name]
    for t in points(name):
        got = evaluate(activation, float(t), jit)
        for order in (0, 1, 2):
            expected = exact(name, order, t)
            error = abs(got[order] - expected) / max(1.0, abs(expected))
            assert error <= TOLERANCE[order], (name, order, t, got[order], expected)


@pytest.mark.parametrize("jit", [True, False], ids=["compiled", "py_func"])
def test_tanh_is_within_one_ulp_over_every_regime(jit):
    """tiny, the rational branch, its boundary, the exp branch, saturation; signs; NaN, inf."""
    rng = np.random.default_rng(0)
    t = np.concatenate([10.0 ** rng.uniform(-300, -1, 100), rng.uniform(0, 0.7, 400),
                        0.625 + rng.uniform(-1e-9, 1e-9, 50), rng.uniform(0.625, 2, 600),
                        rng.uniform(0.7, 25, 300), [0.0, 0.625, 19.0, 40.0, 1e300]])
    t = np.concatenate([t, -t])
    with mpmath.workdps(60):
        expected = np.array([float(mpmath.tanh(mpmath.mpf(float(v)))) for v in t])
    apply = act.apply if jit else act.apply.py_func
    tanh = act.tanh if jit else act.tanh.py_func
    got = apply(t, tanh)
    assert (np.abs(got - expected) / np.spacing(np.abs(expected))).max() <= 1.0
    assert np.array_equal(np.signbit(apply(np.array([-0.0, 0.0]), tanh)), [True, False])
    special = apply(np.array([np.nan, np.inf, -np.inf]), tanh)
    assert np.isnan(special[0]) and np.array_equal(special[1:], [1.0, -1.0])


@pytest.mark.parametrize("name", [n for n in ACTIVATIONS if n != "identity"])
def test_elementwise_loops_apply_the_scalar_functions(name):
    """apply / apply_first / apply_second on a 2-D array give the scalar functions' values."""
    a = ACTIVATIONS[name]
    z = np.random.default_rng(1).standard_normal((3, 5)) * 3
    y, p, q = act.apply_second(z, a.value, a.first, a.second)
    y1, p1 = act.apply_first(z, a.value, a.first)
    assert np.array_equal(act.apply(z, a.value), y) and np.array_equal(y1, y)
    assert np.array_equal(p1, p)
    scalar = np.array([evaluate(a, float(t), jit=True) for t in z.ravel()]).T.reshape(3, 3, 5)
    assert np.array_equal(scalar[0], y) and np.array_equal(scalar[1], p)
    assert np.array_equal(scalar[2], q)


def test_array_forms_match_the_scalar_values():
    """`array(z, xp)` with numpy primitives gives the scalar value to rounding."""
    from scipy.special import erf

    xp = type("numpy_xp", (), {"tanh": np.tanh, "sin": np.sin, "maximum": np.maximum,
                               "erf": erf, "softplus": lambda z: np.logaddexp(0.0, z),
                               "sigmoid": lambda z: 0.5 * (1 + np.tanh(z / 2))})
    z = np.linspace(-8, 8, 41)
    for name, a in ACTIVATIONS.items():
        expected = np.array([a.value(float(t)) for t in z])
        np.testing.assert_allclose(a.array(z, xp), expected, rtol=1e-14, atol=1e-15,
                                   err_msg=name)


def test_only_relu_is_flagged_not_smooth():
    assert {n for n, a in ACTIVATIONS.items() if not a.smooth} == {"relu"}
    assert act.names()[0] == "identity"
    assert {"identity", "tanh", "sigmoid", "softplus", "erf", "gelu", "sin", "relu"} \
        <= set(ACTIVATIONS)


def test_every_list_of_activations_is_the_registry():
    """Spec validation, the CLI's note and the PyTorch / JAX export (which the benchmark's
    peers run) read the registry, not a copy."""
    from dagc.frontend import spec

    assert spec.ACTIVATIONS == tuple(ACTIVATIONS)
    root = Path(__file__).resolve().parents[2]
    readers = ["dagc/cli/__init__.py", "dagc/export.py"]
    for reader in readers:
        source = (root / reader).read_text()
        assert any(f"from {package}ops.activations import ACTIVATIONS" in source
                   for package in ("dagc.", "..", ".")), reader
        assert '"softplus"' not in source, f"{reader} lists activations by name"
