"""Elementwise kernels: unary maps, binary ops with numpy broadcasting, variadic folds, Where, and
inference BatchNormalization. Any dtype numba handles; the builders pick float32 or integer forms.

Broadcasting runs over a collapsed iteration space computed by the builder: the output shape with
size-1 dims dropped and mergeable dims fused, plus per operand the element strides of each dim (0
where the operand is broadcast). The innermost dim then has stride 1 or 0 for every operand, so the
inner loop is one of four vectorisable forms (both contiguous, one a scalar, both scalars) and same
shape, scalar and per-channel (C,1,1) operands are all fast paths of the same loop. Each op code
and inner pattern gets its own any-rank kernel, ``BINARY[code, ia, ib]`` (a closure over ints, so
numba's cache keys stay stable), that flattens its arrays and runs the loop with code and pattern
as literals; ``_binop`` and ``_unop`` are overloads that pick the scalar body of the literal code, so
a kernel types that op alone (typing every op's branches in every kernel made the family take
minutes to compile): a model compiles only the ops and patterns it uses, each once per dtype.

Binary codes: add, sub, mul, div, integer div (truncates like C), pow, max, min (NaN propagates),
PRelu (x < 0 ? x * slope : x), the comparisons equal, less, greater, less-or-equal,
greater-or-equal (bool results), integer mod with the divisor's sign (Python's %) or the
dividend's sign (C's %), float mod with the dividend's sign (fmod) or the divisor's
(x - floor(x / y) y), the bool and, or, xor, the integer shifts left and right (right is arithmetic
for signed types; a shift by a negative count or by the type's width or more gives -1 for a negative x
shifted right, else 0), and ``FIRST`` (copy the first operand, used to start folds).
Unary codes: neg, abs, sign (NaN stays NaN), exp, log, sqrt, reciprocal, erf, floor, ceil, sin, cos, tan,
asin, acos, atan, sinh, cosh, round (half to even), isnan, isinf (both signs, +inf only, -inf only; bool
results), the bool not, and Pow by the constants 2, 3, 4 and 0.5 (x x, x x x, (x x)(x x), and sqrt(x)
with pow's -inf -> inf: a vectorised loop where libm's powf is a scalar call, 10x slower). exp, log, erf
and the trigonometric and hyperbolic maps are float32 polynomials without libm calls (``exp32``,
``log32``, ... below), so their loops vectorise (libm's are scalar calls, 20-70x slower than
onnxruntime's vectorised ones): each states its error (2 ulp or better), and NaN and the infinities map
as in onnxruntime. The unary kernels ask for 512-bit vectors; on AVX-512 Exp and Erf run on explicit
vectors (``_vectors``), whose VSCALEFPS scales e^r by 2^k with overflow and underflow handled.
"""
import math

import numpy as np
from llvmlite import ir
from numba import literal_unroll, literally, njit
from numba.core import cgutils, types
from numba.extending import intrinsic, overload

from . import FASTMATH, KernelInputError
from .simd import AVX512, LANES, prefer_512, vec, vfma, vload, vmax, vmin, vmul, vsplat, vstore

(ADD, SUB, MUL, DIV, IDIV, POW, MAX, MIN, PRELU, EQUAL, LESS, GREATER, LESS_EQUAL, GREATER_EQUAL,
 MOD, CMOD, FMOD, FLOOR_MOD, AND, OR, XOR, SHIFT_LEFT, SHIFT_RIGHT, FIRST) = range(24)
(NEG, ABS, SIGN, EXP, LOG, SQRT, RECIPROCAL, ERF, FLOOR, CEIL, SIN, COS, TAN, ASIN, ACOS, ATAN, SINH, COSH,
 ROUND, ISNAN, ISINF, ISINF_POS, ISINF_NEG, NOT, SQUARE, CUBE, FOURTH, POW_HALF) = range(28)


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


EXP_P = (np.float32(0.4999999403953552), np.float32(0.1666652113199234), np.float32(0.04166838899254799),
         np.float32(0.008368716575205326), np.float32(0.001381459878757596))
