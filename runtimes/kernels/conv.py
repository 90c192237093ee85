"""Convolution (ONNX Conv, float32, NCL or NCHW) as shifted matrix products on the gemm micro-kernel.

For one image and group, Y[co, oh, ow] = bias[co] + sum_{ci, kh, kw} W[co, ci, kh, kw] *
Xpad[ci, oh*sh + kh*dh, ow*sw + kw*dw]. The input is copied once into a zero-padded polyphase
layout Q[ci, rh, rw, i, j] = Xpad[ci, i*sh + rh, j*sw + rw] (rh < sh, rw < sw; Qh x Qw per
phase), where every tap reads a contiguous run: Xpad[ci, oh*sh + kh*dh, ow*sw + kw*dw] =
Q[ci, (kh*dh) % sh, (kw*dw) % sw, oh + (kh*dh) // sh, ow + (kw*dw) // sw]. Letting ow run over the
whole row width Qw makes each tap (ci, kh, kw) one row of B at a fixed offset (``boffs``), so
Y_wide (Cout, Hout*Qw) = W (Cout, Cin*KH*KW) @ B with no im2col copy. The Qw - Wout extra
columns of each output row are dropped when Y_wide is copied out with the activation applied.
Convolutions with a single output row (all 1-D ones) or with Qw == Wout write Y directly, and
unpadded unit-stride inputs are read in place. A 1-D convolution is the 2-D one with H = KH = 1.

Single-row outputs at most 128 columns wide (with AVX-512; a streaming step's layers are this
narrow) take their whole blocks of four vectors by 6 x 4-vector tiles and a last block of two by
8 x 2-vector tiles first (``_quads``); the generic 8 x 3 tiles would leave lanes idle or be bound
by loads there. Rows of at most two vectors take short tiles (SHORT_ROWS channels by one or two
vectors, the last masked) instead, bias and Relu applied in registers. These, the narrow and the
dot methods are the ``rows`` kernels. ``conv_kernel(plan)`` gives a kernel compiled for one path and
its tile families only; the streaming step interpreter calls (``rows_call``) the rows kernel of the
families its program's convolutions use together.

Narrow single-row outputs (a few columns, as a streaming step computes per hop) vectorise over
output channels instead of columns: with W packed as Wt (K, Cout/groups) per group, a tile of
NARROW_COLS columns by NARROW_VECS channel vectors accumulates Wt[t] * broadcast B(t, j), so no
lane idles when the width is below a vector, and the tile is written to Y transposed: when the
rows are exactly the tile's columns (a hop's usual case) the transposed tile is whole vectors of
Y, else one masked store per channel. Relu is applied in registers before the store.

Depthwise convolutions (one input and one output channel per group) are not products: their
tiles accumulate vectors of output columns over the taps, one channel at a time, and the common
3x3 case (stride 1 or 2) reads X itself through a sliding window of input rows.

A residual R of Y's shape (a fused ``Add``: ``conv_kernel(plan, residual=True)``) is added after the
bias and before the activation, while the outputs just written are still in cache: the direct
product is computed by column blocks of about RESIDUAL_RUN outputs, each then added to and
activated; the wide product adds R as it compacts Y_wide, the depthwise methods per channel. Tiles
that apply Relu in registers leave it to that pass then. Relu without a residual is applied the
same way (by explicit vectors, in the compaction or per column block): a pass of its own over Y
cost more than the product for a 3-channel stem.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from . import FASTMATH
from .activation import FORMULAS, IDENTITY, RELU, activate_in, codes_mask
from .gemm import PANEL_ROWS, ROW_VECS, WIDE_VECS, matmul_tiles, micro_kernel
from .simd import (AVX512, LANES, flat, tile_get, tile_new, tile_set, vadd, vcopy, vcopy_even, vfma, vload, vload_even,
                   vload_lanes, vmax, vsplat, vsplat_at, vstore, vstore_columns, vtranspose)

FIELDS = ("batch", "channels", "height", "width", "groups", "out_channels", "out_height", "out_width",
          "pad_top", "pad_left", "stride_h", "stride_w", "q_height", "q_width", "plane", "repack", "method",
          "activation")
"""Leading fields of the int64 ``plan`` array, in order (``plane`` is the per-channel length of Q);
the tap offsets ``boffs`` follow them."""
ACTIVATION_RUN = 4096
"""Outputs activated per call after 3x3 depthwise channels: small enough to be in L1 still, large
enough that the call costs less than the pass."""
RESIDUAL_RUN = 131072
"""Outputs (512 KB, a quarter of a core's L2) computed per block of the direct product when a
residual follows, so the block is still in cache when the residual is added and the activation
applied: measured 64 -> 256 channels at 56 x 56, the residual costs 0.44 ms over the convolution's
1.18 where blocks of 64K outputs cost 0.72 and one block of all 800K 0.49; blocks of 2K-8K outputs
(rows of 48-96 columns) cost twice as much again."""
GEMM, GEMM_WIDE, DEPTHWISE, DEPTHWISE_3X3, GEMM_NARROW, DOT = range(6)
"""Methods: shifted product written to Y directly or through Y_wide, depthwise by generic tiles,
depthwise 3x3 (dilation 1, stride 1 or 2 in both axes) by a sliding window of input rows, the
channel-vectorised product for narrow single-row outputs (weights packed as Wt), and dot
products for a single output column whose taps read one contiguous run of X (a kernel covering the
whole unpadded input, as a Flatten + Gemm head written as a Conv)."""
NARROW_COLS, NARROW_VECS = 4, 4
"""Tile of the narrow method: 4 columns by 4 vectors of output channels, 16 accumulators."""
PAIR_COLS = 8
"""Narrow groups of fewer than NARROW_VECS vectors of channels: tiles of 8 (or 4, or 2) columns by 2
vectors, each broadcast input feeding two FMAs."""
PAIR_SPLITS = 2 if AVX512 else 1
"""Sums of consecutive taps in the 4-column pair tile (twice as many in the 2-column one): 16
accumulators instead of 8 (4), whose FMA chains would otherwise bound the tile by their latency
(measured 16 -> 32 channels at 4 columns and 32 -> 32 at 2: 1.2-1.3x faster). With 16 vector
registers (no AVX-512) the tiles keep 8 (4 over two sums)."""


def plan(boffs: np.ndarray, **fields: int) -> np.ndarray:
    """The ``plan`` array of ``conv_kernel``: FIELDS given by name, then the tap offsets."""
    return np.concatenate([np.array([int(fields[f]) for f in FIELDS], np.int64), boffs.astype(np.int64)])


@njit(cache=True, fastmath=FASTMATH)
def _repack(x, x_off, channels, h, w, pt, pl, sh, sw, qh, qw, plane, q):
    """q[c*plane + (rh*sw + rw)*qh*qw + i*qw + j] = Xpad[c, i*sh + rh, j*sw + rw] for the positions
    inside X; the pad positions of ``q`` are the same on every call and stay zero. A ``plane`` of one
    phase (qh*qw) holds phase (0, 0) only (the convolution reads no other)."""
    one = plane == qh * qw
    for rh in range(1 if one else sh):
        i0 = max(0, -((rh - pt) // sh))
        i1 = max(i0, min(qh, -((rh - pt - h) // sh)))
        for rw in range(1 if one else sw):
            j0 = min(qw, max(0, -((rw - pl) // sw)))
            j1 = max(j0, min(qw, -((rw - pl - w) // sw)))
            for c in range(channels):
                base = c * plane + (rh * sw + rw) * qh * qw
                for i in range(i0, i1):
                    o = base + i * qw + j0
                    start = x_off + (c * h + i * sh + rh - pt) * w + j0 * sw + rw - pl
                    n = j1 - j0
                    if sw == 1:
                        vcopy(q, o, x, start, n)
                    elif sw == 2:
                        vcopy_even(q, o, x, start, n)
                    else:
                        for j in range(n):
                            q[o + j] = x[start + j * sw]


@njit(cache=True, fastmath=FASTMATH)
def _compact(yw, yw_off, ncols, qw, y, y_off, m, oh, ow, relu, res, residual):
    """y[y_off + (i*oh + r)*ow + j] = yw[yw_off + i*ncols + r*qw + j] (+ res[same offset as y] when
    ``residual``), then Relu when ``relu``, for j < ow (drops the wide columns): Relu applied as the
    rows are copied (one pass over Y instead of two), other activations by the caller's pass over Y."""
    for i in range(m):
        for r in range(oh):
            o = y_off + (i * oh + r) * ow
            _add_run(y, o, yw, yw_off + i * ncols + r * qw, res, ow, relu, residual)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _add_run(y, y_off, a, a_off, res, n, relu, add):
    """y[y_off + j] = a[a_off + j] (+ res[y_off + j] when ``add``: the residual has Y's layout) for
    j < n, then Relu when ``relu`` (as activate's: NaN and -0.0 pass). Explicit vectors: a loop LLVM
    must prove free of aliasing (y may be a) stays scalar."""
    zero = vsplat(0.0)
    full = n - n % LANES
    for j in range(0, full, LANES):  # (whole vectors: constant masks, plain loads and stores)
        v = vload(a, a_off + j, LANES)
        if add:
            v = vadd(v, vload(res, y_off + j, LANES))
        if relu:
            v = vmax(zero, v)
        vstore(y, y_off + j, v, LANES)
    if full < n:
        v = vload(a, a_off + full, n - full)
        if add:
            v = vadd(v, vload(res, y_off + full, n - full))
        if relu:
            v = vmax(zero, v)
        vstore(y, y_off + full, v, n - full)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def _add_rows(y, y_off, y_rs, m, n, res, add, relu):
    """Rows i < m of n outputs at y[y_off + i*y_rs]: y = y (+ res when ``add``: the residual has Y's
    layout), then Relu when ``relu``, in registers."""
    for i in range(m):
        o = y_off + i * y_rs
        _add_run(y, o, y, o, res, n, relu, add)


@njit(inline="always")
def _epilogue(codes, y, y_off, y_rs, m, n, res, add, code, p1, p2):
    """Rows i < m of n outputs at y[y_off + i*y_rs]: y = act(y (+ res when ``add``)), ``code`` among the
    constant ``codes`` (``codes_mask``): Relu applied in registers, other activations by a pass over the
    rows just written."""
    relu = code == RELU
    if add or relu:
        _add_rows(y, y_off, y_rs, m, n, res, add, relu)
    if not relu:
        activate_in(codes, y, y_off, y_rs, m, n, code, p1, p2)


def _narrow_tile(cols: int, vecs: int, masked: bool, splits: int = 1):
    """Narrow micro-kernel: ``cols`` columns by ``vecs`` channel vectors (compile-time constants);
    the masked variant serves a last block of fewer than vecs * LANES channels. With ``splits`` > 1
    consecutive taps go to that many separate sums, added at the end: a tile of few accumulators
    would otherwise wait on the latency of its FMA chains."""
    if vecs not in (1, 2, 4) or splits not in (1, 2, 4):
        raise ValueError(f"narrow tiles have 1, 2 or 4 vectors and 1, 2 or 4 sums, not {vecs} and {splits}")
    count = cols * vecs
    sums = count * splits

    @njit(cache=True, fastmath=FASTMATH, inline="always")
    def taps(acc, base, wv, wt, w_off, cout, src, boffs, b_add, t, m, last):
        """Tap t into sums acc[base : base + count]."""
        row = boffs[t] + b_add
        w_row = w_off + t * cout
        for v in range(vecs):
            tile_set(wv, v, vload(wt, w_row + v * LANES, m - v * LANES if masked else LANES))
        for j in range(cols):
            xv = vsplat_at(src, row + min(j, last))
            for v in range(vecs):
                i = base + j * vecs + v
                tile_set(acc, i, vfma(xv, tile_get(wv, v), tile_get(acc, i)))

    @njit(cache=True, fastmath=FASTMATH, inline="always")
    def store(acc, rows, v, y, y_off, ow, n, m):
        """Write channel vector v (a literal: constant tile indices) of the tile, transposed."""
        if n == cols and ow == cols:
            vtranspose(acc, v, vecs, cols, rows)
            for g in range(cols):
                o = (v * cols + g) * LANES
                vstore(y, y_off + o, tile_get(rows, g), m * cols - o if masked else LANES)
        else:
            vstore_columns(acc, v, vecs, cols, y, y_off, ow, n, v * LANES, m)

    @njit(cache=True, fastmath=FASTMATH, _nrt=False)
    def tile(wt, w_off, cout, src, boffs, b_add, bias, b_off, y, y_off, ow, n, m, relu):
        """y[y_off + c*ow + j] = bias[b_off + c] + sum_t wt[w_off + t*cout + c] * src[boffs[t] + b_add + j]
        for c < m <= vecs * LANES and j < n <= cols, then Relu when ``relu``; columns past n repeat
        column n - 1. Rows of exactly cols columns (n == ow == cols) are whole vectors of y.
        Calls with literal sums and vectors (not loops LLVM might keep) keep every index constant,
        so the whole tile stays in registers."""
        acc = tile_new(sums)
        wv = tile_new(vecs)
        rows = tile_new(cols)
        zero = vsplat(0.0)
        for v in range(vecs):
            b = vload(bias, b_off + v * LANES, m - v * LANES if masked else LANES)
            for j in range(cols):
                tile_set(acc, j * vecs + v, b)
                for s in range(1, splits):
                    tile_set(acc, s * count + j * vecs + v, zero)
        last = n - 1
        k = boffs.size
        whole = k - k % splits
        for t in range(0, whole, splits):
            taps(acc, 0, wv, wt, w_off, cout, src, boffs, b_add, t, m, last)
            if splits > 1:
                taps(acc, count, wv, wt, w_off, cout, src, boffs, b_add, t + 1, m, last)
            if splits > 2:
                taps(acc, 2 * count, wv, wt, w_off, cout, src, boffs, b_add, t + 2, m, last)
                taps(acc, 3 * count, wv, wt, w_off, cout, src, boffs, b_add, t + 3, m, last)
        for t in range(whole, k):
            taps(acc, 0, wv, wt, w_off, cout, src, boffs, b_add, t, m, last)
        for i in range(count):
            for s in range(1, splits):
                tile_set(acc, i, vadd(tile_get(acc, i), tile_get(acc, s * count + i)))
            if relu:  # 0 > v ? 0 : v, as activate's RELU (NaN and -0.0 pass)
                tile_set(acc, i, vmax(zero, tile_get(acc, i)))
        store(acc, rows, 0, y, y_off, ow, n, m)  # the tile holds (column, channel): write it transposed
        if vecs > 1:
            store(acc, rows, 1, y, y_off, ow, n, m)
        if vecs > 2:
            store(acc, rows, 2, y, y_off, ow, n, m)
            store(acc, rows, 3, y, y_off, ow, n, m)

    return tile


_narrow_full = _narrow_tile(NARROW_COLS, NARROW_VECS, False)
_narrow_edge = _narrow_tile(NARROW_COLS, NARROW_VECS, True)
_pair_wide = _narrow_tile(PAIR_COLS, 2, False)
_pair_wide_edge = _narrow_tile(PAIR_COLS, 2, True)
_pair = _narrow_tile(PAIR_COLS // 2, 2, False, PAIR_SPLITS)
_pair_edge = _narrow_tile(PAIR_COLS // 2, 2, True)
_pair_two = _narrow_tile(2, 2, False, 2 * PAIR_SPLITS)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _narrow_blocks(wt, w_off, cout, src, boffs, b_add, bias, b_off, y, y_off, ow, relu, full, edge):
    """One group of a narrow convolution (see _narrow_tile) of at least NARROW_VECS vectors of
    channels: y (cout, ow) from Wt (K, cout) at ``w_off`` by NARROW_COLS x NARROW_VECS tiles, with
    the tiles the constant flags name (``full`` blocks of channels, a last ``edge`` block)."""
    block = NARROW_VECS * LANES
    for j0 in range(0, ow, NARROW_COLS):
        n = min(NARROW_COLS, ow - j0)
        for c0 in range(0, cout, block):
            m, wo, bo, yo = cout - c0, w_off + c0, b_off + c0, y_off + c0 * ow + j0
            if full and m >= block:
                _narrow_full(wt, wo, cout, src, boffs, b_add + j0, bias, bo, y, yo, ow, n, block, relu)
            elif edge and m < block:
                _narrow_edge(wt, wo, cout, src, boffs, b_add + j0, bias, bo, y, yo, ow, n, m, relu)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _narrow_pairs(wt, w_off, cout, src, boffs, b_add, bias, b_off, y, y_off, ow, relu, wide, wide_edge, two, pair,
                  pair_edge):
    """_narrow_blocks for groups of fewer than NARROW_VECS vectors of channels: tiles of two vectors by
    PAIR_COLS columns, or half as many for the last columns when at most that many remain (two, over
    two sums of alternate taps, when at most two remain); the constant flags name the tiles compiled
    (``pair_tiles``)."""
    block = 2 * LANES
    for j0 in range(0, ow, PAIR_COLS):
        n = min(PAIR_COLS, ow - j0)
        for c0 in range(0, cout, block):
            m, wo, bo, yo = cout - c0, w_off + c0, b_off + c0, y_off + c0 * ow + j0
            if n > PAIR_COLS // 2:
                if wide and m >= block:
                    _pair_wide(wt, wo, cout, src, boffs, b_add + j0, bias, bo, y, yo, ow, n, block, relu)
                elif wide_edge and m < block:
                    _pair_wide_edge(wt, wo, cout, src, boffs, b_add + j0, bias, bo, y, yo, ow, n, m, relu)
            elif two and m >= block and n <= 2:
                _pair_two(wt, wo, cout, src, boffs, b_add + j0, bias, bo, y, yo, ow, n, block, relu)
            elif pair and m >= block and n > 2:
                _pair(wt, wo, cout, src, boffs, b_add + j0, bias, bo, y, yo, ow, n, block, relu)
            elif pair_edge and m < block:
                _pair_edge(wt, wo, cout, src, boffs, b_add + j0, bias, bo, y, yo, ow, n, m, relu)


def narrow_tiles(ow: int, cout_g: int) -> tuple[bool, ...]:
    """The tiles a narrow convolution of ``ow`` columns and ``cout_g`` channels per group calls, as
    the flags of _narrow_blocks (at least NARROW_VECS vectors of channels: full, edge) then of
    _narrow_pairs (wide, wide_edge, two, pair, pair_edge)."""
    if cout_g >= NARROW_VECS * LANES:
        return (True, cout_g % (NARROW_VECS * LANES) > 0) + (False,) * 5
    block = 2 * LANES
    ns = {min(PAIR_COLS, ow - j0) for j0 in range(0, ow, PAIR_COLS)}
    whole, edge = cout_g >= block, cout_g % block > 0
    return (False, False, whole and max(ns) > PAIR_COLS // 2, edge and max(ns) > PAIR_COLS // 2,
            whole and min(ns) <= 2, whole and any(2 < n <= PAIR_COLS // 2 for n in ns),
            edge and min(ns) <= PAIR_COLS // 2)


QUAD_ROWS, DUO_ROWS = 6, 8
QUAD_MAX = 8 * LANES if AVX512 else 0
"""Products at most this wide start with quads (6 x 4-vector tiles, 24 of the 32 zmm registers, 10
loads per 24 FMAs where the 8 x 3 tile and its one-vector edge take 11 per 24 and 9 per 8) and a
duo (8 x 2 vectors, unmasked). Measured 128 -> 128 channels, kernel 3: 1.7x faster at 32 columns,
1.1-1.2x at 64-128, equal when wider. Without AVX-512 (16 vector registers): none."""
_quad_tile = micro_kernel(QUAD_ROWS, 4, False)
_duo_tile = micro_kernel(DUO_ROWS, 2, False)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def _quads(a, a_off, k, b, boffs, b_add, bias, b_off, y, y_off, y_rs, m, full):
    """Y[:, :full] of the shifted product (``full`` a multiple of 2 * LANES) by QUAD_ROWS x 4-vector
    tiles, then DUO_ROWS x 2-vector tiles for a last block of two vectors."""
    one, zero, unit = np.int64(1), np.int64(0), np.float32(1.0)
    quads = full - full % (4 * LANES)
    for j0 in range(0, quads, 4 * LANES):
        for i0 in range(0, m, QUAD_ROWS):
            _quad_tile(a, a_off + i0 * k, k, one, b, boffs, b_add + j0, k, bias, b_off + i0, one, zero, unit, y,
                       y_off + i0 * y_rs + j0, y_rs, min(QUAD_ROWS, m - i0), 4 * LANES, unit)
    if quads < full:
        for i0 in range(0, m, DUO_ROWS):
            _duo_tile(a, a_off + i0 * k, k, one, b, boffs, b_add + quads, k, bias, b_off + i0, one, zero, unit, y,
                      y_off + i0 * y_rs + quads, y_rs, min(DUO_ROWS, m - i0), 2 * LANES, unit)


SHORT_ROWS = 8 if AVX512 else 4
"""Rows of the short tiles (products at most two vectors wide): SHORT_ROWS output channels by one
or two vectors of columns, each tap one load per vector and one broadcast weight per channel."""


def _short_tile(rows: int, vecs: int, masked: bool):
    """Short micro-kernel for ``rows`` channels by ``vecs`` vectors of columns (compile-time constants);
    the masked variant serves rows that are not whole vectors. Compiled on its own, not inlined in
    every rows kernel that uses it: as fast, and a rows kernel with every family compiles in 17 s, not 25."""
    count = rows * vecs

    @njit(cache=True, fastmath=FASTMATH, _nrt=False)
    def tile(w, w_off, k, src, boffs, b_add, bias, b_off, y, y_off, ow, m, relu):
        """y[y_off + i*ow + j] = bias[b_off + i] + sum_t w[w_off + i*k + t] * src[boffs[t] + b_add + j]
        for i < m <= rows and j < ow <= vecs * LANES, then Relu when ``relu`` (in registers); rows past
        m repeat row m - 1 and are not stored."""
        acc = tile_new(count)
        xv = tile_new(vecs)
        last = m - 1
        for i in range(rows):
            b = vsplat_at(bias, b_off + min(i, last))
            for j in range(vecs):
                tile_set(acc, i * vecs + j, b)
        for t in range(k):
            row = boffs[t] + b_add
            for j in range(vecs):
                tile_set(xv, j, vload(src, row + j * LANES, ow - j * LANES if masked else LANES))
            for i in range(rows):
                wv = vsplat_at(w, w_off + min(i, last) * k + t)
                for j in range(vecs):
                    tile_set(acc, i * vecs + j, vfma(wv, tile_get(xv, j), tile_get(acc, i * vecs + j)))
        zero = vsplat(0.0)
        for i in range(rows):
            if i < m:
                for j in range(vecs):
                    v = tile_get(acc, i * vecs + j)
                    if relu:  # 0 > v ? 0 : v, as activate's RELU (NaN and -0.0 pass)
                        v = vmax(zero, v)
                    vstore(y, y_off + i * ow + j * LANES, v, ow - j * LANES if masked else LANES)

    return tile


_short_one = _short_tile(SHORT_ROWS, 1, False)
_short_one_edge = _short_tile(SHORT_ROWS, 1, True)
_short_two = _short_tile(SHORT_ROWS, 2, False)
_short_two_edge = _short_tile(SHORT_ROWS, 2, True)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _short(w, w_off, k, src, boffs, b_add, bias, b_off, y, y_off, ow, m, relu, one, two, one_edge, two_edge):
    """Y (m, ow) of the shifted product for ow <= 2 * LANES by SHORT_ROWS x 1- or 2-vector tiles: no
    lane idles past the row (a masked last vector), bias and Relu applied in registers. The constant
    flags name the tiles compiled (``short_tiles``)."""
    for i0 in range(0, m, SHORT_ROWS):
        mi, wo, bo, yo = min(SHORT_ROWS, m - i0), w_off + i0 * k, b_off + i0, y_off + i0 * ow
        if one and ow == LANES:
            _short_one(w, wo, k, src, boffs, b_add, bias, bo, y, yo, ow, mi, relu)
        elif two and ow == 2 * LANES:
            _short_two(w, wo, k, src, boffs, b_add, bias, bo, y, yo, ow, mi, relu)
        elif one_edge and ow < LANES:
            _short_one_edge(w, wo, k, src, boffs, b_add, bias, bo, y, yo, ow, mi, relu)
        elif two_edge and LANES < ow < 2 * LANES:
            _short_two_edge(w, wo, k, src, boffs, b_add, bias, bo, y, yo, ow, mi, relu)


def short_tiles(ow: int) -> tuple[bool, ...]:
    """The flags of _short (one, two, one_edge, two_edge) for rows of ``ow`` <= 2 * LANES columns."""
    return ow == LANES, ow == 2 * LANES, ow < LANES, LANES < ow < 2 * LANES


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def _dot(w, w_off, k, src, b_add, bias, b_off, y, y_off, cout, tmp, t_off):
    """y[y_off + c] = bias[b_off + c] + sum_t w[w_off + c*k + t] * src[b_add + t] for c < cout, in
    four vector partial sums per channel."""
    step = 4 * LANES
    full = k - k % step
    zero = vsplat(0.0)
    for c in range(cout):
        wo = w_off + c * k
        a0, a1, a2, a3 = zero, zero, zero, zero
        for t in range(0, full, step):
            a0 = vfma(vload(w, wo + t, LANES), vload(src, b_add + t, LANES), a0)
            a1 = vfma(vload(w, wo + t + LANES, LANES), vload(src, b_add + t + LANES, LANES), a1)
            a2 = vfma(vload(w, wo + t + 2 * LANES, LANES), vload(src, b_add + t + 2 * LANES, LANES), a2)
            a3 = vfma(vload(w, wo + t + 3 * LANES, LANES), vload(src, b_add + t + 3 * LANES, LANES), a3)
        for t in range(full, k, LANES):
            a0 = vfma(vload(w, wo + t, k - t), vload(src, b_add + t, k - t), a0)
        vstore(tmp, t_off, vadd(vadd(a0, a1), vadd(a2, a3)), LANES)
        total = bias[b_off + c]
        for lane in range(LANES):
            total += tmp[t_off + lane]
        y[y_off + c] = total


def _depthwise_tile(rows: int, vecs: int):
    """Depthwise micro-kernel for ``rows`` output rows by ``vecs`` vectors (compile-time constants)."""
    count = rows * vecs

    @njit(cache=True, fastmath=FASTMATH, inline="always")
    def tile(q, src, qw, boffs, w, c, bias, y, dst, ow, m, n):
        """y[dst + i*ow + j] = bias[c] + sum_t w[c*K + t] * q[src + boffs[t] + i*qw + j], i < m, j < n."""
        acc = tile_new(count)
        b = vsplat_at(bias, c)
        w_off = c * boffs.size
        for i in range(count):
            tile_set(acc, i, b)
        for t in range(boffs.size):
            wv = vsplat_at(w, w_off + t)
            o = src + boffs[t]
            for i in range(rows):
                r = o + min(i, m - 1) * qw
                for j in range(vecs):
                    v = vload(q, r + j * LANES, n - j * LANES)
                    tile_set(acc, i * vecs + j, vfma(wv, v, tile_get(acc, i * vecs + j)))
        for i in range(rows):
            if i < m:
                for j in range(vecs):
                    vstore(y, dst + i * ow + j * LANES, tile_get(acc, i * vecs + j), n - j * LANES)

    return tile


_dw_wide = _depthwise_tile(2, 4)
_dw_mid = _depthwise_tile(4, 2)
_dw_narrow = _depthwise_tile(8, 1)


@njit(cache=True, fastmath=FASTMATH)
def _depthwise(q, src, qw, boffs, w, c, bias, y, dst, oh, ow):
    """Channel c of a depthwise convolution, written row by row straight into y (no wide columns); the
    caller applies the activation.

    Tiles hold eight vectors of independent sums (two to eight output rows, by the row width) so
    the tap loop is not bound by the latency of one chain of FMAs."""
    if ow > 2 * LANES:
        for r in range(0, oh, 2):
            for j0 in range(0, ow, 4 * LANES):
                m = min(2, oh - r)
                _dw_wide(q, src + r * qw + j0, qw, boffs, w, c, bias, y, dst + r * ow + j0, ow, m, ow - j0)
    elif ow > LANES:
        for r in range(0, oh, 4):
            _dw_mid(q, src + r * qw, qw, boffs, w, c, bias, y, dst + r * ow, ow, min(4, oh - r), ow)
    else:
        for r in range(0, oh, 8):
            _dw_narrow(q, src + r * qw, qw, boffs, w, c, bias, y, dst + r * ow, ow, min(8, oh - r), ow)


@njit(inline="always")
def _lanes_inside(first, s, wd, n):
    """(lo, hi): lanes i < n whose input column first + s*i lies inside [0, wd) are lo <= i < hi."""
    return max(0, -(first // s)), min(n, -((first - wd) // s))


@njit(inline="always")
def _taps3(x, row, valid, s, lanes):
    """The kw = 0, 1, 2 vectors of one input row for an output strip: lane i of tap kw reads
    x[row + kw + s*i] when ``lanes[kw]`` holds i (zero otherwise, and everywhere if not ``valid``)."""
    if not valid:
        zero = vsplat(0.0)
        return zero, zero, zero
    (lo0, hi0), (lo1, hi1), (lo2, hi2) = lanes
    if s == 1:
        return vload_lanes(x, row, lo0, hi0), vload_lanes(x, row + 1, lo1, hi1), vload_lanes(x, row + 2, lo2, hi2)
    return vload_even(x, row, lo0, hi0), vload_even(x, row + 1, lo1, hi1), vload_even(x, row + 2, lo2, hi2)


@njit(inline="always")
def _dot3(w, taps, acc):
    """acc + sum_kw w[kw] * taps[kw]."""
    return vfma(w[2], taps[2], vfma(w[1], taps[1], vfma(w[0], taps[0], acc)))


@njit(cache=True, fastmath=FASTMATH)
def _depthwise3x3(x, x_off, h, wd, pt, pl, s, w, c, bias, y, dst, oh, ow):
    """Channel c of a 3x3 depthwise convolution, stride s (1 or 2) in both axes, dilation 1, read
    straight from X (the pads are lanes and rows read as zero: no padded copy).

    Each column strip of one vector slides down the output rows keeping the kw-taps of the input
    rows it still needs, so an output vector costs 3 loads (6 with stride 2, each a pair of loads
    deinterleaved) for its 9 FMAs, in three independent partial sums. The caller applies the
    activation, to several small channels at once.
    """
    k = 9 * c
    w0 = (vsplat_at(w, k), vsplat_at(w, k + 1), vsplat_at(w, k + 2))
    w1 = (vsplat_at(w, k + 3), vsplat_at(w, k + 4), vsplat_at(w, k + 5))
    w2 = (vsplat_at(w, k + 6), vsplat_at(w, k + 7), vsplat_at(w, k + 8))
    b = vsplat_at(bias, c)
    zero = vsplat(0.0)
    for j0 in range(0, ow, LANES):
        n = min(LANES, ow - j0)
        first = s * j0 - pl  # input column of lane 0, kw = 0
        lanes = (_lanes_inside(first, s, wd, n), _lanes_inside(first + 1, s, wd, n), _lanes_inside(first + 2, s, wd, n))
        col = x_off + first
        top = _taps3(x, col - pt * wd, 0 <= -pt < h, s, lanes)
        mid = _taps3(x, col + (1 - pt) * wd, 0 <= 1 - pt < h, s, lanes)
        for r in range(oh):
            i = s * r - pt  # input row of kh = 0
            if s == 2:
                mid = _taps3(x, col + (i + 1) * wd, 0 <= i + 1 < h, s, lanes)
            bottom = _taps3(x, col + (i + 2) * wd, 0 <= i + 2 < h, s, lanes)
            out = vadd(vadd(_dot3(w0, top, b), _dot3(w1, mid, zero)), _dot3(w2, bottom, zero))
            vstore(y, dst + r * ow + j0, out, n)
            if s == 1:
                top = mid
                mid = bottom
            else:
                top = bottom


def conv_kernel(plan: np.ndarray, rows: bool = False, residual: bool = False):
    """The compiled ``kernel(x, w, bias, y, scratch, plan, params[, res])`` for convolutions of this
    ``plan``'s method and layout: y = act(conv(x, W) + bias [+ res]) for x (N, C, [H,] W) and y (N, Cout,
    [Hout,] Wout), C-contiguous; ``res`` (when ``residual``) has y's shape and does not share y's memory.

    ``w`` is W (Cout, C/groups, [KH,] KW), or Wt for GEMM_NARROW: per group, (K, Cout/groups) with
    K = C/groups * KH * KW, reshaped to W's rank; ``bias`` has Cout entries, ``plan`` holds FIELDS then
    the offset in Q of each tap (ci, kh, kw) of a group, ``params`` the activation's two float32
    parameters. ``scratch`` holds Q (C*plane + Qw floats, the tail kept zero; one channel for a
    depthwise convolution) then Y_wide of one group when the output is wide, or LANES floats for the
    dot product's lane sum. Few arguments, because Numba's dispatch costs about 80 ns per array
    argument on every call. ``rows``: single-row outputs of at most ``ops.conv.ROWS_WIDTH`` columns
    (the quad, short, narrow and dot tiles).

    Each kernel has the branches of its plan's path only (Numba prunes the others before typing) and
    the activations of ``epilogue_codes``, so a model compiles the paths, tile families and activations
    its convolutions use, not every one."""
    method, repack, ow = int(plan[16]), bool(plan[15]), int(plan[7])
    codes = epilogue_codes(int(plan[17]))
    if rows:
        full = ow - ow % (2 * LANES) if ow <= QUAD_MAX else 0
        product = method == GEMM and ow > 2 * LANES
        narrow = narrow_tiles(ow, int(plan[5]) // int(plan[4])) if method == GEMM_NARROW else (False,) * 7
        short = short_tiles(ow) if method == GEMM and ow <= 2 * LANES else (False,) * 4
        key = (True, method == DOT, *narrow, *short, product and full > 0, product and full < ow, repack, residual,
               codes)
    else:
        key = (False, method == DEPTHWISE_3X3, method == DEPTHWISE, method == GEMM_WIDE, repack, residual, codes)
    return _kernel(key)


def epilogue_codes(code: int) -> int:
    """The activation codes (``codes_mask``) of the kernel of a convolution whose fused activation is
    ``code``: Relu (inlined in the tiles, and the usual one) and ``code``, so convolutions without an
    activation or with Relu share their kernels, and a model compiles only the activations it uses."""
    return codes_mask(RELU, code)


def _kernel(key: tuple):
    """The kernel of a ``conv_kernel`` key (rows or not, then its entry's flags, then its activation
    codes), made once."""
    if key not in _KERNELS:
        _KERNELS[key] = _rows_entry(*key[1:]) if key[0] else _conv_entry(*key[1:])
    return _KERNELS[key]


_KERNELS: dict[tuple, object] = {}


@njit(cache=True, inline="always")
def _fields(plan):
    """A plan's fields as ``conv_kernel``'s kernels read them: N, C, H, W, groups, Cout, OH, OW, the
    top and left pads, the strides, Q's height, width and plane, and the activation code."""
    return (plan[0], plan[1], plan[2], plan[3], plan[4], plan[5], plan[6], plan[7], plan[8], plan[9], plan[10],
            plan[11], plan[12], plan[13], plan[14], plan[17])


def _conv_entry(dw3: bool, dw: bool, wide: bool, repack: bool, residual: bool, codes: int):
    """``conv_kernel``'s kernel for the path the flags name (a closure over bools and ints keeps the cache
    key stable): 3x3 depthwise, generic depthwise, the wide product or the direct product, with or
    without the repack and a residual, its activation among ``codes`` (``epilogue_codes``)."""

    @njit(cache=True, fastmath=FASTMATH)
    def kernel(x, w, bias, y, scratch, plan, params, res=None):
        """y = act(conv(x, W) + bias [+ res]): see ``conv_kernel``."""
        xf, wf, yf = flat(x), flat(w), flat(y)
        rf = yf
        if residual:
            rf = flat(res)
        n_img, c_in, h, wd, groups, c_out, oh, ow, pt, pl, sh, sw, qh, qw, plane, code = _fields(plan)
        boffs, p1, p2 = plan[18:], params[0], params[1]
        cin_g, cout_g, k = c_in // groups, c_out // groups, boffs.size
        ncols = ow if oh == 1 else oh * qw
        q_len = c_in * plane + qw
        one, zero, identity, unit = np.int64(1), np.int64(0), np.int64(IDENTITY), np.float32(1.0)  # as gemm's callers
        for img in range(n_img):
            x_off = img * c_in * h * wd
            if dw3:
                chunk = max(1, ACTIVATION_RUN // (oh * ow))  # channels activated together
                for g in range(groups):
                    y_off = (img * c_out + g) * oh * ow
                    _depthwise3x3(xf, x_off + g * h * wd, h, wd, pt, pl, sh, wf, g, bias, yf, y_off, oh, ow)
                    if residual:
                        _epilogue(codes, yf, y_off, oh * ow, one, oh * ow, rf, True, identity, p1, p2)
                    if (g + 1) % chunk == 0 or g == groups - 1:  # activate the last channels while in L1
                        first = g - g % chunk
                        size = (g + 1 - first) * oh * ow
                        _epilogue(codes, yf, y_off + oh * ow - size, size, one, size, yf, False, code, p1, p2)
            elif dw:  # repack and compute one channel at a time, in L1
                for g in range(groups):
                    src, b_add = xf, x_off + g * plane
                    if repack:
                        _repack(xf, x_off + g * h * wd, cin_g, h, wd, pt, pl, sh, sw, qh, qw, plane, scratch)
                        src, b_add = scratch, zero
                    y_off = (img * c_out + g) * oh * ow
                    _depthwise(src, b_add, qw, boffs, wf, g, bias, yf, y_off, oh, ow)
                    _epilogue(codes, yf, y_off, oh * ow, one, oh * ow, rf, residual, code, p1, p2)  # one run
            else:
                src, src_off = xf, x_off
                if repack:
                    _repack(xf, x_off, c_in, h, wd, pt, pl, sh, sw, qh, qw, plane, scratch)
                    src, src_off = scratch, zero
                for g in range(groups):
                    y_off = (img * c_out + g * cout_g) * oh * ow
                    b_add = src_off + g * cin_g * plane
                    if wide:
                        matmul_tiles(wf, g * cout_g * k, k, one, src, boffs, b_add, bias, g * cout_g, one, zero, unit,
                                     scratch, q_len, ncols, cout_g, ncols, k, unit)
                        _compact(scratch, q_len, ncols, qw, yf, y_off, cout_g, oh, ow, code == RELU, rf, residual)
                        if code != RELU:  # one contiguous run
                            size = cout_g * oh * ow
                            activate_in(codes, yf, y_off, size, one, size, code, p1, p2)
                    elif residual or code == RELU:  # by column blocks, each added to and activated in cache
                        tile_cols = (ROW_VECS if cout_g == 1 else WIDE_VECS) * LANES  # the product's column blocks
                        block = tile_cols * max(1, RESIDUAL_RUN // (max(cout_g, PANEL_ROWS) * tile_cols))
                        for j0 in range(0, ncols, block):
                            nj = min(block, ncols - j0)
                            matmul_tiles(wf, g * cout_g * k, k, one, src, boffs, b_add + j0, bias, g * cout_g, one,
                                         zero, unit, yf, y_off + j0, ncols, cout_g, nj, k, unit)
                            _epilogue(codes, yf, y_off + j0, ncols, cout_g, nj, rf, residual, code, p1, p2)
                    else:
                        matmul_tiles(wf, g * cout_g * k, k, one, src, boffs, b_add, bias, g * cout_g, one, zero, unit,
                                     yf, y_off, ncols, cout_g, ncols, k, unit)
                        activate_in(codes, yf, y_off, ncols, cout_g, ncols, code, p1, p2)

    return kernel


def _rows_entry(*flags: bool | int):
    """``conv_kernel``'s kernel for single-row outputs, with the tiles the flags (ROWS_FLAGS, then a
    residual) name, each also checked at run time, so a kernel with more flags computes as this one
    (see ``rows_call``): dot products, narrow tiles by blocks and by pairs (``narrow_tiles``), short
    tiles (``short_tiles``), quads and the product's tiles; the repack; a residual; then the
    activation codes (``epilogue_codes``, or a union of them)."""
    (dot, narrow_full, narrow_edge, pair_wide, pair_wide_edge, pair_two, pair, pair_edge, short_one, short_two,
     short_one_edge, short_two_edge, quads, product, repack, residual, codes) = flags
    blocks = narrow_full or narrow_edge
    pairs = pair_wide or pair_wide_edge or pair_two or pair or pair_edge
    short = short_one or short_two or short_one_edge or short_two_edge

    @njit(cache=True, fastmath=FASTMATH, _nrt=False)
    def kernel(x, w, bias, y, scratch, plan, params, res=None):
        """y = act(conv(x, W) + bias [+ res]) for single-row outputs: see ``conv_kernel``."""
        xf, wf, yf = flat(x), flat(w), flat(y)
        rf = yf
        if residual:
            rf = flat(res)
        n_img, c_in, h, wd, groups, c_out, _, ow, pt, pl, sh, sw, qh, qw, plane, code = _fields(plan)
        boffs, p1, p2 = plan[18:], params[0], params[1]
        cin_g, cout_g, k = c_in // groups, c_out // groups, boffs.size
        method = plan[16]
        one, zero, identity, unit = np.int64(1), np.int64(0), np.int64(IDENTITY), np.float32(1.0)  # as gemm's callers
        full = ow - ow % (2 * LANES) if ow <= QUAD_MAX else 0
        tmp = scratch.size - LANES
        relu = code == RELU and not residual  # (narrow and short tiles apply Relu in registers)
        for img in range(n_img):
            x_off = img * c_in * h * wd
            src, src_off = xf, x_off
            if repack and plan[15]:
                _repack(xf, x_off, c_in, h, wd, pt, pl, sh, sw, qh, qw, plane, scratch)
                src, src_off = scratch, zero
            for g in range(groups):
                y_off = (img * c_out + g * cout_g) * ow
                b_add = src_off + g * cin_g * plane
                if dot and method == DOT:
                    _dot(wf, g * cout_g * k, k, src, b_add + boffs[0], bias, g * cout_g, yf, y_off, cout_g, scratch,
                         tmp)
                elif blocks and method == GEMM_NARROW and cout_g >= NARROW_VECS * LANES:
                    _narrow_blocks(wf, g * k * cout_g, cout_g, src, boffs, b_add, bias, g * cout_g, yf, y_off, ow, relu,
                                   narrow_full, narrow_edge)
                elif pairs and method == GEMM_NARROW:
                    _narrow_pairs(wf, g * k * cout_g, cout_g, src, boffs, b_add, bias, g * cout_g, yf, y_off, ow, relu,
                                  pair_wide, pair_wide_edge, pair_two, pair, pair_edge)
                elif short and ow <= 2 * LANES:
                    _short(wf, g * cout_g * k, k, src, boffs, b_add, bias, g * cout_g, yf, y_off, ow, cout_g, relu,
                           short_one, short_two, short_one_edge, short_two_edge)
                else:
                    if quads and full:
                        _quads(wf, g * cout_g * k, k, src, boffs, b_add, bias, g * cout_g, yf, y_off, ow, cout_g, full)
                    if product and full < ow:
                        matmul_tiles(wf, g * cout_g * k, k, one, src, boffs, b_add + full, bias, g * cout_g, one, zero,
                                     unit, yf, y_off + full, ow, cout_g, ow - full, k, unit)
                if residual or not relu or method == DOT or ow > 2 * LANES:  # (the group is contiguous)
                    _epilogue(codes, yf, y_off, cout_g * ow, one, cout_g * ow, rf, residual, code, p1, p2)

    return kernel


ROWS_FLAGS = ("dot", "narrow_full", "narrow_edge", "pair_wide", "pair_wide_edge", "pair_two", "pair", "pair_edge",
              "short_one", "short_two", "short_one_edge", "short_two_edge", "quads", "product", "repack")
"""The tiles (and the repack) a rows kernel without a residual has, in ``_rows_entry``'s order."""


def rows_flags(fn) -> tuple[bool, ...] | None:
    """The ROWS_FLAGS of ``fn``, then a flag per activation code (set for its kernel's codes), when it
    is a kernel ``conv_kernel(plan, rows=True)`` made without a residual (a streaming step program
    runs it, or ``rows_call`` of a kernel with more flags, in its place), else None."""
    return next(((*key[1:-2], *(bool(key[-1] >> c & 1) for c in range(len(FORMULAS))))
                 for key, f in _KERNELS.items() if f is fn and key[0] and not key[-2]), None)


def rows_mask(flags: tuple[bool, ...]) -> int:
    """``rows_flags`` (or a union of them) as the int ``rows_call`` takes: bit i set when flag i is."""
    return sum(1 << i for i, f in enumerate(flags) if f)


def rows_call(mask, x, w, bias, y, scratch, plan, params):
    """In compiled code, with ``mask`` a constant (``rows_mask``): the rows kernel of those flags,
    called with the other arguments. Its runtime checks make it compute as any rows kernel whose
    flags are among them, so a step program's union of its convolutions' flags runs them all while
    compiling only the tile families they use."""
    raise TypeError("rows_call is for compiled code, with a constant mask")


@overload(rows_call, inline="always", prefer_literal=True)
def _rows_call(mask, x, w, bias, y, scratch, plan, params):
    """The call of the kernel the literal ``mask`` names (made by ``_rows_entry`` if new)."""
    if not isinstance(mask, types.IntegerLiteral):
        return None
    tiles = len(ROWS_FLAGS)
    kernel = _kernel((True, *(bool(mask.literal_value >> i & 1) for i in range(tiles)), False,
                      mask.literal_value >> tiles))
    return lambda mask, x, w, bias, y, scratch, plan, params: kernel(x, w, bias, y, scratch, plan, params)
