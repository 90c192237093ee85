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

Stride-1 'same' pools (output size = input size, the parameter-free block's 3x3 pool) take their
own kernels, SAME_POOL: the row pass sweeps the group flat, the column pass either flat with its
border rows redone (windows that fit the plane) or per plane from a scratch whose planes sit behind
rows of the reduction's identity (no border fixes at all), and a fused BN/activation epilogue runs
on each group while it is in L1.
"""
import numpy as np
from numba import literally, njit

from . import FASTMATH
from .activation import CLIP, RELU, activate, activate_rows

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


@njit(inline="always", fastmath=FASTMATH)
def _column(dst, dstride, src, start, sstride, offs, m, code):
    """``_sweep`` with one output per row."""
    if offs.size == 0:
        for r in range(m):
            dst[r * dstride] = -np.inf if code == MAX else 0.0
        return
    a = src[start + offs[0]:]
    for r in range(m):
        dst[r * dstride] = a[r * sstride]
    for t in range(1, offs.size):
        a = src[start + offs[t]:]
        for r in range(m):
            dst[r * dstride] = _comb(dst[r * dstride], a[r * sstride], code)


@njit(cache=True, fastmath=FASTMATH)
def _sweep(dst, dstride, src, start, sstride, offs, m, n, step, code):
    """dst[r*dstride + k] = reduce over taps t of src[start + r*sstride + k*step + offs[t]] (r < m, k < n).

    Every index must be valid. No taps gives the identity (-inf or 0). Rows that are back to back in
    both arrays run as one long row. The first loop fuses up to three taps, later taps fold in one
    by one; ``code`` is compiled as a literal.
    """
    literally(code)
    if n == 1:  # one output per row (a border column): run down the rows, one tap at a time
        _column(dst, dstride, src, start, sstride, offs, m, code)
        return
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


# Stride-1 'same' fast path (the parameter-free block's pool): output size = input size, no dilation,
# an optional fused epilogue (BN folded to scale/shift, then an activation).


@njit(inline="always", fastmath=FASTMATH)
def _identity(code):
    return -np.inf if code == MAX else 0.0


@njit(inline="always", fastmath=FASTMATH)
def _fold(a, b, code):
    """Fold b into a: NaN-propagating max, or a float64 sum (the same-path average's accumulator)."""
    if code == MAX:
        return _comb(a, b, MAX)
    return np.float64(a) + b

@njit(inline="always", fastmath=FASTMATH)
def _same_taps(dst, src, first, step, nt, n, code):
    """dst[k] = reduce over taps t < nt of src[first + k + t * step], for k < n (every index valid)."""
    a = src[first:]
    if nt == 1:
        for k in range(n):
            dst[k] = a[k]
        return
    b = src[first + step:]
    if nt == 2:
        for k in range(n):
            dst[k] = _fold(a[k], b[k], code)
        return
    c = src[first + 2 * step:]
    for k in range(n):
        dst[k] = _fold(_fold(a[k], b[k], code), c[k], code)
    for t in range(3, nt):
        a = src[first + t * step:]
        for k in range(n):
            dst[k] = _fold(dst[k], a[k], code)


@njit(inline="always", fastmath=FASTMATH)
def _border_column(dst, d0, x, x0, j, w, h, kw, pw, code):
    """dst[d0 + r*w + j] = reduce over the taps of column j that fall inside the row, for the h rows at x0."""
    lo, hi = max(0, pw - j), min(kw, w - j + pw)
    for r in range(h):
        base = x0 + r * w + j - pw
        acc = _identity(code)
        for t in range(kw):  # a constant trip count for the literal 3x3 window: unrolled, branch-free
            if lo <= t < hi:
                acc = _fold(acc, x[base + t], code)
        dst[d0 + r * w + j] = acc


@njit(inline="always", fastmath=FASTMATH)
def _edge_columns(dst, d0, x, x0, w, h, kw, pw, code):
    """The border columns of the row pass when w >= kw: head column e reduces taps [pw - e, kw) of its
    row, tail column w - 1 - e taps [0, pw + 1 + e); constant ranges for a literal window."""
    tail = kw - 1 - pw
    for r in range(h):
        xb, db = x0 + r * w, d0 + r * w
        for e in range(pw):
            acc = x[xb]
            for t in range(1, kw - pw + e):
                acc = _fold(acc, x[xb + t], code)
            dst[db + e] = acc
        for e in range(tail):
            last = xb + w - 1
            acc = x[last]
            for t in range(1, pw + 1 + e):
                acc = _fold(acc, x[last - t], code)
            dst[db + w - 1 - e] = acc


@njit(inline="always", fastmath=FASTMATH)
def _same_planes(x, s, out, g, h, w, kh, kw, ph, pw, code):
    """Pool g planes (flat in x and out) with a stride-1 'same' window.

    Row pass into the scratch s, which holds every plane behind ``pad`` rows of the reduction's
    identity, so the column pass of a plane is one flat sweep that needs no border fixes; the row
    pass fixes only its border columns. With kh == 1 the row pass writes the output directly.
    """
    n = h * w
    tail_w = kw - 1 - pw
    if kh == 1:
        for q in range(g):
            if n > pw + tail_w:
                _same_taps(out[q * n + pw:], x, q * n, 1, kw, n - pw - tail_w, code)
            for j in range(min(pw, w)):
                _border_column(out, q * n, x, q * n, j, w, h, kw, pw, code)
            for j in range(max(w - tail_w, pw), w):
                _border_column(out, q * n, x, q * n, j, w, h, kw, pw, code)
        return
    pad = max(ph, kh - 1 - ph)
    stride = (h + pad) * w
    for q in range(g + 1):
        for k in range(q * stride, q * stride + pad * w):
            s[k] = _identity(code)
    for q in range(g):
        d0 = q * stride + pad * w
        if n > pw + tail_w:
            _same_taps(s[d0 + pw:], x, q * n, 1, kw, n - pw - tail_w, code)
        if w >= kw:
            _edge_columns(s, d0, x, q * n, w, h, kw, pw, code)
        else:
            for j in range(min(pw, w)):
                _border_column(s, d0, x, q * n, j, w, h, kw, pw, code)
            for j in range(max(w - tail_w, pw), w):
                _border_column(s, d0, x, q * n, j, w, h, kw, pw, code)
        _same_taps(out[q * n:], s, d0 - ph * w, w, kh, n, code)


@njit(inline="always", fastmath=FASTMATH)
def _same_planes_flat(x, s, out, g, h, w, kh, kw, ph, pw, code):
    """Pool g planes when h >= kh and w >= kw: both passes sweep the whole group flat, then the rows pass
    fixes its border columns and the column pass its border rows (their taps crossed a plane edge)."""
    n, m = h * w, g * h * w
    tail_w, tail_h = kw - 1 - pw, kh - 1 - ph
    _same_taps(s[pw:], x, 0, 1, kw, m - pw - tail_w, code)
    _edge_columns(s, 0, x, 0, w, g * h, kw, pw, code)
    _same_taps(out[ph * w:], s, 0, w, kh, m - (ph + tail_h) * w, code)
    for q in range(g):
        for e in range(ph):
            _same_taps(out[q * n + e * w:], s, q * n, w, kh - ph + e, w, code)
        for e in range(tail_h):
            _same_taps(out[q * n + (h - 1 - e) * w:], s, q * n + (h - 1 - e - ph) * w, w, ph + 1 + e, w, code)


@njit(inline="always", fastmath=FASTMATH)
def _affine_activate(o, a, b, act, alpha, beta):
    """o = activate(o * a + b) in one pass; Relu and Clip (ReLU6) get their own vectorised loops."""
    if act == RELU:
        for k in range(o.size):
            o[k] = max(o[k] * a + b, np.float32(0.0))
    elif act == CLIP:
        for k in range(o.size):
            o[k] = min(max(o[k] * a + b, alpha), beta)
    else:
        for k in range(o.size):
            o[k] = activate(o[k] * a + b, act, alpha, beta)


def _same_pooling(code: int):
    """The stride-1 'same' kernel of pooling ``code`` (a closure over an int keeps numba's cache key stable)."""

    @njit(cache=True, fastmath=FASTMATH)
    def kernel(x, out, s, planes, group, h, w, kh, kw, ph, pw, inv, channels, scale, shift, act, alpha, beta):
        """out[p, i, j] = epilogue(reduce over the window taps inside the plane of x[p, i + a - ph, j + b - pw]).

        Stride 1, no dilation, output size = input size (NCL as h = kh = 1). MAX: NaN-propagating max,
        ``s`` float32; AVG: float64 sums (``s`` float64) times ``inv[i*w + j]`` (1 / tap count, which
        encodes count_include_pad). ``s`` holds (group + 1) * (h + max(ph, kh - 1 - ph)) * w values.
        Epilogue: with ``scale`` non-empty activate(v * scale[c] + shift[c]), c = p % channels, else
        activate(v); ``act`` IDENTITY skips it. Planes run ``group`` at a time so the scratch stays in L1.
        """
        xf = x.reshape(-1)
        of = out.reshape(-1)
        n = h * w
        for p in range(0, planes, group):
            g = min(group, planes - p)
            xs, os_ = xf[p * n:(p + g) * n], of[p * n:(p + g) * n]
            if kh == 3 and kw == 3 and ph == 1 and pw == 1 and h >= 3 and w >= 3:  # the usual window, as constants
                _same_planes_flat(xs, s, os_, g, h, w, 3, 3, 1, 1, code)
            else:
                _same_planes(xs, s, os_, g, h, w, kh, kw, ph, pw, code)
            if code == AVG:
                for q in range(g):
                    o = os_[q * n:(q + 1) * n]
                    for k in range(n):
                        o[k] *= inv[k]
            if scale.size:
                for q in range(g):
                    c = (p + q) % channels
                    _affine_activate(os_[q * n:(q + 1) * n], scale[c], shift[c], act, alpha, beta)
            else:
                activate_rows(os_, np.int64(0), np.int64(g * n), np.int64(1), np.int64(g * n), act, alpha, beta)

    return kernel


SAME_POOL = {MAX: _same_pooling(MAX), AVG: _same_pooling(AVG)}
