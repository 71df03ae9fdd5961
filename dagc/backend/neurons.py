"""Shared numba kernels of the neuron path: every loop over a neuron DAG's edges.

The graph arrives as data (`dagc.ir.neurons.NeuronIR.kernel_args`): the CSR `indptr`
(int64) and `indices` (uint32) of every neuron's incoming edges over one activation buffer,
the scales 1/sqrt(in-degree), the runs, the output neurons and the factored Hessian's q
coordinates. Batched buffers are neuron-major, (N, n): a neuron's values for all samples are
contiguous, so each edge's weight and index are read once per sweep for the whole batch and
the innermost loop runs over samples. The HVP's single sample uses 1-D buffers (N,). Loops
over edges run over unsigned integers: numba wraps negative signed indices, which costs
integer instructions on every access (as in dagc.backend.kernels).

Only the activations depend on the graph's activation set; they are applied by the passes
of the module rendered from templates/neurons.py.j2, which call these kernels.
"""

from __future__ import annotations

import numpy as np

from .jit import jit


@jit
def input_buffer(X, n_neurons):
    """The activation buffer (N, n) with the inputs X (n, n_in) in its first rows."""
    A = np.empty((n_neurons, X.shape[0]))
    A[:X.shape[1]] = X.T
    return A


@jit
def take_outputs(A, outputs):
    """The outputs' rows of a neuron-major buffer, as (n, n_out)."""
    F = np.empty((A.shape[1], outputs.size))
    for k in range(outputs.size):
        F[:, k] = A[outputs[k]]
    return F


@jit
def gather(Z, A, w, indptr, indices, scale, first):
    """Z[k] = scale[v] * sum_e w[e] A[indices[e]] for the neurons v = first + k."""
    n = A.shape[1]
    for k in range(Z.shape[0]):
        v = first + k
        z = Z[k]
        if n == 1:  # one sample: a dot product, the sum kept in a register
            acc = 0.0
            for e in range(np.uint64(indptr[v]), np.uint64(indptr[v + 1])):
                acc += w[e] * A[indices[e], 0]
            z[0] = acc * scale[v]
            continue
        z[:] = 0.0
        for e in range(np.uint64(indptr[v]), np.uint64(indptr[v + 1])):
            we = w[e]
            a = A[indices[e]]
            for j in range(n):
                z[j] += we * a[j]
        s = scale[v]
        for j in range(n):
            z[j] *= s


@jit
def backprop(DA, G, D1, A, w, indptr, indices, scale, n_in, grad, preact):
    """The reverse sweep from the adjoints DA of the outputs (N, n; hidden rows zero):
    G[v] = DA[v] * D1[v] * scale[v] for every computed neuron, last first, each pushed back
    through its edges, DA[u] += w[e] G[v]. Sample j with preact[j] = v >= 0 also seeds v's
    pre-activation: G[v, j] += scale[v] (d z_v / d(sum)_v, past the activation: the Hessian
    of a hidden pre-activation, Theorem 3.8). With grad of size P, also grad[e] =
    sum_j G[v, j] A[u, j] (the summed gradient), in the same read of the edge."""
    n = A.shape[1]
    summed = grad.size > 0
    for v in range(A.shape[0] - 1, n_in - 1, -1):
        g = G[v]
        da = DA[v]
        d1 = D1[v]
        s = scale[v]
        for j in range(n):
            g[j] = da[j] * d1[j] * s
            if preact[j] == v:
                g[j] += s
        if n == 1:  # one sample: scalars, no loop over samples per edge
            g0 = g[0]
            for e in range(np.uint64(indptr[v]), np.uint64(indptr[v + 1])):
                u = indices[e]
                a0 = A[u, 0]
                DA[u, 0] += w[e] * g0
                if summed:
                    grad[e] = g0 * a0
            continue
        for e in range(np.uint64(indptr[v]), np.uint64(indptr[v + 1])):
            u = indices[e]
            we = w[e]
            a = A[u]
            dau = DA[u]
            acc = 0.0
            for j in range(n):
                acc += g[j] * a[j]
                dau[j] += we * g[j]
            if summed:
                grad[e] = acc


@jit
def gradient_rows(grad, G, A, indptr, indices, n_in):
    """Per-sample gradients grad[j, e] = G[v, j] A[u, j] (the Jacobian's rows)."""
    for v in range(n_in, A.shape[0]):
        g = G[v]
        for e in range(np.uint64(indptr[v]), np.uint64(indptr[v + 1])):
            a = A[indices[e]]
            for j in range(g.size):
                grad[j, e] = g[j] * a[j]


@jit
def output_adjoints(DA, F, C, outputs, fit):
    """DA[outputs[k]] = C[:, k]; with `fit`, C holds targets and the adjoints are the mean
    squared error's, (F[:, k] - C[:, k]) / n, F the outputs (n, n_out)."""
    n = C.shape[0]
    for k in range(outputs.size):
        row = DA[outputs[k]]
        for j in range(n):
            row[j] = (F[j, k] - C[j, k]) / n if fit else C[j, k]


@jit
def tangent_gather(z, tz, a, t, w, v, indptr, indices, scale, first, end):
    """z[k] = s (W a)_u, tz[k] = s (W t + V a)_u for the neurons u = first + k < end: one
    read of each edge's weight, tangent weight and index."""
    for k in range(end - first):
        u = first + k
        zs = 0.0
        tzs = 0.0
        for e in range(np.uint64(indptr[u]), np.uint64(indptr[u + 1])):
            i = indices[e]
            ai = a[i]
            zs += w[e] * ai
            tzs += w[e] * t[i] + v[e] * ai
        z[k] = zs * scale[u]
        tz[k] = tzs * scale[u]


