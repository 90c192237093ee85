"""Max and average pooling of (planes, H, W) float32 arrays (NCHW with planes = N*C; NCL runs as H = 1).

Pooling windows are rectangles of taps, so both poolings are separable: per output row, a column
pass reduces its H taps into a scratch row ``s`` (contiguous, vectorised along the row whatever the
stride), then a row pass reduces the W taps of ``s`` into the output row: kh + kw operations per
output instead of kh * kw. Per axis the builder gives, for every output o, the valid taps
[ta[o], tb[o]) (a contiguous range) and the input index ``first[o]`` of the first of them, so
padding, dilation and ceil_mode need no tests in the loops. Interior outputs of a row (every tap
valid) run as one sweep, with literal stride and tap count for the usual 3x3 stride-2 window;
border outputs run one by one. Planes narrower than DIRECT_WIDTH are pooled window by
window, which costs less there than the per-row loops. The loops index with unsigned integers:
numba's negative-index wraparound on signed indices, and the reference counts of slices made in
loops, would each keep them from vectorising. Max propagates NaN (np.maximum semantics) and a
window without taps gives -inf. Average sums in float64 and multiplies by ``inv`` = 1 / tap count
per output, which encodes count_include_pad. Max and average each get their own kernel, compiled
with the reduction as a literal.

Stride-1 'same' pools (output size = input size, the parameter-free block's 3x3 pool) take their
own kernels, SAME_POOL: the row pass sweeps the group flat, the column pass either flat with its
border rows redone (windows that fit the plane) or per plane from a scratch whose planes sit behind
rows of the reduction's identity (no border fixes at all), and a fused BN/activation epilogue runs
on each group while it is in L1. The 3x3 pads-1 max pool (BN or not, any activation) runs as MAX3: one
pass of explicit vectors (simd.py) over each plane taken flat, so vectors stay full on narrow planes:
per vector the column max of its three rows, then the left and right taps as lane shifts of the
neighbouring vectors' column maxes, every tap outside the plane masked by precomputed lane masks, then
the BN affine and a Relu/Clip clamp and the store (other activations take a pass of their own). Its max
instructions drop NaN, so it also checks its input for NaN; a tensor holding one is pooled again by the
NaN-propagating path above. The 3x3 pads-1 average pool runs as AVG3, the same pass with float32 sums
(taps outside the plane read as 0) times a per-position 1 / tap count. The SAME_POOL kernels ask LLVM for
512-bit vectors (``prefer_512``).
3x3 stride-2 pools with head pads 0 or 1 (pads 1, and auto_pad SAME) take STRIDED3: that stride-1 pool (MAX3 or
AVG3), then a gather of the positions at the outputs' window centres.
2x2 stride-2 max pools whose windows all lie inside the planes take WINDOW2_MAX, one flat loop over the
outputs from a precomputed index of their windows; such average pools take AVG2_POOL: per output row, the
two input rows in explicit vectors, added, then neighbouring lanes added (float32 sums).

1-D pools whose windows all lie inside the input (no padding reached, no dilation: the k=s MaxPool of
signal CNNs and their streamed hops) take WINDOW_POOL: one sweep over the output windows, with the
whole tensor as one row when the windows tile it, and literal taps for kernel = stride in 2..4 (the
loads then vectorise as interleaved groups). It takes four arguments (Numba's dispatch costs per
argument) and, like every kernel here, compiles only when a model first runs it.
"""
import functools

import numpy as np
from numba import njit

from . import FASTMATH
from .activation import CLIP, IDENTITY, RELU, activate_in, codes_mask
from .elementwise import nan_max
from .simd import (LANES, flat, mask_full, mask_of, mask_ordered, prefer_512, vadd, vcopy_even, vfma, vload, vload_mask,
                   vmax, vmax_mask, vmin, vmul, vselect, vshift_next, vshift_prev, vsplat, vstore, vstore_mask,
                   vsum_pairs)

MAX, AVG = 0, 1
DIRECT_WIDTH = 8  # planes narrower than this are pooled window by window (``_direct``)
M3_MID, M3_UP, M3_DOWN, M3_LEFT, M3_RIGHT = range(5)  # the rows of max3_masks
MAX3_SPLIT_VECTORS = 16  # MAX3 runs planes of at least this many vectors as three loops (edges, inside, edges)


@njit(inline="always", fastmath=FASTMATH)
def _finish(acc, scale, code):
    """The pooled value of a window: the max itself, or the float64 sum times 1 / tap count."""
    if code == MAX:
        return acc
    return np.float32(acc * scale)


