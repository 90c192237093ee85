"""Elementwise kernels: unary maps, binary ops with numpy broadcasting, variadic folds, Where, and
inference BatchNormalization. Any dtype numba handles; the builders pick float32 or integer forms.

Broadcasting runs over a collapsed iteration space computed by the builder: the output shape with
size-1 dims dropped and mergeable dims fused, plus per operand the element strides of each dim (0
where the operand is broadcast). The innermost dim then has stride 1 or 0 for every operand, so the
inner loop is one of four vectorisable forms (both contiguous, one a scalar, both scalars) and same
shape, scalar and per-channel (C,1,1) operands are all fast paths of the same loop. Each op code
and inner pattern gets its own any-rank kernel, ``BINARY[code, ia, ib]`` (a closure over ints, so
numba's cache keys stay stable), that flattens its arrays and calls the loop with code and pattern
as literals: a model compiles only the ops and patterns it uses, each once per dtype.

Binary codes: add, sub, mul, div, integer div (truncates like C), pow, max, min (NaN propagates),
PRelu (x < 0 ? x * slope : x), the comparisons equal, less, greater, less-or-equal,
greater-or-equal (bool results), integer mod with the divisor's sign (Python's %) or the
dividend's sign (C's %), float mod with the dividend's sign (fmod) or the divisor's
(x - floor(x / y) y), the bool and, or, xor, the integer shifts left and right (right is arithmetic
for signed types; a shift by a negative count or by the type's width or more gives -1 for a negative x
shifted right, else 0), and ``FIRST`` (copy the first operand, used to start folds).
Unary codes: neg, abs, sign (NaN stays NaN), exp (``exp32``, vectorisable), log, sqrt, reciprocal,
erf, floor, ceil, sin, cos, tan, asin, acos, atan, sinh, cosh, round (half to even), isnan, isinf
(both signs, +inf only, -inf only; bool results) and the bool not.
"""
import math

import numpy as np
from llvmlite import ir
from numba import literal_unroll, literally, njit
from numba.core import types
from numba.extending import intrinsic, overload

from . import FASTMATH, KernelInputError

(ADD, SUB, MUL, DIV, IDIV, POW, MAX, MIN, PRELU, EQUAL, LESS, GREATER, LESS_EQUAL, GREATER_EQUAL,
 MOD, CMOD, FMOD, FLOOR_MOD, AND, OR, XOR, SHIFT_LEFT, SHIFT_RIGHT, FIRST) = range(24)
(NEG, ABS, SIGN, EXP, LOG, SQRT, RECIPROCAL, ERF, FLOOR, CEIL, SIN, COS, TAN, ASIN, ACOS, ATAN, SINH, COSH,
 ROUND, ISNAN, ISINF, ISINF_POS, ISINF_NEG, NOT) = range(24)


@intrinsic
def _bits_as_float32(typingctx, bits):
    """Reinterpret an int32 bit pattern as float32 (an LLVM bitcast, so loops stay vectorisable)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def _float32_bits(typingctx, x):
    """The int32 bit pattern of a float32."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@njit(inline="always", fastmath=FASTMATH)
def exp32(x):
    """exp(x) in float32 without a libm call, so loops using it vectorise (libm expf does not).

    Cephes expf: x = n ln2 + r with |r| <= ln2 / 2, e^r by a degree-6 polynomial, then n is added to
    the exponent bits. Relative error below 3e-7 (about 2.5 ulp); NaN stays NaN, overflow gives inf
    and results below the smallest normal float flush to 0.
    """
    x = np.float32(x)
    c = min(max(x, np.float32(-87.33654)), np.float32(88.72283))
    n = np.floor(c * np.float32(1.4426950408889634) + np.float32(0.5))
    r = c - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    y = _bits_as_float32(_float32_bits(p * (r * r) + r + np.float32(1.0)) + (np.int32(n) << 23))
    if x != x:
        return x
    if x > np.float32(88.72283):
        return np.float32(np.inf)
    if x < np.float32(-87.33654):
        return np.float32(0.0)
    return y


@njit(inline="always", fastmath=FASTMATH)
def nan_max(x, y):
    """max(x, y) that returns NaN when y is NaN (callers fold y into x, so NaN sticks)."""
    m = y if y > x else x
    return y if y != y else m


@njit(inline="always", fastmath=FASTMATH)
def nan_min(x, y):
    """min(x, y) that returns NaN when y is NaN (callers fold y into x, so NaN sticks)."""
    m = y if y < x else x
    return y if y != y else m


