"""Kernels of the streaming engine: pools that write into a shift buffer, and the checked copy of
pushed samples.

A streaming step keeps, per layer, a buffer B (N, C, H + S) whose first H columns are the layer's
history and whose last S columns are this hop's new inputs. When a 1-D pool produces those S
columns, copying them into B as they are made saves the Concat's pass over the history and a
kernel call. Pushed samples are checked for NaN/Inf and copied in one call, because a
stream must reject a bad chunk before it touches the state (numpy's check costs more than the copy).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import FASTMATH
from .gemm import LANES, flat, tile_get, tile_new, tile_set, vcopy, vload, vstore
from .pool import AVG, MAX, WINDOW_POOL


def _window_pooling_into(code: int):
    """The 1-D full-window pool of ``code`` writing into columns [col, W) of (N, C, W) rows."""
    pool = WINDOW_POOL[code]

    @njit(cache=True, fastmath=FASTMATH, _nrt=True)  # explicit: the pool compiles as usual from any caller
    def kernel(x, out, buf, k, stride, col):
        """buf[p, col + j] = out[p, j] = reduce over t < k of x[p, j*stride + t]: x (N, C, L), out
        (N, C, W - col), buf (N, C, W). The pool runs as ``pool.WINDOW_POOL`` (one long sweep when
        the windows tile the rows), then each row is copied into place."""
        pool(x, out, k, stride)
        of, bf = flat(out), flat(buf)
        rows, w = out.shape[0] * out.shape[1], buf.shape[2]
        lo = w - col
        for p in range(rows):
            vcopy(bf, p * w + col, of, p * lo, lo)

    return kernel


WINDOW_POOL_INTO = {MAX: _window_pooling_into(MAX), AVG: _window_pooling_into(AVG)}


SHIFT_GROUP = 8
"""Rows of one vector each that ``shift_history`` loads together (a tile of vector registers)."""


@njit(inline="always")
def _load_rows(t, bf, p0, rows, w, start, keep):
    """Tile t = the vectors bf[p*w + start : + keep] of rows p0 <= p < p0 + SHIFT_GROUP (the last row
    repeated past ``rows``)."""
    for i in range(SHIFT_GROUP):
        tile_set(t, i, vload(bf, min(p0 + i, rows - 1) * w + start, keep))


@njit(inline="always")
def _store_rows(t, bf, p0, rows, w, keep):
    """bf[p*w : p*w + keep] = tile t for rows p0 <= p < min(rows, p0 + SHIFT_GROUP)."""
    for i in range(SHIFT_GROUP):
        if p0 + i < rows:
            vstore(bf, (p0 + i) * w, tile_get(t, i), keep)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def shift_history(buf, keep, start):
    """buf[p, :keep] = buf[p, start:start + keep] for every row of the (N, C, W) shift buffer, by
    vectors loaded before they are stored, so the overlapping copy (start < keep: a history longer
    than the hop) runs vectorised and stays exact (the destination is always before the source).

    Histories of at most one vector are moved SHIFT_GROUP rows at a time, the loads of the next
    group issued before the stores of this one: a load that overlaps the span of a pending masked
    store waits for that store to retire, which on short rows (every next row) cost 4x the copy."""
    bf = flat(buf)
    w = buf.shape[2]
    rows = buf.shape[0] * buf.shape[1]
    if rows == 0:
        return
    if keep > LANES:
        for p in range(rows):
            vcopy(bf, p * w, bf, p * w + start, keep)
        return
    a, b = tile_new(SHIFT_GROUP), tile_new(SHIFT_GROUP)
    _load_rows(a, bf, 0, rows, w, start, keep)
    for p0 in range(0, rows, 2 * SHIFT_GROUP):
        _load_rows(b, bf, p0 + SHIFT_GROUP, rows, w, start, keep)
        _store_rows(a, bf, p0, rows, w, keep)
        _load_rows(a, bf, p0 + 2 * SHIFT_GROUP, rows, w, start, keep)
        _store_rows(b, bf, p0 + SHIFT_GROUP, rows, w, keep)


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