@njit(forceinline=True, fastmath=FASTMATH)
def _row_taps(out, o0, s, first, n, stride, nt, inv, v0, code):
    """out[o0 + k] = finish(reduce over taps t < nt of s[first + k*stride + t], inv[v0 + k]) for k < n;
    typed once per literal stride and tap count and inlined by LLVM (forceinline, as its two helpers below:
    Numba's own inlining re-typed them at each call site). Unsigned indices: numba then skips the negative-index
    wraparound, which would keep the loop from vectorising (so do slices, which cost reference counts)."""
    o, f, v, st = np.uint64(o0), np.uint64(first), np.uint64(v0), np.uint64(stride)
    one, two = np.uint64(1), np.uint64(2)
    if nt == 1:
        for k in range(np.uint64(n)):
            out[o + k] = _finish(s[f + k * st], inv[v + k], code)
    elif nt == 2:
        for k in range(np.uint64(n)):
            c = f + k * st
            out[o + k] = _finish(_fold(s[c], s[c + one], code), inv[v + k], code)
    else:
        for k in range(np.uint64(n)):
            c = f + k * st
            acc = _fold(_fold(s[c], s[c + one], code), s[c + two], code)
            for t in range(3, nt):
                acc = _fold(acc, s[c + np.uint64(t)], code)
            out[o + k] = _finish(acc, inv[v + k], code)


@njit(forceinline=True, fastmath=FASTMATH)
def _border_outputs(out, o0, s, inv, v0, j_from, j_to, dw, w_first, w_ta, w_tb, code):
    """out[o0 + j] (scaled by inv[v0 + j]) for j in [j_from, j_to), each over its own valid taps."""
    for j in range(j_from, j_to):
        nt = w_tb[j] - w_ta[j]
        acc = _identity(code) if nt == 0 else s[w_first[j]]
        for t in range(1, nt):
            acc = _fold(acc, s[w_first[j] + t * dw], code)
        out[o0 + j] = _finish(acc, inv[v0 + j], code)


@njit(forceinline=True, fastmath=FASTMATH)
def _column_taps(s, x, first, step, nt, w, code):
    """s[k] = reduce over taps t < nt of x[first + t*step + k], k < w: two or three rows fused per pass
    (unsigned indices, as in ``_row_taps``)."""
    f, st, n = np.uint64(first), np.uint64(step), np.uint64(w)
    if nt == 3:
        f2 = f + st + st
        for k in range(n):
            s[k] = _fold(_fold(x[f + k], x[f + st + k], code), x[f2 + k], code)
    elif nt == 2:
        for k in range(n):
            s[k] = _fold(x[f + k], x[f + st + k], code)
    elif nt == 0:
        for k in range(n):
            s[k] = _identity(code)
    else:
        for k in range(n):
            s[k] = x[f + k]
        for t in range(1, nt):
            o = f + np.uint64(t) * st
            for k in range(n):
                s[k] = _fold(s[k], x[o + k], code)


@njit(inline="always", fastmath=FASTMATH)
def _planes(xf, of, s, inv, planes, h, w, oh, ow, dh, h_first, h_ta, h_tb, sw, dw, w_first, w_ta, w_tb, j0, j1, kw, code):
    """The loops of the pooling kernel: per plane and output row, the column pass into s, then the row
    pass: interior outputs [j0, j1) in one sweep, the others one by one."""
    n_in, n_out = h * w, oh * ow
    for p in range(planes):
        for i in range(oh):
            _column_taps(s, xf, p * n_in + h_first[i] * w, dh * w, h_tb[i] - h_ta[i], w, code)
            o0 = p * n_out + i * ow
            if j1 > j0:
                _row_taps(of, o0 + j0, s, w_first[j0], j1 - j0, sw, kw, inv, i * ow + j0, code)
            _border_outputs(of, o0, s, inv, i * ow, 0, j0, dw, w_first, w_ta, w_tb, code)
            _border_outputs(of, o0, s, inv, i * ow, j1, ow, dw, w_first, w_ta, w_tb, code)