@njit(inline="always", fastmath=FASTMATH)
def _binop(x, y, code):
    """One binary op on scalars; ``code`` is a compile-time constant in every kernel."""
    if code == ADD:
        return x + y
    if code == SUB:
        return x - y
    if code == MUL:
        return x * y
    if code == DIV:
        return x / y
    if code == IDIV:
        if y == 0:
            raise KernelInputError("integer Div by zero: a divisor fed at run time is 0")  # the plan names the node
        q = x // y
        return q + 1 if q < 0 and q * y != x else q
    if code == POW:
        return x ** y
    if code == MAX:
        return nan_max(x, y)
    if code == MIN:
        return nan_min(x, y)
    if code == PRELU:
        return x * y if x < 0 else x
    if code == EQUAL:
        return x == y
    if code == LESS:
        return x < y
    if code == GREATER:
        return x > y
    if code == LESS_EQUAL:
        return x <= y
    if code == GREATER_EQUAL:
        return x >= y
    if code == MOD or code == CMOD:
        return _int_mod(x, y, code == CMOD)
    if code == FMOD:
        return np.fmod(x, y)
    if code == FLOOR_MOD:
        r = np.fmod(x, y)  # NaN and the infinities follow from fmod; x + inf = inf keeps y
        return r + y if r != 0 and (r < 0) != (y < 0) else r
    if code >= AND:
        return _bits(x, y, code)
    return x


def _bits(x, y, code):
    """The bitwise codes: and, or, xor of bools, those and the shifts of integers (typed per dtype,
    since every branch of ``_binop`` is typed for every operand dtype)."""


@overload(_bits, inline="always", fastmath=FASTMATH)
def _bits_typed(x, y, code):
    if isinstance(x, types.Boolean):
        def logic(x, y, code):
            if code == AND:
                return x & y
            if code == OR:
                return x | y
            return x ^ y
        return logic
    if isinstance(x, types.Integer):
        bits = x.bitwidth

        def bitwise(x, y, code):
            if code == AND:
                return x & y
            if code == OR:
                return x | y
            if code == XOR:
                return x ^ y
            if y < 0 or y >= bits:
                return x ^ x if code == SHIFT_LEFT or x >= 0 else (x ^ x) - 1
            if code == SHIFT_LEFT:
                return x << y
            return x >> y
        return bitwise
    return lambda x, y, code: x  # float operands never carry a bitwise code


@njit(inline="always", fastmath=FASTMATH)
def _int_mod(x, y, c_sign):
    """Integer x mod y with the sign of the dividend when ``c_sign`` (C), else of the divisor (Python);
    a divisor of 0 raises."""
    if y == 0:
        raise KernelInputError("integer Mod by zero: a divisor is 0")  # the plan names the node
    r = x % y  # numba's integer % is Python's: the divisor's sign
    if c_sign and r != 0 and (r < 0) != (x < 0):
        r -= y
    return r


@njit(inline="always", fastmath=FASTMATH)
def _unop(x, code):
    """One unary op on a scalar."""
    if code == NEG:
        return -x
    if code == ABS:
        return abs(x)
    if code == SIGN:
        return x if x != x else (x > 0) - (x < 0)
    if code == EXP:
        return exp32(x)
    if code == LOG:
        return math.log(x) if x > 0 else (-np.inf if x == 0 else np.nan)
    if code == SQRT:
        return math.sqrt(x) if x >= 0 else np.nan
    if code == RECIPROCAL:
        return 1 / x
    if code == ERF:
        return math.erf(x)
    if code == FLOOR:
        return np.floor(x)
    if code == CEIL:
        return np.ceil(x)
    if code == SIN:
        return math.sin(x)
    if code == COS:
        return math.cos(x)
    if code == TAN:
        return math.tan(x)
    if code == ASIN:
        return math.asin(x)
    if code == ACOS:
        return math.acos(x)
    if code == ATAN:
        return math.atan(x)
    if code == SINH:
        return math.sinh(x)
    if code == COSH:
        return math.cosh(x)
    if code == ROUND:
        return np.rint(x)
    if code == ISNAN:
        return x != x
    if code == ISINF:
        return abs(x) == np.inf
    if code == ISINF_POS:
        return x == np.inf
    if code == ISINF_NEG:
        return x == -np.inf
    return not x  # NOT


@njit(inline="always")
def _odometer_step(idx, shape, strides, offsets, last):
    """Advance the multi-index ``idx`` over dims 0..last of ``shape`` by one (last dim fastest) and
    move each operand k's flat offset by its element strides ``strides[k]``."""
    d = last
    while d >= 0:
        idx[d] += 1
        for k in range(offsets.size):
            offsets[k] += strides[k, d]
        if idx[d] < shape[d]:
            return
        for k in range(offsets.size):
            offsets[k] -= strides[k, d] * shape[d]
        idx[d] = 0
        d -= 1


