"""The loops every generated module shares: dense products and elementwise updates, the sparse
(CSR) connections' passes, and the outer products written in place.

Generated modules import the kernels they use by name (`from dagc.backend.kernels import ...`),
so each exists once, here, and is unit tested on its own (tests/backend/test_kernels.py).
numba compiles a kernel into every generated function that calls it, which is why a generated
module's name carries a digest of this file (see `dagc.backend.cache`): a changed kernel must
never load a module's stale machine code from numba's cache.

CSR conventions: rows j of the destination own entries ptr[j]..ptr[j+1]; idx[e] is the source
neuron of entry e, w[e] its weight. Where entries are the innermost loop, e runs over unsigned
integers: numba wraps negative signed indices, which costs six integer instructions per array
access there. Every activation is a 2-D array of rows (samples); the HVP's single sample is
one row, so all passes share the same compiled kernels.
"""

from __future__ import annotations

import numpy as np

from .jit import jit


@jit
def csr_matvec(z, a, w, ptr, idx):
    """z[i, j] += sum over entries e of row j of w[e] * a[i, idx[e]].

    Edges outside, samples inside on transposed copies: each weight and index is read once
    per call (not once per sample) and the inner loop is a contiguous, vectorizable update.
    Four entries per sweep of the row keep it in registers; the sum keeps the entry order.
    """
    aT = np.ascontiguousarray(a.T)
    zT = np.zeros((z.shape[1], z.shape[0]))
    for j in range(z.shape[1]):
        row = zT[j]
        e = ptr[j]
        while e + 4 <= ptr[j + 1]:
            w0, w1, w2, w3 = w[e], w[e + 1], w[e + 2], w[e + 3]
            s0, s1, s2, s3 = aT[idx[e]], aT[idx[e + 1]], aT[idx[e + 2]], aT[idx[e + 3]]
            for i in range(row.size):
                row[i] = (((row[i] + w0 * s0[i]) + w1 * s1[i]) + w2 * s2[i]) + w3 * s3[i]
            e += 4
        for f in range(e, ptr[j + 1]):
            wf = w[f]
            src = aT[idx[f]]
            for i in range(row.size):
                row[i] += wf * src[i]
    z += zT.T


@jit
def csr_backprop(da, g, w, ptr, idx):
    """da[i, idx[e]] += g[i, j] * w[e]: the transpose of csr_matvec (same loop order).

    Four entries per sweep of g's row load each g[i, j] once for four updates; every da
    element still sums in entry order, so the bits are those of one entry at a time.
    """
    gT = np.ascontiguousarray(g.T)
    daT = np.zeros((da.shape[1], da.shape[0]))
    for j in range(g.shape[1]):
        gj = gT[j]
        e = ptr[j]
        while e + 4 <= ptr[j + 1]:
            w0, w1, w2, w3 = w[e], w[e + 1], w[e + 2], w[e + 3]
            d0, d1, d2, d3 = daT[idx[e]], daT[idx[e + 1]], daT[idx[e + 2]], daT[idx[e + 3]]
            for i in range(gj.size):
                gi = gj[i]
                d0[i] += w0 * gi
                d1[i] += w1 * gi
                d2[i] += w2 * gi
                d3[i] += w3 * gi
            e += 4
        for f in range(e, ptr[j + 1]):
            wf = w[f]
            dst = daT[idx[f]]
            for i in range(gj.size):
                dst[i] += wf * gj[i]
    da += daT.T


@jit
def csr_grad(out, g, a, ptr, idx):
    """out[e] = sum over samples i of g[i, j] * a[i, idx[e]].

    Where at least a fifth of the pattern is set, a dense product of a few rows at a time
    (BLAS) and a gather beat the sparse dot products; the crossover was measured.
    """
    rows = g.shape[1]
    if 5 * (ptr[rows] - ptr[0]) >= rows * a.shape[1]:
        csr_grad_dense(out, g, a, ptr, idx)
    else:
        csr_grad_sparse(out, g, a, ptr, idx)


@jit
def csr_grad_dense(out, g, a, ptr, idx):
    """csr_grad through the dense rows D = g[:, lo:hi]^T a of 64 rows at a time."""
    gT = np.ascontiguousarray(g.T)
    a = np.ascontiguousarray(a)
    for lo in range(0, gT.shape[0], 64):
        D = np.dot(gT[lo:lo + 64], a)
        for j in range(lo, lo + D.shape[0]):
            Dj = D[j - lo]
            for e in range(np.uint64(ptr[j]), np.uint64(ptr[j + 1])):
                out[e] = Dj[idx[e]]


