"""The Gaussian expectations of every registered activation against independent references:
a fine trapezoidal rule in the plane (exponentially accurate for analytic integrands, and no
Gauss-Hermite rule), mpmath in one dimension, and for relu's kinks mpmath over the angle."""

import math

import mpmath
import numpy as np
import pytest
from scipy.special import erf, expit

from dagc.ops import gaussian
from dagc.ops.activations import ACTIVATIONS

TOLERANCE = 1e-10  # relative to sqrt(E[phi(u)^2] E[phi(v)^2]), as the module promises

# Rows of a small Gram matrix: variances from 0.05 to 2 (the range the module promises),
# correlations near 0, near +-1, and 1.
_Z = np.array([[1.0, 0.0, 0.0], [0.97, 0.2, 0.0], [-0.3, 0.5, 0.8], [1.4, -0.2, 0.1],
               [0.1, 0.15, 0.1], [-1.3, 0.4, -0.3]])

# phi and phi' written here with numpy and scipy, independently of dagc's.
_GAUSS = 0.3989422804014327
INTEGRANDS = {
    "identity": (lambda z: z, lambda z: np.ones_like(z)),
    "tanh": (np.tanh, lambda z: 1.0 / np.cosh(z) ** 2),
    "sigmoid": (expit, lambda z: expit(z) * expit(-z)),
    "softplus": (lambda z: np.logaddexp(0.0, z), expit),
    "erf": (erf, lambda z: 2.0 / math.sqrt(math.pi) * np.exp(-z * z)),
    "gelu": (lambda z: 0.5 * z * (1.0 + erf(z / math.sqrt(2.0))),
             lambda z: 0.5 * (1.0 + erf(z / math.sqrt(2.0))) + z * _GAUSS * np.exp(-0.5 * z * z)),
    "sin": (np.sin, np.cos),
}
S = _Z @ _Z.T
VAR = np.diag(S).copy()


def _trapezoid_moments(name, s11, s12, s22, step=0.1, limit=9.5):
    """E[phi(u) phi(v)] and E[phi'(u) phi'(v)] on a square grid in the whitened plane."""
    value, first = INTEGRANDS[name]
    t = np.arange(-limit, limit + step / 2, step)
    w = np.exp(-0.5 * t * t) * step / math.sqrt(2 * math.pi)
    root = math.sqrt(s11)
    c = s12 / root
    d = math.sqrt(max(s22 - c * c, 0.0))
    u = root * t[:, None] + 0.0 * t[None, :]
    v = c * t[:, None] + d * t[None, :]
    weight = w[:, None] * w[None, :]
    return (float(np.sum(weight * value(u) * value(v))),
            float(np.sum(weight * first(u) * first(v))))


def _relu_angular(s11, s12, s22):
    """relu's moments as integrals over the angle (the integrands are homogeneous of degree 2
    and 0 in the radius), split at the kinks."""
    mpmath.mp.dps = 30
    root = mpmath.sqrt(s11)
    c = s12 / root
    d = mpmath.sqrt(max(s22 - c * c, 0))
    two_pi = 2 * mpmath.pi
    kinks = sorted({x % two_pi for x in (mpmath.pi / 2, 3 * mpmath.pi / 2,
                                          mpmath.atan2(-c, d), mpmath.atan2(c, -d))})
    points = [0, *kinks, two_pi]

    def u(th):
        return root * mpmath.cos(th)

    def v(th):
        return c * mpmath.cos(th) + d * mpmath.sin(th)

    second = mpmath.quad(lambda th: max(u(th), 0) * max(v(th), 0), points) / mpmath.pi
    steps = mpmath.quad(lambda th: (u(th) > 0) * (v(th) > 0), points) / (2 * mpmath.pi)
    return float(second), float(steps)


