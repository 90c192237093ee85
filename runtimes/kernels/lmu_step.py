"""Fused LMUFormer step: one call computes one frame of the standard-op step model that
``edgekit.converters.lmu.to_step`` writes, for every stream of a batch, with the same arithmetic.

The plan runs that step as ~15 kernels (33 with LIF) of 1-2 us each; this is one call. Per stream b
(row-major flat arrays, offsets in ``plan``, see the P_* / W_* / S_* / E_* indices below):

  embedding layer i:  win = [tail_i, z]; tail_i = win[width:]; pre = win @ K_i + shift_i (BN folded);
                      z = act_i(pre) * gate_i
  LMU:                u = z @ w_u + b_u; m = (m @ Abar^T + u * Bbar) * late
                      h = act(z @ Wh_z + (m @ Wh_m + b_h)); z = z + h
  mixer:              a = act(z @ W_1 + shift_1); z = a @ W_2 + z          (BN folded; shift_2 in the head bias)
  head:               s = z @ W_head + sum; sum = s * late; logits = s / seen + b_head

act is ReLU, or LIF (v += (pre - v) / tau; spike where v >= threshold; hard reset to 0 or soft
v -= threshold; the next v times the state gate). With a lookahead embedding gate_i = [frames >= i + 1]
and late = gate of the last layer mask outputs and states until a layer has a real frame (else 1);
seen = frames + 1, or max(frames + 1 - delay, 1). ``frames`` (shared by the batch) then grows by 1.

Matrices are packed in column panels of PANEL columns, each panel row-major (k, width), so a
product walks contiguous memory. A panel keeps its outputs in vector registers over the whole
reduction, summed t = 0..k-1 by fused multiply-adds and then + c, as the plan's tiled Gemm does, so
those products equal the plan's bit for bit (the plan runs a Gemm of fewer outputs than a vector,
such as u's, as dot products in another order; divisions may round differently). Rows
whose input is 0 (spikes, ReLU zeros) are skipped when every weight is finite (they add exactly 0);
so are subnormal inputs (see TINY). With plan[P_THREADS] > 1 the panels of every product of at
least THREAD_MIN weights are split over that many of Numba's threads, each thread always the same
panels (each core reads, and keeps in its cache, its share of the weights).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import FASTMATH
from .activation import RELU, activate
from .gemm import ROW_VECS
from .simd import LANES, tile_get, tile_new, tile_set, vadd, vfma, vload, vsplat, vstore

TINY = np.float32(np.finfo(np.float32).tiny)
"""Inputs below the smallest normal float32 count as 0 when rows are skipped: subnormal operands
make a vector multiply-add take ~100 cycles (an LMU memory fading after the input stops)."""
PANEL = ROW_VECS * LANES
"""Columns per weight panel: the single-row tile of the Gemm micro-kernel."""

THREAD_MIN = 1 << 15
"""Weights of the smallest product split over threads: below, a parallel region costs more than it saves."""

# plan (int64): sizes and flags, then offsets into the weights (W_*) and states (S_*), then E_SIZE
# entries per embedding layer from P_EMBED on (E_*: offsets of its kernel, shift, tail and v; input width).
(P_BATCH, P_CIN, P_DIM, P_ORDER, P_CLASSES, P_NEMBED, P_SPIKING, P_SOFT, P_DELAY, P_SKIP, P_THREADS,
 W_UW, W_UB, W_BBAR, W_ABAR, W_HM, W_HB, W_HZ, W_F1, W_F1B, W_F2, W_HEAD, W_HEADB,
 S_M, S_LMUV, S_MIXV, S_SUM, S_FRAMES, P_EMBED) = range(29)
E_W, E_B, E_TAIL, E_V, E_WIDTH, E_SIZE = range(6)


def _panel_kernel(masked: bool):
    """The product of one panel; ``masked`` for a last panel narrower than PANEL."""

    @njit(cache=True, fastmath=FASTMATH, inline="always")
    def panel(x, x_off, rows, nnz, w, w_off, n, c, c_off, y, y_off, relu):
        """y[y_off + j] = act(sum_t x[x_off + t] * w[w_off + t * n + j] + c[c_off + j]), j < n <= PANEL,
        t over rows[:nnz] (ascending)."""
        acc = tile_new(ROW_VECS)
        for q in range(nnz):
            t = rows[q]
            sv = vsplat(x[x_off + t])
            row = w_off + t * n
            for j in range(ROW_VECS):
                tile_set(acc, j, vfma(sv, vload(w, row + j * LANES, n - j * LANES if masked else LANES),
                                      tile_get(acc, j)))
        for j in range(ROW_VECS):
            lanes = n - j * LANES if masked else LANES
            vstore(y, y_off + j * LANES, vadd(tile_get(acc, j), vload(c, c_off + j * LANES, lanes)), lanes)
        if relu:
            for j in range(n):
                y[y_off + j] = activate(y[y_off + j], RELU, 0.0, 0.0)

    return panel


_full_panel = _panel_kernel(False)
_edge_panel = _panel_kernel(True)


@njit(inline="always", fastmath=FASTMATH)
def _nonzero_rows(x, x_off, k, skip, rows):
    """rows[:nnz] = the t < k to sum: all of them, or (skip) those with x[x_off + t] not below TINY; nnz."""
    nnz = 0
    for t in range(k):  # no branch per row
        rows[nnz] = t
        nnz += 1 if not abs(x[x_off + t]) < TINY or not skip else 0
    return nnz


@njit(inline="always", fastmath=FASTMATH)
def _panel_at(p, x, x_off, rows, nnz, k, w, w_off, n, c, c_off, y, y_off, relu):
    """Panel p of y = act(x @ W + c)."""
    j0 = p * PANEL
    if n - j0 >= PANEL:
        _full_panel(x, x_off, rows, nnz, w, w_off + j0 * k, PANEL, c, c_off + j0, y, y_off + j0, relu)
    else:
        _edge_panel(x, x_off, rows, nnz, w, w_off + j0 * k, n - j0, c, c_off + j0, y, y_off + j0, relu)


@njit(cache=True, fastmath=FASTMATH)
def _matvec_serial(x, x_off, k, w, w_off, n, c, c_off, y, y_off, relu, skip, rows):
    nnz = _nonzero_rows(x, x_off, k, skip, rows)
    for p in range((n + PANEL - 1) // PANEL):
        _panel_at(p, x, x_off, rows, nnz, k, w, w_off, n, c, c_off, y, y_off, relu)


@njit(cache=True, fastmath=FASTMATH, parallel=True)
def _matvec_threaded(x, x_off, k, w, w_off, n, c, c_off, y, y_off, relu, skip, rows, threads):
    nnz = _nonzero_rows(x, x_off, k, skip, rows)
    panels = (n + PANEL - 1) // PANEL
    for part in prange(threads):  # each thread the same panels every frame: its share of the weights stays cached
        for p in range(part * panels // threads, (part + 1) * panels // threads):
            _panel_at(p, x, x_off, rows, nnz, k, w, w_off, n, c, c_off, y, y_off, relu)


@njit(inline="always", fastmath=FASTMATH)
def matvec(x, x_off, k, w, w_off, n, c, c_off, y, y_off, relu, work):
    """y = act(x @ W + c) for a packed (k, n) matrix W; ``work`` = (skip zero rows, threads, int64
    scratch of k entries)."""
    skip, threads, rows = work
    # typed, not literal, arguments: one compiled product for every call site
    _product(x, np.int64(x_off), np.int64(k), w, np.int64(w_off), np.int64(n), c, np.int64(c_off), y,
             np.int64(y_off), np.int64(relu), skip, rows, threads)


@njit(cache=True, fastmath=FASTMATH)
def _product(x, x_off, k, w, w_off, n, c, c_off, y, y_off, relu, skip, rows, threads):
    """``matvec`` on one thread, or (``threads`` > 1, a large product) on ``threads`` threads; threads
    None compiles the single-threaded product only (the threaded one costs seconds of cold compile)."""
    if threads is None:
        _matvec_serial(x, x_off, k, w, w_off, n, c, c_off, y, y_off, relu, skip, rows)
    elif threads > 1 and k * n >= THREAD_MIN and n > PANEL:
        _matvec_threaded(x, x_off, k, w, w_off, n, c, c_off, y, y_off, relu, skip, rows, threads)
    else:
        _matvec_serial(x, x_off, k, w, w_off, n, c, c_off, y, y_off, relu, skip, rows)


@njit(inline="always", fastmath=FASTMATH)
def _lif(pre, p_off, v, v_off, out, o_off, n, tau, threshold, soft, out_gate, state_gate):
    """LIF step of n neurons: v (in place, times state_gate) and spikes (times out_gate) from pre."""
    for j in range(n):
        vj = v[v_off + j]
        v1 = vj + (pre[p_off + j] - vj) / tau
        fire = v1 >= threshold
        after = v1 - threshold if soft else np.float32(0.0)
        v[v_off + j] = (after if fire else v1) * state_gate
        out[o_off + j] = (np.float32(1.0) if fire else np.float32(0.0)) * out_gate


@njit(cache=True, fastmath=FASTMATH)
def step(x, state, w, scratch, rows, logits, plan, params):
    """One frame (see ``frame``) on one thread."""
    frame(x, state, w, scratch, rows, logits, plan, params, None)


@njit(cache=True, fastmath=FASTMATH)
def step_threaded(x, state, w, scratch, rows, logits, plan, params):
    """One frame (see ``frame``), large products on plan[P_THREADS] threads."""
    frame(x, state, w, scratch, rows, logits, plan, params, plan[P_THREADS])


@njit(cache=True, fastmath=FASTMATH)
def frame(x, state, w, scratch, rows, logits, plan, params, threads):
    """One frame for every stream: x (N * c_in), logits (N * classes) flat; states updated in place;
    work space: scratch float32 of at least 3 max(c_in, dim) + 11 dim + LANES + 2 order + classes
    entries, rows int64 of max(3 max(c_in, dim), 4 dim, order).
    params (float32): tau, threshold, 1, 0 and 1 - delay."""
    batch, c_in, dim, order, classes = plan[P_BATCH], plan[P_CIN], plan[P_DIM], plan[P_ORDER], plan[P_CLASSES]
    n_embed, spiking, soft, delay = plan[P_NEMBED], plan[P_SPIKING], plan[P_SOFT], plan[P_DELAY]
    tau, threshold, one, zero, lag = params[0], params[1], params[2], params[3], params[4]
    work = (plan[P_SKIP] != 0, threads, rows)  # how products run (see matvec)
    frames = state[plan[S_FRAMES]]
    late = one if delay == 0 or frames >= n_embed else zero
    inv_seen = one / (frames + one if delay == 0 else max(frames + lag, one))  # the plan's Div, as fastmath does it
    wide = 3 * max(c_in, dim)
    sc_win, sc_z = 0, wide
    sc_pre, sc_act = sc_z + dim, sc_z + 5 * dim
    sc_u = sc_act + 4 * dim
    sc_ub = sc_u + LANES
    sc_mem, sc_hm = sc_ub + order, sc_ub + 2 * order
    sc_z2, sc_hs = sc_hm + dim, sc_hm + 2 * dim
    for b in range(batch):
        src, src_off = x, b * c_in
        for i in range(n_embed):
            e = P_EMBED + i * E_SIZE
            width = plan[e + E_WIDTH]
            tail = plan[e + E_TAIL] + b * 2 * width
            gate = one if delay == 0 or frames >= i + 1 else zero
            for j in range(2 * width):
                scratch[sc_win + j] = state[tail + j]
            for j in range(width):
                scratch[sc_win + 2 * width + j] = src[src_off + j]
            for j in range(2 * width):
                state[tail + j] = scratch[sc_win + width + j]
            if spiking:
                matvec(scratch, sc_win, 3 * width, w, plan[e + E_W], dim, w, plan[e + E_B], scratch, sc_pre,
                       False, work)
                _lif(scratch, sc_pre, state, plan[e + E_V] + b * dim, scratch, sc_z, dim, tau, threshold, soft,
                     gate, gate)
            else:
                matvec(scratch, sc_win, 3 * width, w, plan[e + E_W], dim, w, plan[e + E_B], scratch, sc_z,
                       True, work)
                for j in range(dim):
                    scratch[sc_z + j] *= gate
            src, src_off = scratch, sc_z

        m = plan[S_M] + b * order
        matvec(scratch, sc_z, dim, w, plan[W_UW], 1, w, plan[W_UB], scratch, sc_u, False, work)
        u = scratch[sc_u]
        for j in range(order):
            scratch[sc_ub + j] = u * w[plan[W_BBAR] + j]
        matvec(state, m, order, w, plan[W_ABAR], order, scratch, sc_ub, scratch, sc_mem, False, work)
        for j in range(order):
            scratch[sc_mem + j] *= late
            state[m + j] = scratch[sc_mem + j]
        matvec(scratch, sc_mem, order, w, plan[W_HM], dim, w, plan[W_HB], scratch, sc_hm, False, work)
        if spiking:
            matvec(scratch, sc_z, dim, w, plan[W_HZ], dim, scratch, sc_hm, scratch, sc_pre, False, work)
            _lif(scratch, sc_pre, state, plan[S_LMUV] + b * dim, scratch, sc_act, dim, tau, threshold, soft,
                 one, late)
        else:
            matvec(scratch, sc_z, dim, w, plan[W_HZ], dim, scratch, sc_hm, scratch, sc_act, True, work)
        for j in range(dim):
            scratch[sc_z + j] = scratch[sc_z + j] + scratch[sc_act + j]

        if spiking:
            matvec(scratch, sc_z, dim, w, plan[W_F1], 4 * dim, w, plan[W_F1B], scratch, sc_pre, False, work)
            _lif(scratch, sc_pre, state, plan[S_MIXV] + b * 4 * dim, scratch, sc_act, 4 * dim, tau, threshold,
                 soft, one, late)
        else:
            matvec(scratch, sc_z, dim, w, plan[W_F1], 4 * dim, w, plan[W_F1B], scratch, sc_act, True, work)
        matvec(scratch, sc_act, 4 * dim, w, plan[W_F2], dim, scratch, sc_z, scratch, sc_z2, False, work)

        total = plan[S_SUM] + b * classes
        matvec(scratch, sc_z2, dim, w, plan[W_HEAD], classes, state, total, scratch, sc_hs, False, work)
        for j in range(classes):
            s = scratch[sc_hs + j]
            state[total + j] = s * late
            logits[b * classes + j] = s * inv_seen
        for j in range(classes):  # a loop of its own: no fused multiply-add, as the plan's Div then Add
            logits[b * classes + j] += w[plan[W_HEADB] + j]
    state[plan[S_FRAMES]] = frames + one


