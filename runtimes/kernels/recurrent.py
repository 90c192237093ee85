"""Recurrent layers (ONNX LSTM, GRU, RNN) in float32, one kernel for the three.

Layouts (ONNX): X is (S, B, I) for layout 0 or (B, S, I) for layout 1; Y is (S, D, B, H) or
(B, S, D, H); initial and final states are (D, B, H) or (B, D, H). D is 2 for bidirectional (the
second direction runs in reverse), G the gates per step (LSTM 4: i, o, f, c; GRU 3: z, r, h; RNN 1).

Math. The input projection of every step and direction is one product over X's rows,
XW = X @ W'^T + bias (W' packed as (I, D * G * H), bias = Wb + Rb where it may be folded). The
recurrence then runs per direction and step t on the batch rows: gates = H @ R'^T (R' packed as
(H, G * H)) plus XW's rows of step t, and the elementwise cell:
  LSTM: i = f(g_i + P_i C), f = f(g_f + P_f C) (1 - i with input_forget), c = g(g_c),
        C' = f C + i c, o = f(g_o + P_o C'), H' = o h(C')
  GRU:  z = f(g_z), r = f(g_r), h = g(x_h + (r H) @ Rh^T + Rb_h) (linear_before_reset 0) or
        g(x_h + r (H @ Rh^T + Rb_h)) (1), H' = (1 - z) h + z H
  RNN:  H' = f(g)
with every pre-activation clipped to [-clip, clip] when clip is set. Sigmoid and Tanh run on the
shared ``exp32`` and ``tanh32`` (vectorised; within 3e-7 of exact, as onnxruntime's own approximations
are), the other activations on libm. With the default activations (LSTM Sigmoid, Tanh, Tanh; GRU
Sigmoid, Tanh; RNN Tanh) a row's cell is one vectorised pass (``_lstm_row``, ``_gru_row``,
``_rnn_row``: the gates stay in registers from pre-activation to state); other activations run
stage by stage, one loop per stage dispatched on its code. A batch row b is active at steps
t < lens[b] (read in reverse order by a reverse direction): inactive steps write zeros to Y and keep
the state; a row of length 0 ends with zero final states, as onnxruntime does.

``plan`` (int64) holds the sizes, flags and offsets below, the activation codes (three per
direction), then the row offsets of W' and of R' for gemm's ``matmul_tiles``; ``params`` (float32)
holds clip then (alpha, beta) per activation. ``packed`` holds W', R', the projection bias, GRU's
Rb_h and the peepholes, packed once by ``pack_weights`` (at build time when they are constants, else
at each call); ``work`` holds XW, the gates, the states and GRU's r * H.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import FASTMATH, KernelInputError
from .activation import RELU, SIGMOID, TANH, activate, tanh32
from .elementwise import exp32
from .gemm import matmul_tiles
from .simd import flat

LSTM, GRU, RNN = range(3)
AFFINE, SCALED_TANH, THRESHOLDED_RELU, ELU, SOFTSIGN, SOFTPLUS = range(100, 106)
"""Activation codes of the recurrent ops beyond activation.py's (which the others use)."""

# plan fields
(KIND, SEQ, BATCH, INPUT, HIDDEN, DIRS, LAYOUT, REVERSE, WANT_Y, PACK, HAS_CLIP, PEEP, FLAG,
 WT, RT, BX, RBH, PW, XW, GATES, STATE_H, STATE_C, RH, HEAD) = range(24)
ACTS = HEAD
"""Activation codes start here: three per direction (f, g, h), then W' and R' row offsets."""


ONE = np.float32(1.0)


@njit(forceinline=True, fastmath=FASTMATH, error_model="numpy", cache=True)
def _sigmoid(v):
    """Sigmoid on ``exp32``, typed once and inlined by LLVM where called (inlined by Numba, each of the
    fused rows' calls would be typed anew: 10 more CPU s of cold compile), so their loops still vectorise."""
    return ONE / (ONE + exp32(-v))


@njit(forceinline=True, fastmath=FASTMATH, cache=True)
def _tanh(v):
    """``tanh32`` typed once and inlined by LLVM where called (as ``_sigmoid``)."""
    return tanh32(v)


