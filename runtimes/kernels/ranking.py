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

TopK with a large k on float32 or int32 (``top_k_keys``) ranks int64 keys instead of (value, index)
pairs: the value's order as an int32 (float bits with the negatives' magnitude bits flipped, every NaN
one value above +inf, -0 as +0) in the high half, complemented for largest, and the index in the low
half. Sorting keys ascending is then TopK's order, by plain integer compares.
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
def _before(va, a, vb, b, largest):
    """Value va at index a ranks before vb at index b (a != b) in TopK's order: larger (or smaller)
    first, NaN above +inf, equal values and NaNs by lower index."""
    if va > vb:
        return largest
    if va < vb:
        return not largest
    na, nb = va != va, vb != vb
    if na == nb:  # equal, or both NaN
        return a < b
    return na if largest else nb


@njit(inline="always", fastmath=FASTMATH)
def _sift_down(hv, hi, i, size, largest):
    """Move the entry at node i of the heap (values hv, indices hi) down until every parent ranks
    after its children, so the root is the entry to drop first."""
    v, r = hv[i], hi[i]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and _before(hv[c], hi[c], hv[c + 1], hi[c + 1], largest):
            c += 1
        if not _before(v, r, hv[c], hi[c], largest):
            break
        hv[i], hi[i] = hv[c], hi[c]
        i = c
    hv[i], hi[i] = v, r


@njit(inline="always", fastmath=FASTMATH)
def _swap(hv, hi, a, b):
    """Exchange entries a and b of the (values, indices) pair of arrays."""
    hv[a], hv[b] = hv[b], hv[a]
    hi[a], hi[b] = hi[b], hi[a]


@njit(inline="always", fastmath=FASTMATH)
def _select(hv, hi, n, k, largest, budget):
    """Quickselect: reorder the n entries of (hv, hi) so the k best come first, in any order.
    Median-of-three pivots, Lomuto partitions; False (the entries still a permutation) when it has
    not converged within ``budget`` partitions, so adversarial inputs fall back to the heap."""
    lo, hi_end = 0, n - 1
    while lo < hi_end:
        if budget == 0:
            return False
        budget -= 1
        mid = (lo + hi_end) // 2
        if _before(hv[mid], hi[mid], hv[lo], hi[lo], largest):
            _swap(hv, hi, mid, lo)
        if _before(hv[hi_end], hi[hi_end], hv[lo], hi[lo], largest):
            _swap(hv, hi, hi_end, lo)
        if _before(hv[mid], hi[mid], hv[hi_end], hi[hi_end], largest):
            _swap(hv, hi, mid, hi_end)  # the median of the three is now at hi_end: the pivot
        pv, pi = hv[hi_end], hi[hi_end]
        store = lo
        for j in range(lo, hi_end):
            if _before(hv[j], hi[j], pv, pi, largest):
                _swap(hv, hi, store, j)
                store += 1
        _swap(hv, hi, store, hi_end)
        if store >= k:
            hi_end = store - 1
        elif store < k - 1:
            lo = store + 1
        else:
            break
    return True