@jit
def csr_grad_sparse(out, g, a, ptr, idx):
    """csr_grad as one dot product per entry, four entries at a time so that four
    independent sums share each load of g."""
    gT = np.ascontiguousarray(g.T)
    aT = np.ascontiguousarray(a.T)
    for j in range(gT.shape[0]):
        gj = gT[j]
        e = ptr[j]
        while e + 4 <= ptr[j + 1]:
            s0, s1, s2, s3 = aT[idx[e]], aT[idx[e + 1]], aT[idx[e + 2]], aT[idx[e + 3]]
            c0 = c1 = c2 = c3 = 0.0
            for i in range(gj.size):
                gi = gj[i]
                c0 += gi * s0[i]
                c1 += gi * s1[i]
                c2 += gi * s2[i]
                c3 += gi * s3[i]
            out[e], out[e + 1], out[e + 2], out[e + 3] = c0, c1, c2, c3
            e += 4
        for f in range(e, ptr[j + 1]):
            src = aT[idx[f]]
            acc = 0.0
            for i in range(gj.size):
                acc += gj[i] * src[i]
            out[f] = acc


@jit
def csr_outer1(out, u, v, ptr, idx):
    """out[e] = u[j] * v[idx[e]]."""
    for j in range(u.size):
        for e in range(np.uint64(ptr[j]), np.uint64(ptr[j + 1])):
            out[e] = u[j] * v[idx[e]]


@jit
def csr_tangent(z, tz, w, v, ptr, idx, a, t):
    """HVP forward for one sample: z += W a and tz += W t + V a, reading W and V once."""
    for j in range(z.size):
        s1 = 0.0
        s2 = 0.0
        for e in range(np.uint64(ptr[j]), np.uint64(ptr[j + 1])):
            s1 += w[e] * a[idx[e]]
            s2 += w[e] * t[idx[e]] + v[e] * a[idx[e]]
        z[j] += s1
        tz[j] += s2


@jit
def csr_hvp_rows(H, da, tda, w, v, ptr, idx, g, tg, a, t):
    """HVP backward for one sample, reading W and V once: da += W^T g,
    tda += W^T tg + V^T g, and the Hessian piece H = tg a^T + g t^T on the pattern."""
    for j in range(g.size):
        gj = g[j]
        tgj = tg[j]
        for e in range(np.uint64(ptr[j]), np.uint64(ptr[j + 1])):
            # every load before the first store: a store to da may alias w, v, a or t for all
            # numba knows, so it would load them again
            i = idx[e]
            we = w[e]
            ve = v[e]
            ai = a[i]
            ti = t[i]
            H[e] = tgj * ai + gj * ti
            da[i] += gj * we
            tda[i] += tgj * we + gj * ve


# A block of csr_ntk's transposed Jacobian: NTK_BLOCK_ENTRIES x samples floats, small enough
# to stay in cache between being built and multiplied (much larger blocks, each a new array
# built across the samples, were several times slower: docs/benchmarks.md).
NTK_BLOCK_ENTRIES = 1024


