"""The activation registry: every activation dagc knows, defined once, value and derivatives
side by side.

Conventions every entry follows (the generated code and the kernels rely on them):

- ``value(t)`` is phi(t) for one float t; ``first(t, y)`` is phi'(t) given y = phi(t);
  ``second(t, y, p)`` is phi''(t) given y and p = phi'(t). Several derivatives are cheapest
  from the value (tanh' = 1 - y^2), so the value is computed once and passed on.
- All three are numba-jitted scalar functions. The elementwise loops below take them as
  arguments; numba compiles one specialization per activation with the scalar function
  inlined, so a loop vectorizes exactly as a hand-written one would. The loops themselves
  are not cached on disk (see `dagc.backend.jit.jit_uncached`); the generated functions that
  call them are, with the loop compiled in.
- Exponentials only ever see -|t|, so nothing overflows, compiled or in plain Python.
- ``smooth`` is False where phi'' vanishes almost everywhere (relu): the curvature metrics
  then see only the output's own curvature, and `dagc inspect` says so.
- ``array(z, xp)`` is the same function for a framework's arrays, written with the primitives
  of ``xp`` (a namespace with tanh, sigmoid, softplus, erf, sin, maximum): the bench peers and
  framework exports build networks from it. The tests' PyTorch reference does not: it must
  stay an independent implementation.
- ``identity`` is an entry like the others (spec validation, docs, exports), but the
  templates special-case it: its value is the pre-activation itself and nothing is computed.

Adding an activation is adding one block below and one `_register` call; everything else
(spec validation, CLI, templates, bench peers, docs) reads `ACTIVATIONS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..backend.jit import jit, jit_uncached

SQRT1_2 = 0.7071067811865476  # 1 / sqrt(2)
TWO_OVER_SQRT_PI = 1.1283791670955126  # erf'(0)
INV_SQRT_2PI = 0.3989422804014327  # the standard normal density at 0


@dataclass(frozen=True)
class Activation:
    """One activation: its scalar value and derivatives (numba dispatchers, conventions in the
    module docstring), whether its second derivative is informative, and its array form."""

    name: str
    value: Callable
    first: Callable
    second: Callable
    smooth: bool
    array: Callable
    summary: str


ACTIVATIONS: dict[str, Activation] = {}


def _register(name: str, value, first, second, array, summary: str,
              smooth: bool = True) -> None:
    ACTIVATIONS[name] = Activation(name, value, first, second, smooth, array, summary)


def names() -> tuple[str, ...]:
    """The registered activations' names, identity first."""
    return tuple(ACTIVATIONS)


# --------------------------------------------------------------------------------------------
# identity


@jit
def identity(t):
    return t


@jit
def identity_first(t, y):
    return 1.0


@jit
def identity_second(t, y, p):
    return 0.0


_register("identity", identity, identity_first, identity_second, lambda z, xp: z,
          "z (the default of output blocks)")


# --------------------------------------------------------------------------------------------
# tanh: a branch-free rational form, so that its loops vectorize (libm's tanh does not)


@jit
def exp_neg_fraction(u):
    """exp(-u) = n / d for 0 <= u <= 38, as the pair (n, d), in arithmetic only, so that loops
    calling it vectorize (a libm call does not). Left as a fraction so that `tanh`'s exp
    branch divides once, not twice.

    u = k ln2 - s with |s| <= ln2 / 2 (Cody-Waite: k * 6.93145751953125e-1 is exact), Cephes'
    Pade form (q + p) / (q - p) of exp(s), then the exact scaling by 2^-k one binary digit of k
    at a time. k comes from np.floor, which stays in floating point: math.floor's integer
    would make the loop convert one element at a time (AVX2 has no vector conversion to int64).
    """
    k = np.floor(u * 1.4426950408889634 + 0.5)
    s = (k * 6.93145751953125e-1 - u) + k * 1.42860682030941723212e-6
    ss = s * s
    px = s * ((1.26177193074810590878e-4 * ss + 3.02994407707441961300e-2) * ss
              + 9.99999999999999999910e-1)
    qx = ((3.00198505138664455042e-6 * ss + 2.52448340349684104192e-3) * ss
          + 2.27265548208155028766e-1) * ss + 2.0
    scale = 1.0
    for digit, factor in ((32.0, 2.0 ** -32), (16.0, 2.0 ** -16), (8.0, 2.0 ** -8),
                          (4.0, 2.0 ** -4), (2.0, 2.0 ** -2), (1.0, 2.0 ** -1)):
        take = k >= digit
        scale = scale * (factor if take else 1.0)
        k = k - (digit if take else 0.0)
    return scale * (qx + px), qx - px


@jit
def tanh(t):
    """tanh(t) within 1 ulp (libm's: 2 ulp), branch-free so that its loops vectorize.

    Cephes' rational approximation below 0.625, 1 - 2e / (1 + e) with e = exp(-2|t|) above,
    1 from 19 on (where 1 - tanh is below half an ulp of 1). Both branches are computed and
    one is selected; a NaN goes through the rational branch and stays NaN.
    """
    x = abs(t)
    r = 0.625 if x >= 0.625 else x  # the rational branch's argument, kept finite
    s = r * r
    small = r + r * s * ((-9.64399179425052238628e-1 * s - 9.92877231001918586564e1) * s
                         - 1.61468768441708447952e3) \
        / (((s + 1.12811678491632931402e2) * s + 2.23548839060100448583e3) * s
           + 4.84406305325125486048e3)
    n, d = exp_neg_fraction(2.0 * x if x < 19.0 else 38.0)
    large = 1.0 - 2.0 * n / (d + n)  # 2e / (1 + e) with e = n / d
    y = large if x >= 0.625 else small
    y = 1.0 if x >= 19.0 else y
    return math.copysign(y, t)