@njit(cache=True, fastmath=FASTMATH)
def top_k(x, values, indices, outer, n, inner, k, largest, budget, hv, hi):
    """TopK along the middle axis of x viewed as (outer, n, inner): values[o, j, i] and
    indices[o, j, i] are the j-th ranked element of column x[o, :, i] and its index r, best first
    (always sorted; see the module doc for the order). Per column, with a ``budget`` > 0 (k a large
    part of n) a quickselect of the whole column in at most ``budget`` partitions; with none, or when
    that runs out, a heap of the k best entries seen, its root the worst of them, which a later element
    replaces only when it ranks above it (O(n log k)); then the k best are heapified and popped worst
    first. Scratch: ``hv`` values of x's dtype and ``hi`` int64 indices, n of each with a budget, else k."""
    xf, vf, idf = x.reshape(-1), values.reshape(-1), indices.reshape(-1)
    if k == 0:
        return
    for o in range(outer):
        for i in range(inner):
            col = xf[o * n * inner + i:]
            chosen = False
            if budget and k < n:
                for r in range(n):
                    hv[r], hi[r] = col[r * inner], r
                chosen = _select(hv, hi, n, k, largest, budget)
            if not chosen:
                for r in range(k):
                    hv[r], hi[r] = col[r * inner], r
            for p in range(k // 2 - 1, -1, -1):
                _sift_down(hv, hi, p, k, largest)
            top = hv[0]
            for r in range(k, k if chosen else n):
                v = col[r * inner]
                if _ranks_above(v, top, largest):
                    hv[0], hi[0] = v, r
                    _sift_down(hv, hi, 0, k, largest)
                    top = hv[0]
            dst = o * k * inner + i
            for size in range(k, 0, -1):
                vf[dst + (size - 1) * inner], idf[dst + (size - 1) * inner] = hv[0], hi[0]
                hv[0], hi[0] = hv[size - 1], hi[size - 1]
                _sift_down(hv, hi, 0, size - 1, largest)



@njit(inline="always")
def _order(v, b, is_float):
    """The int32 whose order is TopK's order of value v (bits b, float32 when ``is_float``, else v is
    the int32 b): negative floats' magnitude bits flipped, NaN above +inf, -0 as +0."""
    if not is_float:
        return b
    if v != v:
        return np.int32(0x7FC00000)
    if v == 0:
        return np.int32(0)
    return b ^ np.int32(0x7FFFFFFF) if b < 0 else b


@njit(inline="always")
def _select_keys(keys, n, k):
    """Reorder keys[:n] in place so its k smallest (distinct) keys come first: quickselect with
    median-of-three pivots and Hoare partitions (keys are distinct, their low half an index)."""
    lo, hi = 0, n - 1
    while lo < hi:
        mid = (lo + hi) // 2
        a, b, c = keys[lo], keys[mid], keys[hi]
        pivot = max(min(a, b), min(max(a, b), c))
        i, j = lo, hi
        while i <= j:
            while keys[i] < pivot:
                i += 1
            while keys[j] > pivot:
                j -= 1
            if i <= j:
                keys[i], keys[j] = keys[j], keys[i]
                i += 1
                j -= 1
        if k - 1 <= j:
            hi = j
        elif k - 1 >= i:
            lo = i
        else:
            return


@njit(inline="always")
def _radix_sort(keys, tmp, k, counts):
    """Sort keys[:k] (int64) ascending: 8-bit least-significant-digit radix passes through tmp[:k]
    (the top byte's sign bit flipped), skipping the passes where every key has the same digit.
    ``counts`` is scratch of 256 int64."""
    src, dst = keys, tmp
    moved = False
    for shift in range(0, 64, 8):
        flip = 0x80 if shift == 56 else 0
        counts[:] = 0
        for j in range(k):
            counts[((src[j] >> shift) & 0xFF) ^ flip] += 1
        if counts[((src[0] >> shift) & 0xFF) ^ flip] == k:
            continue
        total = 0
        for d in range(256):
            total, counts[d] = total + counts[d], total
        for j in range(k):
            d = ((src[j] >> shift) & 0xFF) ^ flip
            dst[counts[d]] = src[j]
            counts[d] += 1
        src, dst = dst, src
        moved = not moved
    if moved:
        for j in range(k):
            keys[j] = src[j]


@njit(cache=True, fastmath=FASTMATH)
def top_k_keys(x, values, indices, outer, n, inner, k, largest, is_float, keys):
    """TopK as ``top_k`` (same layout and order) for float32 (``is_float``) or int32 x: per column, the
    int64 keys (order << 32 | index, the order complemented for largest; see the module doc) of its n
    elements, the k smallest selected (quickselect) and radix-sorted. Scratch: ``keys``, n + k int64."""
    xf, vf, idf = x.reshape(-1), values.reshape(-1), indices.reshape(-1)
    bits = xf.view(np.int32)
    counts = np.empty(256, np.int64)
    if k == 0:
        return
    for o in range(outer):
        for i in range(inner):
            at = o * n * inner + i
            for r in range(n):
                m = _order(xf[at + r * inner], bits[at + r * inner], is_float)
                keys[r] = (np.int64(~m if largest else m) << 32) | r
            _select_keys(keys, n, k)
            _radix_sort(keys, keys[n:], k, counts)
            dst = o * k * inner + i
            for j in range(k):
                r = keys[j] & 0xFFFFFFFF
                vf[dst + j * inner], idf[dst + j * inner] = xf[at + r * inner], r
