"""Ranking kernels: ArgMax/ArgMin and TopK along one axis of a C-contiguous array.

The builder views the input as (outer, n, inner), the ranked axis in the middle; outputs are
(outer, inner) indices (ArgMax/ArgMin) or (outer, k, inner) values and indices (TopK). Any dtype
numba orders (float32, int32, int64 here); indices are int64.

NaN follows onnxruntime, which differs between the two ops:
- ArgMax/ArgMin keep a running best from element 0 and replace it on a strictly better value
  (first index) or a better-or-equal one (select_last_index). NaN compares false, so a NaN is
  never chosen unless it is element 0, and then it stays (NumPy's argmax would pick the first NaN).
- TopK ranks NaN above +inf (so first with largest=1, last with largest=0), equal values and
  NaNs by lower index first.
"""
import numpy as np
from numba import njit

from . import FASTMATH

LANES = 64  # independent running bests per row, so the scan over a row vectorises


@njit(inline="always", fastmath=FASTMATH)
def _beats(v, b, is_max):
    """v is strictly better than b (false when either is NaN)."""
    return v > b if is_max else v < b


@njit(inline="always", fastmath=FASTMATH)
def _arg_row(row, n, is_max, last, lanes):
    """ArgMax/ArgMin of row[:n] (n >= 1) in two passes: the best value (a NaN-skipping max/min in
    LANES independent lanes, started at row[0], which vectorises), then its first or last index."""
    b = row[0]
    if b != b:
        return 0
    for j in range(LANES):
        lanes[j] = b
    full = n - n % LANES
    for r in range(0, full, LANES):
        block = row[r:r + LANES]
        for j in range(LANES):
            v = block[j]
            lanes[j] = v if _beats(v, lanes[j], is_max) else lanes[j]
    for j in range(LANES):
        b = lanes[j] if _beats(lanes[j], b, is_max) else b
    for r in range(full, n):
        b = row[r] if _beats(row[r], b, is_max) else b
    if last:
        for r in range(n - 1, -1, -1):
            if row[r] == b:
                return r
    for r in range(n):
        if row[r] == b:
            return r
    return 0


@njit(cache=True, fastmath=FASTMATH)
def arg_rows(x, out, outer, n, is_max, last, lanes):
    """out[o] = index of the max (``is_max``) or min of x[o, :] for x viewed as (outer, n), the first
    such index or the last one (``last``); ``lanes`` is scratch of LANES values of x's dtype."""
    xf, of = x.reshape(-1), out.reshape(-1)
    for o in range(outer):
        of[o] = _arg_row(xf[o * n:(o + 1) * n], n, is_max, last, lanes)


@njit(cache=True, fastmath=FASTMATH)
def arg_columns(x, out, outer, n, inner, is_max, last, best):
    """out[o, i] = index r of the max (``is_max``) or min of x[o, r, i] over r for x viewed as
    (outer, n, inner): a running best per column i (``best``, scratch of ``inner`` values of x's
    dtype), replaced when beaten, or also when equalled (``last``); contiguous loads along i."""
    xf, of = x.reshape(-1), out.reshape(-1)
    for o in range(outer):
        block, idx = xf[o * n * inner:(o + 1) * n * inner], of[o * inner:(o + 1) * inner]
        for i in range(inner):
            best[i] = block[i]
            idx[i] = 0
        for r in range(1, n):
            row = block[r * inner:(r + 1) * inner]
            for i in range(inner):
                v = row[i]
                if _beats(v, best[i], is_max) or (last and v == best[i]):
                    best[i] = v
                    idx[i] = r


@njit(inline="always", fastmath=FASTMATH)
def _ranks_above(v, top, largest):
    """A value v from later in the column ranks before ``top`` (a tie does not: lower index first)."""
    if largest:
        return v > top or (v != v and top == top)
    return v < top or (top != top and v == v)


@njit(inline="always", fastmath=FASTMATH)
def _before(col, a, b, stride, largest):
    """Element a of the column ranks before element b (a != b) in TopK's order: larger (or smaller)
    first, NaN above +inf, equal values and NaNs by lower index."""
    va, vb = col[a * stride], col[b * stride]
    if va > vb:
        return largest
    if va < vb:
        return not largest
    na, nb = va != va, vb != vb
    if na == nb:  # equal, or both NaN
        return a < b
    return na if largest else nb


@njit(inline="always", fastmath=FASTMATH)
def _sift_down(heap, i, size, col, stride, largest):
    """Restore the heap below node i: every parent ranks after its children, so the root is the
    element to drop first."""
    while True:
        child = 2 * i + 1
        if child >= size:
            return
        if child + 1 < size and _before(col, heap[child], heap[child + 1], stride, largest):
            child += 1
        if not _before(col, heap[i], heap[child], stride, largest):
            return
        heap[i], heap[child] = heap[child], heap[i]
        i = child


@njit(cache=True, fastmath=FASTMATH)
def top_k(x, values, indices, outer, n, inner, k, largest, heap):
    """TopK along the middle axis of x viewed as (outer, n, inner): values[o, j, i] and
    indices[o, j, i] are the j-th ranked element of column x[o, :, i] and its index r, best first
    (always sorted; see the module doc for the order). Per column a heap of the k best indices seen
    (``heap``: int64 scratch of k), its root the worst of them: O(n log k), then popped in order."""
    xf, vf, idf = x.reshape(-1), values.reshape(-1), indices.reshape(-1)
    if k == 0:
        return
    for o in range(outer):
        for i in range(inner):
            col = xf[o * n * inner + i:]
            for r in range(k):
                heap[r] = r
            for p in range(k // 2 - 1, -1, -1):
                _sift_down(heap, p, k, col, inner, largest)
            top = col[heap[0] * inner]
            for r in range(k, n):
                if _ranks_above(col[r * inner], top, largest):
                    heap[0] = r
                    _sift_down(heap, 0, k, col, inner, largest)
                    top = col[heap[0] * inner]
            dst = o * k * inner + i
            for size in range(k, 0, -1):
                r = heap[0]
                vf[dst + (size - 1) * inner] = col[r * inner]
                idf[dst + (size - 1) * inner] = r
                heap[0] = heap[size - 1]
                _sift_down(heap, 0, size - 1, col, inner, largest)