@jit
def csr_ntk(K, g1, a1, g2, a2, ptr, idx):
    """K += J1 J2^T for the connection's per-sample Jacobians J[i, e] = g[i, j] a[i, idx[e]].

    A few rows' entries at a time (about NTK_BLOCK_ENTRIES): each block of J^T is built
    contiguously in a buffer that stays in cache and is reused, then multiplied by BLAS."""
    rows = g1.shape[1]
    block = max(1, NTK_BLOCK_ENTRIES // max(1, (ptr[rows] - ptr[0]) // max(rows, 1)))
    most = 0
    for lo in range(0, rows, block):
        most = max(most, ptr[min(rows, lo + block)] - ptr[lo])
    J1T = np.empty((most, g1.shape[0]))
    J2T = np.empty((most, g2.shape[0]))
    P = np.empty((g1.shape[0], g2.shape[0]))
    g1T, a1T = np.ascontiguousarray(g1.T), np.ascontiguousarray(a1.T)
    g2T, a2T = np.ascontiguousarray(g2.T), np.ascontiguousarray(a2.T)
    for lo in range(0, rows, block):
        hi = min(rows, lo + block)
        entries = ptr[hi] - ptr[lo]
        csr_jacobian_t(J1T, g1T, a1T, ptr, idx, lo, hi)
        csr_jacobian_t(J2T, g2T, a2T, ptr, idx, lo, hi)
        np.dot(J1T[:entries].T, J2T[:entries], P)
        K += P


@jit
def csr_jacobian_t(JT, gT, aT, ptr, idx, lo, hi):
    """JT[e - ptr[lo], i] = g[i, j] a[i, idx[e]] for the entries e of rows lo..hi - 1, from
    the transposes gT, aT (samples last, so each entry's column is one contiguous product)."""
    for j in range(lo, hi):
        gj = gT[j]
        for e in range(ptr[j], ptr[j + 1]):
            column = JT[e - ptr[lo]]
            ai = aT[idx[e]]
            for i in range(gj.size):
                column[i] = gj[i] * ai[i]


@jit
def csr_factored_tangent(tz, gp, w, ptr, idx, a, t, p, g, q):
    """Factored HVP forward for a batch: tz += W t, and gp += V a for the tangent weights
    V[e] = p[:, j] a[:, idx[e]] + g[:, j] q[:, idx[e]] of row j's entries (as csr_matvec)."""
    aT = np.ascontiguousarray(a.T)
    tT = np.ascontiguousarray(t.T)
    qT = np.ascontiguousarray(q.T)
    pT = np.ascontiguousarray(p.T)
    gT = np.ascontiguousarray(g.T)
    tzT = np.zeros((tz.shape[1], tz.shape[0]))
    gpT = np.zeros((gp.shape[1], gp.shape[0]))
    for j in range(tzT.shape[0]):
        tzj = tzT[j]
        gpj = gpT[j]
        pj = pT[j]
        gj = gT[j]
        for e in range(ptr[j], ptr[j + 1]):
            we = w[e]
            ai = aT[idx[e]]
            ti = tT[idx[e]]
            qi = qT[idx[e]]
            for s in range(tzj.size):
                tzj[s] += we * ti[s]
                gpj[s] += (pj[s] * ai[s] + gj[s] * qi[s]) * ai[s]
    tz += tzT.T
    gp += gpT.T


@jit
def csr_factored_adjoint(tda, gq, w, ptr, idx, tg, g, p, a, q):
    """Factored HVP backward for a batch: with V as in csr_factored_tangent,
    tda += W^T tg + V^T g and gq += V^T g."""
    aT = np.ascontiguousarray(a.T)
    qT = np.ascontiguousarray(q.T)
    pT = np.ascontiguousarray(p.T)
    gT = np.ascontiguousarray(g.T)
    tgT = np.ascontiguousarray(tg.T)
    tdaT = np.zeros((tda.shape[1], tda.shape[0]))
    gqT = np.zeros((gq.shape[1], gq.shape[0]))
    for j in range(pT.shape[0]):
        pj = pT[j]
        gj = gT[j]
        tgj = tgT[j]
        for e in range(ptr[j], ptr[j + 1]):
            we = w[e]
            ai = aT[idx[e]]
            qi = qT[idx[e]]
            tdai = tdaT[idx[e]]
            gqi = gqT[idx[e]]
            for s in range(pj.size):
                vg = (pj[s] * ai[s] + gj[s] * qi[s]) * gj[s]
                tdai[s] += we * tgj[s] + vg
                gqi[s] += vg
    tda += tdaT.T
    gq += gqT.T

@jit
def matrix(vec, offset, rows, cols):
    """The (rows, cols) row-major piece of a flat vector that starts at `offset`, as a view."""
    return vec[offset:offset + rows * cols].reshape((rows, cols))


@jit
def matmul_t(a, W):
    """a @ W.T through BLAS: every row of a through a connection's weights.

    For fewer than 32 rows (Lanczos batches) and a large W, OpenBLAS computes W @ a.T faster
    than a @ W.T (docs/benchmarks.md). It goes through `matmul`, whose product of two C
    arrays the VJP compiles anyway.
    """
    if a.shape[0] < 32 and W.shape[1] >= 256:
        return np.ascontiguousarray(matmul(W, np.ascontiguousarray(a.T)).T)
    return np.dot(a, W.T)


@jit
def matmul(g, W):
    """g @ W through BLAS: adjoints sent back through a connection."""
    return np.dot(g, W)


@jit
def matmul_tn_into(out, g, a):
    """out = g.T @ a through BLAS: a weight gradient summed over the samples."""
    np.dot(g.T, a, out)


@jit
def add_to(x, y):
    """x += y for arrays of one shape (a loop: numba's array expressions compile slowly)."""
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    for i in range(xf.size):
        xf[i] += yf[i]


@jit
def add_rows(z, b):
    """z[..., j] += b[j]: a bias added to every row."""
    zf = z.reshape(-1)
    m = b.size
    for r in range(zf.size // m):
        for j in range(m):
            zf[r * m + j] += b[j]


@jit
def scale_rows(z, s):
    """z[..., j] *= s[j]: the 1/sqrt(in-degree) of each neuron."""
    zf = z.reshape(-1)
    m = s.size
    for r in range(zf.size // m):
        for j in range(m):
            zf[r * m + j] *= s[j]


@jit
def adjoint(da, d1, s):
    """g = da * phi'(z) * s: the adjoint of a block's pre-scale sum."""
    g = np.empty_like(da)
    gf = g.reshape(-1)
    daf = da.reshape(-1)
    d1f = d1.reshape(-1)
    m = s.size
    for r in range(gf.size // m):
        for j in range(m):
            i = r * m + j
            gf[i] = daf[i] * d1f[i] * s[j]
    return g


@jit
def adjoint_tangent(tda, da, d1, d2, tz, s):
    """The tangent of `adjoint`: (tda * phi'(z) + da * phi''(z) * tz) * s."""
    tg = np.empty_like(tda)
    tgf = tg.reshape(-1)
    tdaf = tda.reshape(-1)
    daf = da.reshape(-1)
    d1f = d1.reshape(-1)
    d2f = d2.reshape(-1)
    tzf = tz.reshape(-1)
    m = s.size
    for r in range(tgf.size // m):
        for j in range(m):
            i = r * m + j
            tgf[i] = (tdaf[i] * d1f[i] + daf[i] * d2f[i] * tzf[i]) * s[j]
    return tg


@jit
def multiply(x, y):
    """x * y elementwise, as a new array."""
    out = np.empty_like(x)
    outf = out.reshape(-1)
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    for i in range(xf.size):
        outf[i] = xf[i] * yf[i]
    return out


@jit
def column_sums(out, g):
    """out[j] = sum over rows i of g[i, j]."""
    out[:] = 0.0
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            out[j] += g[i, j]


@jit
def add_product(K, A, B):
    """K += A * B elementwise (2-D)."""
    for i in range(K.shape[0]):
        for j in range(K.shape[1]):
            K[i, j] += A[i, j] * B[i, j]


@jit
def dense_tangent(z, tz, W, V, a, t):
    """HVP forward for one sample (rows of shape (1, n)): z += W a and tz += W t + V a.

    The forward pass's BLAS products, already compiled: at width 2048 they beat one fused
    hand-written sweep over W and V, which does not vectorize without reassociating its sums.
    """
    add_to(z, matmul_t(a, W))
    add_to(tz, matmul_t(t, W))
    add_to(tz, matmul_t(a, V))


@jit
def dense_hvp_rows(H, da, tda, W, V, g, tg, a, t):
    """HVP backward for one sample (rows of shape (1, n)): da += W^T g and
    tda += W^T tg + V^T g (BLAS, as in dense_tangent), and the Hessian piece
    H = tg a^T + g t^T."""
    add_to(da, matmul(g, W))
    add_to(tda, matmul(tg, W))
    add_to(tda, matmul(g, V))
    for j in range(H.shape[0]):
        Hj = H[j]
        gj = g[0, j]
        tgj = tg[0, j]
        for col in range(Hj.size):
            Hj[col] = tgj * a[0, col] + gj * t[0, col]


@jit
def dense_outer1(out, u, v):
    """out[j, l] = u[j] * v[l]."""
    for j in range(u.size):
        c = u[j]
        row = out[j]
        for col in range(v.size):
            row[col] = c * v[col]


@jit
def dense_factored_tangent(gp, p, g, a, q):
    """gp += V a, row by row, for the rank-two tangent weights V = p a^T + g q^T of one
    sample: p (a . a) + g (q . a), without forming V."""
    for i in range(a.shape[0]):
        aa = 0.0
        qa = 0.0
        for col in range(a.shape[1]):
            aa += a[i, col] * a[i, col]
            qa += q[i, col] * a[i, col]
        for j in range(gp.shape[1]):
            gp[i, j] += p[i, j] * aa + g[i, j] * qa


@jit
def dense_factored_adjoint(tda, gq, p, g, a, q):
    """V^T g = a (p . g) + q (g . g) for V = p a^T + g q^T, added to tda and to gq."""
    for i in range(a.shape[0]):
        pg = 0.0
        gg = 0.0
        for j in range(g.shape[1]):
            pg += p[i, j] * g[i, j]
            gg += g[i, j] * g[i, j]
        for col in range(a.shape[1]):
            vg = a[i, col] * pg + q[i, col] * gg
            tda[i, col] += vg
            gq[i, col] += vg


@jit
def output_adjoint(C, f, fit):
    """The adjoints of the outputs f (n, k) from C (n, k), a slice of the caller's adjoints
    (copied), or, with `fit`, of its targets: (f - C) / n (the mean squared error's)."""
    da = columns(C)
    if fit:
        n = f.shape[0]
        for i in range(n):
            for j in range(f.shape[1]):
                da[i, j] = (f[i, j] - da[i, j]) / n
    return da


@jit
def columns(C):
    """A contiguous copy of C, a column slice of a larger array.

    The column kernels take slices rather than (array, start): a start of 0 written as a
    literal would make numba compile a second, Literal[int](0) specialization of each.
    """
    out = np.empty(C.shape)
    for i in range(C.shape[0]):
        for j in range(C.shape[1]):
            out[i, j] = C[i, j]
    return out


@jit
def put_columns(C, x):
    """C[:, :] = x, C a column slice of a larger array."""
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            C[i, j] = x[i, j]