@jit
def tanh_first(t, y):
    return 1.0 - y * y


@jit
def tanh_second(t, y, p):
    return -2.0 * y * p


_register("tanh", tanh, tanh_first, tanh_second, lambda z, xp: xp.tanh(z),
          "hyperbolic tangent")


# --------------------------------------------------------------------------------------------
# sigmoid


@jit
def sigmoid(t):
    return 1.0 / (1.0 + math.exp(-t)) if t >= 0.0 else math.exp(t) / (1.0 + math.exp(t))


@jit
def sigmoid_first(t, y):
    return y * (1.0 - y)


@jit
def sigmoid_second(t, y, p):
    return p * (1.0 - 2.0 * y)


_register("sigmoid", sigmoid, sigmoid_first, sigmoid_second, lambda z, xp: xp.sigmoid(z),
          "1 / (1 + exp(-z)); mean 1/2, so skips add a nonzero mean")


# --------------------------------------------------------------------------------------------
# softplus: its derivative is the sigmoid


@jit
def softplus(t):
    return max(t, 0.0) + math.log1p(math.exp(-abs(t)))


@jit
def softplus_first(t, y):
    return sigmoid(t)


@jit
def softplus_second(t, y, p):
    return p * (1.0 - p)


_register("softplus", softplus, softplus_first, softplus_second,
          lambda z, xp: xp.softplus(z), "log(1 + exp(z))")


# --------------------------------------------------------------------------------------------
# erf


@jit
def erf(t):
    return math.erf(t)


@jit
def erf_first(t, y):
    return TWO_OVER_SQRT_PI * math.exp(-t * t)


@jit
def erf_second(t, y, p):
    return -2.0 * t * p


_register("erf", erf, erf_first, erf_second, lambda z, xp: xp.erf(z),
          "the error function (closed-form Gaussian expectations)")


# --------------------------------------------------------------------------------------------
# gelu (the exact form, z Phi(z))


@jit
def gelu(t):
    return 0.5 * t * (1.0 + math.erf(t * SQRT1_2))


@jit
def gelu_first(t, y):
    return 0.5 * (1.0 + math.erf(t * SQRT1_2)) + t * INV_SQRT_2PI * math.exp(-0.5 * t * t)


@jit
def gelu_second(t, y, p):
    return (2.0 - t * t) * INV_SQRT_2PI * math.exp(-0.5 * t * t)


_register("gelu", gelu, gelu_first, gelu_second,
          lambda z, xp: 0.5 * z * (1.0 + xp.erf(z * SQRT1_2)),
          "z Phi(z), the exact (erf) form")


# --------------------------------------------------------------------------------------------
# sin


@jit
def sin(t):
    return math.sin(t)


@jit
def sin_first(t, y):
    return math.cos(t)


@jit
def sin_second(t, y, p):
    return -y


_register("sin", sin, sin_first, sin_second, lambda z, xp: xp.sin(z), "sine")


# --------------------------------------------------------------------------------------------
# relu: allowed, but its second derivative is 0 almost everywhere


@jit
def relu(t):
    return max(t, 0.0)


@jit
def relu_first(t, y):
    return 1.0 if t > 0.0 else 0.0


@jit
def relu_second(t, y, p):
    return 0.0


_register("relu", relu, relu_first, relu_second, lambda z, xp: xp.maximum(z, 0.0),
          "max(z, 0); its second derivative is 0 almost everywhere", smooth=False)


# --------------------------------------------------------------------------------------------
# Elementwise application: one loop per order, specialized by numba per activation


@jit_uncached  # takes jitted functions: see dagc.backend.jit
def apply(z, value):
    """phi(z) elementwise, as a new array."""
    a = np.empty_like(z)
    zf = z.reshape(-1)
    af = a.reshape(-1)
    for i in range(zf.size):
        af[i] = value(zf[i])
    return a


@jit_uncached  # takes jitted functions: see dagc.backend.jit
def apply_first(z, value, first):
    """phi(z) and phi'(z) elementwise, as new arrays."""
    a = np.empty_like(z)
    d1 = np.empty_like(z)
    zf = z.reshape(-1)
    af = a.reshape(-1)
    d1f = d1.reshape(-1)
    for i in range(zf.size):
        t = zf[i]
        y = value(t)
        af[i] = y
        d1f[i] = first(t, y)
    return a, d1


@jit_uncached  # takes jitted functions: see dagc.backend.jit
def apply_second(z, value, first, second):
    """phi(z), phi'(z) and phi''(z) elementwise, as new arrays."""
    a = np.empty_like(z)
    d1 = np.empty_like(z)
    d2 = np.empty_like(z)
    zf = z.reshape(-1)
    af = a.reshape(-1)
    d1f = d1.reshape(-1)
    d2f = d2.reshape(-1)
    for i in range(zf.size):
        t = zf[i]
        y = value(t)
        p = first(t, y)
        af[i] = y
        d1f[i] = p
        d2f[i] = second(t, y, p)
    return a, d1, d2
