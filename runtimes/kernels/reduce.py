"""Reductions and softmax along axes of C-contiguous arrays.

The builder rewrites every reduction into one of three index forms over the flat input: rows (x as
(outer, n), reducing each row), columns (x as (outer, n, inner), reducing the middle axis with one
accumulator per inner position so the loads stay contiguous), and gather for reduced axes that are
not adjacent (out[j] = reduce over r of x[base[j] + offs[r]]). Sums accumulate in float64 (softmax's
row sum in float32, which vectorises), except the mean of rows (GlobalAveragePool, also run by the
step-program interpreter): float32 vector partial sums, as onnxruntime's, a vector width of rows
(16 with AVX-512) at a time.
Max and min propagate NaN (np.max semantics); log-sum-exp and softmax subtract the maximum first,
so they never overflow. Each reduction code and form gets its own any-rank kernel, ``REDUCE[code, form]``
(a closure over ints, so numba's cache keys stay stable), that calls the flat loop with the code as a
literal: a model compiles only the reductions and forms it uses.

Codes: 0 sum, 1 mean, 2 max, 3 min, 4 prod, 5 L1, 6 L2, 7 sum of squares, 8 log-sum, 9 log-sum-exp.
"""
import math

import numpy as np
from numba import literally, njit

from . import FASTMATH
from .elementwise import exp32, nan_max, nan_min
from . import simd
from .simd import tile_get, tile_new, tile_set, vadd, vload, vmul, vsplat, vstore, vsum_pairs

SUM, MEAN, MAX, MIN, PROD, L1, L2, SUM_SQUARE, LOG_SUM, LOG_SUM_EXP = range(10)
ROWS, COLUMNS, GATHER = range(3)
LANES = 64  # independent accumulators per row, so NaN-aware row max/min vectorise


@njit(inline="always", fastmath=FASTMATH)
def _init(code):
    """Accumulator start value of reduction ``code``."""
    if code == MAX:
        return -np.inf
    if code == MIN:
        return np.inf
    if code == PROD:
        return 1.0
    return 0.0


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _exp_shifted(v, shift):
    """exp(v - shift), kept out of line: numba does not prune the branches of inlined helpers, so an
    inlined exp would be compiled into every reduction."""
    return exp32(v - shift)


@njit(inline="always", fastmath=FASTMATH)
def _step(acc, v, code, shift):
    """Fold one input value into the accumulator (``shift`` is the maximum, for log-sum-exp)."""
    if code == MAX:
        return nan_max(acc, v)
    if code == MIN:
        return nan_min(acc, v)
    if code == PROD:
        return acc * v
    if code == L1:
        return acc + abs(v)
    if code == L2 or code == SUM_SQUARE:
        return acc + v * v
    if code == LOG_SUM_EXP:
        return acc + _exp_shifted(v, shift)
    return acc + v


@njit(inline="always", fastmath=FASTMATH)
def _finish(acc, n, code, shift):
    """The reduction's result from a finished accumulator over ``n`` values."""
    if code == MEAN:
        return acc / n
    if code == L2:
        return math.sqrt(acc)
    if code == LOG_SUM:
        return math.log(acc) if acc > 0 else (-np.inf if acc == 0 else np.nan)
    if code == LOG_SUM_EXP:
        return shift if abs(shift) == np.inf else math.log(acc) + shift
    return acc


@njit(inline="always", fastmath=FASTMATH)
def _fold(row, n, code, shift, lanes):
    """Accumulate row[:n]. Sums are plain loops (LLVM vectorises them); NaN-aware max and min run in
    LANES independent lanes, which vectorise where a single running max would not, on rows of at
    least LANES values (on shorter ones merging the lanes costs more than the row)."""
    if (code != MAX and code != MIN) or n < LANES:
        acc = _init(code)
        for r in range(n):
            acc = _step(acc, row[r], code, shift)
        return acc
    for i in range(LANES):
        lanes[i] = _init(code)
    full = n - n % LANES
    for r in range(0, full, LANES):
        block = row[r:]
        for i in range(LANES):
            lanes[i] = _step(lanes[i], block[i], code, shift)
    width = LANES // 2
    while width >= 1:  # merge the lanes pairwise, halving each time
        for i in range(width):
            lanes[i] = _step(lanes[i], lanes[i + width], code, shift)
        width //= 2
    acc = lanes[0]
    for r in range(full, n):
        acc = _step(acc, row[r], code, shift)
    return acc