@njit(inline="always", fastmath=FASTMATH)
def _act(v, code, alpha, beta):
    """Activation ``code`` of the scalar v (activation.py's codes and the six above)."""
    if code < AFFINE:
        return activate(v, code, alpha, beta)
    if code == AFFINE:
        return alpha * v + beta
    if code == SCALED_TANH:
        return alpha * math.tanh(beta * v)
    if code == THRESHOLDED_RELU:
        return v if v > alpha else 0.0
    if code == ELU:
        return v if v >= 0.0 else alpha * (math.exp(v) - 1.0)
    if code == SOFTSIGN:
        return v / (1.0 + abs(v))
    return math.log(1.0 + math.exp(v))  # SOFTPLUS


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _apply(a, off, n, code, alpha, beta):
    """a[off:off + n] = act(a[off:off + n]) in place. The code is dispatched outside the loops, so
    Sigmoid and Tanh (on exp32 and tanh32) and Relu vectorise (numpy's error model: Python's check of
    division by zero keeps a loop with a division scalar)."""
    v = a[off:off + n]
    if code == SIGMOID:
        for j in range(n):
            v[j] = _sigmoid(v[j])
    elif code == TANH:
        for j in range(n):
            v[j] = _tanh(v[j])
    elif code == RELU:
        for j in range(n):
            v[j] = activate(v[j], RELU, alpha, beta)
    else:
        for j in range(n):
            v[j] = _act(v[j], code, alpha, beta)


@njit(inline="always", fastmath=FASTMATH)
def _clip(a, off, n, has_clip, clip):
    """Clip a[off:off + n] to [-clip, clip] in place when ``has_clip`` (NaN kept)."""
    if has_clip:
        v = a[off:off + n]
        for j in range(n):
            x = v[j]
            v[j] = -clip if x < -clip else clip if x > clip else x


@njit(cache=True, fastmath=FASTMATH)
def pack_weights(w, r, b, p, packed, plan):
    """Pack W (D, G*H, I), R (D, G*H, H), B (D, 2*G*H) and P (D, 3*H) into ``packed`` (see module).

    An absent B or P is given as zeros. GRU with linear_before_reset keeps Rb_h apart (it is scaled
    by r); everywhere else Wb + Rb is the projection's bias."""
    kind, hid, dirs, inp = plan[KIND], plan[HIDDEN], plan[DIRS], plan[INPUT]
    gh = w.shape[1]
    dgh = dirs * gh
    split = kind == GRU and plan[FLAG] != 0
    for d in range(dirs):
        for j in range(gh):
            for i in range(inp):
                packed[plan[WT] + i * dgh + d * gh + j] = w[d, j, i]
            for k in range(hid):
                packed[plan[RT] + d * hid * gh + k * gh + j] = r[d, j, k]
            keep_rb = split and j >= 2 * hid
            packed[plan[BX] + d * gh + j] = b[d, j] + (0.0 if keep_rb else b[d, gh + j])
        for j in range(hid):
            packed[plan[RBH] + d * hid + j] = b[d, gh + 2 * hid + j] if split else 0.0
        for j in range(3 * hid):
            packed[plan[PW] + d * 3 * hid + j] = p[d, j] if plan[PEEP] else 0.0


@njit(inline="always")
def _state_at(layout, d, b, dirs, batch, hid):
    """Offset of row (direction d, batch b) of a (D, B, H) or (B, D, H) state."""
    return (d * batch + b) * hid if layout == 0 else (b * dirs + d) * hid