@njit(inline="always", fastmath=FASTMATH)
def _direct(xf, of, inv, planes, h, w, oh, ow, dh, h_first, h_ta, h_tb, dw, w_first, w_ta, w_tb, code):
    """Every output straight from its window (no scratch rows): faster on narrow planes, where the
    separable passes' per-row loops would cost more than the window itself."""
    n_in, n_out = h * w, oh * ow
    rstep, cstep = np.uint64(dh * w), np.uint64(dw)
    for p in range(planes):
        for i in range(oh):
            rows = np.uint64(h_tb[i] - h_ta[i])
            r0 = p * n_in + h_first[i] * w
            for j in range(ow):
                cols, o = np.uint64(w_tb[j] - w_ta[j]), p * n_out + i * ow + j
                start = np.uint64(r0 + w_first[j])
                if code == MAX:  # float32 throughout, from the window's first tap
                    if rows == 0 or cols == 0:
                        of[o] = -np.inf
                        continue
                    top = xf[start]
                    for a in range(rows):
                        base = start + a * rstep
                        for b in range(cols):
                            top = nan_max(top, xf[base + b * cstep])
                    of[o] = top
                else:
                    total = 0.0
                    for a in range(rows):
                        base = start + a * rstep
                        for b in range(cols):
                            total += xf[base + b * cstep]
                    of[o] = np.float32(total * inv[i * ow + j])


def _pooling(code: int):
    """The 1D/2D kernel of pooling ``code`` (a closure over an int keeps numba's cache key stable)."""

    @njit(cache=True, fastmath=FASTMATH)
    def kernel(x, out, s, inv, planes, h, w, oh, ow, dh, h_first, h_ta, h_tb, sw, dw, w_first, w_ta, w_tb, j0, j1, kw):
        """out[p, i, j] = reduce over the valid taps (a, b) of x[p, h_first[i] + a*dh, w_first[j] + b*dw].

        Per axis, output o has the valid taps [ta[o], tb[o]) (a contiguous range) starting at input
        index first[o]; interior columns [j0, j1) have all kw taps. Separable, one output row at a
        time: a column pass reduces its H taps into the scratch row ``s`` (w values, vectorised along
        the row), then a row pass reduces the W taps at stride sw into the output row. MAX:
        NaN-propagating max, ``s`` float32, a window without taps gives -inf. AVG: float64 sums times
        ``inv[i, j]`` (1 / tap count, which encodes count_include_pad), ``s`` float64.
        """
        xf, of = x.reshape(-1), out.reshape(-1)
        if w < DIRECT_WIDTH:
            _direct(xf, of, inv, planes, h, w, oh, ow, dh, h_first, h_ta, h_tb, dw, w_first, w_ta, w_tb, code)
            return
        if dw != 1:  # no interior sweep: the taps are not adjacent
            j0 = j1 = 0
        if sw == 2 and kw == 3:  # the usual strided window gets its own loops, with literal stride and taps
            _planes(xf, of, s, inv, planes, h, w, oh, ow, dh, h_first, h_ta, h_tb, 2, dw, w_first, w_ta, w_tb, j0, j1, 3, code)
        else:
            _planes(xf, of, s, inv, planes, h, w, oh, ow, dh, h_first, h_ta, h_tb, sw, dw, w_first, w_ta, w_tb, j0, j1, kw,
                    code)

    return kernel


# Stride-1 'same' fast path (the parameter-free block's pool): output size = input size, no dilation,
# an optional fused epilogue (BN folded to scale/shift, then an activation).


@njit(inline="always", fastmath=FASTMATH)
def _identity(code):
    return -np.inf if code == MAX else 0.0


@njit(inline="always", fastmath=FASTMATH)
def _fold(a, b, code):
    """Fold b into a: NaN-propagating max, or a float64 sum (the same-path average's accumulator)."""
    if code == MAX:
        return nan_max(a, b)
    return np.float64(a) + b


@njit(forceinline=True, fastmath=FASTMATH)
def _same_taps(dst, src, first, step, nt, n, code):
    """dst[k] = reduce over taps t < nt of src[first + k + t * step], for k < n (every index valid).
    Typed once per literal variant and inlined by LLVM (forceinline), not by Numba at each of its call
    sites, which halved the SAME_POOL kernels' cold compile."""
    prefer_512()
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
def _affine_activate(codes, o, a, b, act, alpha, beta):
    """o = activate(o * a + b): BN alone, Relu and Clip (ReLU6) in one pass, other activations (among the
    constant ``codes``) by a pass of their own."""
    if act == IDENTITY:
        for k in range(o.size):
            o[k] = o[k] * a + b
    elif act == RELU:
        for k in range(o.size):
            o[k] = max(o[k] * a + b, np.float32(0.0))
    elif act == CLIP:
        for k in range(o.size):
            o[k] = min(max(o[k] * a + b, alpha), beta)
    else:
        for k in range(o.size):
            o[k] = o[k] * a + b
        n = np.int64(o.size)
        activate_in(codes, o, np.int64(0), n, np.int64(1), n, act, alpha, beta)