@jit
def hvp_backprop(H, da, tda, a, t, d1, d2, tz, w, v, indptr, indices, scale, n_in):
    """The HVP's reverse sweep for one sample: g = da phi' s and its tangent
    tg = (tda phi' + da phi'' tz) s for every computed neuron, last first; per edge u -> v the
    Hessian entry H[e] = tg a_u + g t_u, and da_u += g w, tda_u += tg w + g v[e]."""
    for u in range(a.size - 1, n_in - 1, -1):
        s = scale[u]
        g = da[u] * d1[u] * s
        tg = (tda[u] * d1[u] + da[u] * d2[u] * tz[u]) * s
        for e in range(np.uint64(indptr[u]), np.uint64(indptr[u + 1])):
            # every load before the first store: a store to da may alias w, v, a or t for
            # all numba knows, so it would load them again
            i = indices[e]
            we = w[e]
            ve = v[e]
            ai = a[i]
            ti = t[i]
            H[e] = tg * ai + g * ti
            da[i] += g * we
            tda[i] += tg * we + g * ve


@jit
def factored_forward(HC, GC, T, TZ, C, A, D1, G, w, indptr, indices, scale, q_row, n_in):
    """The factored HVP's forward sweep (neuron-major, n rows): the tangent weights are
    V[e] = p_v a_u + g_v q_u (p_v = C[v - n_in], q_u = C[q_row[u]]); tz_v =
    s (sum_e w t_u + gp_v) with gp_v = sum_e V[e] a_u, t_v = phi'(z_v) tz_v. Writes GC's p
    rows (gp) and HC's q rows (t). Neurons without q coordinates (inputs, outputs) have
    q_row pointing at a last row of C that holds zeros and of HC that is thrown away, so no
    edge needs a branch."""
    n = A.shape[1]
    for v in range(n_in, A.shape[0]):
        p = C[v - n_in]
        g = G[v]
        tz = TZ[v]
        gp = GC[v - n_in]
        tz[:] = 0.0
        gp[:] = 0.0
        for e in range(np.uint64(indptr[v]), np.uint64(indptr[v + 1])):
            u = indices[e]
            we = w[e]
            a = A[u]
            t = T[u]
            q = C[q_row[u]]
            for j in range(n):
                tz[j] += we * t[j]
                gp[j] += (p[j] * a[j] + g[j] * q[j]) * a[j]
        s = scale[v]
        d1 = D1[v]
        tv = T[v]
        for j in range(n):
            tz[j] = (tz[j] + gp[j]) * s
            tv[j] = d1[j] * tz[j]
        HC[q_row[v]] = tv


@jit
def factored_backward(HC, GC, TZ, C, A, D1, D2, DA, G, w, indptr, indices, scale, q_row,
                      n_in):
    """The factored HVP's reverse sweep: tg_v = (tda_v phi' + da_v phi'' tz_v) s into HC's
    p rows; per edge u -> v, with V as in `factored_forward`, tda_u += w tg_v + V g_v and
    gq_u += V g_v (GC's q rows; an input's go to the thrown-away last row)."""
    n = A.shape[1]
    TDA = np.zeros_like(A)
    for qi in range(A.shape[0] - n_in, GC.shape[0]):
        GC[qi] = 0.0
    for v in range(A.shape[0] - 1, n_in - 1, -1):
        tg = HC[v - n_in]
        tda = TDA[v]
        da = DA[v]
        d1 = D1[v]
        d2 = D2[v]
        tz = TZ[v]
        s = scale[v]
        for j in range(n):
            tg[j] = (tda[j] * d1[j] + da[j] * d2[j] * tz[j]) * s
        p = C[v - n_in]
        g = G[v]
        for e in range(np.uint64(indptr[v]), np.uint64(indptr[v + 1])):
            u = indices[e]
            we = w[e]
            a = A[u]
            q = C[q_row[u]]
            tdau = TDA[u]
            gq = GC[q_row[u]]
            for j in range(n):
                vg = (p[j] * a[j] + g[j] * q[j]) * g[j]
                tdau[j] += we * tg[j] + vg
                gq[j] += vg


@jit
def ntk_accumulate(K, Gk, A, indptr, indices, n_in, n1, lo):
    """K[k, l, i, j] += sum over edges u -> v of Gk[k, v, i] A[u, i] Gk[l, v, lo + j]
    A[u, lo + j]: per neuron, the Gram matrix of its sources' activations, once, times the
    outer products of its adjoints (the Jacobian is never formed)."""
    n2 = A.shape[1] - lo
    S = np.empty((n1, n2))
    for v in range(n_in, A.shape[0]):
        S[:] = 0.0
        for e in range(np.uint64(indptr[v]), np.uint64(indptr[v + 1])):
            a = A[indices[e]]
            for i in range(n1):
                ai = a[i]
                for j in range(n2):
                    S[i, j] += ai * a[lo + j]
        for k in range(K.shape[0]):
            gk = Gk[k, v]
            for m in range(K.shape[1]):
                gl = Gk[m, v]
                Kkm = K[k, m]
                for i in range(n1):
                    for j in range(n2):
                        Kkm[i, j] += gk[i] * gl[lo + j] * S[i, j]


@jit
def layer_mix(out, stack, shares):
    """out = sum_j shares[j] stack[j] over the stored layers j (the infinite-width kernels of
    a layer from those of the earlier ones, `limits`); layers of share 0 are skipped, so a
    layer never reads the ones not yet computed."""
    out[:] = 0.0
    for j in range(shares.size):
        if shares[j] != 0.0:
            out += shares[j] * stack[j]
