"""Matrix products on a register-tiled SIMD micro-kernel, shared by Gemm, MatMul and Conv.

Every product here is ``Y(i, j) = act(alpha * sum_t A(i, t) B(t, j) + beta * C(i, j))`` with
row-major float32 ``Y``. The micro-kernel keeps a tile of ROWS x (VECS * LANES) outputs in
vector registers for the whole reduction: per step ``t`` it loads VECS vectors of row ``t`` of
B and broadcasts ROWS scalars of column ``t`` of A (outer-product form, as BLAS micro-kernels
do). Vectors are explicit LLVM vectors made by the intrinsics below, because Numba's
auto-vectoriser neither keeps accumulators in registers nor picks 512-bit registers; partial
tiles use masked loads and stores, so no operand needs padding.

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

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model
from numba.np.arrayobj import populate_array

from . import FASTMATH
from .activation import IDENTITY, activate_rows

AVX512 = bool(llvm_binding.get_host_cpu_features().get("avx512f", False))
LANES = 16 if AVX512 else 8
"""float32 lanes per vector: one zmm register with AVX-512, one ymm (or two NEON) otherwise."""
PANEL_ROWS = 8 if AVX512 else 4
"""Rows of the wide tile, PANEL_ROWS x WIDE_VECS vectors: 24 of the 32 zmm registers with
AVX-512, 12 of the 16 ymm registers otherwise (the rest hold B and the broadcast of A)."""
WIDE_VECS = 3
ROW_VECS = 8
"""Vectors of the single-row tile (products with one row, as batch-1 Gemm): eight independent
FMA chains cover the FMA latency."""

_VEC = ir.VectorType(ir.FloatType(), LANES)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


class _Vec(types.Type):
    def __init__(self) -> None:
        super().__init__(name=f"float32x{LANES}")


class _Tile(types.Type):
    def __init__(self) -> None:
        super().__init__(name=f"float32x{LANES}_tile")


vec = _Vec()
tile = _Tile()


@register_model(_Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


@register_model(_Tile)
class _TileModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC.as_pointer())


def _address(context, builder, arrty, arr, offset):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [offset]), _VEC.as_pointer())


def _splat_i64(builder, value):
    v = builder.insert_element(ir.Constant(ir.VectorType(_I64, LANES), ir.Undefined), value, _I32(0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))


def _mask(builder, lo, hi):
    """<LANES x i1>: lanes i with lo <= i < hi on (a constant lo = 0 folds away)."""
    lanes = ir.Constant(ir.VectorType(_I64, LANES), list(range(LANES)))
    return builder.and_(builder.icmp_signed(">=", lanes, _splat_i64(builder, lo)),
                        builder.icmp_signed("<", lanes, _splat_i64(builder, hi)))


def _masked_load(context, builder, arrty, arr, offset, mask):
    ptr = _address(context, builder, arrty, arr, offset)
    fnty = ir.FunctionType(_VEC, [ptr.type, _I32, ir.VectorType(ir.IntType(1), LANES), _VEC])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.v{LANES}f32.p0")
    return builder.call(fn, [ptr, _I32(4), mask, ir.Constant(_VEC, [0.0] * LANES)])


@intrinsic
def vload(typingctx, arr, offset, count):
    """The vector arr[offset : offset + LANES], lanes at and after ``count`` read as 0 (not touched)."""
    def codegen(context, builder, sig, args):
        return _masked_load(context, builder, sig.args[0], args[0], args[1], _mask(builder, _I64(0), args[2]))
    return vec(arr, offset, count), codegen


@intrinsic
def vload_lanes(typingctx, arr, offset, lo, hi):
    """The vector arr[offset : offset + LANES] with only lanes lo <= i < hi read (others 0, not
    touched: the offset may point before the array when the lanes there are off)."""
    def codegen(context, builder, sig, args):
        return _masked_load(context, builder, sig.args[0], args[0], args[1], _mask(builder, args[2], args[3]))
    return vec(arr, offset, lo, hi), codegen


@intrinsic
def vload_even(typingctx, arr, offset, lo, hi):
    """The vector of arr[offset + 2*i], only lanes lo <= i < hi read (others 0, not touched)."""
    def codegen(context, builder, sig, args):
        first, last = builder.add(args[2], args[2]), builder.sub(builder.add(args[3], args[3]), _I64(1))
        halves = []
        for h in range(2):  # elements [2*lo, 2*hi - 1) of each half of arr[offset : offset + 2*LANES]
            shift = _I64(h * LANES)
            mask = _mask(builder, builder.sub(first, shift), builder.sub(last, shift))
            halves.append(_masked_load(context, builder, sig.args[0], args[0], builder.add(args[1], shift), mask))
        evens = ir.Constant(ir.VectorType(_I32, LANES), list(range(0, 2 * LANES, 2)))
        return builder.shuffle_vector(halves[0], halves[1], evens)
    return vec(arr, offset, lo, hi), codegen


@intrinsic
def vstore(typingctx, arr, offset, value, count):
    """arr[offset : offset + min(count, LANES)] = the first lanes of ``value``."""
    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, sig.args[0], args[0], args[1])
        fnty = ir.FunctionType(ir.VoidType(), [_VEC, ptr.type, _I32, ir.VectorType(ir.IntType(1), LANES)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.v{LANES}f32.p0")
        builder.call(fn, [args[2], ptr, _I32(4), _mask(builder, _I64(0), args[3])])
        return context.get_dummy_value()
    return types.none(arr, offset, value, count), codegen


@intrinsic
def vstore_columns(typingctx, t, first, step, cols, y, y_off, ow, n, c_first, m):
    """Write ``cols`` vectors of tile t transposed: vector first + j*step (j < cols) holds column j
    of channels c_first + lane; y[y_off + c*ow + j] = that value for c < m and j < n <= cols.

    ``cols`` (a power of two up to LANES, a literal) columns take log2(cols) stages of two-vector
    shuffles, each pairing neighbouring column blocks and halving the channels per vector, after
    which every vector holds LANES / cols channels by cols columns; each channel is then one
    masked store of its n lanes (the lanes before it masked, so its base may lie before y)."""
    k = cols.literal_value if isinstance(cols, types.IntegerLiteral) else 0
    if not 0 < k <= LANES or k & (k - 1):
        return None

    def codegen(context, builder, sig, args):
        t, first, step, _, y, y_off, ow, n, c_first, m = args
        groups = [(0, LANES, [builder.load(builder.gep(t, [builder.add(first, builder.mul(step, _I64(j)))]))
                              for j in range(k)])]  # (first channel, channels, vectors by column block)
        block = 1  # columns per channel in each vector: lane = channel * block + column
        while block < k:
            merged = []
            for c0, count, vectors in groups:
                half = count // 2
                for h in range(2):
                    mask = [src + lane for c in range(h * half, (h + 1) * half) for src in (0, LANES)
                            for lane in range(c * block, (c + 1) * block)]
                    order = ir.Constant(ir.VectorType(_I32, LANES), mask)
                    pairs = [builder.shuffle_vector(vectors[i], vectors[i + 1], order) for i in range(0, len(vectors), 2)]
                    merged.append((c0 + h * half, half, pairs))
            groups, block = merged, 2 * block
        fnty = ir.FunctionType(ir.VoidType(), [_VEC, _VEC.as_pointer(), _I32, ir.VectorType(ir.IntType(1), LANES)])
        store = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.v{LANES}f32.p0")
        zero = _I64(0)
        for c0, count, (vector,) in groups:
            for c in range(count):
                channel = builder.add(c_first, _I64(c0 + c))
                lanes = builder.select(builder.icmp_signed("<", channel, m), n, zero)
                offset = builder.sub(builder.add(y_off, builder.mul(channel, ow)), _I64(c * k))
                ptr = _address(context, builder, sig.args[4], y, offset)
                mask = _mask(builder, _I64(c * k), builder.add(_I64(c * k), lanes))
                builder.call(store, [vector, ptr, _I32(4), mask])
        return context.get_dummy_value()

    return types.none(t, first, step, cols, y, y_off, ow, n, c_first, m), codegen


@intrinsic
def vsplat(typingctx, x):
    """A vector with every lane equal to the scalar ``x`` (as float32)."""
    def codegen(context, builder, sig, args):
        x = context.cast(builder, args[0], sig.args[0], types.float32)
        v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), x, _I32(0))
        return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))
    return vec(x), codegen


@intrinsic
def vsplat_at(typingctx, arr, offset):
    """A vector with every lane equal to arr[offset] (no negative-index wrap: offset >= 0)."""
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        x = builder.load(builder.gep(data, [args[1]]))
        v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), x, _I32(0))
        return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))
    return vec(arr, offset), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c, lane by lane, fused."""
    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(_VEC, [_VEC] * 3)
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fma.v{LANES}f32")
        return builder.call(fn, list(args))
    return vec(a, b, c), codegen


