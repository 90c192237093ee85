"""Matrix products on a register-tiled SIMD micro-kernel, shared by Gemm, MatMul and Conv.

Every product here is ``Y(i, j) = act(alpha * sum_t A(i, t) B(t, j) + beta * C(i, j))`` with
row-major float32 ``Y``. The micro-kernel keeps a tile of ROWS x (VECS * LANES) outputs in
vector registers for the whole reduction: per step ``t`` it loads VECS vectors of row ``t`` of
B and broadcasts ROWS scalars of column ``t`` of A (outer-product form, as BLAS micro-kernels
do), on the explicit vectors of simd.py; partial tiles use masked loads and stores, so no operand
needs padding.

Callers pass typed values (``np.int64(0)``, float32 alpha and beta), never int literals, to the
helpers here: Numba compiles a separate specialisation for each literal value or argument type.

Kernels that allocate nothing (these, the single-row convolution's, the streaming engine's) are
compiled with ``_nrt=False``: without reference counting, every array argument and view no longer
costs a call to NRT_incref/NRT_decref at each call boundary (measured: 0.8 us of a 4.5 us
streaming hop). They may not call functions that return new arrays (use ``flat``).

Addressing is by offsets so one kernel serves every layout: ``A(i, t) = a[a_off + i * a_rs +
t * a_ks]`` (row-major or transposed, read in place: broadcasts from eight strided rows cost the
same as from a packed panel), ``B(t, j) = b[boffs[t] + b_add + j]`` (row ``t`` of B may start
anywhere: Conv reads shifted input rows instead of an im2col copy), and ``C(i, j) = c[c_off +
i * c_rs + j * c_cs]`` (strides 0 broadcast a bias).
"""
from __future__ import annotations

import functools

import numpy as np
from numba import njit

from . import FASTMATH
from .activation import IDENTITY, RELU, activate_in, codes_mask
from .simd import AVX512, LANES, flat, tile_get, tile_new, tile_set, vadd, vfma, vload, vmax, vsplat, vsplat_at, vstore

PANEL_ROWS = 8 if AVX512 else 4
"""Rows of the wide tile, PANEL_ROWS x WIDE_VECS vectors: 24 of the 32 zmm registers with
AVX-512, 12 of the 16 ymm registers otherwise (the rest hold B and the broadcast of A)."""
WIDE_VECS = 3
ROW_VECS = 8
"""Vectors of the single-row tile (products with one row, as batch-1 Gemm): eight independent
FMA chains cover the FMA latency."""

def micro_kernel(rows: int, vecs: int, masked: bool):
    """The micro-kernel for one tile shape; arguments are compile-time constants. The unmasked
    variant serves full tiles (its constant all-lanes masks fold away into plain loads and stores)."""
    count = rows * vecs

    @njit(cache=True, fastmath=FASTMATH, inline="always")
    def micro(a, a_off, a_rs, a_ks, b, boffs, b_add, k, c, c_off, c_rs, c_cs, beta, y, y_off, y_rs, m, n, alpha):
        """Tile of m <= rows by n <= vecs * LANES outputs at y[y_off + i * y_rs + j] (see module).
        Rows past m read row m - 1 of A and are not stored."""
        acc = tile_new(count)
        bv = tile_new(vecs)
        last = m - 1
        for t in range(k):
            row = boffs[t] + b_add
            for j in range(vecs):
                tile_set(bv, j, vload(b, row + j * LANES, n - j * LANES if masked else LANES))
            at = a_off + t * a_ks
            for i in range(rows):
                av = vsplat_at(a, at + min(i, last) * a_rs)
                for j in range(vecs):
                    tile_set(acc, i * vecs + j, vfma(av, tile_get(bv, j), tile_get(acc, i * vecs + j)))
        va = vsplat(alpha)
        vb = vsplat(beta)
        zero = vsplat(0.0)
        for i in range(rows):
            if i < m:
                for j in range(vecs):
                    lanes = n - j * LANES if masked else LANES
                    out = vfma(va, tile_get(acc, i * vecs + j), zero)
                    if beta != 0.0:
                        ci = c_off + i * c_rs
                        cv = vsplat_at(c, ci) if c_cs == 0 else vload(c, ci + j * LANES, lanes)
                        out = vfma(vb, cv, out)
                    vstore(y, y_off + i * y_rs + j * LANES, out, lanes)

    return micro