def _reference(name):
    C = np.empty_like(S)
    E = np.empty_like(S)
    for i in range(len(S)):
        for j in range(len(S)):
            if name == "relu":
                C[i, j], E[i, j] = _relu_angular(VAR[i], S[i, j], VAR[j])
            else:
                C[i, j], E[i, j] = _trapezoid_moments(name, VAR[i], S[i, j], VAR[j])
    return C, E


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_pair_moments_match_an_independent_quadrature(name):
    C, E = gaussian.GAUSSIAN[name].moments(VAR, S, VAR, False)
    ref_C, ref_E = _reference(name)
    for got, ref in ((C, ref_C), (E, ref_E)):
        scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
        assert np.max(np.abs(got - ref) / scale) < TOLERANCE


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_symmetric_pass_equals_the_full_one(name):
    full = gaussian.GAUSSIAN[name].moments(VAR, S, VAR, False)
    half = gaussian.GAUSSIAN[name].moments(VAR, S, VAR, True)
    np.testing.assert_array_equal(full[0], half[0])
    np.testing.assert_array_equal(full[1], half[1])


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_rectangular_kernels(name):
    """Rows and columns from different inputs: the blocks of the square kernel."""
    C, E = gaussian.GAUSSIAN[name].moments(VAR[:2], S[:2, 2:], VAR[2:], False)
    full_C, full_E = gaussian.GAUSSIAN[name].moments(VAR, S, VAR, False)
    np.testing.assert_allclose(C, full_C[:2, 2:], rtol=0, atol=1e-14)
    np.testing.assert_allclose(E, full_E[:2, 2:], rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_variance_and_mean_against_mpmath(name):
    second, mean = gaussian.GAUSSIAN[name].variance(VAR)
    mpmath.mp.dps = 20
    for s, got2, got1 in zip(VAR, second, mean, strict=True):
        def density(t, s=s):
            return mpmath.exp(-t * t / (2 * s)) / mpmath.sqrt(2 * mpmath.pi * s)

        def phi(t):
            return INTEGRANDS[name][0](float(t)) if name != "relu" else max(float(t), 0.0)

        ref1 = mpmath.quad(lambda t: phi(t) * density(t), [-mpmath.inf, 0, mpmath.inf])
        ref2 = mpmath.quad(lambda t: phi(t) ** 2 * density(t), [-mpmath.inf, 0, mpmath.inf])
        assert abs(got2 - float(ref2)) < TOLERANCE * float(ref2)
        assert abs(got1 - float(ref1)) < TOLERANCE * math.sqrt(float(ref2))


def test_odd_activations_have_exactly_zero_mean():
    for name in ("identity", "tanh", "erf", "sin"):
        assert not np.any(gaussian.GAUSSIAN[name].variance(VAR)[1])


def test_degenerate_variable():
    """A variance of zero: u = 0, so E[phi(u) phi(v)] = phi(0) E[phi(v)]."""
    var = np.array([0.0, 1.0])
    cov = np.array([[0.0, 0.0], [0.0, 1.0]])
    for name in ("sigmoid", "relu", "erf", "softplus"):
        a = ACTIVATIONS[name]
        C, _ = gaussian.GAUSSIAN[name].moments(var, cov, var, True)
        mean = gaussian.GAUSSIAN[name].variance(var)[1][1]
        assert C[0, 1] == pytest.approx(a.value(0.0) * mean, abs=1e-12)


def test_gauss_hermite_rule_integrates_moments():
    nodes, weights = gaussian.gauss_hermite(gaussian.RULE_NODES)
    assert np.sum(weights) == pytest.approx(1.0, abs=1e-14)
    assert np.sum(weights * nodes ** 2) == pytest.approx(1.0, abs=1e-13)
    assert np.sum(weights * nodes ** 8) == pytest.approx(105.0, rel=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 40, 101])
def test_gauss_hermite_rule_is_numpys(n):
    """The bisection-and-Newton rule against numpy's eigensolver rule where numpy's is
    accurate (it overflows for large n)."""
    nodes, weights = gaussian.gauss_hermite(n)
    expected_nodes, expected_weights = np.polynomial.hermite_e.hermegauss(n)
    np.testing.assert_allclose(nodes, expected_nodes, rtol=0, atol=1e-12)
    np.testing.assert_allclose(weights, expected_weights / math.sqrt(2 * math.pi), rtol=1e-10)


def test_every_activation_has_expectations():
    assert set(gaussian.GAUSSIAN) == set(ACTIVATIONS)
