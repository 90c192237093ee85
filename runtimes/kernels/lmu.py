"""Legendre Memory Unit memory over a sequence, recurrent and parallel (ai.edgekit LMU).

Layout: u (N, 1, T) float32, m0 (N, d) float32, out (N, d, T) float32, m_last (N, d) float32.
Math: m_t = Abar m_(t-1) + Bbar u_t with m_(-1) = m0; equivalently (parallel form)
m_t = sum_(k<=t) H_(t-k) u_k + Abar^(t+1) m0 with H_k = Abar^k Bbar (edgekit.legendre).
Every sum accumulates in float64 (Abar, Bbar and H are float64), so the forms agree to ~1e-12
relative before the float32 store; float64 values below NEGLIGIBLE (1e-200) are flushed to 0.
The FFT variant of the parallel form lives in ops/lmu.py (numpy.fft cannot be called from
Numba) and uses free_response for its M0 term.
"""
import numpy as np
from numba import njit

from edgekit.legendre import NEGLIGIBLE

from . import FASTMATH

TILE = 16  # recurrent steps staged before a time-last store (one 64-byte line per channel)


@njit(inline="always", fastmath=FASTMATH)
def _step(abar, bbar, ut, m, nxt):
    """nxt = Abar m + Bbar ut, four rows per sweep over m (each m[j] load feeds four products)."""
    d = m.shape[0]
    d4 = d - d % 4
    for i in range(0, d4, 4):
        a0 = bbar[i] * ut
        a1 = bbar[i + 1] * ut
        a2 = bbar[i + 2] * ut
        a3 = bbar[i + 3] * ut
        for j in range(d):
            mj = m[j]
            a0 += abar[i, j] * mj
            a1 += abar[i + 1, j] * mj
            a2 += abar[i + 2, j] * mj
            a3 += abar[i + 3, j] * mj
        nxt[i] = _flush(a0)
        nxt[i + 1] = _flush(a1)
        nxt[i + 2] = _flush(a2)
        nxt[i + 3] = _flush(a3)
    for i in range(d4, d):
        acc = bbar[i] * ut
        for j in range(d):
            acc += abar[i, j] * m[j]
        nxt[i] = _flush(acc)


@njit(inline="always", fastmath=FASTMATH)
def _flush(v):
    """0 for |v| < NEGLIGIBLE: a state decaying under zero input would otherwise reach float64
    subnormals (~100x slower per operation) while its float32 output is already 0."""
    return 0.0 if abs(v) < NEGLIGIBLE else v  # NaN compares False: it propagates


@njit(cache=True, fastmath=FASTMATH)
def lmu_recurrent(u, m0, abar, bbar, out, m_last):
    """Run m_t = Abar m_(t-1) + Bbar u_t over t for every batch row: d*d multiply-adds per step.

    States are staged TILE steps at a time and stored one cache line per channel, since out is
    time-last and a single step's store would touch d lines.
    """
    n_batch, d, steps = out.shape
    m = np.empty(d)
    tile = np.empty((TILE, d))
    for n in range(n_batch):
        for i in range(d):
            m[i] = m0[n, i]
        for t0 in range(0, steps, TILE):
            width = min(TILE, steps - t0)
            for s in range(width):
                _step(abar, bbar, np.float64(u[n, 0, t0 + s]), m, tile[s])
                m[:] = tile[s]
            for i in range(d):
                for s in range(width):
                    out[n, i, t0 + s] = tile[s, i]
        for i in range(d):
            m_last[n, i] = m[i]


@njit(cache=True, fastmath=FASTMATH)
def lmu_convolve(u, m0, h, abar, has_m0, acc, out, m_last):
    """Parallel form by direct causal convolution, h = H (T, d) float64, acc a (T, d) float64 scratch.

    acc[t] starts at Abar^(t+1) m0 (when has_m0) or 0, then each input sample adds a scaled copy
    of H (contiguous axpys over d), and acc is stored transposed: d*T*(T+1)/2 multiply-adds,
    cheaper than the recurrence while T < 2d.
    """
    n_batch, d, steps = out.shape
    for n in range(n_batch):
        if has_m0:
            free_response(m0[n], abar, acc)
        else:
            acc[:] = 0.0
        for k in range(steps):
            uk = np.float64(u[n, 0, k])
            for t in range(k, steps):
                row = acc[t]
                hk = h[t - k]
                for i in range(d):
                    row[i] += hk[i] * uk
        for i in range(d):
            for t in range(steps):
                out[n, i, t] = acc[t, i]
            m_last[n, i] = acc[steps - 1, i] if steps else m0[n, i]


@njit(cache=True, fastmath=FASTMATH)
def free_response(m0, abar, acc):
    """acc[t] = Abar^(t+1) m0 for every row t of acc (T, d) float64: the parallel form's M0 term.

    It costs d*d per step like the recurrence itself, so a given M0 makes the parallel form no
    cheaper than the recurrent one.
    """
    steps, d = acc.shape
    m = m0.astype(np.float64)
    zero = np.zeros(d)
    for t in range(steps):
        _step(abar, zero, 0.0, m, acc[t])
        m[:] = acc[t]