"""_exp_reduced's fit: (e^r - 1 - r) / r^2 by degree 4 on |r| <= ln2 / 2, minimax in e^r's relative error
(Lawson's weighted least squares in float64 on Chebyshev nodes, rounded to float32): 6.6e-8 evaluated in
float32, as Cephes' degree 5."""


@njit(inline="always", fastmath=FASTMATH)
def _exp_reduced(x):
    """e^x for finite float32 x in [-87.3, 88.7] (no edge handling: callers clamp or know their range).

    x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two, Cody-Waite), e^r = (P(r) r + 1) r + 1 (six
    multiply-adds), then n is added to the exponent bits. Relative error below 1.5e-7."""
    n = np.floor(x * np.float32(1.4426950408889634) + np.float32(0.5))
    r = x - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
    p = (((EXP_P[4] * r + EXP_P[3]) * r + EXP_P[2]) * r + EXP_P[1]) * r + EXP_P[0]
    one = np.float32(1.0)
    return _bits_as_float32(_float32_bits((p * r + one) * r + one) + (np.int32(n) << 23))


@njit(inline="always", fastmath=FASTMATH)
def exp32(x):
    """exp(x) in float32 without a libm call, so loops using it vectorise (libm expf does not):
    ``_exp_reduced`` of x clamped to the finite range. Relative error below 1.5e-7 (about 2 ulp); NaN
    stays NaN, overflow gives inf and results below the smallest normal float flush to 0.
    """
    x = np.float32(x)
    y = _exp_reduced(min(max(x, np.float32(-87.33654)), np.float32(88.72283)))
    if x != x:
        return x
    if x > np.float32(88.72283):
        return np.float32(np.inf)
    if x < np.float32(-87.33654):
        return np.float32(0.0)
    return y


_VEC = ir.VectorType(ir.FloatType(), LANES)


