"""The closed forms of the Gaussian expectations (dagc.ops.gaussian): one scalar function per
activation, (s11, s12, s22) -> (E[phi(u) phi(v)], E[phi'(u) phi'(v)]), and the means.

A module of their own because numba caches a compiled function only if the functions it
passes on as arguments are reached as attributes of another module (a dispatcher named as a
global of the calling module is a "dynamic global" and disables the on-disk cache).
"""

import math

from ..backend.jit import jit

INV_PI = 1.0 / math.pi
INV_2PI = 0.5 / math.pi


@jit
def zero_mean(s):
    """E[phi(u)] of an odd activation."""
    return 0.0


@jit
def identity_pair(s11, s12, s22):
    return s12, 1.0


@jit
def erf_pair(s11, s12, s22):
    """E[erf erf] = (2/pi) asin(2 s12 / sqrt((1 + 2 s11)(1 + 2 s22))); erf' = (2/sqrt(pi))
    exp(-t^2), so E[erf' erf'] = (4/pi) / sqrt(det(I + 2 Sigma))."""
    a = 1.0 + 2.0 * s11
    b = 1.0 + 2.0 * s22
    ratio = min(1.0, max(-1.0, 2.0 * s12 / math.sqrt(a * b)))
    return 2.0 * INV_PI * math.asin(ratio), 4.0 * INV_PI / math.sqrt(a * b - 4.0 * s12 * s12)


@jit
def sin_pair(s11, s12, s22):
    """E[sin u sin v] = exp(-(s11 + s22)/2) sinh(s12), E[cos u cos v] the same with cosh."""
    damping = math.exp(-0.5 * (s11 + s22))
    return damping * math.sinh(s12), damping * math.cosh(s12)


@jit
def relu_pair(s11, s12, s22):
    """The arc-cosine kernels of degree 1 and 0 (Cho and Saul): with theta the angle of the
    pair, (sqrt(det) + (pi - theta) s12) / (2 pi) and (pi - theta) / (2 pi), theta from
    atan2 (acos loses half the digits near rho = 1). A variable of variance 0 is 0, and
    relu'(0) = 0."""
    if s11 <= 0.0 or s22 <= 0.0:
        return 0.0, 0.0
    root_det = math.sqrt(max(s11 * s22 - s12 * s12, 0.0))
    rest = math.pi - math.atan2(root_det, s12)
    return (root_det + rest * s12) * INV_2PI, rest * INV_2PI


@jit
def relu_mean(s):
    return math.sqrt(max(s, 0.0) * INV_2PI)
