"""Explicit float32 vectors for the kernels: LLVM vector types, masked loads and stores, broadcasts,
FMA, register tiles, lane masks, max/min and lane shifts, as Numba intrinsics.

Numba's auto-vectoriser neither keeps accumulators in registers nor picks 512-bit registers, so the
hot loops (gemm.py's micro-kernel, the convolutions, MAX3, the streaming shifts) are written on these
vectors. A vector holds LANES float32; partial vectors use masked loads and stores, so no operand
needs padding. A ``mask`` is an LLVM <LANES x i1> (an AVX-512 k register): lane i is on when bit i of
the integer it was made from is set, so precomputed per-vector masks are plain integer tables
(``mask_of``). vmax and vmin are the x86 MAXPS/MINPS instructions (the second operand wins when
either is NaN: callers on data that may hold NaN check it with ``mask_ordered``).

Callers pass typed values (``np.int64(0)``, float32 scalars), never int literals: Numba compiles a
separate specialisation for each literal value or argument type.
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils, config
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic, models, register_model
from numba.np.arrayobj import populate_array


def _target_features() -> frozenset[str]:
    """The CPU features Numba compiles for (its cache keys hold them too): NUMBA_CPU_FEATURES when set
    (NUMBA_CPU_NAME=generic sets it to none), else the host's. A CPU name with an empty feature list
    counts as having none (the safe side: 8 lanes still run on an AVX-512 target)."""
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return frozenset(f[1:] for f in features.split(",") if f.startswith("+"))


TARGET_FEATURES = _target_features()
"""Features of the CPU the kernels are compiled for, e.g. "avx512f" (NUMBA_CPU_NAME/NUMBA_CPU_FEATURES)."""
AVX512 = "avx512f" in TARGET_FEATURES
LANES = 16 if AVX512 else 8
"""float32 lanes per vector: one zmm register with AVX-512, one ymm (or two NEON) otherwise."""

_VEC = ir.VectorType(ir.FloatType(), LANES)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_BITS = ir.VectorType(ir.IntType(1), LANES)


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
    fnty = ir.FunctionType(_VEC, [ptr.type, _I32, _BITS, _VEC])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.v{LANES}f32.p0")
    return builder.call(fn, [ptr, _I32(4), mask, ir.Constant(_VEC, [0.0] * LANES)])


def _masked_store(context, builder, arrty, arr, offset, value, mask):
    ptr = _address(context, builder, arrty, arr, offset)
    fnty = ir.FunctionType(ir.VoidType(), [_VEC, ptr.type, _I32, _BITS])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.v{LANES}f32.p0")
    builder.call(fn, [value, ptr, _I32(4), mask])


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
        _masked_store(context, builder, sig.args[0], args[0], args[1], args[2], _mask(builder, _I64(0), args[3]))
        return context.get_dummy_value()
    return types.none(arr, offset, value, count), codegen


def _channels_by_columns(builder, t, first, step, k):
    """The ``k`` vectors first + j*step (column j of LANES channels, j < k, k a power of two up to
    LANES) of tile t after log2(k) stages of two-vector shuffles, each pairing neighbouring column
    blocks and halving the channels per vector: [(first channel, LANES // k, vector)] in channel
    order, each vector holding its channels' k columns one channel after the other."""
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
    return [(c0, count, vector) for c0, count, (vector,) in groups]


def _literal_columns(cols) -> int:
    """The literal column count of a transposing intrinsic (a power of two up to LANES), else 0."""
    k = cols.literal_value if isinstance(cols, types.IntegerLiteral) else 0
    return k if 0 < k <= LANES and not k & (k - 1) else 0


@intrinsic
def vstore_columns(typingctx, t, first, step, cols, y, y_off, ow, n, c_first, m):
    """Write ``cols`` vectors of tile t transposed: vector first + j*step (j < cols) holds column j
    of channels c_first + lane; y[y_off + c*ow + j] = that value for c < m and j < n <= cols.

    ``cols`` (a power of two up to LANES, a literal) columns are regrouped by channel
    (``_channels_by_columns``); each channel is then one masked store of its n lanes (the lanes
    before it masked, so its base may lie before y)."""
    k = _literal_columns(cols)
    if not k:
        return None

    def codegen(context, builder, sig, args):
        t, first, step, _, y, y_off, ow, n, c_first, m = args
        fnty = ir.FunctionType(ir.VoidType(), [_VEC, _VEC.as_pointer(), _I32, _BITS])
        store = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.v{LANES}f32.p0")
        zero = _I64(0)
        for c0, count, vector in _channels_by_columns(builder, t, first, step, k):
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
def vtranspose(typingctx, t, first, step, cols, out):
    """Tile ``out`` vector g (g < cols) = lanes g*LANES .. (g+1)*LANES - 1 of the channel-major
    (LANES, cols) matrix whose column j is vector first + j*step of tile t: vector g holds channels
    g*LANES/cols onwards, cols columns each, so rows of exactly cols columns take cols whole-vector
    stores instead of LANES masked ones (``vstore_columns``)."""
    k = _literal_columns(cols)
    if not k:
        return None

    def codegen(context, builder, sig, args):
        t, first, step, _, out = args
        for g, (_, _, vector) in enumerate(_channels_by_columns(builder, t, first, step, k)):
            builder.store(vector, builder.gep(out, [_I64(g)]))
        return context.get_dummy_value()

    return types.none(t, first, step, cols, out), codegen


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


class _Mask(types.Type):
    def __init__(self) -> None:
        super().__init__(name=f"mask{LANES}")


mask = _Mask()


@register_model(_Mask)
class _MaskModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _BITS)


@intrinsic
def mask_of(typingctx, bits):
    """The mask whose lane i is on when bit i of the integer ``bits`` is set (higher bits ignored).

    With AVX-512 the integer is the k register itself; without it, the bits are broadcast and tested
    lane by lane (LLVM's lowering of the plain bitcast there is about twice as slow in MAX3).
    """
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        value = args[0]
        width = value.type.width
        word = ir.IntType(LANES if AVX512 else 32)
        if width > word.width:
            value = builder.trunc(value, word)
        elif width < word.width:
            value = builder.zext(value, word)
        if AVX512:
            return builder.bitcast(value, _BITS)
        words = ir.VectorType(word, LANES)
        v = builder.insert_element(ir.Constant(words, ir.Undefined), value, _I32(0))
        v = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))
        bits = builder.and_(v, ir.Constant(words, [1 << i for i in range(LANES)]))
        return builder.icmp_unsigned("!=", bits, ir.Constant(words, [0] * LANES))
    return mask(bits), codegen