_wide_tile = micro_kernel(PANEL_ROWS, WIDE_VECS, False)
_wide_edge = micro_kernel(PANEL_ROWS, WIDE_VECS, True)
_wide_last = micro_kernel(PANEL_ROWS, 1, True)  # a last block of at most one vector
_row_tile = micro_kernel(1, ROW_VECS, False)
_row_edge = micro_kernel(1, ROW_VECS, True)


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def matmul_tiles(a, a_off, a_rs, a_ks, b, boffs, b_add, c, c_off, c_rs, c_cs, beta, y, y_off, y_rs, m, n, k,
                 alpha):
    """Y(i, j) = alpha * sum_t A(i, t) B(t, j) + beta * C(i, j) for i < m, j < n (see module).

    Arrays are flat float32 (``boffs`` int64, k entries); C is not read when beta == 0. Tiles
    have one row when m is 1, else PANEL_ROWS. Column blocks are the outer loop so a block of B
    stays in cache while every row panel uses it. An activation is the caller's last pass over Y
    (``activate_in``, compiled for the caller's codes only): called per tile it costs more than the pass.
    """
    rows = 1 if m == 1 else PANEL_ROWS
    cols = (ROW_VECS if rows == 1 else WIDE_VECS) * LANES
    for j0 in range(0, n, cols):
        nj = min(cols, n - j0)
        for i0 in range(0, m, rows):
            mi = min(rows, m - i0)
            ao = a_off + i0 * a_rs
            co = c_off + i0 * c_rs + j0 * c_cs
            yo = y_off + i0 * y_rs + j0
            bo = b_add + j0
            if rows == 1 and nj == cols:
                _row_tile(a, ao, a_rs, a_ks, b, boffs, bo, k, c, co, c_rs, c_cs, beta, y, yo, y_rs, mi, nj, alpha)
            elif rows == 1:
                _row_edge(a, ao, a_rs, a_ks, b, boffs, bo, k, c, co, c_rs, c_cs, beta, y, yo, y_rs, mi, nj, alpha)
            elif nj == cols:
                _wide_tile(a, ao, a_rs, a_ks, b, boffs, bo, k, c, co, c_rs, c_cs, beta, y, yo, y_rs, mi, nj, alpha)
            elif nj <= LANES:
                _wide_last(a, ao, a_rs, a_ks, b, boffs, bo, k, c, co, c_rs, c_cs, beta, y, yo, y_rs, mi, nj, alpha)
            else:
                _wide_edge(a, ao, a_rs, a_ks, b, boffs, bo, k, c, co, c_rs, c_cs, beta, y, yo, y_rs, mi, nj, alpha)


PLAIN = codes_mask(RELU)
"""The activation codes of ``gemm_kernel`` and ``gemm_dot_kernel``: none, or Relu (the usual)."""
ROW_SPLITS = 4
"""Partial sums per vector of ``_short_row`` (alternate taps): 8 independent FMA chains."""