@njit(inline="always", fastmath=FASTMATH)
def _lstm_cell(wk, g, xr, hp, cp, pk, pw, hid, peep, input_forget, has_clip, clip, cf, af, bf, cg, ag, bg, ch, ah, bh):
    """One LSTM row: gates i, o, f, c at wk[g:], their X projection at wk[xr:], H and C at wk[hp:] and
    wk[cp:] (updated in place), peepholes i, o, f at pk[pw:]. Each stage is a loop of its own, so the
    activations vectorise; h(C') is computed in the c gate's place."""
    for j in range(4 * hid):
        wk[g + j] += wk[xr + j]
    if peep:
        for j in range(hid):
            wk[g + j] += pk[pw + j] * wk[cp + j]
            wk[g + 2 * hid + j] += pk[pw + 2 * hid + j] * wk[cp + j]
    _clip(wk, g, hid, has_clip, clip)
    _clip(wk, g + 2 * hid, 2 * hid, has_clip, clip)
    _apply(wk, g, hid, cf, af, bf)
    if input_forget:
        for j in range(hid):
            wk[g + 2 * hid + j] = ONE - wk[g + j]
    else:
        _apply(wk, g + 2 * hid, hid, cf, af, bf)
    _apply(wk, g + 3 * hid, hid, cg, ag, bg)
    for j in range(hid):
        c_new = wk[g + 2 * hid + j] * wk[cp + j] + wk[g + j] * wk[g + 3 * hid + j]
        wk[cp + j] = c_new
        wk[g + 3 * hid + j] = c_new
    if peep:
        for j in range(hid):
            wk[g + hid + j] += pk[pw + hid + j] * wk[cp + j]
    _clip(wk, g + hid, hid, has_clip, clip)
    _apply(wk, g + hid, hid, cf, af, bf)
    _apply(wk, g + 3 * hid, hid, ch, ah, bh)
    for j in range(hid):
        wk[hp + j] = wk[g + hid + j] * wk[g + 3 * hid + j]


@njit(inline="always", fastmath=FASTMATH)
def _gru_cell(wk, g, xr, hp, pk, rb, hid, linear_before_reset, has_clip, clip, cg, ag, bg):
    """One GRU row after its z and r: gates z, r (activated), h (H @ Rh^T or (r H) @ Rh^T) at wk[g:],
    the X projection at wk[xr:], H at wk[hp:] (updated in place), Rb_h at pk[rb:]."""
    gh_at = g + 2 * hid
    if linear_before_reset:
        for j in range(hid):
            wk[gh_at + j] = wk[xr + 2 * hid + j] + wk[g + hid + j] * (wk[gh_at + j] + pk[rb + j])
    else:
        for j in range(hid):
            wk[gh_at + j] += wk[xr + 2 * hid + j]
    _clip(wk, gh_at, hid, has_clip, clip)
    _apply(wk, gh_at, hid, cg, ag, bg)
    for j in range(hid):
        z = wk[g + j]
        wk[hp + j] = (ONE - z) * wk[gh_at + j] + z * wk[hp + j]


@njit(inline="always", fastmath=FASTMATH)
def _bound(v, clip):
    """v clipped to [-clip, clip]; clip is inf when the op sets none (NaN kept)."""
    return -clip if v < -clip else clip if v > clip else v


@njit(inline="always", fastmath=FASTMATH)
def _lstm_row(g, x, c, h, p, hid, peep, input_forget, clip):
    """One LSTM row with the default activations (Sigmoid, Tanh, Tanh) in a single vectorised pass:
    gates i, o, f, c of H @ R'^T in g, of the X projection in x, states c and h (updated in place),
    peepholes i, o, f in p (added only when ``peep``: a select, not a branch, so the loop vectorises)."""
    h2, h3 = 2 * hid, 3 * hid
    for j in range(hid):
        cj = c[j]
        gi = g[j] + x[j]
        gf = g[h2 + j] + x[h2 + j]
        gi = gi + p[j] * cj if peep else gi
        gf = gf + p[h2 + j] * cj if peep else gf
        i = _sigmoid(_bound(gi, clip))
        f = ONE - i if input_forget else _sigmoid(_bound(gf, clip))
        cn = f * cj + i * _tanh(_bound(g[h3 + j] + x[h3 + j], clip))
        go = g[hid + j] + x[hid + j]
        go = go + p[hid + j] * cn if peep else go
        c[j] = cn
        h[j] = _sigmoid(_bound(go, clip)) * _tanh(cn)


@njit(inline="always", fastmath=FASTMATH)
def _gru_zr(g, x, h, rh, hid, clip):
    """GRU (Sigmoid, Tanh) without linear_before_reset, first pass: z and r from g (H @ R'^T) and x
    (the X projection) kept in g, and r * H in rh for the h gate's product."""
    for j in range(hid):
        g[j] = _sigmoid(_bound(g[j] + x[j], clip))
        rh[j] = _sigmoid(_bound(g[hid + j] + x[hid + j], clip)) * h[j]


