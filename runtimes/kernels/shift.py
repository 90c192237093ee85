"""Kernels of the streaming engine: pools that write into a shift buffer, and the checked copy of
pushed samples.

A streaming step keeps, per layer, a buffer B (N, C, H + S) whose first H columns are the layer's
history and whose last S columns are this hop's new inputs. When a 1-D pool produces those S
columns, writing them into B as they are made saves the Concat's pass over the history and a
kernel call (k = 2 or 4 average pools sum in float32 there, as onnxruntime does). At the end of
the hop ``shift_history`` moves each row's next history to its first columns. Pushed samples are
checked for NaN/Inf and copied in one call, because a stream must reject a bad chunk before it
touches the state (numpy's check costs more than the copy).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import FASTMATH
from .simd import LANES, flat, tile_get, tile_new, tile_set, vcopy, vload, vmul, vsplat, vstore, vsum_pairs
from .pool import AVG, MAX, _sweep


@njit(inline="always")
def pair_sums_into(xf, bf, rows, n, w, col, k):
    """bf[p*w + col + j] = (sum over t < k of xf[p*n + j*k + t]) / k for j < n / k, every row p: the
    AVG kernel of 1-D windows that tile rows of n <= 2 * LANES inputs, k = 2 or 4. Per row: its
    inputs in one or two vectors, neighbouring lanes summed once (k = 2) or twice (k = 4) by
    ``vsum_pairs`` (float32 sums, as onnxruntime's AveragePool), times 1 / k, one masked store of
    the row's n / k outputs in place. Nothing is written to and read back from a scratch row: a
    load of what a masked store just wrote waits for that store to retire."""
    lo = n // k
    scale = vsplat(np.float32(1.0) / np.float32(k))
    zero = vsplat(np.float32(0.0))
    if k == 2 and n <= LANES:
        for p in range(rows):
            vstore(bf, p * w + col, vmul(vsum_pairs(vload(xf, p * n, n), zero), scale), lo)
    elif k == 2:
        for p in range(rows):
            s = vsum_pairs(vload(xf, p * n, n), vload(xf, p * n + LANES, n - LANES))
            vstore(bf, p * w + col, vmul(s, scale), lo)
    elif n <= LANES:
        for p in range(rows):
            s = vsum_pairs(vsum_pairs(vload(xf, p * n, n), zero), zero)
            vstore(bf, p * w + col, vmul(s, scale), lo)
    else:
        for p in range(rows):
            s = vsum_pairs(vsum_pairs(vload(xf, p * n, n), vload(xf, p * n + LANES, n - LANES)), zero)
            vstore(bf, p * w + col, vmul(s, scale), lo)


@njit(inline="always")
def takes_pair_sums(code, k, stride, n, lo):
    """Whether the pool of ``code`` into a shift buffer (windows of k at ``stride`` over rows of n
    inputs, lo outputs each) runs as ``pair_sums_into``."""
    return code == AVG and k == stride and (k == 2 or k == 4) and n == lo * k and n <= 2 * LANES


def _window_pooling_into(code: int):
    """The 1-D full-window pool of ``code`` writing into columns [col, W) of (N, C, W) rows."""

    @njit(cache=True, fastmath=FASTMATH, _nrt=False)
    def kernel(x, out, buf, k, stride, col):
        """buf[p, col + j] = reduce over t < k of x[p, j*stride + t] for j < W - col: x (N, C, L), out
        (N, C, W - col) scratch, buf (N, C, W), every window full. Average pools whose windows of 2
        or 4 tile rows of at most two vectors (the streamed hops of signal CNNs) take
        ``pair_sums_into`` (float32 sums). Otherwise ``pool.WINDOW_POOL``'s sweep (NaN-propagating
        max; float64 sum / k) inlined: one long sweep into ``out`` then a copy of each row into place
        when the windows tile the rows (long sweeps vectorise), else straight into place row by
        row; one kernel call either way."""
        xf, of, bf = flat(x), flat(out), flat(buf)
        rows, n, w = x.shape[0] * x.shape[1], x.shape[2], buf.shape[2]
        lo = w - col
        scale = 1.0 / k
        if takes_pair_sums(code, k, stride, n, lo):
            pair_sums_into(xf, bf, rows, n, w, col, k)
        elif k == stride and n == lo * k:
            if k == 4:  # literal taps, as the pool's own kernel
                _sweep(xf, of, 0, 0, rows * lo, 4, 4, scale, code)
            elif k == 2:
                _sweep(xf, of, 0, 0, rows * lo, 2, 2, scale, code)
            else:
                _sweep(xf, of, 0, 0, rows * lo, k, k, scale, code)
            for p in range(rows):
                vcopy(bf, p * w + col, of, p * lo, lo)
        else:
            for p in range(rows):
                _sweep(xf, bf, p * n, p * w + col, lo, stride, k, scale, code)

    return kernel


WINDOW_POOL_INTO = {MAX: _window_pooling_into(MAX), AVG: _window_pooling_into(AVG)}


SHIFT_GROUP = 8
"""Rows of one vector each that ``shift_history`` moves together (half as many rows of two vectors):
a tile of eight vector registers, two tiles in flight."""


def _grouped_shift(group: int, vecs: int):
    """``shift_history``'s copy of histories of at most ``vecs`` vectors, ``group`` rows at a time
    (compile-time constants), the loads of the next group issued before the stores of this one."""
    size = group * vecs

    @njit(inline="always")
    def load(t, bf, p0, rows, w, start, keep):
        """Tile t = the vectors of bf[p*w + start : + keep] for rows p0 <= p < p0 + group (the last
        row repeated past ``rows``)."""
        for i in range(group):
            src = min(p0 + i, rows - 1) * w + start
            for v in range(vecs):
                tile_set(t, i * vecs + v, vload(bf, src + v * LANES, keep - v * LANES))

    @njit(inline="always")
    def store(t, bf, p0, rows, w, keep):
        """bf[p*w : p*w + keep] = tile t for rows p0 <= p < min(rows, p0 + group)."""
        for i in range(group):
            if p0 + i < rows:
                for v in range(vecs):
                    vstore(bf, (p0 + i) * w + v * LANES, tile_get(t, i * vecs + v), keep - v * LANES)

    @njit(inline="always")
    def shift(bf, rows, w, start, keep):
        a, b = tile_new(size), tile_new(size)
        load(a, bf, 0, rows, w, start, keep)
        for p0 in range(0, rows, 2 * group):
            load(b, bf, p0 + group, rows, w, start, keep)
            store(a, bf, p0, rows, w, keep)
            load(a, bf, p0 + 2 * group, rows, w, start, keep)
            store(b, bf, p0 + group, rows, w, keep)

    return shift


_shift_one = _grouped_shift(SHIFT_GROUP, 1)
_shift_two = _grouped_shift(SHIFT_GROUP // 2, 2)


@njit(inline="always")
def moves_flat(rows, w, keep, start):
    """Whether ``shift_history`` moves a buffer of rows > 0 rows of w columns as one flat block: when
    that takes at most 6/5 as many vectors as the rows' histories."""
    return 5 * ((rows * w - start + LANES - 1) // LANES) <= 6 * rows * ((keep + LANES - 1) // LANES)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def shift_history(buf, keep, start):
    """buf[p, :keep] = buf[p, start:start + keep] for every row of the (N, C, W) shift buffer
    (start + keep <= W), by vectors loaded before they are stored, so the overlapping copy (start <
    keep: a history longer than the hop) runs vectorised and stays exact (the destination is always
    before the source). Columns keep.. are left undefined: they are the buffer's new columns, which
    its producer rewrites before anything reads them again.

    When moving the whole buffer by ``start`` elements as one flat block takes at most 6/5 as many
    vectors as the rows' histories (``moves_flat``: histories nearly as long as the rows), it moves so:
    full vectors, no per-row masks (3x faster on 32 rows of 24 of 25 columns); each row's history
    lands in place, its other columns get the next row's first values. Otherwise histories of at
    most two vectors are moved in groups of rows (``_grouped_shift``): a load that overlaps the span
    of a pending masked store waits for that store to retire, which on short rows (every next row)
    cost 4x the copy."""
    bf = flat(buf)
    w = buf.shape[2]
    rows = buf.shape[0] * buf.shape[1]
    if rows == 0:
        return
    if moves_flat(rows, w, keep, start):
        vcopy(bf, 0, bf, start, rows * w - start)
    elif keep <= LANES:
        _shift_one(bf, rows, w, start, keep)
    elif keep <= 2 * LANES:
        _shift_two(bf, rows, w, start, keep)
    else:
        for p in range(rows):
            vcopy(bf, p * w, bf, p * w + start, keep)


@njit(inline="always", fastmath=FASTMATH)
def _all_finite(a) -> bool:
    """Whether every value of the 3-D float array ``a`` is finite: x * 0 is 0 for finite x and NaN
    for NaN or +-Inf, so one vectorised sum tells."""
    total = np.float32(0.0)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            for k in range(a.shape[2]):
                total += a[i, j, k] * np.float32(0.0)
    return total == 0.0


@njit(inline="always", fastmath=FASTMATH)
def finite(v) -> bool:
    """Whether every value of the 1-D float array ``v`` is finite (as ``_all_finite``)."""
    total = np.float32(0.0)
    for i in range(v.size):
        total += v[i] * np.float32(0.0)
    return total == 0.0


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def all_finite(a) -> bool:
    """Whether every value of the 3-D float32 array ``a`` is finite (neither NaN nor +-Inf)."""
    return _all_finite(a)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def copy_if_finite(dst, src) -> bool:
    """dst[...] = src (3-D, same shape, any strides) if every value of ``src`` is finite, and True;
    else False with ``dst`` untouched."""
    if not _all_finite(src):
        return False
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            for k in range(src.shape[2]):
                dst[i, j, k] = src[i, j, k]
    return True