@njit(inline="always")
def _short_row(a, a_ks, b, k, c, c_cs, beta, y, n, alpha, relu):
    """Y(0, j) = alpha * sum_t A(0, t) B(t, j) + beta * C(0, j) for j < n <= 2 * LANES (see module;
    B row-major (k, n), a_off = b_add = c_off = y_off = 0), then Relu when ``relu``: two vectors of
    columns, each over ROW_SPLITS partial sums of alternate taps, where the one-row tile would run
    eight vectors (most of them empty) over one. Rows of B are found as t * n (no offset table:
    fewer loads, the loop's bound), the Relu is applied in registers (as ``activate``: NaN kept)."""
    n1 = n - LANES  # lanes of the second vector (none when <= 0)
    zero = vsplat(0.0)
    p0, p1, p2, p3, q0, q1, q2, q3 = zero, zero, zero, zero, zero, zero, zero, zero
    whole = k - k % ROW_SPLITS
    for t in range(0, whole, ROW_SPLITS):
        r0 = t * n
        r1, r2, r3 = r0 + n, r0 + 2 * n, r0 + 3 * n
        x0, x1 = vsplat_at(a, t * a_ks), vsplat_at(a, (t + 1) * a_ks)
        x2, x3 = vsplat_at(a, (t + 2) * a_ks), vsplat_at(a, (t + 3) * a_ks)
        p0, q0 = vfma(x0, vload(b, r0, n), p0), vfma(x0, vload(b, r0 + LANES, n1), q0)
        p1, q1 = vfma(x1, vload(b, r1, n), p1), vfma(x1, vload(b, r1 + LANES, n1), q1)
        p2, q2 = vfma(x2, vload(b, r2, n), p2), vfma(x2, vload(b, r2 + LANES, n1), q2)
        p3, q3 = vfma(x3, vload(b, r3, n), p3), vfma(x3, vload(b, r3 + LANES, n1), q3)
    for t in range(whole, k):
        x0 = vsplat_at(a, t * a_ks)
        p0, q0 = vfma(x0, vload(b, t * n, n), p0), vfma(x0, vload(b, t * n + LANES, n1), q0)
    va, vb = vsplat(alpha), vsplat(beta)
    lo = vfma(va, vadd(vadd(p0, p1), vadd(p2, p3)), zero)
    hi = vfma(va, vadd(vadd(q0, q1), vadd(q2, q3)), zero)
    if beta != 0.0:
        lo = vfma(vb, vsplat_at(c, 0) if c_cs == 0 else vload(c, 0, n), lo)
        hi = vfma(vb, vsplat_at(c, 0) if c_cs == 0 else vload(c, LANES, n1), hi)
    if relu:  # 0 > v ? 0 : v, as activate's RELU (NaN and -0.0 pass)
        lo, hi = vmax(zero, lo), vmax(zero, hi)
    if n == 2 * LANES:  # unmasked: a load of a masked store's data waits for it to retire (not forwarded)
        vstore(y, 0, lo, LANES)
        vstore(y, LANES, hi, LANES)
    else:
        vstore(y, 0, lo, n)
        vstore(y, LANES, hi, n1)


@njit(inline="always")
def takes_one_row(plan):
    """Whether ``gemm_kernel`` with this plan runs ``one_row``: one row of at most two vectors."""
    return plan[0] == 1 and plan[1] <= 2 * LANES


@njit(inline="always")
def one_row(af, bf, cf, yf, plan, params):
    """``gemm_kernel``'s ``one_row_in`` (inlined by the step-program interpreter, which runs that kernel)."""
    one_row_in(PLAIN, af, bf, cf, yf, plan, params)


@njit(inline="always")
def one_row_in(codes, af, bf, cf, yf, plan, params):
    """A Gemm kernel for one row (``takes_one_row``) on flat arrays, B' row-major in ``bf``:
    ``_short_row``, then an activation other than Relu, among the constant ``codes`` (``codes_mask``)."""
    n, k, a_ks, c_cs, code = plan[1], plan[2], plan[4], plan[6], plan[8]
    _short_row(af, a_ks, bf, k, cf, c_cs, params[1], yf, n, params[0], code == RELU)
    if code != IDENTITY and code != RELU:
        activate_in(codes, yf, np.int64(0), n, np.int64(1), n, code, params[2], params[3])


def gemm_kernels(code: int) -> tuple:
    """(``gemm_kernel``, ``gemm_dot_kernel``) of kernels whose fused activation may be ``code``: the plain
    ones for none or Relu (the step-program interpreter runs those), else ones compiled for Relu and
    ``code``, so a model compiles only the activations its Gemms use."""
    return _gemm_entries(PLAIN if code in (IDENTITY, RELU) else codes_mask(RELU, code))