@intrinsic
def vadd(typingctx, a, b):
    """a + b, lane by lane."""
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return vec(a, b), codegen


@intrinsic
def tile_new(typingctx, count):
    """A stack array of ``count`` (a literal) zero vectors; constant indexing keeps it in registers."""
    if not isinstance(count, types.IntegerLiteral):
        return None
    n = count.literal_value

    def codegen(context, builder, sig, args):
        ptr = cgutils.alloca_once(builder, ir.ArrayType(_VEC, n))
        builder.store(ir.Constant(ir.ArrayType(_VEC, n), None), ptr)
        return builder.bitcast(ptr, _VEC.as_pointer())
    return tile(count), codegen


@intrinsic
def tile_get(typingctx, t, index):
    """Vector ``index`` of tile ``t``."""
    def codegen(context, builder, sig, args):
        return builder.load(builder.gep(args[0], [args[1]]))
    return vec(t, index), codegen


@intrinsic
def tile_set(typingctx, t, index, value):
    """Set vector ``index`` of tile ``t``."""
    def codegen(context, builder, sig, args):
        builder.store(args[2], builder.gep(args[0], [args[1]]))
        return context.get_dummy_value()
    return types.none(t, index, value), codegen


@intrinsic
def flat(typingctx, x):
    """The C-contiguous array ``x`` as a 1-D view: ``x`` itself when it is 1-D. No reshape call
    (a helper call, about 10 ns, on every kernel call), and usable in kernels compiled without
    reference counting (``_nrt=False``), which may not call functions returning new arrays."""
    if not isinstance(x, types.Array) or x.layout != "C":
        return None
    rety = x.copy(ndim=1, layout="C")

    def codegen(context, builder, sig, args):
        out = args[0]
        if x.ndim != 1:
            src = context.make_array(x)(context, builder, args[0])
            view = context.make_array(rety)(context, builder)
            populate_array(view, data=src.data, shape=[src.nitems], strides=[src.itemsize], itemsize=src.itemsize,
                           meminfo=src.meminfo, parent=src.parent)
            out = view._getvalue()
        if context.enable_nrt:  # the caller owns a new reference
            context.nrt.incref(builder, rety, out)
        return out

    return rety(x), codegen


