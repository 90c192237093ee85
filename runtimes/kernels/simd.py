"""Lane masks, masked loads and stores, max/min and lane shifts on the explicit float32 vectors of gemm.py.

A ``mask`` is an LLVM <LANES x i1> (an AVX-512 k register): lane i is on when bit i of the integer it
was made from is set, so precomputed per-vector masks are plain integer tables (``mask_of``). vmax and
vmin are the x86 MAXPS/MINPS instructions (the second operand wins when either is NaN: callers on
data that may hold NaN check it with ``mask_ordered``). Every function here is an intrinsic; callers pass
typed values, as gemm.py asks.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from .gemm import AVX512, LANES, vec

_VEC = ir.VectorType(ir.FloatType(), LANES)  # the LLVM type of gemm.py's ``vec``
_I32 = ir.IntType(32)
_BITS = ir.VectorType(ir.IntType(1), LANES)


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
        ptr = _address(context, builder, sig.args[0], args[0], args[1])
        fnty = ir.FunctionType(_VEC, [ptr.type, _I32, _BITS, _VEC])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.v{LANES}f32.p0")
        return builder.call(fn, [ptr, _I32(4), args[2], ir.Constant(_VEC, [0.0] * LANES)])
    return vec(arr, offset, m), codegen


@intrinsic
def vstore_mask(typingctx, arr, offset, value, m):
    """arr[offset + i] = value[i] for the lanes i of m."""
    def codegen(context, builder, sig, args):
        ptr = _address(context, builder, sig.args[0], args[0], args[1])
        fnty = ir.FunctionType(ir.VoidType(), [_VEC, ptr.type, _I32, _BITS])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.v{LANES}f32.p0")
        builder.call(fn, [args[2], ptr, _I32(4), args[3]])
        return context.get_dummy_value()
    return types.none(arr, offset, value, m), codegen


def _address(context, builder, arrty, arr, offset):
    """A vector pointer to arr[offset]."""
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [offset]), _VEC.as_pointer())


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