@njit(inline="always", fastmath=FASTMATH)
def _rows(a, b, out, shape, sa, sb, ia, ib, code):
    """The outer loop of ``_broadcast`` for one inner stride pattern (ia, ib literal 0 or 1)."""
    nd = shape.size
    n = shape[nd - 1]
    idx = np.zeros(nd, np.int64)
    strides = np.stack((sa, sb))
    offsets = np.zeros(2, np.int64)
    for base in range(0, out.size, n):
        xa, xb, o = a[offsets[0]:], b[offsets[1]:], out[base:]
        for i in range(n):
            o[i] = _binop(xa[i * ia], xb[i * ib], code)
        _odometer_step(idx, shape, strides, offsets, nd - 2)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _broadcast(a, b, out, shape, sa, sb, ia, ib, code):
    """out = a (op) b over the collapsed space ``shape``; a, b, out are flat, strides in elements.

    ``code`` and the inner strides ``ia``, ``ib`` (each 0 or 1) are compiled as literals, so each op
    and pattern gets its own vectorised loop.
    """
    literally(code)
    literally(ia)
    literally(ib)
    if out.size:
        _rows(a, b, out, shape, sa, sb, ia, ib, code)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _broadcast_any(a, b, out, shape, sa, sb, code):
    """``_broadcast`` for an inner stride pattern known only at run time (the variadic folds)."""
    literally(code)
    ia, ib = sa[shape.size - 1], sb[shape.size - 1]
    if ia == 1 and ib == 1:
        _broadcast(a, b, out, shape, sa, sb, 1, 1, code)
    elif ia == 1:
        _broadcast(a, b, out, shape, sa, sb, 1, 0, code)
    elif ib == 1:
        _broadcast(a, b, out, shape, sa, sb, 0, 1, code)
    else:
        _broadcast(a, b, out, shape, sa, sb, 0, 0, code)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _map(x, out, code):
    """out = op(x) over flat arrays, ``code`` a literal."""
    literally(code)
    for i in range(x.size):
        out[i] = _unop(x[i], code)


def _binary(code: int, ia: int, ib: int):
    """The any-rank kernel of binary op ``code`` for inner strides (ia, ib)."""

    @njit(cache=True, fastmath=FASTMATH, error_model="numpy")
    def kernel(a, b, out, shape, sa, sb):
        """out = a (op) b with broadcasting: ``shape`` is the collapsed output, sa/sb element strides
        whose innermost entries are this kernel's ia, ib."""
        _broadcast(a.reshape(-1), b.reshape(-1), out.reshape(-1), shape, sa, sb, ia, ib, code)

    return kernel


def _variadic(code: int):
    """The kernel folding op ``code`` over any number of broadcast inputs."""

    @njit(cache=True, fastmath=FASTMATH, error_model="numpy")
    def kernel(out, shape, strides, scale, *ins):
        """out = scale * fold of op over ``ins`` (broadcast): strides[k] belongs to ins[k], the last row to out."""
        of = out.reshape(-1)
        so = strides[strides.shape[0] - 1]
        k = 0
        for a in literal_unroll(ins):
            af = a.reshape(-1)
            if k == 0:
                _broadcast_any(af, af, of, shape, strides[0], strides[0], FIRST)
            else:
                _broadcast_any(of, af, of, shape, so, strides[k], code)
            k += 1
        if scale != 1.0:
            for i in range(of.size):
                of[i] *= scale

    return kernel


def _unary(code: int):
    """The any-rank kernel of unary op ``code``."""

    @njit(cache=True, fastmath=FASTMATH, error_model="numpy")
    def kernel(x, out):
        """out = op(x) elementwise over C-contiguous arrays of equal size."""
        _map(x.reshape(-1), out.reshape(-1), code)

    return kernel


BINARY = {(code, ia, ib): _binary(code, ia, ib) for code in range(FIRST) for ia in (0, 1) for ib in (0, 1)}
VARIADIC = {code: _variadic(code) for code in (ADD, MAX, MIN)}
UNARY = {code: _unary(code) for code in range(NOT + 1)}


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def where(cond, a, b, out, shape, sc, sa, sb):
    """out = cond ? a : b with broadcasting over the collapsed ``shape`` (per-operand element strides)."""
    cf, af, bf, of = cond.reshape(-1), a.reshape(-1), b.reshape(-1), out.reshape(-1)
    nd = shape.size
    idx = np.zeros(nd, np.int64)
    strides = np.stack((sc, sa, sb))
    offsets = np.zeros(3, np.int64)
    for i in range(of.size):
        of[i] = af[offsets[1]] if cf[offsets[0]] else bf[offsets[2]]
        _odometer_step(idx, shape, strides, offsets, nd - 1)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def batch_norm(x, out, scale, bias, mean, var, eps, outer, channels, inner):
    """Inference BatchNormalization of x viewed as (outer, channels, inner):
    out = (x - mean[c]) / sqrt(var[c] + eps) * scale[c] + bias[c], folded per channel in float64."""
    xv = x.reshape((outer, channels, inner))
    ov = out.reshape((outer, channels, inner))
    for c in range(channels):
        a = scale[c] / math.sqrt(np.float64(var[c]) + eps)
        b = bias[c] - mean[c] * a
        for o in range(outer):
            xr, orow = xv[o, c], ov[o, c]
            for i in range(inner):
                orow[i] = xr[i] * a + b
