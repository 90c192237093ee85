"""Max and average pooling of (planes, H, W) float32 arrays (NCHW with planes = N*C; NCL runs as H = 1).

Pooling windows are rectangles of taps, so both poolings are separable: a column pass reduces the H
taps of every output row into a scratch ``s`` (OH x W, whole contiguous rows whatever the stride),
then a row pass reduces the W taps of ``s`` into the output: kh + kw operations per output instead
of kh * kw. Tap t of an axis reads input ``o * stride + off[t]`` for output o, with
``off[t] = t * dilation - pad_head``; [lo[t], hi[t]) are the outputs for which that index is inside
the input (the builder computes them). The taps valid at an output form a contiguous range.

Every pass is a few calls of one primitive, ``_sweep``: m rows of n outputs at fixed strides, up to
three taps fused per loop. Interior outputs (all taps valid) are swept first, as one flat vector
across rows and whole groups of planes whenever the strides line up (stride-1 'same' columns, rows
with W == stride * OW); the outputs at the borders (taps outside the input, or sweeps that crossed
a row or plane edge) are then redone with their valid taps, a whole border row or column of the
group per call. Max propagates NaN (np.maximum semantics) and a window without taps gives -inf.
Average sums in float64 scratches and multiplies by ``inv`` = 1 / tap count per output, which
encodes count_include_pad. Max and average each get their own kernel, compiled with the reduction
as a literal.
"""
import numpy as np
from numba import literally, njit

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
def _sweep_rows(dst, dstride, src, start, sstride, offs, m, n, step, code):
    """The loops of ``_sweep``; inlined with literal steps so that the loads vectorise."""
    nt = offs.size
    if n == 1:  # one output per row (a border column): run down the rows, one tap at a time
        if nt == 0:
            for r in range(m):
                dst[r * dstride] = -np.inf if code == MAX else 0.0
            return
        a = src[start + offs[0]:]
        for r in range(m):
            dst[r * dstride] = a[r * sstride]
        for t in range(1, nt):
            a = src[start + offs[t]:]
            for r in range(m):
                dst[r * dstride] = _comb(dst[r * dstride], a[r * sstride], code)
        return
    for r in range(m):
        d = dst[r * dstride:]
        s0 = start + r * sstride
        if nt == 0:
            for k in range(n):
                d[k] = -np.inf if code == MAX else 0.0
            continue
        a = src[s0 + offs[0]:]
        if nt == 1:
            for k in range(n):
                d[k] = a[k * step]
            continue
        b = src[s0 + offs[1]:]
        if nt == 2:
            for k in range(n):
                d[k] = _comb(a[k * step], b[k * step], code)
            continue
        c = src[s0 + offs[2]:]
        for k in range(n):
            d[k] = _comb(_comb(a[k * step], b[k * step], code), c[k * step], code)
        for t in range(3, nt):
            a = src[s0 + offs[t]:]
            for k in range(n):
                d[k] = _comb(d[k], a[k * step], code)


@njit(cache=True, fastmath=FASTMATH)
def _sweep(dst, dstride, src, start, sstride, offs, m, n, step, code):
    """dst[r*dstride + k] = reduce over taps t of src[start + r*sstride + k*step + offs[t]] (r < m, k < n).

    Every index must be valid. No taps gives the identity (-inf or 0). Rows that are back to back in
    both arrays run as one long row. The first loop fuses up to three taps, later taps fold in one
    by one; ``code`` is compiled as a literal.
    """
    literally(code)
    if m > 1 and dstride == n and sstride == n * step:
        n, m = n * m, 1
    if step == 1:
        _sweep_rows(dst, dstride, src, start, sstride, offs, m, n, 1, code)
    elif step == 2:
        _sweep_rows(dst, dstride, src, start, sstride, offs, m, n, 2, code)
    else:
        _sweep_rows(dst, dstride, src, start, sstride, offs, m, n, step, code)


