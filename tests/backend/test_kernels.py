"""The shared kernels against plain numpy, each compiled and as plain Python (`without_jit`:
the kernels they call run as plain Python too)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from numba.core.dispatcher import Dispatcher

from dagc.backend import kernels
from dagc.backend.jit import without_jit

TOL = 1e-13


@pytest.fixture(params=["compiled", "py_func"], scope="module")
def K(request):
    return kernels if request.param == "compiled" else without_jit(kernels)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def csr_pattern(rng, n_dst: int, n_src: int, most: int):
    """Rows of 0..most entries (every tail length of the four-entry unrolling), the pattern
    as (ptr int64, idx uint32), its weights, and the same weights as a dense matrix."""
    rows = [np.sort(rng.choice(n_src, rng.integers(0, most + 1), replace=False))
            for _ in range(n_dst)]
    ptr = np.concatenate([[0], np.cumsum([r.size for r in rows])]).astype(np.int64)
    idx = np.concatenate(rows).astype(np.uint32)
    w = rng.standard_normal(idx.size)
    dense = np.zeros((n_dst, n_src))
    dense[row_of(ptr), idx] = w
    return ptr, idx, w, dense


def row_of(ptr: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(ptr.size - 1), np.diff(ptr))


def test_every_kernel_is_tested():
    public = {n for n, v in vars(kernels).items() if isinstance(v, Dispatcher)}
    tested = {n.removeprefix("test_") for n in globals() if n.startswith("test_")}
    assert public <= tested | {"csr_grad_dense", "csr_grad_sparse", "csr_jacobian_t"}, \
        public - tested


# ------------------------------------------------------------------------------ dense kernels


def test_matrix(K):
    vec = np.arange(20.0)
    view = K.matrix(vec, np.int64(2), 3, 4)
    assert np.array_equal(view, vec[2:14].reshape(3, 4))


@pytest.mark.parametrize("rows", [3, 40])  # both of matmul_t's branches (fewer than 32 rows)
def test_matmul_t(K, rng, rows):
    a, W = rng.standard_normal((rows, 300)), rng.standard_normal((7, 300))
    assert_close(K.matmul_t(a, W), a @ W.T, TOL, what="matmul_t")


def test_matmul(K, rng):
    g, W = rng.standard_normal((4, 6)), rng.standard_normal((6, 5))
    assert_close(K.matmul(g, W), g @ W, TOL, what="matmul")


def test_matmul_tn_into(K, rng):
    g, a = rng.standard_normal((4, 6)), rng.standard_normal((4, 5))
    out = np.full((6, 5), np.nan)
    K.matmul_tn_into(out, g, a)
    assert_close(out, g.T @ a, TOL, what="matmul_tn_into")


def test_add_to(K, rng):
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    expected = x + y
    K.add_to(x, y)
    assert np.array_equal(x, expected)


def test_add_rows(K, rng):
    z, b = rng.standard_normal((3, 4)), rng.standard_normal(4)
    expected = z + b
    K.add_rows(z, b)
    assert np.array_equal(z, expected)


def test_scale_rows(K, rng):
    z, s = rng.standard_normal((3, 4)), rng.standard_normal(4)
    expected = z * s
    K.scale_rows(z, s)
    assert np.array_equal(z, expected)


def test_adjoint(K, rng):
    da, d1, s = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal(4)
    assert np.array_equal(K.adjoint(da, d1, s), da * d1 * s)


def test_adjoint_tangent(K, rng):
    tda, da, d1, d2, tz = rng.standard_normal((5, 3, 4))
    s = rng.standard_normal(4)
    assert np.array_equal(K.adjoint_tangent(tda, da, d1, d2, tz, s),
                          (tda * d1 + da * d2 * tz) * s)


def test_multiply(K, rng):
    x, y = rng.standard_normal((2, 3, 4))
    assert np.array_equal(K.multiply(x, y), x * y)


def test_column_sums(K, rng):
    g = rng.standard_normal((5, 4))
    out = np.full(4, np.nan)
    K.column_sums(out, g)
    assert_close(out, g.sum(axis=0), TOL, what="column_sums")


def test_add_product(K, rng):
    Kmat, A, B = rng.standard_normal((3, 4, 5))
    expected = Kmat + A * B
    K.add_product(Kmat, A, B)
    assert np.array_equal(Kmat, expected)


def test_dense_tangent(K, rng):
    W, V = rng.standard_normal((2, 6, 5))
    a, t = rng.standard_normal((2, 1, 5))
    z, tz = rng.standard_normal((2, 1, 6))
    ez, etz = z + a @ W.T, tz + t @ W.T + a @ V.T
    K.dense_tangent(z, tz, W, V, a, t)
    assert_close(z, ez, TOL, what="z")
    assert_close(tz, etz, TOL, what="tz")


def test_dense_hvp_rows(K, rng):
    W, V = rng.standard_normal((2, 6, 5))
    g, tg = rng.standard_normal((2, 1, 6))
    a, t, da, tda = rng.standard_normal((4, 1, 5))
    H = np.full((6, 5), np.nan)
    eda, etda = da + g @ W, tda + tg @ W + g @ V
    K.dense_hvp_rows(H, da, tda, W, V, g, tg, a, t)
    assert_close(da, eda, TOL, what="da")
    assert_close(tda, etda, TOL, what="tda")
    assert_close(H, tg.T @ a + g.T @ t, TOL, what="H")


def test_dense_outer1(K, rng):
    u, v = rng.standard_normal(4), rng.standard_normal(3)
    out = np.full((4, 3), np.nan)
    K.dense_outer1(out, u, v)
    assert np.array_equal(out, np.outer(u, v))


def test_dense_factored_tangent(K, rng):
    p, g, gp = rng.standard_normal((3, 2, 6))
    a, q = rng.standard_normal((2, 2, 5))
    expected = gp + np.einsum("ij,il,il->ij", p, a, a) + np.einsum("ij,il,il->ij", g, q, a)
    K.dense_factored_tangent(gp, p, g, a, q)
    assert_close(gp, expected, TOL, what="gp")


def test_dense_factored_adjoint(K, rng):
    p, g = rng.standard_normal((2, 2, 6))
    a, q, tda, gq = rng.standard_normal((4, 2, 5))
    vg = a * np.sum(p * g, axis=1, keepdims=True) + q * np.sum(g * g, axis=1, keepdims=True)
    etda, egq = tda + vg, gq + vg
    K.dense_factored_adjoint(tda, gq, p, g, a, q)
    assert_close(tda, etda, TOL, what="tda")
    assert_close(gq, egq, TOL, what="gq")


@pytest.mark.parametrize("fit", [False, True])
def test_output_adjoint(K, rng, fit):
    big, f = rng.standard_normal((4, 5)), rng.standard_normal((4, 2))
    C = big[:, 1:3]
    expected = (f - C) / 4 if fit else C.copy()
    assert np.array_equal(K.output_adjoint(C, f, fit), expected)


def test_columns(K, rng):
    big = rng.standard_normal((4, 5))
    copy = K.columns(big[:, 1:3])
    assert copy.flags.c_contiguous and np.array_equal(copy, big[:, 1:3])


def test_put_columns(K, rng):
    big, x = rng.standard_normal((4, 5)), rng.standard_normal((4, 2))
    K.put_columns(big[:, 1:3], x)
    assert np.array_equal(big[:, 1:3], x)


# -------------------------------------------------------------------------- sparse (CSR) kernels


@pytest.mark.parametrize("most", [1, 3, 6, 9])
def test_csr_matvec(K, rng, most):
    ptr, idx, w, dense = csr_pattern(rng, 30, 12, most)
    a = rng.standard_normal((5, 12))
    z = np.ones((5, 30))
    K.csr_matvec(z, a, w, ptr, idx)
    assert_close(z, 1 + a @ dense.T, TOL, TOL, "csr_matvec")


@pytest.mark.parametrize("most", [1, 6, 9])
def test_csr_backprop(K, rng, most):
    ptr, idx, w, dense = csr_pattern(rng, 30, 12, most)
    g = rng.standard_normal((5, 30))
    da = np.ones((5, 12))
    K.csr_backprop(da, g, w, ptr, idx)
    assert_close(da, 1 + g @ dense, TOL, TOL, "csr_backprop")


@pytest.mark.parametrize("most", [1, 3, 6, 12])  # both sides of the switch to dense products
def test_csr_grad(K, rng, most):
    ptr, idx, _, _ = csr_pattern(rng, 70, 12, most)
    a, g = rng.standard_normal((5, 12)), rng.standard_normal((5, 70))
    expected = (g.T @ a)[row_of(ptr), idx]
    for grad in (K.csr_grad, K.csr_grad_dense, K.csr_grad_sparse):
        out = np.full(idx.size, np.nan)
        grad(out, g, a, ptr, idx)
        assert_close(out, expected, TOL, TOL, str(grad))


def test_csr_outer1(K, rng):
    ptr, idx, _, _ = csr_pattern(rng, 8, 6, 4)
    u, v = rng.standard_normal(8), rng.standard_normal(6)
    out = np.full(idx.size, np.nan)
    K.csr_outer1(out, u, v, ptr, idx)
    assert np.array_equal(out, u[row_of(ptr)] * v[idx])


def test_csr_tangent(K, rng):
    ptr, idx, w, W = csr_pattern(rng, 8, 6, 4)
    v = rng.standard_normal(w.size)
    V = np.zeros_like(W)
    V[row_of(ptr), idx] = v
    a, t = rng.standard_normal((2, 6))
    z, tz = rng.standard_normal((2, 8))
    ez, etz = z + W @ a, tz + W @ t + V @ a
    K.csr_tangent(z, tz, w, v, ptr, idx, a, t)
    assert_close(z, ez, TOL, TOL, "z")
    assert_close(tz, etz, TOL, TOL, "tz")


def test_csr_hvp_rows(K, rng):
    ptr, idx, w, W = csr_pattern(rng, 8, 6, 4)
    v = rng.standard_normal(w.size)
    V = np.zeros_like(W)
    V[row_of(ptr), idx] = v
    g, tg = rng.standard_normal((2, 8))
    a, t, da, tda = rng.standard_normal((4, 6))
    eda, etda = da + W.T @ g, tda + W.T @ tg + V.T @ g
    H = np.full(w.size, np.nan)
    K.csr_hvp_rows(H, da, tda, w, v, ptr, idx, g, tg, a, t)
    assert_close(da, eda, TOL, TOL, "da")
    assert_close(tda, etda, TOL, TOL, "tda")
    assert_close(H, (np.outer(tg, a) + np.outer(g, t))[row_of(ptr), idx], TOL, TOL, "H")


@pytest.mark.parametrize("n_dst", [3, 600])  # one block of entries, and several
def test_csr_ntk(K, rng, n_dst):
    ptr, idx, _, _ = csr_pattern(rng, n_dst, 12, 6)
    g1, g2 = rng.standard_normal((3, n_dst)), rng.standard_normal((2, n_dst))
    a1, a2 = rng.standard_normal((3, 12)), rng.standard_normal((2, 12))
    J1 = g1[:, row_of(ptr)] * a1[:, idx]
    J2 = g2[:, row_of(ptr)] * a2[:, idx]
    Kmat = np.ones((3, 2))
    K.csr_ntk(Kmat, g1, a1, g2, a2, ptr, idx)
    assert_close(Kmat, 1 + J1 @ J2.T, TOL, TOL, "csr_ntk")


def tangent_weights(p, g, a, q, ptr, idx):
    """V[s, e] = p[s, j] a[s, idx[e]] + g[s, j] q[s, idx[e]] for the entries e of row j."""
    rows = row_of(ptr)
    return p[:, rows] * a[:, idx] + g[:, rows] * q[:, idx]


def test_csr_factored_tangent(K, rng):
    ptr, idx, w, W = csr_pattern(rng, 8, 6, 4)
    a, t, q = rng.standard_normal((3, 2, 6))
    p, g, tz, gp = rng.standard_normal((4, 2, 8))
    V = tangent_weights(p, g, a, q, ptr, idx)
    egp = gp.copy()
    for s in range(2):
        Vs = np.zeros_like(W)
        Vs[row_of(ptr), idx] = V[s]
        egp[s] += Vs @ a[s]
    etz = tz + t @ W.T
    K.csr_factored_tangent(tz, gp, w, ptr, idx, a, t, p, g, q)
    assert_close(tz, etz, TOL, TOL, "tz")
    assert_close(gp, egp, TOL, TOL, "gp")


def test_csr_factored_adjoint(K, rng):
    ptr, idx, w, W = csr_pattern(rng, 8, 6, 4)
    a, q, tda, gq = rng.standard_normal((4, 2, 6))
    p, g, tg = rng.standard_normal((3, 2, 8))
    V = tangent_weights(p, g, a, q, ptr, idx)
    vg = np.empty((2, 6))
    for s in range(2):
        Vs = np.zeros_like(W)
        Vs[row_of(ptr), idx] = V[s]
        vg[s] = Vs.T @ g[s]
    etda, egq = tda + tg @ W + vg, gq + vg
    K.csr_factored_adjoint(tda, gq, w, ptr, idx, tg, g, p, a, q)
    assert_close(tda, etda, TOL, TOL, "tda")
    assert_close(gq, egq, TOL, TOL, "gq")