# The 3x3 pads-1 max pool of planes without NaN (MAX3): one pass of explicit vectors over each plane, flat.
# Its helpers (and AVG3's) are plain @njit functions, compiled once per literal variant and inlined by LLVM:
# inlined by Numba (inline="always") they were typed again at every call site, twice the cold compile time.


@njit(fastmath=FASTMATH)
def _max3_column(x, k, w, masks, j, inside):
    """(max of x[k + {-w, 0, w} + i] over the rows inside the plane, x[k + i]) for the lanes i of vector j of
    a plane (at k); lanes past the plane read 0. ``inside`` (a literal): every tap of the vector lies in
    the plane, so no masks are read."""
    if inside:
        mid = vload(x, k, LANES)
        return vmax(vmax(mid, vload(x, k - w, LANES)), vload(x, k + w, LANES)), mid
    mid = vload_mask(x, k, mask_of(masks[M3_MID, j]))
    up, down = mask_of(masks[M3_UP, j]), mask_of(masks[M3_DOWN, j])
    top = vmax_mask(mid, vload_mask(x, k - w, up), up)
    return vmax_mask(top, vload_mask(x, k + w, down), down), mid


@njit(fastmath=FASTMATH)
def _max3_step(x, out, k, w, masks, j, prev, cur, a, b, low, high, inside, affine, clamp):
    """Output vector j of a plane (at k) from the column maxes ``prev``, ``cur`` of its vectors j - 1, j;
    returns the column max of vector j + 1 and its centre taps. ``inside`` (a literal): vector j + 1 has
    every tap in the plane (so vector j is whole: a plain store)."""
    nxt, mid = _max3_column(x, k + LANES, w, masks, j + 1, inside)
    left = vselect(mask_of(masks[M3_LEFT, j]), vshift_prev(prev, cur), cur)  # one masked vpermt2ps each
    right = vselect(mask_of(masks[M3_RIGHT, j]), vshift_next(cur, nxt), cur)
    v = vmax(vmax(cur, left), right)
    if affine:
        v = vfma(v, a, b)
    if clamp:  # bounds first: a NaN from the affine (infinity times 0) stays NaN, as np.clip keeps it
        v = vmin(high, vmax(low, v))
    if inside:
        vstore(out, k, v, LANES)
    else:
        vstore_mask(out, k, v, mask_of(masks[M3_MID, j]))
    return nxt, mid