@njit(cache=True, fastmath=FASTMATH)
def _column_pass(x, s, group, h, oh, w, sh, offs, lo, hi, code):
    """s (group x oh x w) = reduce over the taps down the columns of x (group x h x w); ``offs`` are
    row offsets times w."""
    literally(code)
    one = np.int64(1)  # not a literal, so every _sweep call shares one compiled signature
    i0, i1 = lo.max(), max(lo.max(), hi.min())
    if i1 > i0:
        if h == sh * oh:  # output row R of the group reads input rows sh * R + off: one sweep
            _sweep(s[i0 * w:], w, x, i0 * sh * w, sh * w, offs, (group - 1) * oh + i1 - i0, w, one, code)
        else:
            for q in range(group):
                _sweep(s[(q * oh + i0) * w:], w, x, (q * h + i0 * sh) * w, sh * w, offs, i1 - i0, w, one, code)
    for i in range(oh):  # border rows of every plane (and rows a group-wide sweep read across planes)
        if i0 <= i < i1:
            continue
        ta, tb = _valid_taps(lo, hi, i)
        _sweep(s[i * w:], oh * w, x, i * sh * w, h * w, offs[ta:tb], group, w, one, code)


@njit(cache=True, fastmath=FASTMATH)
def _row_pass(s, v, w, ow, sw, offs, lo, hi, code):
    """v (rows x ow) = reduce over the taps along every row of s (rows x w), stride ``sw``."""
    literally(code)
    one = np.int64(1)  # not a literal, so every _sweep call shares one compiled signature
    rows = v.size // ow
    j0, j1 = lo.max(), max(lo.max(), hi.min())
    if j1 > j0:
        if w == sw * ow:  # output k of the flat v reads sw * k + off of the flat s: one sweep
            _sweep(v[j0:], ow, s, sw * j0, w, offs, one, rows * ow - j0 - (ow - j1), sw, code)
        else:
            _sweep(v[j0:], ow, s, sw * j0, w, offs, rows, j1 - j0, sw, code)
    for j in range(ow):  # border columns of every row (and columns a flat sweep read across rows)
        if j0 <= j < j1:
            continue
        ta, tb = _valid_taps(lo, hi, j)
        _sweep(v[j:], ow, s, sw * j, w, offs[ta:tb], rows, one, sw, code)


@njit(cache=True, fastmath=FASTMATH)
def _pool_planes(x, out, s, v, inv, planes, group, h, w, oh, ow, sh, h_off, h_lo, h_hi, sw, w_off, w_lo, w_hi, code):
    """Both passes over flat x and out, ``group`` planes at a time; ``code`` a literal."""
    literally(code)
    n_in, n_out = h * w, oh * ow
    if n_out == 0:
        return
    for p in range(0, planes, group):
        g = min(group, planes - p)
        sp = s[:g * oh * w]
        _column_pass(x[p * n_in:(p + g) * n_in], sp, g, h, oh, w, sh, h_off, h_lo, h_hi, code)
        if code == MAX:  # v is out itself
            _row_pass(sp, v[p * n_out:(p + g) * n_out], w, ow, sw, w_off, w_lo, w_hi, code)
        else:
            _row_pass(sp, v[:g * n_out], w, ow, sw, w_off, w_lo, w_hi, code)
            for q in range(g):
                o, vq = out[(p + q) * n_out:], v[q * n_out:]
                for k in range(n_out):
                    o[k] = vq[k] * inv[k]


def _pooling(code: int):
    """The any-rank kernel of pooling ``code`` (a closure over an int keeps numba's cache key stable)."""

    @njit(cache=True, fastmath=FASTMATH)
    def kernel(x, out, s, v, inv, planes, group, h, w, oh, ow, sh, h_off, h_lo, h_hi, sw, w_off, w_lo, w_hi):
        """out[p, i, j] = reduce over valid taps (a, b) of x[p, i*sh + h_off[a]/w, j*sw + w_off[b]].

        ``h_off`` arrives multiplied by ``w`` (flat row offsets). Planes run ``group`` at a time.
        MAX: NaN-propagating max, ``s`` a float32 scratch of group*oh*w, ``v`` is ``out`` itself.
        AVG: sum times ``inv[i*ow + j]``, with float64 scratches ``s`` (group*oh*w) and ``v`` (group*oh*ow).
        """
        _pool_planes(x.reshape(-1), out.reshape(-1), s, v.reshape(-1), inv, planes, group, h, w, oh, ow,
                     sh, h_off, h_lo, h_hi, sw, w_off, w_lo, w_hi, code)

    return kernel


POOL = {MAX: _pooling(MAX), AVG: _pooling(AVG)}