@functools.cache
def _gemm_entries(codes: int) -> tuple:
    """``gemm_kernels`` for a mask of codes (a closure over an int keeps the cache key stable)."""

    @njit(cache=True, fastmath=FASTMATH, _nrt=False)
    def gemm_kernel(a, b, c, y, bt, plan, params):
        """ONNX Gemm: y (M, N) = act(alpha * A' @ B' + beta * C), C broadcast to (M, N) by strides.

        ``plan`` = (M, N, K, a_rs, a_ks, c_rs, c_cs, b_transposed, activation, then the K row offsets
        of B'), ``params`` = float32 (alpha, beta, and the activation's two parameters); few
        arguments, because Numba's dispatch costs about 80 ns per array argument on every call.
        A'(i, t) = a[i * a_rs + t * a_ks] (transA swaps the strides). B' is row-major (K, N); when
        b_transposed is 1, ``b`` holds B'^T (N, K) and is first transposed into ``bt``. One row of at
        most two vectors of outputs takes ``_short_row``.
        """
        m, n, k, a_rs, a_ks = plan[0], plan[1], plan[2], plan[3], plan[4]
        c_rs, c_cs, b_transposed, code = plan[5], plan[6], plan[7], plan[8]
        bf = flat(b)
        if b_transposed:
            for j in range(n):
                for t in range(k):
                    bt[t * n + j] = bf[j * k + t]
            bf = bt
        if takes_one_row(plan):  # a classifier layer at batch 1
            one_row_in(codes, flat(a), bf, flat(c), flat(y), plan, params)
            return
        zero = np.int64(0)  # typed, not a literal: one compiled matmul_tiles for every caller
        yf = flat(y)
        matmul_tiles(flat(a), zero, a_rs, a_ks, bf, plan[9:], zero, flat(c), zero, c_rs, c_cs, params[1],
                     yf, zero, n, m, n, k, params[0])
        if code != IDENTITY:
            activate_in(codes, yf, zero, n, m, n, code, params[2], params[3])

    @njit(cache=True, fastmath=FASTMATH, _nrt=False)
    def gemm_dot_kernel(a, bt, c, y, plan, params):
        """ONNX Gemm with fewer outputs than a vector (N < LANES) and few rows: y (M, N) = act(alpha *
        A' @ B' + beta * C) as M * N dot products over K, each vectorised along K (the tiled path would
        leave most lanes of every vector idle).

        ``a`` holds A' row-major (M, K), ``bt`` B'^T row-major (N, K); ``plan`` = (M, N, K, c_rs, c_cs,
        activation), ``params`` = float32 (alpha, beta, and the activation's two parameters); C(i, j) =
        c[i * c_rs + j * c_cs], not read when beta == 0.
        """
        dot_rows_in(codes, flat(a), flat(bt), flat(c), flat(y), plan, params)

    return gemm_kernel, gemm_dot_kernel


@njit(inline="always")
def dot_rows(af, bf, cf, yf, plan, params):
    """``gemm_dot_kernel``'s ``dot_rows_in`` (inlined by the step-program interpreter, which runs that kernel)."""
    dot_rows_in(PLAIN, af, bf, cf, yf, plan, params)


@njit(inline="always")
def dot_rows_in(codes, af, bf, cf, yf, plan, params):
    """A dot-product Gemm kernel on flat arrays, its activation among the constant ``codes`` (``codes_mask``)."""
    m, n, k, c_rs, c_cs, code = plan[0], plan[1], plan[2], plan[3], plan[4], plan[5]
    alpha, beta = params[0], params[1]
    for i in range(m):
        for j in range(n):
            ao, bo = np.uint64(i * k), np.uint64(j * k)  # unsigned: no wraparound test in the loop
            acc = np.float32(0.0)
            for t in range(np.uint64(k)):
                acc += af[ao + t] * bf[bo + t]
            v = alpha * acc
            if beta != 0.0:
                v += beta * cf[i * c_rs + j * c_cs]
            yf[i * n + j] = v
    if code != IDENTITY:
        activate_in(codes, yf, np.int64(0), n, m, n, code, params[2], params[3])


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def matmul_kernel(a, b, y, plan, offsets):
    """numpy matmul over broadcast batches: y[s] (M, N) = A[s] (M, K) @ B[s] (K, N), row-major.

    ``plan`` = (M, N, K, then the K row offsets of B). Batch s reads A at offsets[0, s] and B at
    offsets[1, s] (broadcasting repeats offsets). A 1-D operand is one row of A (M = 1) or one
    column of B (N = 1).
    """
    m, n, k = plan[0], plan[1], plan[2]
    yf = y.reshape(-1)
    zero, one = np.int64(0), np.int64(1)  # typed, not literals
    none, unit = np.float32(0.0), np.float32(1.0)
    for s in range(offsets.shape[1]):
        matmul_tiles(a.reshape(-1), offsets[0, s], k, one, b.reshape(-1), plan[3:], offsets[1, s], yf, zero, zero,
                     zero, none, yf, s * m * n, n, m, n, k, unit)


gemm_kernel, gemm_dot_kernel = gemm_kernels(IDENTITY)
"""The plain Gemm kernels (no activation, or Relu): most models' and the step-program interpreter's."""