@intrinsic
def _vscalef(typingctx, y, k):
    """y * 2^k lane by lane for whole k (AVX-512 VSCALEFPS: overflow gives inf, results below the normal
    range subnormals or 0, NaN propagates). AVX-512 only."""

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(_VEC, [_VEC, _VEC, _VEC, ir.IntType(16), ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.avx512.mask.scalef.ps.512")
        every, current_rounding = ir.Constant(ir.IntType(16), -1), ir.Constant(ir.IntType(32), 4)
        return builder.call(fn, [args[0], args[1], ir.Constant(_VEC, ir.Undefined), every, current_rounding])

    return vec(y, k), codegen


def _lanewise(builder, name: str, args) -> ir.Value:
    """The LLVM intrinsic ``llvm.<name>`` of float vectors applied to ``args``."""
    fnty = ir.FunctionType(_VEC, [_VEC] * len(args))
    return builder.call(cgutils.get_or_insert_function(builder.module, fnty, f"llvm.{name}.v{LANES}f32"), list(args))


@intrinsic
def _vfloor(typingctx, v):
    """floor of each lane."""
    return vec(v), lambda context, builder, signature, args: _lanewise(builder, "floor", args)


@intrinsic
def _vabs(typingctx, v):
    """|v| lane by lane."""
    return vec(v), lambda context, builder, signature, args: _lanewise(builder, "fabs", args)


@intrinsic
def _vcopysign(typingctx, magnitude, sign):
    """|magnitude| with the sign bit of ``sign``, lane by lane."""
    return vec(magnitude, sign), lambda context, builder, signature, args: _lanewise(builder, "copysign", args)


@intrinsic
def _vselect_le(typingctx, a, b, x, y):
    """x where a <= b, else y (lane by lane; y where a or b is NaN)."""

    def codegen(context, builder, signature, args):
        return builder.select(builder.fcmp_ordered("<=", args[0], args[1]), args[2], args[3])

    return vec(a, b, x, y), codegen


@njit(inline="always", fastmath=FASTMATH)
def _exp_vector_reduced(c):
    """e^c of a vector of finite c in [-104, 89]: c = k ln2 + r and e^r as in ``_exp_reduced``, then VSCALEFPS
    multiplies by 2^k, so overflow and underflow (to subnormals, which exp32 flushes) need no selects."""
    k = _vfloor(vfma(c, vsplat(np.float32(1.4426950408889634)), vsplat(np.float32(0.5))))
    r = vfma(k, vsplat(np.float32(2.12194440e-4)), vfma(k, vsplat(np.float32(-0.693359375)), c))
    p = vfma(vfma(vfma(vfma(vsplat(EXP_P[4]), r, vsplat(EXP_P[3])), r, vsplat(EXP_P[2])), r, vsplat(EXP_P[1])), r,
             vsplat(EXP_P[0]))
    one = vsplat(np.float32(1.0))
    return _vscalef(vfma(vfma(p, r, one), r, one), k)


@njit(inline="always", fastmath=FASTMATH)
def _exp_vector(v):
    """e^v of a vector: v clamped to [-104, 89] (NaN passes: vmax/vmin keep their second operand), then
    ``_exp_vector_reduced``. 15 instructions per 16 values where the vectorised exp32 takes 27."""
    return _exp_vector_reduced(vmin(vsplat(np.float32(89.0)), vmax(vsplat(np.float32(-104.0)), v)))


def _nan_max(x, y):
    """max(x, y) that returns NaN when y is NaN (callers fold y into x, so NaN sticks)."""
    m = y if y > x else x
    return y if y != y else m


def _nan_min(x, y):
    """min(x, y) that returns NaN when y is NaN (callers fold y into x, so NaN sticks)."""
    m = y if y < x else x
    return y if y != y else m


nan_max = njit(inline="always", fastmath=FASTMATH)(_nan_max)
nan_min = njit(inline="always", fastmath=FASTMATH)(_nan_min)
_nan_max_call = njit(forceinline=True, fastmath=FASTMATH)(_nan_max)  # for _binop: Numba's inlining of an
_nan_min_call = njit(forceinline=True, fastmath=FASTMATH)(_nan_min)  # inline body in an inlined one warns


def _binop(x, y, code):
    """One binary op on scalars, ``code`` an int literal: only that op's body is typed and inlined."""


def _idiv(x, y, code):
    """Integer division truncating toward zero (C's, onnxruntime's); a divisor of 0 raises. The
    smallest integer divided by -1 wraps to itself, as numpy's (onnxruntime stops with SIGFPE)."""
    if y == 0:
        raise KernelInputError("integer Div by zero: a divisor fed at run time is 0")  # the plan names the node
    if y == -1:
        return -x  # (Numba's int64 floor division gives 0 for MIN // -1; negation wraps)
    q = x // y
    return q + 1 if q < 0 and q * y != x else q


def _floor_mod(x, y, code):
    """Float x mod y with the divisor's sign: x - floor(x / y) y (opset 28's fmod=0)."""
    r = np.fmod(x, y)  # NaN and the infinities follow from fmod; x + inf = inf keeps y
    return r + y if r != 0 and (r < 0) != (y < 0) else r


def _shift(bits: int, left: bool):
    """The shift of ``bits``-wide integers: by a negative count or by ``bits`` or more, -1 for a
    negative x shifted right, else 0."""
    def shift(x, y, code):
        if y < 0 or y >= bits:
            return x ^ x if left or x >= 0 else (x ^ x) - 1
        return x << y if left else x >> y
    return shift


_BINOPS = {
    ADD: lambda x, y, code: x + y, SUB: lambda x, y, code: x - y, MUL: lambda x, y, code: x * y,
    DIV: lambda x, y, code: x / y, IDIV: _idiv, POW: lambda x, y, code: x ** y,
    MAX: lambda x, y, code: _nan_max_call(x, y), MIN: lambda x, y, code: _nan_min_call(x, y),
    PRELU: lambda x, y, code: x * y if x < 0 else x,
    EQUAL: lambda x, y, code: x == y, LESS: lambda x, y, code: x < y, GREATER: lambda x, y, code: x > y,
    LESS_EQUAL: lambda x, y, code: x <= y, GREATER_EQUAL: lambda x, y, code: x >= y,
    MOD: lambda x, y, code: _int_mod(x, y, False), CMOD: lambda x, y, code: _int_mod(x, y, True),
    FMOD: lambda x, y, code: np.fmod(x, y), FLOOR_MOD: _floor_mod,
    AND: lambda x, y, code: x & y, OR: lambda x, y, code: x | y, XOR: lambda x, y, code: x ^ y,
    FIRST: lambda x, y, code: x,
}


@overload(_binop, inline="always", prefer_literal=True)
def _binop_typed(x, y, code):
    if not isinstance(code, types.IntegerLiteral):
        return None
    if code.literal_value in (SHIFT_LEFT, SHIFT_RIGHT):
        return _shift(x.bitwidth, code.literal_value == SHIFT_LEFT)
    return _BINOPS[code.literal_value]


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


F = np.float32
HALF, ONE, FOUR, QUARTER = F(0.5), F(1.0), F(4.0), F(0.25)
PI, PIO2, PIO4, TWO_OVER_PI = F(math.pi), F(math.pi / 2), F(math.pi / 4), F(2 / math.pi)
INF, NAN, ZERO = F(np.inf), F(np.nan), F(0.0)
SIGN_BIT = np.int32(-2 ** 31)
IN_ORDER = FASTMATH - {"reassoc"}
"""The unary kernels' flags: the approximations' range reductions (Cody-Waite splits, e^(x/2) squared
in two halves) are exact only when evaluated in the order written, which reassociation undoes."""
TRIG_LIMIT = F(8192.0)
"""sin32, cos32 and tan32 reduce |x| <= TRIG_LIMIT exactly enough; larger arguments go to libm."""
PIO2_1, PIO2_2, PIO2_3 = F(1.5703125), F(4.837512969970703125e-4), F(7.54978995489188216e-8)


@njit(inline="always", fastmath=FASTMATH)
def _with_sign(y, x):
    """y (not negative, or NaN) with the sign bit of x, so -0 stays -0."""
    return _bits_as_float32(_float32_bits(y) | (_float32_bits(x) & SIGN_BIT))


@njit(inline="always", fastmath=FASTMATH)
def _quadrant(x):
    """(r, q): x = j pi/2 + r with j = round(2x / pi), |r| <= pi/4, q = j mod 4 (as a float). pi/2 is
    split in three parts (Cody-Waite) so r is exact to float32 for |x| <= TRIG_LIMIT; NaN and the
    infinities give NaN."""
    j = np.floor(x * TWO_OVER_PI + HALF)
    r = ((x - j * PIO2_1) - j * PIO2_2) - j * PIO2_3
    return r, j - FOUR * np.floor(j * QUARTER)


@njit(inline="always", fastmath=FASTMATH)
def _sin_poly(r):
    """sin(r) for |r| <= pi/4 (Cephes sinf's polynomial, about 1 ulp)."""
    z = r * r
    return ((F(-1.9515295891e-4) * z + F(8.3321608736e-3)) * z + F(-1.6666654611e-1)) * z * r + r


@njit(inline="always", fastmath=FASTMATH)
def _cos_poly(r):
    """cos(r) for |r| <= pi/4 (Cephes cosf's polynomial, about 1 ulp)."""
    z = r * r
    return ((F(2.443315711809948e-5) * z + F(-1.388731625493765e-3)) * z + F(4.166664568298827e-2)) * z * z \
        - HALF * z + ONE


@njit(inline="always", fastmath=FASTMATH)
def sin32(x):
    """sin(x) in float32 without a libm call (vectorisable): sin or cos of the reduced r by quadrant.
    Relative error below 2e-7 away from the zeros, absolute below 1e-7 * max(1, |x| / 8) near them,
    for |x| <= TRIG_LIMIT (the kernel sends larger |x| to libm); NaN and +-inf give NaN."""
    r, q = _quadrant(x)
    s, c = _sin_poly(r), _cos_poly(r)
    v = s if q == 0 else (c if q == 1 else (-s if q == 2 else -c))
    return x if x == 0 else v  # (sin(-0) is -0)


@njit(inline="always", fastmath=FASTMATH)
def cos32(x):
    """cos(x) in float32 without a libm call (as ``sin32``, a quadrant further)."""
    r, q = _quadrant(x)
    s, c = _sin_poly(r), _cos_poly(r)
    return c if q == 0 else (-s if q == 1 else (-c if q == 2 else s))


@njit(inline="always", fastmath=FASTMATH)
def tan32(x):
    """tan(x) in float32 without a libm call: Cephes tanf's polynomial of the reduced r (about 2 ulp),
    -1 / tan(r) in the odd quadrants. |x| <= TRIG_LIMIT (larger go to libm); NaN and +-inf give NaN."""
    r, q = _quadrant(x)
    z = r * r
    t = (((((F(9.38540185543e-3) * z + F(3.11992232697e-3)) * z + F(2.44301354525e-2)) * z
           + F(5.34112807005e-2)) * z + F(1.33387994085e-1)) * z + F(3.33331568548e-1)) * z * r + r
    v = -ONE / t if q == 1 or q == 3 else t
    return x if x == 0 else v  # (tan(+-0) is +-0; under nsz the reduction may flip a zero's sign)


@njit(inline="always", fastmath=FASTMATH)
def _asin_poly(z, t):
    """asin(t) for |t| <= 0.5 with z = t * t (Cephes asinf's polynomial, about 1 ulp)."""
    return ((((F(4.2163199048e-2) * z + F(2.4181311049e-2)) * z + F(4.5470025998e-2)) * z
             + F(7.4953002686e-2)) * z + F(1.6666752422e-1)) * z * t + t


@njit(inline="always", fastmath=FASTMATH)
def asin32(x):
    """asin(x) in float32 without a libm call: the polynomial for |x| <= 0.5, else
    pi/2 - 2 asin(sqrt((1 - |x|) / 2)); about 2 ulp. NaN outside [-1, 1] and for NaN."""
    a = abs(x)
    big = a > HALF
    z = HALF * (ONE - a) if big else a * a
    p = _asin_poly(z, math.sqrt(z) if big else a)
    y = PIO2 - (p + p) if big else p
    return NAN if a > ONE else _with_sign(y, x)


@njit(inline="always", fastmath=FASTMATH)
def acos32(x):
    """acos(x) in float32 without a libm call: pi/2 - asin(x) for |x| <= 0.5, else 2 asin(sqrt((1 - x) / 2))
    (x > 0) or pi - 2 asin(sqrt((1 + x) / 2)); about 2 ulp. NaN outside [-1, 1] and for NaN."""
    a = abs(x)
    big = a > HALF
    z = HALF * (ONE - a) if big else x * x
    p = _asin_poly(z, math.sqrt(z) if big else x)
    y = (p + p if x > 0 else PI - (p + p)) if big else PIO2 - p
    return NAN if a > ONE else y


@njit(inline="always", fastmath=FASTMATH)
def atan32(x):
    """atan(x) in float32 without a libm call (Cephes atanf: |x| reduced by atan(t) = pi/4 + atan((t-1)/(t+1))
    or pi/2 - atan(1/t) to |t| <= tan(pi/8), then a polynomial; about 2 ulp). +-inf give +-pi/2."""
    a = abs(x)
    big = a > F(2.414213562373095)
    mid = a > F(0.4142135623730950)
    t = -ONE / a if big else ((a - ONE) / (a + ONE) if mid else a)
    z = t * t
    p = (((F(8.05374449538e-2) * z + F(-1.38776856032e-1)) * z + F(1.99777106478e-1)) * z
         + F(-3.33329491539e-1)) * z * t + t
    return _with_sign((PIO2 if big else (PIO4 if mid else F(0.0))) + p, x)


@njit(inline="always", fastmath=FASTMATH)
def sinh32(x):
    """sinh(x) in float32 without a libm call: Cephes sinhf's polynomial for |x| <= 1, else
    e/2 - 1/(2e) with e = exp32(|x| / 2)^2 taken in two halves so it overflows only where sinh does."""
    a = abs(x)
    e = exp32(HALF * a)
    z = x * x
    small = ((F(2.03721912945e-4) * z + F(8.33028376239e-3)) * z + F(1.66667160211e-1)) * z * x + x
    return small if a <= ONE else _with_sign((HALF * e) * e - HALF / (e * e), x)


@njit(inline="always", fastmath=FASTMATH)
def cosh32(x):
    """cosh(x) in float32 without a libm call: e/2 + 1/(2e) with e = exp32(|x| / 2)^2 (as ``sinh32``)."""
    e = exp32(HALF * abs(x))
    return (HALF * e) * e + HALF / (e * e)


LOG_P = (F(7.0376836292e-2), F(-1.1514610310e-1), F(1.1676998740e-1), F(-1.2420140846e-1), F(1.4249322787e-1),
         F(-1.6668057665e-1), F(2.0000714765e-1), F(-2.4999993993e-1), F(3.3333331174e-1))


@njit(inline="always", fastmath=FASTMATH)
def log32(x):
    """log(x) in float32 without a libm call (Cephes logf, about 1 ulp): x = m 2^e with m in
    [sqrt(1/2), sqrt(2)) from the bits (subnormals scaled first), log(m) by a polynomial in m - 1.
    -inf at +-0, NaN below 0 and for NaN, inf at inf."""
    tiny = x < F(1.17549435e-38)
    v = x * F(8388608.0) if tiny else x
    bits = _float32_bits(v)
    e = F((bits >> 23) - 126) - (F(23.0) if tiny else F(0.0))
    m = _bits_as_float32((bits & np.int32(0x807FFFFF)) | np.int32(0x3F000000))
    low = m < F(0.707106781186547524)
    e = e - ONE if low else e
    m = m + m - ONE if low else m - ONE
    z = m * m
    p = ((((((((LOG_P[0] * m + LOG_P[1]) * m + LOG_P[2]) * m + LOG_P[3]) * m + LOG_P[4]) * m + LOG_P[5]) * m
           + LOG_P[6]) * m + LOG_P[7]) * m + LOG_P[8])
    y = m + (p * m * z + e * F(-2.12194440e-4) - HALF * z) + e * F(0.693359375)
    y = y if x < INF else x
    return y if x > 0 else (-INF if x == 0 else NAN)


ERF_SPLIT, ERF_ONE = F(0.921875), F(3.93)
ERF_P = (F(-6.008650525473058e-4), F(4.996994975954294e-3), F(-2.67694853246212e-2), F(1.1281904578208923e-1),
         F(-3.761250376701355e-1), F(1.2837915122509003e-1))
ERF_Q = (F(1.9473374413792044e-4), F(-3.0315937474370003e-3), F(2.2181373089551926e-2), F(-1.0383885353803635e-1),
         F(-6.372858285903931e-1), F(-1.1276154518127441), F(-2.0992103964090347e-4))
"""erf32's fits (float64 fits on Chebyshev nodes, rounded to float32): erf(x) / x - 1 as a polynomial in
x^2 on |x| <= ERF_SPLIT (least squares); log(erfc(t)) by degree 6 on [ERF_SPLIT, ERF_ONE], minimax in
erf's absolute error, erfc(t) |dQ| (Lawson's weighted least squares: degree 8 was needed unweighted)."""


@njit(inline="always", fastmath=FASTMATH)
def erf32(x):
    """erf(x) in float32 without a libm call: x + x P(x^2) for |x| <= 0.921875 (relative error below
    1e-7), else 1 - e^Q(|x|) with the sign of x (absolute error below 1e-7; Q lies in [-17, -1.5], so
    ``_exp_reduced`` needs no edge handling, NaN gets t = 3.93 there); |x| >= 3.93 gives
    +-1 (erfc is below half an ulp of 1 there). NaN stays NaN."""
    s = x * x
    p = ((((ERF_P[0] * s + ERF_P[1]) * s + ERF_P[2]) * s + ERF_P[3]) * s + ERF_P[4]) * s + ERF_P[5]
    a = abs(x)
    t = a if a < ERF_ONE else ERF_ONE
    q = (((((ERF_Q[0] * t + ERF_Q[1]) * t + ERF_Q[2]) * t + ERF_Q[3]) * t + ERF_Q[4]) * t + ERF_Q[5]) * t + ERF_Q[6]
    y = x + x * p if a <= ERF_SPLIT else _with_sign(ONE - _exp_reduced(q), x)
    return y if x == x else x


@njit(inline="always", fastmath=FASTMATH)
def _fourth(x):
    """x ** 4 as (x x)(x x): two roundings, within 1.5 ulp of powf."""
    s = x * x
    return s * s


@njit(inline="always", fastmath=FASTMATH)
def _pow_half(x):
    """x ** 0.5 as pow has it: sqrt(x), +0 for either zero (sqrt(-0) is -0), NaN below 0 except
    pow(-inf, 0.5) = inf."""
    return math.sqrt(x) if x > 0 else (ZERO if x == 0 else INF if x == -INF else NAN)


@njit(inline="always", fastmath=FASTMATH)
def _erf_vector(v):
    """erf of a vector, erf32's two fits in explicit vectors, both computed and one picked per lane: the
    tail's exponential (Q lies in [-17, -1.5]) by ``_exp_vector_reduced``. NaN stays NaN (|NaN| <= split is
    false, and the tail of NaN is NaN); +-inf give +-1."""
    s = vmul(v, v)
    p = vfma(vfma(vfma(vfma(vfma(vsplat(ERF_P[0]), s, vsplat(ERF_P[1])), s, vsplat(ERF_P[2])), s, vsplat(ERF_P[3])),
                  s, vsplat(ERF_P[4])), s, vsplat(ERF_P[5]))
    a = _vabs(v)
    t = vmin(vsplat(ERF_ONE), a)
    q = vfma(vfma(vfma(vfma(vfma(vfma(vsplat(ERF_Q[0]), t, vsplat(ERF_Q[1])), t, vsplat(ERF_Q[2])), t, vsplat(ERF_Q[3])),
                       t, vsplat(ERF_Q[4])), t, vsplat(ERF_Q[5])), t, vsplat(ERF_Q[6]))
    tail = _vcopysign(vfma(_exp_vector_reduced(q), vsplat(-ONE), vsplat(ONE)), v)
    return _vselect_le(a, vsplat(ERF_SPLIT), vfma(v, p, v), tail)


@njit(inline="always", fastmath=FASTMATH)
def _map_vector(v, code):
    """``code``'s map (EXP or ERF, a constant) of a vector."""
    if code == EXP:
        return _exp_vector(v)
    return _erf_vector(v)


VECTOR_CODES = (EXP, ERF) if AVX512 else ()
"""Unary codes whose kernels run on explicit vectors (``_vectors``; their VSCALEFPS needs AVX-512)."""


def _vectors(code: int):
    """The explicit-vector kernel of unary ``code`` in VECTOR_CODES (a closure over an int)."""

    @njit(cache=True, fastmath=FASTMATH, error_model="numpy")
    def kernel(x, out):
        """out = op(x) over C-contiguous float32 arrays of equal size, LANES values per step, the last vector
        masked."""
        xf, of = x.reshape(-1), out.reshape(-1)
        n = xf.size
        full = n - n % LANES
        for i in range(0, full, LANES):
            vstore(of, i, _map_vector(vload(xf, i, LANES), code), LANES)
        if full < n:
            vstore(of, full, _map_vector(vload(xf, full, n - full), code), n - full)

    return kernel


def _unop(x, code):
    """One unary op on a scalar, ``code`` an int literal: only that op's body is typed and inlined."""


_UNOPS = {
    NEG: lambda x, code: -x, ABS: lambda x, code: abs(x),
    SIGN: lambda x, code: x if x != x else (x > 0) - (x < 0),
    EXP: lambda x, code: exp32(x), LOG: lambda x, code: log32(x),
    SQRT: lambda x, code: math.sqrt(x) if x >= 0 else np.nan, RECIPROCAL: lambda x, code: 1 / x,
    ERF: lambda x, code: erf32(x), FLOOR: lambda x, code: np.floor(x), CEIL: lambda x, code: np.ceil(x),
    SIN: lambda x, code: sin32(x), COS: lambda x, code: cos32(x), TAN: lambda x, code: tan32(x),
    ASIN: lambda x, code: asin32(x), ACOS: lambda x, code: acos32(x), ATAN: lambda x, code: atan32(x),
    SINH: lambda x, code: sinh32(x), COSH: lambda x, code: cosh32(x), ROUND: lambda x, code: np.rint(x),
    ISNAN: lambda x, code: x != x, ISINF: lambda x, code: abs(x) == np.inf,
    ISINF_POS: lambda x, code: x == np.inf, ISINF_NEG: lambda x, code: x == -np.inf, NOT: lambda x, code: not x,
    SQUARE: lambda x, code: x * x, CUBE: lambda x, code: x * x * x, FOURTH: lambda x, code: _fourth(x),
    POW_HALF: lambda x, code: _pow_half(x),
}
REDUCED = (SIN, COS, TAN)
"""Unary codes whose approximation covers |x| <= TRIG_LIMIT; their kernels send larger |x| to libm."""


@overload(_unop, inline="always", prefer_literal=True)
def _unop_typed(x, code):
    if not isinstance(code, types.IntegerLiteral):
        return None
    return _UNOPS[code.literal_value]


@njit(inline="always", fastmath=FASTMATH)
def _libm_large(x, out, code):
    """out[i] = libm sin/cos/tan (``code``) of x[i] where |x[i]| > TRIG_LIMIT (a scan first: usually none)."""
    large = False
    for i in range(x.size):
        large |= abs(x[i]) > TRIG_LIMIT
    if large:
        for i in range(x.size):
            v = x[i]
            if abs(v) > TRIG_LIMIT:
                out[i] = math.sin(v) if code == SIN else (math.cos(v) if code == COS else math.tan(v))


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
    """out = a (op ``code``) b over the collapsed space ``shape`` (a, b, out flat, strides in elements),
    the inner strides ``ia``, ``ib`` literal 0 or 1, so each op and pattern is one vectorised loop."""
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
def _fold(a, b, out, shape, sa, sb, code):
    """``_rows`` for an inner stride pattern known only at run time (a step of the variadic folds),
    compiled once per op ``code`` (a literal) and operand types, out of the folds' unrolled loops.
    Same-shape operands get the vectorised loop, the other patterns share one with run-time strides
    (typing a loop per pattern here cost seconds of compile time for ops models rarely fold)."""
    literally(code)
    ia, ib = sa[shape.size - 1], sb[shape.size - 1]
    if not out.size:
        return
    if ia == 1 and ib == 1:
        _rows(a, b, out, shape, sa, sb, 1, 1, code)
    else:
        _rows(a, b, out, shape, sa, sb, ia, ib, code)


def _binary(code: int, ia: int, ib: int):
    """The any-rank kernel of binary op ``code`` for inner strides (ia, ib)."""

    @njit(cache=True, fastmath=FASTMATH, error_model="numpy")
    def kernel(a, b, out, shape, sa, sb):
        """out = a (op) b with broadcasting: ``shape`` is the collapsed output, sa/sb element strides
        whose innermost entries are this kernel's ia, ib."""
        if out.size:
            _rows(a.reshape(-1), b.reshape(-1), out.reshape(-1), shape, sa, sb, ia, ib, code)

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
                _fold(af, af, of, shape, strides[0], strides[0], FIRST)
            else:
                _fold(of, af, of, shape, so, strides[k], code)
            k += 1
        if scale != 1.0:
            for i in range(of.size):
                of[i] *= scale

    return kernel


def _unary(code: int):
    """The any-rank kernel of unary op ``code``."""
    reduced = code in REDUCED

    @njit(cache=True, fastmath=IN_ORDER, error_model="numpy")
    def kernel(x, out):
        """out = op(x) elementwise over C-contiguous arrays of equal size, in 512-bit vectors where the CPU
        has them (1.4-1.6x faster for the polynomial maps)."""
        prefer_512()
        xf, of = x.reshape(-1), out.reshape(-1)
        for i in range(xf.size):
            of[i] = _unop(xf[i], code)
        if reduced:
            _libm_large(xf, of, code)

    return kernel


BINARY = {(code, ia, ib): _binary(code, ia, ib) for code in range(FIRST) for ia in (0, 1) for ib in (0, 1)}
VARIADIC = {code: _variadic(code) for code in (ADD, MAX, MIN)}
UNARY = {code: _vectors(code) if code in VECTOR_CODES else _unary(code) for code in range(POW_HALF + 1)}


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
