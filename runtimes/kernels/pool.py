"""Max and average pooling of (planes, H, W) float32 arrays (NCHW with planes = N*C; NCL runs as H = 1).

Pooling windows are rectangles of taps, so both poolings are separable: a column pass reduces the H
taps of every output row into a scratch ``s`` (OH x W, whole contiguous rows whatever the stride),
then a row pass reduces the W taps of ``s`` into the output: kh + kw operations per output instead
of kh * kw. Tap t of an axis reads input ``o * stride + off[t]`` for output o, with
``off[t] = t * dilation - pad_head``; [lo[t], hi[t]) are the outputs for which that index is inside
the input (the builder computes them). The taps valid at an output form a contiguous range.

Speed comes from long vector loops: interior outputs (all taps valid) are swept flat across rows,
and across whole groups of planes when the layout allows it (stride 1 'same' columns; rows with
W == stride * OW), up to three taps fused per sweep. The few border outputs those sweeps got wrong
(their taps crossed a row or plane edge) are then recomputed from their valid taps only. Max
propagates NaN (np.maximum semantics) and a window without taps gives -inf. Average sums in float64
scratches and multiplies by ``inv`` = 1 / tap count per output, which encodes count_include_pad.
"""
import numpy as np
from numba import njit

from . import FASTMATH

MAX, AVG = 0, 1


@njit(inline="always", fastmath=FASTMATH)
def _comb(a, b, code):
    """Fold b into a: NaN-propagating max, or sum."""
    if code == MAX:
        m = b if b > a else a
        return b if b != b else m
    return a + b


@njit(inline="always", fastmath=FASTMATH)
def _identity(code):
    return -np.inf if code == MAX else 0.0


@njit(inline="always", fastmath=FASTMATH)
def _valid_taps(lo, hi, o):
    """The range [ta, tb) of taps whose input index is inside the axis at output o."""
    ta = 0
    while ta < lo.size and not lo[ta] <= o < hi[ta]:
        ta += 1
    tb = ta
    while tb < lo.size and lo[tb] <= o < hi[tb]:
        tb += 1
    return ta, tb


@njit(inline="always", fastmath=FASTMATH)
def _sweep_body(dst, src, start, offs, n, step, code):
    """The loops of ``_sweep``; inlined with a literal unit step so that they vectorise."""
    nt = offs.size
    if nt == 0:
        for k in range(n):
            dst[k] = _identity(code)
        return
    a = src[start + offs[0]:]
    if nt == 1:
        for k in range(n):
            dst[k] = a[k * step]
        return
    b = src[start + offs[1]:]
    if nt == 2:
        for k in range(n):
            dst[k] = _comb(a[k * step], b[k * step], code)
        return
    c = src[start + offs[2]:]
    for k in range(n):
        dst[k] = _comb(_comb(a[k * step], b[k * step], code), c[k * step], code)
    for t in range(3, nt, 2):
        a = src[start + offs[t]:]
        if t + 1 == nt:
            for k in range(n):
                dst[k] = _comb(dst[k], a[k * step], code)
        else:
            b = src[start + offs[t + 1]:]
            for k in range(n):
                dst[k] = _comb(_comb(dst[k], a[k * step], code), b[k * step], code)


@njit(cache=True, fastmath=FASTMATH)
def _sweep(dst, src, start, offs, n, step, code):
    """dst[k] = reduce over taps t of src[start + k * step + offs[t]] for k < n (every index valid).

    The first loop fuses up to three taps, each further loop folds two more into dst; no taps fills
    dst with the identity.
    """
    if step == 1:
        _sweep_body(dst, src, start, offs, n, 1, code)
    else:
        _sweep_body(dst, src, start, offs, n, step, code)


@njit(cache=True, fastmath=FASTMATH)
def _column_pass(x, s, group, h, oh, w, sh, offs, lo, hi, code):
    """s (group x oh x w) = reduce over the taps down the columns of x (group x h x w).

    ``offs`` are row offsets times w. With stride 1 and oh == h the interior rows of the whole group
    are one flat sweep, after which the border rows of every plane are redone.
    """
    i0, i1 = lo.max(), max(lo.max(), hi.min())
    flat = sh == 1 and oh == h
    if flat and i1 > i0:
        _sweep(s[i0 * w:], x, i0 * w, offs, ((group - 1) * h + i1 - i0) * w, 1, code)
    for q in range(group):
        for i in range(oh):
            if flat and i0 <= i < i1:
                continue
            ta, tb = _valid_taps(lo, hi, i)
            _sweep(s[(q * oh + i) * w:], x, (q * h + i * sh) * w, offs[ta:tb], w, 1, code)


@njit(cache=True, fastmath=FASTMATH)
def _row_pass(s, v, w, ow, sw, offs, lo, hi, code):
    """v (rows x ow) = reduce over the taps along every row of s (rows x w), stride ``sw``."""
    rows = v.size // ow
    j0, j1 = lo.max(), max(lo.max(), hi.min())
    if j1 > j0:
        if w == sw * ow:  # row r of v maps to row r of s with the same stride: one flat sweep
            _sweep(v[j0:], s, sw * j0, offs, rows * ow - j0 - (ow - j1), sw, code)
        else:
            for r in range(rows):
                _sweep(v[r * ow + j0:], s, r * w + sw * j0, offs, j1 - j0, sw, code)
    for j in range(ow):  # border columns, down all rows at once (their valid taps never change)
        if j0 <= j < j1:
            continue
        ta, tb = _valid_taps(lo, hi, j)
        col = v[j:]
        if ta == tb:
            for r in range(rows):
                col[r * ow] = _identity(code)
            continue
        a = s[sw * j + offs[ta]:]
        for r in range(rows):
            col[r * ow] = a[r * w]
        for t in range(ta + 1, tb):
            a = s[sw * j + offs[t]:]
            for r in range(rows):
                col[r * ow] = _comb(col[r * ow], a[r * w], code)


@njit(cache=True, fastmath=FASTMATH)
def pool2d(x, out, s, v, inv, code, planes, group, h, w, oh, ow, sh, h_off, h_lo, h_hi, sw, w_off, w_lo, w_hi):
    """out[p, i, j] = reduce over valid taps (a, b) of x[p, i*sh + h_off[a]/w, j*sw + w_off[b]].

    ``h_off`` arrives multiplied by ``w`` (flat row offsets). Planes run ``group`` at a time.
    MAX: NaN-propagating max, ``s`` a float32 scratch of group*oh*w, ``v`` unused (pass out).
    AVG: sum times ``inv[i*ow + j]``, with float64 scratches ``s`` (group*oh*w) and ``v`` (group*oh*ow).
    """
    xf = x.reshape(-1)
    of = out.reshape(-1)
    vf = v.reshape(-1)
    n_in, n_out = h * w, oh * ow
    if n_out == 0:
        return
    for p in range(0, planes, group):
        g = min(group, planes - p)
        xp, sp = xf[p * n_in:(p + g) * n_in], s[:g * oh * w]
        _column_pass(xp, sp, g, h, oh, w, sh, h_off, h_lo, h_hi, code)
        if code == MAX:
            _row_pass(sp, of[p * n_out:(p + g) * n_out], w, ow, sw, w_off, w_lo, w_hi, code)
        else:
            _row_pass(sp, vf[:g * n_out], w, ow, sw, w_off, w_lo, w_hi, code)
            for q in range(g):
                o, vq = of[(p + q) * n_out:], vf[q * n_out:]
                for k in range(n_out):
                    o[k] = vq[k] * inv[k]