@intrinsic
def mask_ordered(typingctx, acc, v):
    """acc with the lanes where v is NaN turned off (one masked compare on AVX-512)."""
    def codegen(context, builder, sig, args):
        return builder.and_(args[0], builder.fcmp_unordered("ord", args[1], args[1]))
    return mask(acc, v), codegen


@intrinsic
def mask_full(typingctx, m):
    """Whether every lane of m is on."""
    def codegen(context, builder, sig, args):
        word = ir.IntType(LANES)
        return builder.icmp_unsigned("==", builder.bitcast(args[0], word), ir.Constant(word, (1 << LANES) - 1))
    return types.boolean(m), codegen


@intrinsic
def vload_mask(typingctx, arr, offset, m):
    """The vector arr[offset : offset + LANES] with only the lanes of m read (others 0, not touched:
    the offset may point outside the array where the lanes there are off)."""
    def codegen(context, builder, sig, args):
        return _masked_load(context, builder, sig.args[0], args[0], args[1], args[2])
    return vec(arr, offset, m), codegen


@intrinsic
def vstore_mask(typingctx, arr, offset, value, m):
    """arr[offset + i] = value[i] for the lanes i of m."""
    def codegen(context, builder, sig, args):
        _masked_store(context, builder, sig.args[0], args[0], args[1], args[2], args[3])
        return context.get_dummy_value()
    return types.none(arr, offset, value, m), codegen


def _pick(builder, op, a, b):
    return builder.select(builder.fcmp_ordered(op, a, b), a, b)


@intrinsic
def vmax(typingctx, a, b):
    """a > b ? a : b lane by lane (MAXPS: b where either is NaN)."""
    def codegen(context, builder, sig, args):
        return _pick(builder, ">", args[0], args[1])
    return vec(a, b), codegen


@intrinsic
def vmin(typingctx, a, b):
    """a < b ? a : b lane by lane (MINPS: b where either is NaN)."""
    def codegen(context, builder, sig, args):
        return _pick(builder, "<", args[0], args[1])
    return vec(a, b), codegen


@intrinsic
def vmax_mask(typingctx, a, b, m):
    """vmax(a, b) in the lanes of m, a in the others (one masked max on AVX-512)."""
    def codegen(context, builder, sig, args):
        return builder.select(args[2], _pick(builder, ">", args[0], args[1]), args[0])
    return vec(a, b, m), codegen


@intrinsic
def vselect(typingctx, m, a, b):
    """a in the lanes of m, b in the others."""
    def codegen(context, builder, sig, args):
        return builder.select(args[0], args[1], args[2])
    return vec(m, a, b), codegen


def _align(builder, lo, hi, shift):
    """Lanes shift .. shift + LANES - 1 of the concatenation lo, hi (one vpermt2ps on AVX-512)."""
    order = ir.Constant(ir.VectorType(_I32, LANES), list(range(shift, shift + LANES)))
    return builder.shuffle_vector(lo, hi, order)


@intrinsic
def vshift_prev(typingctx, prev, cur):
    """Each lane of cur replaced by the lane before it: lane 0 takes the last lane of prev."""
    def codegen(context, builder, sig, args):
        return _align(builder, args[0], args[1], LANES - 1)
    return vec(prev, cur), codegen


@intrinsic
def vshift_next(typingctx, cur, nxt):
    """Each lane of cur replaced by the lane after it: the last lane takes lane 0 of nxt."""
    def codegen(context, builder, sig, args):
        return _align(builder, args[0], args[1], 1)
    return vec(cur, nxt), codegen


@intrinsic
def vmul(typingctx, a, b):
    """a * b, lane by lane."""
    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1])
    return vec(a, b), codegen


@intrinsic
def vsum_pairs(typingctx, a, b):
    """Lane i = c[2i] + c[2i + 1] of the concatenation c = a, b: the sums of neighbouring pairs (two
    shuffles, one add)."""
    def codegen(context, builder, sig, args):
        evens = ir.Constant(ir.VectorType(_I32, LANES), list(range(0, 2 * LANES, 2)))
        odds = ir.Constant(ir.VectorType(_I32, LANES), list(range(1, 2 * LANES, 2)))
        return builder.fadd(builder.shuffle_vector(args[0], args[1], evens), builder.shuffle_vector(args[0], args[1], odds))
    return vec(a, b), codegen


@intrinsic
def prefer_512(typingctx):
    """Let LLVM vectorise the calling kernel with 512-bit registers where the CPU has them (its tuning for
    AVX-512 CPUs prefers 256 bits; loops bound by instruction count, like the polynomial maps' and the
    pools', then run 16 lanes per instruction). Without AVX-512 the attribute changes nothing."""

    def codegen(context, builder, signature, args):
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')  # a string attribute llvmlite does not list
        return context.get_dummy_value()

    return types.none(), codegen