@njit(inline="always", fastmath=FASTMATH)
def _gru_row(g, x, h, rb, hid, linear_before_reset, clip):
    """One GRU row with the default activations (Sigmoid, Tanh) in a single vectorised pass. With
    linear_before_reset, g holds H @ R'^T (z, r, h) and rb Rb_h; without, g holds the activated z
    (``_gru_zr``) and (r H) @ Rh^T in the h gate. x is the X projection, h the state (updated)."""
    h2 = 2 * hid
    if linear_before_reset:
        for j in range(hid):
            z = _sigmoid(_bound(g[j] + x[j], clip))
            r = _sigmoid(_bound(g[hid + j] + x[hid + j], clip))
            hh = _tanh(_bound(x[h2 + j] + r * (g[h2 + j] + rb[j]), clip))
            h[j] = (ONE - z) * hh + z * h[j]
    else:
        for j in range(hid):
            z = g[j]
            hh = _tanh(_bound(g[h2 + j] + x[h2 + j], clip))
            h[j] = (ONE - z) * hh + z * h[j]


@njit(inline="always", fastmath=FASTMATH)
def _rnn_row(g, x, h, hid, clip):
    """One RNN row with Tanh: H' = tanh(g + x) (g = H @ R'^T, x the X projection) into h."""
    for j in range(hid):
        h[j] = _tanh(_bound(g[j] + x[j], clip))