@njit(fastmath=FASTMATH)
def _max3_sweep(x, out, planes, n, w, masks, channels, scale, shift, lo, hi, affine, clamp):
    """The loops of ``_max3``, with the BN affine and the clamp as literals (one loop per variant). Planes
    of at least MAX3_SPLIT_VECTORS vectors run their edge and inner vectors as loops of their own; smaller
    ones as one loop that tests each vector (three loops would cost more to start)."""
    count = masks.shape[1] - 1
    first = min(max(-(-w // LANES), 1), count)  # vectors [first, last) have every tap in the plane
    last = max(min((n - w - LANES) // LANES + 1, count), first)
    ordered = mask_of(-1)
    low, high, a, b = vsplat(lo), vsplat(hi), vsplat(1.0), vsplat(0.0)
    c = 0
    for p in range(planes):
        if affine:
            a, b = vsplat(scale[c]), vsplat(shift[c])
            c = c + 1 if c + 1 < channels else 0
        base = p * n
        cur, mid = _max3_column(x, base, w, masks, 0, False)
        ordered = mask_ordered(ordered, mid)
        prev = cur
        if count >= MAX3_SPLIT_VECTORS:
            for j in range(first - 1):
                nxt, mid = _max3_step(x, out, base + j * LANES, w, masks, j, prev, cur, a, b, low, high, False, affine, clamp)
                ordered = mask_ordered(ordered, mid)
                prev, cur = cur, nxt
            for j in range(first - 1, last - 1):
                nxt, mid = _max3_step(x, out, base + j * LANES, w, masks, j, prev, cur, a, b, low, high, True, affine, clamp)
                ordered = mask_ordered(ordered, mid)
                prev, cur = cur, nxt
            for j in range(last - 1, count):
                nxt, mid = _max3_step(x, out, base + j * LANES, w, masks, j, prev, cur, a, b, low, high, False, affine, clamp)
                ordered = mask_ordered(ordered, mid)
                prev, cur = cur, nxt
        else:
            for j in range(count):
                k = base + j * LANES
                if first <= j + 1 < last:
                    nxt, mid = _max3_step(x, out, k, w, masks, j, prev, cur, a, b, low, high, True, affine, clamp)
                else:
                    nxt, mid = _max3_step(x, out, k, w, masks, j, prev, cur, a, b, low, high, False, affine, clamp)
                ordered = mask_ordered(ordered, mid)
                prev, cur = cur, nxt
    return mask_full(ordered)


@njit(cache=True, fastmath=FASTMATH)
def _max3(x, out, planes, n, w, masks, channels, scale, shift, lo, hi, clamp):
    """MAX3: out[p, i, j] = epilogue(max of x[p, i + a, j + b] over a, b in {-1, 0, 1} inside the plane), for
    the ``planes`` planes of n = h*w floats (x, out flat); False when x holds a NaN (out then holds
    values to discard: the caller pools again with NaN propagation). Epilogue: v * scale[c] + shift[c] (c = p %
    channels) when ``scale`` is non-empty, then min(max(v, lo), hi) when ``clamp``.

    One pass per plane in vectors of LANES positions k (flat, so the vectors are full whatever w): the
    column max of k from its three rows (taps in the plane's first or last row masked), kept in registers
    for vectors j - 1, j, j + 1, so the left and right taps of vector j are two lane shifts; taps across
    a row's end masked. ``masks`` from max3_masks(h, w). Input read once, output written once, no
    scratch; its own function, not inlined, so both SAME_POOL callers share one compile."""
    if scale.size:
        if clamp:
            return _max3_sweep(x, out, planes, n, w, masks, channels, scale, shift, lo, hi, True, True)
        return _max3_sweep(x, out, planes, n, w, masks, channels, scale, shift, lo, hi, True, False)
    if clamp:
        return _max3_sweep(x, out, planes, n, w, masks, channels, scale, shift, lo, hi, False, True)
    return _max3_sweep(x, out, planes, n, w, masks, channels, scale, shift, lo, hi, False, False)


# The 3x3 pads-1 average pool (AVG3): MAX3's pass with sums, taps outside the plane read as 0.


@njit(fastmath=FASTMATH)
def _avg3_column(x, k, w, masks, j, inside):
    """Sum of x[k + {-w, 0, w} + i] over the rows inside the plane for the lanes i of vector j of a plane (at
    k); taps outside the plane (and lanes past it) read 0. ``inside`` (a literal) as in ``_max3_column``."""
    if inside:
        return vadd(vadd(vload(x, k - w, LANES), vload(x, k, LANES)), vload(x, k + w, LANES))
    up = vload_mask(x, k - w, mask_of(masks[M3_UP, j]))
    return vadd(vadd(up, vload_mask(x, k, mask_of(masks[M3_MID, j]))), vload_mask(x, k + w, mask_of(masks[M3_DOWN, j])))


@njit(fastmath=FASTMATH)
def _avg3_step(x, out, k, w, masks, inv, j, prev, cur, a, b, low, high, inside, affine, clamp):
    """Output vector j of a plane (at k) from the column sums ``prev``, ``cur`` of its vectors j - 1, j, times
    inv[j*LANES + i]; returns the column sum of vector j + 1. ``inside`` as in ``_max3_step``."""
    nxt = _avg3_column(x, k + LANES, w, masks, j + 1, inside)
    zero = vsplat(np.float32(0.0))
    left = vselect(mask_of(masks[M3_LEFT, j]), vshift_prev(prev, cur), zero)
    right = vselect(mask_of(masks[M3_RIGHT, j]), vshift_next(cur, nxt), zero)
    v = vmul(vadd(vadd(left, cur), right), vload(inv, j * LANES, LANES))
    if affine:
        v = vfma(v, a, b)
    if clamp:
        v = vmin(high, vmax(low, v))
    if inside:
        vstore(out, k, v, LANES)
    else:
        vstore_mask(out, k, v, mask_of(masks[M3_MID, j]))
    return nxt


@njit(fastmath=FASTMATH)
def _avg3_sweep(x, out, planes, n, w, masks, inv, channels, scale, shift, lo, hi, affine, clamp):
    """The loops of ``_avg3``, split as in ``_max3_sweep``, with the BN affine and the clamp as literals."""
    count = masks.shape[1] - 1
    first = min(max(-(-w // LANES), 1), count)  # vectors [first, last) have every tap in the plane
    last = max(min((n - w - LANES) // LANES + 1, count), first)
    low, high, a, b = vsplat(lo), vsplat(hi), vsplat(1.0), vsplat(0.0)
    c = 0
    for p in range(planes):
        if affine:
            a, b = vsplat(scale[c]), vsplat(shift[c])
            c = c + 1 if c + 1 < channels else 0
        base = p * n
        cur = _avg3_column(x, base, w, masks, 0, False)
        prev = cur
        if count >= MAX3_SPLIT_VECTORS:
            for j in range(first - 1):
                prev, cur = cur, _avg3_step(x, out, base + j * LANES, w, masks, inv, j, prev, cur, a, b, low, high, False,
                                            affine, clamp)
            for j in range(first - 1, last - 1):
                prev, cur = cur, _avg3_step(x, out, base + j * LANES, w, masks, inv, j, prev, cur, a, b, low, high, True,
                                            affine, clamp)
            for j in range(last - 1, count):
                prev, cur = cur, _avg3_step(x, out, base + j * LANES, w, masks, inv, j, prev, cur, a, b, low, high, False,
                                            affine, clamp)
        else:
            for j in range(count):
                k = base + j * LANES
                if first <= j + 1 < last:
                    nxt = _avg3_step(x, out, k, w, masks, inv, j, prev, cur, a, b, low, high, True, affine, clamp)
                else:
                    nxt = _avg3_step(x, out, k, w, masks, inv, j, prev, cur, a, b, low, high, False, affine, clamp)
                prev, cur = cur, nxt


@njit(cache=True, fastmath=FASTMATH)
def _avg3(x, out, planes, n, w, masks, inv, channels, scale, shift, lo, hi, clamp):
    """AVG3: out[p, i, j] = epilogue(inv[i*w + j] * sum of x[p, i + a, j + b] over a, b in {-1, 0, 1} inside the
    plane), float32 sums, for the ``planes`` planes of n = h*w floats (x, out flat); ``inv`` (float32, padded
    to whole vectors) is 1 / tap count, which encodes count_include_pad. Epilogue as in ``_max3``. MAX3's
    one pass per plane (column sums in registers, left and right taps by lane shifts, masks from
    max3_masks(h, w)); NaN and infinities propagate as in any sum. Its own function, not inlined."""
    if scale.size:
        if clamp:
            _avg3_sweep(x, out, planes, n, w, masks, inv, channels, scale, shift, lo, hi, True, True)
        else:
            _avg3_sweep(x, out, planes, n, w, masks, inv, channels, scale, shift, lo, hi, True, False)
    elif clamp:
        _avg3_sweep(x, out, planes, n, w, masks, inv, channels, scale, shift, lo, hi, False, True)
    else:
        _avg3_sweep(x, out, planes, n, w, masks, inv, channels, scale, shift, lo, hi, False, False)


def max3_masks(h: int, w: int) -> np.ndarray:
    """The (5, vectors + 1) uint16 lane masks of MAX3 on an h x w plane: per vector j of LANES positions
    (the last one past the plane, all off), bit i set when position j*LANES + i lies in the plane (row
    M3_MID) and its tap above / below / left / right too (rows M3_UP, M3_DOWN, M3_LEFT, M3_RIGHT)."""
    vectors = -(-h * w // LANES)
    pos = np.arange((vectors + 1) * LANES)
    rows, cols, inside = pos // w, pos % w, pos < h * w
    on = [inside, inside & (rows > 0), inside & (rows < h - 1), inside & (cols > 0), inside & (cols < w - 1)]
    weights = np.left_shift(1, np.arange(LANES))
    return np.stack([(m.reshape(-1, LANES) * weights).sum(axis=1) for m in on]).astype(np.uint16)


def same_pool(code: int, act: int):
    """The stride-1 'same' kernel of pooling ``code`` with the fused activation ``act``: SAME_POOL's for none,
    Relu or Clip, else one compiled for ``act`` too."""
    return _same_pooling(code, codes_mask(RELU, CLIP, act))


@functools.cache
def _same_pooling(code: int, codes: int):
    """The stride-1 'same' kernel of pooling ``code``, its activation among ``codes`` (``codes_mask``; a closure
    over ints keeps numba's cache key stable)."""

    @njit(cache=True, fastmath=FASTMATH)
    def kernel(x, out, s, planes, group, h, w, kh, kw, ph, pw, inv, channels, scale, shift, act, alpha, beta, masks):
        """out[p, i, j] = epilogue(reduce over the window taps inside the plane of x[p, i + a - ph, j + b - pw]).

        Stride 1, no dilation, output size = input size (NCL as h = kh = 1). MAX: NaN-propagating max,
        ``s`` float32; AVG: float64 sums (``s`` float64) times ``inv[i*w + j]`` (1 / tap count, which
        encodes count_include_pad; float32 for AVG, padded to whole vectors). ``s`` holds
        (group + 1) * (h + max(ph, kh - 1 - ph)) * w values. Epilogue: with ``scale`` non-empty
        activate(v * scale[c] + shift[c]), c = p % channels, else activate(v); ``act`` IDENTITY skips it.
        Planes run ``group`` at a time so the scratch stays in L1. A non-empty ``masks`` (max3_masks(h, w):
        the builder gives it to the 3x3 pads-1 pools) runs the whole tensor as MAX3 or AVG3 instead (the
        max pool, when the tensor holds a NaN, then pools it again below, with NaN propagation).
        """
        prefer_512()
        xf = x.reshape(-1)
        of = out.reshape(-1)
        n = h * w
        if masks.shape[1]:
            clamp = act == RELU or act == CLIP
            lo = np.float32(alpha) if act == CLIP else np.float32(0.0)
            hi = np.float32(beta) if act == CLIP else np.float32(np.inf)
            if code == MAX:  # a constant: each kernel compiles only its own pass
                done = _max3(xf, of, planes, n, w, masks, channels, scale, shift, lo, hi, clamp)
            else:
                _avg3(xf, of, planes, n, w, masks, inv, channels, scale, shift, lo, hi, clamp)
                done = True
            if done:
                if not (clamp or act == IDENTITY):  # other activations: a pass of their own
                    activate_in(codes, of, np.int64(0), np.int64(planes * n), np.int64(1), np.int64(planes * n), act,
                                alpha, beta)
                return
        for p in range(0, planes, group):
            g = min(group, planes - p)
            xs, os_ = xf[p * n:(p + g) * n], of[p * n:(p + g) * n]
            # the usual window, as constants; only the max pool's NaN fallback gets here with it (AVG3 takes the average)
            if code == MAX and kh == 3 and kw == 3 and ph == 1 and pw == 1 and h >= 3 and w >= 3:
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
                    _affine_activate(codes, os_[q * n:(q + 1) * n], scale[c], shift[c], act, alpha, beta)
            elif act != IDENTITY:
                activate_in(codes, os_, np.int64(0), np.int64(g * n), np.int64(1), np.int64(g * n), act, alpha, beta)

    return kernel


SAME_POOL = {MAX: same_pool(MAX, IDENTITY), AVG: same_pool(AVG, IDENTITY)}
_SAME_MAX = SAME_POOL[MAX]


def _strided3(code: int):
    """The 3x3 stride-2 kernel of pooling ``code`` (a closure over an int keeps numba's cache key stable)."""
    same = SAME_POOL[code]

    @njit(cache=True, fastmath=FASTMATH)
    def kernel(x, out, full, s, planes, group, h, w, inv, none, masks, r0, c0):
        """Pool 3x3 stride 2 whose every output (i, j) has its window centred at (2i + r0, 2j + c0) inside the
        plane (head pads 1 - r0, 1 - c0: 1 for pads 1 or SAME on an odd size, 0 for SAME_UPPER on an even
        one): the stride-1 'same' pool of every position into ``full`` (x's shape; SAME_POOL, so MAX3 or
        AVG3), then those centres of each plane, row by row in vectors (vcopy_even). ``inv``: for AVG, AVG3's
        per-position 1 / tap count (float32, padded to whole vectors; the strided outputs' counts at their
        centres), for MAX any float64 array (unread). Pooling every position costs 4x the outputs' work, yet one
        vector pass beats the strided path's per-row loops on the planes of edge CNNs. ``none`` is an empty
        float32 array (no fused BN)."""
        three, one = np.int64(3), np.int64(1)  # typed, not literals: the kernel's one compiled signature serves
        same(x, full, s, planes, group, h, w, three, three, one, one, inv, one, none, none, np.int64(IDENTITY),
             np.float32(0.0), np.float32(0.0), masks)
        ff, of = full.reshape(-1), out.reshape(-1)
        oh, ow = out.shape[2], out.shape[3]
        for p in range(planes):
            for r in range(oh):
                vcopy_even(of, (p * oh + r) * ow, ff, p * h * w + (2 * r + r0) * w + c0, ow)

    return kernel


STRIDED3 = {MAX: _strided3(MAX), AVG: _strided3(AVG)}


POOL = {MAX: _pooling(MAX), AVG: _pooling(AVG)}


@njit(inline="always", fastmath=FASTMATH)
def _sweep(xf, of, x0, o0, n, stride, k, scale, code):
    """of[o0 + j] = finish(reduce over t < k of xf[x0 + j*stride + t], scale) for j < n; inlined with
    literal stride and taps. Unsigned indices, as in ``_row_taps``."""
    x, o, st = np.uint64(x0), np.uint64(o0), np.uint64(stride)
    for j in range(np.uint64(n)):
        c = x + j * st
        acc = xf[c] if code == MAX else np.float64(xf[c])
        for t in range(1, k):
            acc = _fold(acc, xf[c + np.uint64(t)], code)
        of[o + j] = _finish(acc, scale, code)


def _window_pooling(code: int):
    """The 1-D full-window kernel of pooling ``code`` (a closure over an int keeps numba's cache key stable)."""

    @njit(cache=True, fastmath=FASTMATH)
    def kernel(x, out, k, stride):
        """out[p, j] = reduce over t < k of x[p, j*stride + t]: x (N, C, L), out (N, C, Lo) with
        (Lo - 1) * stride + k <= L (every window full). MAX: NaN-propagating max; AVG: float64 sum / k.
        When the windows tile the planes (k = stride, L = Lo * k) all planes run as one sweep."""
        xf, of = x.reshape(-1), out.reshape(-1)
        rows, n, lo = x.shape[0] * x.shape[1], x.shape[2], out.shape[2]
        if k == stride and n == lo * k:
            rows, n, lo = 1, rows * n, rows * lo
        scale = 1.0 / k
        for p in range(rows):
            if k == stride == 4:
                _sweep(xf, of, p * n, p * lo, lo, 4, 4, scale, code)
            elif k == stride == 2:
                _sweep(xf, of, p * n, p * lo, lo, 2, 2, scale, code)
            elif k == stride == 3:
                _sweep(xf, of, p * n, p * lo, lo, 3, 3, scale, code)
            else:
                _sweep(xf, of, p * n, p * lo, lo, stride, k, scale, code)

    return kernel


WINDOW_POOL = {MAX: _window_pooling(MAX), AVG: _window_pooling(AVG)}


@njit(cache=True, fastmath=FASTMATH)
def WINDOW2_MAX(x, out, index, w):
    """MaxPool 2x2 stride 2, every window inside its plane: out.flat[k] = NaN-propagating max of the 2x2 window
    whose top-left tap is x.flat[index[k]] (taps +0, +1, +w, +w+1), one flat loop over all outputs, no
    per-row loops."""
    xf, of = x.reshape(-1), out.reshape(-1)
    ww, one = np.uint64(w), np.uint64(1)
    for k in range(index.size):
        b = np.uint64(index[k])
        of[k] = nan_max(nan_max(nan_max(xf[b], xf[b + one]), xf[b + ww]), xf[b + ww + one])


@njit(inline="always", fastmath=FASTMATH)
def _avg2_vector(xf, of, k, w, o, n, quarter):
    """of[o + j] = 0.25 * (x[k + 2j] + x[k + 2j + 1] + the same one row (w) down) for j < n <= LANES: the 2n
    inputs of each row as two vectors (the second masked when n < LANES), the two rows added, then
    neighbouring lanes (vsum_pairs)."""
    first = vadd(vload(xf, k, 2 * n), vload(xf, k + w, 2 * n))
    second = vadd(vload(xf, k + LANES, 2 * n - LANES), vload(xf, k + w + LANES, 2 * n - LANES))
    vstore(of, o, vmul(vsum_pairs(first, second), quarter), n)


@njit(cache=True, fastmath=FASTMATH)
def AVG2_POOL(x, out, planes, h, w):
    """AveragePool 2x2 stride 2, no padding, floor sizes: out[p, i, j] = 0.25 * (x[p, 2i, 2j] + x[p, 2i, 2j+1]
    + x[p, 2i+1, 2j] + x[p, 2i+1, 2j+1]) in float32 (a trailing odd row or column is not read). Per output
    row, LANES outputs at a time from two vectors of each of its two input rows; the last vector masked."""
    xf, of = flat(x), flat(out)
    oh, ow = h // 2, w // 2
    full = ow - ow % LANES
    quarter = vsplat(np.float32(0.25))
    for p in range(planes):
        for i in range(oh):
            k, o = (p * h + 2 * i) * w, (p * oh + i) * ow
            for j in range(0, full, LANES):
                _avg2_vector(xf, of, k + 2 * j, w, o + j, LANES, quarter)
            if full < ow:
                _avg2_vector(xf, of, k + 2 * full, w, o + full, ow - full, quarter)