@njit(inline="always")
def vcopy(dst, d_off, src, s_off, n):
    """dst[d_off : d_off + n] = src[s_off : s_off + n] by vectors; only the last one is masked."""
    full = n - n % LANES
    for j in range(0, full, LANES):
        vstore(dst, d_off + j, vload(src, s_off + j, LANES), LANES)
    if full < n:
        vstore(dst, d_off + full, vload(src, s_off + full, n - full), n - full)


@njit(inline="always")
def vcopy_even(dst, d_off, src, s_off, n):
    """dst[d_off + j] = src[s_off + 2*j] for j < n, by vectors; only the last one is masked."""
    full = n - n % LANES
    for j in range(0, full, LANES):
        vstore(dst, d_off + j, vload_even(src, s_off + 2 * j, 0, LANES), LANES)
    if full < n:
        vstore(dst, d_off + full, vload_even(src, s_off + 2 * full, 0, n - full), n - full)


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
                 alpha, code, p1, p2):
    """Y(i, j) = act(alpha * sum_t A(i, t) B(t, j) + beta * C(i, j)) for i < m, j < n (see module).

    Arrays are flat float32 (``boffs`` int64, k entries); C is not read when beta == 0. Tiles
    have one row when m is 1, else PANEL_ROWS. Column blocks are the outer loop so a block of B
    stays in cache while every row panel uses it. The activation is a last pass over Y: called per
    tile it costs more than the pass.
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
    if code != IDENTITY:
        activate_rows(y, y_off, y_rs, m, n, code, p1, p2)


ROW_SPLITS = 4
"""Partial sums per vector of ``_short_row`` (alternate taps): 8 independent FMA chains."""


@njit(inline="always")
def _short_row(a, a_ks, b, boffs, k, c, c_cs, beta, y, n, alpha):
    """Y(0, j) = alpha * sum_t A(0, t) B(t, j) + beta * C(0, j) for j < n <= 2 * LANES (see module;
    a_off = b_add = c_off = y_off = 0): two vectors of columns, each over ROW_SPLITS partial sums of
    alternate taps, where the one-row tile would run eight vectors (most of them empty) over one."""
    n1 = n - LANES  # lanes of the second vector (none when <= 0)
    zero = vsplat(0.0)
    p0, p1, p2, p3, q0, q1, q2, q3 = zero, zero, zero, zero, zero, zero, zero, zero
    whole = k - k % ROW_SPLITS
    for t in range(0, whole, ROW_SPLITS):
        r0, r1, r2, r3 = boffs[t], boffs[t + 1], boffs[t + 2], boffs[t + 3]
        x0, x1 = vsplat_at(a, t * a_ks), vsplat_at(a, (t + 1) * a_ks)
        x2, x3 = vsplat_at(a, (t + 2) * a_ks), vsplat_at(a, (t + 3) * a_ks)
        p0, q0 = vfma(x0, vload(b, r0, n), p0), vfma(x0, vload(b, r0 + LANES, n1), q0)
        p1, q1 = vfma(x1, vload(b, r1, n), p1), vfma(x1, vload(b, r1 + LANES, n1), q1)
        p2, q2 = vfma(x2, vload(b, r2, n), p2), vfma(x2, vload(b, r2 + LANES, n1), q2)
        p3, q3 = vfma(x3, vload(b, r3, n), p3), vfma(x3, vload(b, r3 + LANES, n1), q3)
    for t in range(whole, k):
        x0 = vsplat_at(a, t * a_ks)
        p0, q0 = vfma(x0, vload(b, boffs[t], n), p0), vfma(x0, vload(b, boffs[t] + LANES, n1), q0)
    va, vb = vsplat(alpha), vsplat(beta)
    lo = vfma(va, vadd(vadd(p0, p1), vadd(p2, p3)), zero)
    hi = vfma(va, vadd(vadd(q0, q1), vadd(q2, q3)), zero)
    if beta != 0.0:
        lo = vfma(vb, vsplat_at(c, 0) if c_cs == 0 else vload(c, 0, n), lo)
        hi = vfma(vb, vsplat_at(c, 0) if c_cs == 0 else vload(c, LANES, n1), hi)
    vstore(y, 0, lo, n)
    vstore(y, LANES, hi, n1)


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
    zero = np.int64(0)  # typed, not a literal: one compiled matmul_tiles for every caller
    if m == 1 and n <= 2 * LANES:  # a classifier layer at batch 1
        yf = flat(y)
        _short_row(flat(a), a_ks, bf, plan[9:], k, flat(c), c_cs, params[1], yf, n, params[0])
        if code != IDENTITY:
            activate_rows(yf, zero, n, np.int64(1), n, code, params[2], params[3])
        return
    matmul_tiles(flat(a), zero, a_rs, a_ks, bf, plan[9:], zero, flat(c), zero, c_rs, c_cs, params[1],
                 flat(y), zero, n, m, n, k, params[0], code, params[2], params[3])


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def gemm_dot_kernel(a, bt, c, y, plan, params):
    """ONNX Gemm with fewer outputs than a vector (N < LANES) and few rows: y (M, N) = act(alpha *
    A' @ B' + beta * C) as M * N dot products over K, each vectorised along K (the tiled path would
    leave most lanes of every vector idle).

    ``a`` holds A' row-major (M, K), ``bt`` B'^T row-major (N, K); ``plan`` = (M, N, K, c_rs, c_cs,
    activation), ``params`` = float32 (alpha, beta, and the activation's two parameters); C(i, j) =
    c[i * c_rs + j * c_cs], not read when beta == 0.
    """
    m, n, k, c_rs, c_cs, code = plan[0], plan[1], plan[2], plan[3], plan[4], plan[5]
    af, bf, cf, yf = flat(a), flat(bt), flat(c), flat(y)
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
        activate_rows(yf, np.int64(0), n, m, n, code, params[2], params[3])


@njit(cache=True, fastmath=FASTMATH, _nrt=False)
def matmul_kernel(a, b, y, plan, offsets):
    """numpy matmul over broadcast batches: y[s] (M, N) = A[s] (M, K) @ B[s] (K, N), row-major.

    ``plan`` = (M, N, K, then the K row offsets of B). Batch s reads A at offsets[0, s] and B at
    offsets[1, s] (broadcasting repeats offsets). A 1-D operand is one row of A (M = 1) or one
    column of B (N = 1).
    """
    m, n, k = plan[0], plan[1], plan[2]
    yf = y.reshape(-1)
    zero, one, identity = np.int64(0), np.int64(1), np.int64(IDENTITY)  # typed, not literals
    none, unit = np.float32(0.0), np.float32(1.0)
    for s in range(offsets.shape[1]):
        matmul_tiles(a.reshape(-1), offsets[0, s], k, one, b.reshape(-1), plan[3:], offsets[1, s], yf, zero, zero,
                     zero, none, yf, s * m * n, n, m, n, k, unit, identity, none, none)