@njit(inline="always")
def _xw_row(layout, t, b, seq, batch):
    """Row of XW (and of X) holding step t of batch row b."""
    return t * batch + b if layout == 0 else b * seq + t


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", _nrt=False)
def recurrent_kernel(x, w, r, b, p, lens, h0, c0, y, yh, yc, packed, work, plan, params):
    """ONNX LSTM / GRU / RNN over the whole sequence (see module); w, r, b, p are read only when
    plan[PACK] asks to pack at this call."""
    kind, seq, batch, inp, hid, dirs = plan[KIND], plan[SEQ], plan[BATCH], plan[INPUT], plan[HIDDEN], plan[DIRS]
    layout, want_y, has_clip, peep, flag = plan[LAYOUT], plan[WANT_Y], plan[HAS_CLIP], plan[PEEP], plan[FLAG]
    for bi in range(batch):
        if lens[bi] < 0 or lens[bi] > seq:
            raise KernelInputError("sequence_lens values must lie in [0, seq_length]")
    if plan[PACK]:
        pack_weights(w, r, b, p, packed, plan)
    gates = 4 if kind == LSTM else 3 if kind == GRU else 1
    gh = gates * hid
    dgh = dirs * gh
    clip = params[0]
    bound = clip if has_clip else np.float32(np.inf)
    zero, one = np.int64(0), np.int64(1)
    fzero, fone = np.float32(0.0), np.float32(1.0)
    wt_offs = plan[ACTS + 3 * dirs: ACTS + 3 * dirs + inp]
    rt_offs = plan[ACTS + 3 * dirs + inp: ACTS + 3 * dirs + inp + hid]
    wk = flat(work)
    pk = flat(packed)
    xw, g0, hs, cs, rh = plan[XW], plan[GATES], plan[STATE_H], plan[STATE_C], plan[RH]
    matmul_tiles(flat(x), zero, inp, one, pk, wt_offs, plan[WT], pk, plan[BX], zero, one, fone,
                 wk, xw, dgh, seq * batch, dgh, inp, fone)
    h0f, c0f, yf, yhf, ycf = flat(h0), flat(c0), flat(y), flat(yh), flat(yc)
    for d in range(dirs):
        for bi in range(batch):
            src = _state_at(layout, d, bi, dirs, batch, hid)
            dst = (d * batch + bi) * hid
            for j in range(hid):
                wk[hs + dst + j] = h0f[src + j]
                if kind == LSTM:
                    wk[cs + dst + j] = c0f[src + j]
    for d in range(dirs):
        reverse = d == 1 or plan[REVERSE] != 0
        a = 3 * d
        cf, cg, ch = plan[ACTS + a], plan[ACTS + a + 1], plan[ACTS + a + 2]
        af, bf = params[1 + 2 * a], params[2 + 2 * a]
        ag, bg = params[3 + 2 * a], params[4 + 2 * a]
        ah, bh = params[5 + 2 * a], params[6 + 2 * a]
        r_at = plan[RT] + d * hid * gh
        h_at = hs + d * batch * hid
        c_at = cs + d * batch * hid
        first = gh if kind != GRU or flag != 0 else 2 * hid
        fast = cf == TANH if kind == RNN else cf == SIGMOID and cg == TANH and (ch == TANH or kind == GRU)
        for s in range(seq):
            t = seq - 1 - s if reverse else s
            matmul_tiles(wk, h_at, hid, one, pk, rt_offs, r_at, wk, zero, zero, zero, fzero,
                         wk, g0, gh, batch, first, hid, fone)
            if kind == GRU and not (fast and flag != 0):
                for bi in range(batch):  # z and r (kept in the gates), and r * H
                    g = g0 + bi * gh
                    xr = xw + _xw_row(layout, t, bi, seq, batch) * dgh + d * gh
                    hp = h_at + bi * hid
                    if fast:
                        _gru_zr(wk[g:g + gh], wk[xr:xr + gh], wk[hp:hp + hid], wk[rh + bi * hid:rh + (bi + 1) * hid],
                                hid, bound)
                        continue
                    for j in range(2 * hid):
                        wk[g + j] += wk[xr + j]
                    _clip(wk, g, 2 * hid, has_clip, clip)
                    _apply(wk, g, 2 * hid, cf, af, bf)
                    for j in range(hid):
                        wk[rh + bi * hid + j] = wk[g + hid + j] * wk[hp + j]
                if flag == 0:
                    matmul_tiles(wk, rh, hid, one, pk, rt_offs, r_at + 2 * hid, wk, zero, zero, zero, fzero,
                                 wk, g0 + 2 * hid, gh, batch, hid, hid, fone)
            for bi in range(batch):
                yo = ((t * dirs + d) * batch + bi) * hid if layout == 0 else ((bi * seq + t) * dirs + d) * hid
                if t >= lens[bi]:
                    if want_y:
                        for j in range(hid):
                            yf[yo + j] = 0.0
                    continue
                g = g0 + bi * gh
                xr = xw + _xw_row(layout, t, bi, seq, batch) * dgh + d * gh
                hp = h_at + bi * hid
                if fast and kind == LSTM:
                    pw = plan[PW] + d * 3 * hid
                    cp = c_at + bi * hid
                    _lstm_row(wk[g:g + gh], wk[xr:xr + gh], wk[cp:cp + hid], wk[hp:hp + hid], pk[pw:pw + 3 * hid], hid,
                              peep, flag, bound)
                elif fast and kind == RNN:
                    _rnn_row(wk[g:g + gh], wk[xr:xr + gh], wk[hp:hp + hid], hid, bound)
                elif fast:
                    rb = plan[RBH] + d * hid
                    _gru_row(wk[g:g + gh], wk[xr:xr + gh], wk[hp:hp + hid], pk[rb:rb + hid], hid, flag, bound)
                elif kind == LSTM:
                    _lstm_cell(wk, g, xr, hp, c_at + bi * hid, pk, plan[PW] + d * 3 * hid, hid, peep, flag,
                               has_clip, clip, cf, af, bf, cg, ag, bg, ch, ah, bh)
                elif kind == GRU:
                    _gru_cell(wk, g, xr, hp, pk, plan[RBH] + d * hid, hid, flag, has_clip, clip, cg, ag, bg)
                else:
                    for j in range(hid):
                        wk[g + j] += wk[xr + j]
                    _clip(wk, g, hid, has_clip, clip)
                    _apply(wk, g, hid, cf, af, bf)
                    for j in range(hid):
                        wk[hp + j] = wk[g + j]
                if want_y:
                    for j in range(hid):
                        yf[yo + j] = wk[hp + j]
    for d in range(dirs):
        for bi in range(batch):
            dst = _state_at(layout, d, bi, dirs, batch, hid)
            src = (d * batch + bi) * hid
            empty = lens[bi] == 0
            for j in range(hid):
                yhf[dst + j] = 0.0 if empty else wk[hs + src + j]
                if kind == LSTM:
                    ycf[dst + j] = 0.0 if empty else wk[cs + src + j]