CHAINS = 4
"""Vector accumulators per row of ``mean_rows`` on rows of at least CHAINS vectors (add latency);
``_row_partials`` holds exactly four (a0..a3), so this stays 4."""


_GROUP = simd.LANES
"""Rows merged per group by ``mean_rows`` (a module constant: ``tile_new`` needs a literal size)."""


@njit(inline="always")
def _row_partials(x, start, n):
    """One vector of float32 partial sums of x[start : start + n]: CHAINS accumulators over blocks of
    CHAINS vectors, then the rest into the first, the last vector masked (nothing past n is read)."""
    w = simd.LANES
    a0 = a1 = a2 = a3 = vsplat(0.0)
    block = n - n % (CHAINS * w)
    for c in range(0, block, CHAINS * w):
        a0 = vadd(a0, vload(x, start + c, w))
        a1 = vadd(a1, vload(x, start + c + w, w))
        a2 = vadd(a2, vload(x, start + c + 2 * w, w))
        a3 = vadd(a3, vload(x, start + c + 3 * w, w))
    for c in range(block, n, w):
        a0 = vadd(a0, vload(x, start + c, n - c))
    return vadd(vadd(a0, a1), vadd(a2, a3))


@njit(inline="always")
def _store_means(t, out, r0, rows, inv):
    """Merge tile t's row vectors into one vector of row sums (lane i: row i), scale by ``inv`` and
    store its first ``rows`` lanes at out[r0]."""
    w = simd.LANES
    _merge_pairs(t, w // 2)  # (constant widths: unrolled)
    if w >= 4:
        _merge_pairs(t, w // 4)
    if w >= 8:
        _merge_pairs(t, w // 8)
    if w >= 16:
        _merge_pairs(t, w // 16)
    means = vmul(tile_get(t, 0), inv)
    if rows == w:  # unmasked: a load of a masked store's data waits for it to retire (not forwarded)
        vstore(out, r0, means, w)
    else:
        vstore(out, r0, means, rows)


@njit(inline="always")
def _merge_pairs(t, width):
    """Vector i of tile t = the pairwise lane sums of vectors 2i and 2i + 1, for i < width."""
    for i in range(width):
        tile_set(t, i, vsum_pairs(tile_get(t, 2 * i), tile_get(t, 2 * i + 1)))


@njit(inline="always")
def _add_columns(t, x, r0, n, c, count, rows):
    """Add x[(r0 + i)*n + c :][:count] (masked past count) to vector i of tile t, for i < rows: a
    constant trip count, so the tile stays in registers."""
    for i in range(_GROUP):
        if i < rows:
            tile_set(t, i, vadd(tile_get(t, i), vload(x, (r0 + i) * n + c, count)))


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def mean_rows(x, out, outer, n):
    """out[o] = mean of x[o*n : (o+1)*n] for o < outer (flat float32 arrays), in float32 like
    onnxruntime's: per group of simd.LANES rows, one vector of partial sums per row, then
    log2(simd.LANES) stages of pairwise lane sums (``vsum_pairs``) leave lane i = the sum of row i,
    times 1 / n, one store. Rows of CHAINS vectors or more sum one at a time (``_row_partials``),
    shorter ones side by side, a vector of each row per step (the same sums: one chain per row
    either way; 1.6x faster on the 32 x 32 of a streaming head, its tile kept in registers). Plain
    IEEE adds: NaN and Inf propagate as in any sum. (Called, not inlined, by the step-program
    interpreter: inlined there it ran 1.5x slower.)"""
    w = simd.LANES
    inv = vsplat(np.float32(1.0) / np.float32(n)) if n > 0 else vsplat(np.float32(np.nan))
    whole = n - n % w
    for r0 in range(0, outer, w):
        rows = min(w, outer - r0)
        if n < CHAINS * w:  # (a tile of its own: only constant indices, so it stays in registers)
            t = tile_new(_GROUP)
            for c in range(0, whole, w):
                if rows == w:
                    _add_columns(t, x, r0, n, c, w, w)
                else:
                    _add_columns(t, x, r0, n, c, w, rows)
            if whole < n:
                _add_columns(t, x, r0, n, whole, n - whole, rows)
            _store_means(t, out, r0, rows, inv)
        else:
            long = tile_new(_GROUP)
            for i in range(w):
                if i < rows:
                    tile_set(long, i, _row_partials(x, (r0 + i) * n, n))
            _store_means(long, out, r0, rows, inv)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _rows(x, out, outer, n, code):
    """out[o] = reduce(x[o*n:(o+1)*n]) for flat x; ``code`` a literal."""
    literally(code)
    lanes = np.empty(LANES)
    for o in range(outer):
        row = x[o * n:(o + 1) * n]
        shift = _fold(row, n, MAX, 0.0, lanes) if code == LOG_SUM_EXP else 0.0
        out[o] = _finish(_fold(row, n, code, shift, lanes), n, code, shift)


@njit(inline="always", fastmath=FASTMATH)
def _column_max(block, n, inner, m):
    """m[i] = max over r of block[r * inner + i] (NaN-propagating): the shift of log-sum-exp and softmax."""
    for i in range(inner):
        m[i] = -np.inf
    for r in range(n):
        row = block[r * inner:]
        for i in range(inner):
            m[i] = _step(m[i], row[i], MAX, 0.0)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _columns(x, out, outer, n, inner, code):
    """out[o, i] = reduce over r of x[o, r, i] for flat x, one accumulator per i; ``code`` a literal."""
    literally(code)
    shift = np.zeros(inner)
    acc = np.empty(inner)
    for o in range(outer):
        block = x[o * n * inner:(o + 1) * n * inner]
        if code == LOG_SUM_EXP:
            _column_max(block, n, inner, shift)
        for i in range(inner):
            acc[i] = _init(code)
        for r in range(n):
            row = block[r * inner:]
            for i in range(inner):
                acc[i] = _step(acc[i], row[i], code, shift[i])
        dst = out[o * inner:]
        for i in range(inner):
            dst[i] = _finish(acc[i], n, code, shift[i])


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _gather(x, out, base, offs, code):
    """out[j] = reduce over r of x[base[j] + offs[r]] for flat x; ``code`` a literal."""
    literally(code)
    n = offs.size
    for j in range(base.size):
        b = base[j]
        shift = 0.0
        if code == LOG_SUM_EXP:
            shift = -np.inf
            for r in range(n):
                shift = _step(shift, x[b + offs[r]], MAX, 0.0)
        acc = _init(code)
        for r in range(n):
            acc = _step(acc, x[b + offs[r]], code, shift)
        out[j] = _finish(acc, n, code, shift)


def _reduction(code: int, form: int):
    """The any-rank kernel of reduction ``code`` in index form ``form`` (a closure over ints keeps
    numba's cache key stable)."""

    @njit(cache=True, fastmath=FASTMATH, error_model="numpy")
    def kernel(x, out, outer, n, inner, base, offs):
        """Reduce x into out in this kernel's index form (ROWS, COLUMNS or GATHER; see the module doc)."""
        xf, of = x.reshape(-1), out.reshape(-1)
        if form == ROWS and code == MEAN:
            mean_rows(xf, of, outer, n)
        elif form == ROWS:
            _rows(xf, of, outer, n, code)
        elif form == COLUMNS:
            _columns(xf, of, outer, n, inner, code)
        else:
            _gather(xf, of, base, offs, code)

    return kernel


REDUCE = {(code, form): _reduction(code, form) for code in range(LOG_SUM_EXP + 1) for form in (ROWS, COLUMNS, GATHER)}


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _softmax_rows(x, out, outer, n, log):
    """Rows of ``n`` (see ``softmax``). A loop that both reads ``x`` and stores into ``out`` is vectorised
    or not by where ``out`` lies (LLVM's overlap check), so such loops only do single roundings (a
    difference, a product): the exponentials go through scratch, where the vector path always runs
    (a scalar exp32 and a vector one may contract differently), and the sum reads only."""
    lanes = np.empty(LANES)
    e = np.empty(n, np.float32)
    for o in range(outer):
        row, dst = x[o * n:(o + 1) * n], out[o * n:(o + 1) * n]
        m = np.float32(_fold(row, n, MAX, 0.0, lanes))
        for r in range(n):
            e[r] = row[r] - m
        for r in range(n):
            e[r] = exp32(e[r])
        s = np.float32(0.0)  # a float32 sum vectorises (in lanes, which also keeps it accurate)
        for r in range(n):
            s += e[r]
        if log:  # (x - m) - log s in two passes: in one, fastmath may reassociate it to x - (m + log s),
            ls = np.float32(math.log(s))  # which loses log s next to a large m
            for r in range(n):
                dst[r] = row[r] - m
            for r in range(n):
                dst[r] -= ls
        else:
            inv = 1.0 / s
            for r in range(n):
                dst[r] = e[r] * inv


SOFTMAX_BLOCK = 4096
"""Elements of the short rows whose exponentials ``_softmax_short_rows`` computes in one flat loop (16 KB, in L1)."""


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _softmax_short_rows(x, out, outer, n, log):
    """Softmax of many rows shorter than a vector loop's worth (attention over a few keys), a block of
    rows at a time: row maxima, then exp(x - max) of the whole block in one flat loop into scratch (it
    vectorises, where a loop over one short row runs scalar: 24 rows of 12 keys 4.2 -> 1.4 us), row
    sums from the scratch (reads only, so their order never depends on where ``out`` lies), outputs."""
    rows = min(outer, max(1, SOFTMAX_BLOCK // n))
    e = np.empty(rows * n, np.float32)
    m = np.empty(rows, np.float32)
    for o0 in range(0, outer, rows):
        k = min(rows, outer - o0)
        for j in range(k):
            row = x[(o0 + j) * n:(o0 + j + 1) * n]
            m[j] = -np.inf
            for r in range(n):
                m[j] = nan_max(m[j], row[r])
            for r in range(n):
                e[j * n + r] = row[r] - m[j]
        for i in range(k * n):
            e[i] = exp32(e[i])
        for j in range(k):
            row, dst = x[(o0 + j) * n:(o0 + j + 1) * n], out[(o0 + j) * n:(o0 + j + 1) * n]
            s = np.float32(0.0)
            for r in range(n):
                s += e[j * n + r]
            if log:  # (x - m) - log s in two passes, as _softmax_rows
                ls = np.float32(math.log(s))
                for r in range(n):
                    dst[r] = row[r] - m[j]
                for r in range(n):
                    dst[r] -= ls
            else:
                inv = np.float32(1.0) / s
                for r in range(n):
                    dst[r] = e[j * n + r] * inv


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _softmax_columns(x, out, outer, n, inner, log):
    m = np.empty(inner, np.float32)
    s = np.empty(inner)
    for o in range(outer):
        xb = x[o * n * inner:(o + 1) * n * inner]
        ob = out[o * n * inner:(o + 1) * n * inner]
        _column_max(xb, n, inner, m)
        for i in range(inner):
            s[i] = 0.0
        for r in range(n):
            row, dst = xb[r * inner:], ob[r * inner:]
            for i in range(inner):
                d = row[i] - m[i]
                e = exp32(d)
                s[i] += e
                dst[i] = d if log else e
        for i in range(inner):  # dst holds x - m (log) or e; a pass of its own keeps (x - m) - log s unreassociated
            s[i] = math.log(s[i]) if log else 1.0 / s[i]
        for r in range(n):
            dst = ob[r * inner:]
            for i in range(inner):
                dst[i] = dst[i] - s[i] if log else dst[i] * s[i]


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def softmax(x, out, outer, n, inner, log):
    """Softmax (log-softmax when ``log``) over the middle axis of x viewed as (outer, n, inner):
    out = exp(x - max) / sum(exp(x - max)), or (x - max) - log(sum(exp(x - max))); ``out`` may be ``x``."""
    if inner == 1 and 0 < n < LANES and outer > 1:
        _softmax_short_rows(x.reshape(-1), out.reshape(-1), outer, n, log)
    elif inner == 1:
        _softmax_rows(x.reshape(-1), out.reshape(-1), outer, n, log)
    else:
        _softmax_columns(x.reshape(-1), out.reshape(-1), outer, n, inner, log)
