"""Elementwise activations as one inlinable scalar function, so Conv/Gemm epilogues and the
standalone activation ops share a single definition.

Codes and parameters (alpha, beta):
0 identity, 1 Relu, 2 LeakyRelu(alpha), 3 Clip(min, max), 4 Sigmoid, 5 Tanh, 6 HardSigmoid(alpha, beta),
7 HardSwish, 8 Elu(alpha), 9 Selu(alpha, gamma), 10 Celu(alpha), 11 Softplus, 12 Softsign, 13 Mish,
14 Gelu (erf), 15 Gelu (tanh approximation), 16 ThresholdedRelu(alpha), 17 Shrink(lambd, bias),
18 Swish(alpha) (x sigmoid(alpha x); SiLU at alpha 1).
Constants are float32, so float32 inputs stay float32 and their loops vectorise; exponentials use
``exp32``, tanh ``tanh32`` and erf ``erf32`` (no libm call, relative error below 3e-7). Each formula is
compiled only where used: tiles inline the piecewise-linear ones, a vector loop per code inlines that
code's formula alone (``activate_const``), and one out-of-line function has them all.
"""
import functools
import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from . import FASTMATH
from .elementwise import LOG_P, erf32, exp32
from .simd import prefer_512

(IDENTITY, RELU, LEAKY_RELU, CLIP, SIGMOID, TANH, HARD_SIGMOID, HARD_SWISH, ELU, SELU, CELU, SOFTPLUS,
 SOFTSIGN, MISH, GELU, GELU_TANH, THRESHOLDED_RELU, SHRINK, SWISH) = range(19)
ZERO, HALF, ONE, SIX = np.float32(0.0), np.float32(0.5), np.float32(1.0), np.float32(6.0)
SQRT1_2 = np.float32(math.sqrt(0.5))
GELU_K, GELU_C = np.float32(math.sqrt(2.0 / math.pi)), np.float32(0.044715)


@njit(forceinline=True, fastmath=FASTMATH, cache=True)
def _exp(x):
    """``exp32`` typed once and inlined by LLVM where called: the formulas using it compile fast."""
    return exp32(x)


TANH_P = tuple(np.float32(c) for c in (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
                                       5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
                                       4.89352455891786e-03))
TANH_Q = tuple(np.float32(c) for c in (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
                                       4.89352518554385e-03))
TANH_CLAMP, TANH_ONE = np.float32(7.90531110763549805), np.float32(9.0)
TANH_TINY, TWO = np.float32(4e-4), np.float32(2.0)


@njit(inline="always", fastmath=FASTMATH)
def tanh32(v):
    """tanh in float32 without a libm call or exp, so loops of it vectorise: x P(x^2) / Q(x^2) on x
    clamped to [-7.9, 7.9], +-1 from 9 on (where float32 tanh is +-1), v itself below 4e-4; relative
    error below 3e-7; NaN stays NaN."""
    x = min(max(v, -TANH_CLAMP), TANH_CLAMP)
    z = x * x
    p = TANH_P[0]
    for c in TANH_P[1:]:
        p = p * z + c
    q = TANH_Q[0]
    for c in TANH_Q[1:]:
        q = q * z + c
    if abs(v) >= TANH_ONE:
        return ONE if v > ZERO else -ONE
    return v if abs(v) < TANH_TINY else x * p / q


SQRT2, LN2_HI, LN2_LO = np.float32(math.sqrt(2.0)), np.float32(0.693359375), np.float32(-2.12194440e-4)


@njit(inline="always", fastmath=FASTMATH)
def _log1p_unit(t):
    """log(1 + t) for t in [0, 1] without a libm call (which does not vectorise, and is slow on float32):
    1 + t = x 2^e with x in [sqrt(1/2), sqrt(2)] and log x = z - z^2/2 + z^3 P(z) (Cephes logf), where
    z = x - 1 is t or (t - 1) / 2, computed from t (``log32`` would round 1 + t first); NaN stays NaN."""
    big = t > SQRT2 - ONE
    z = (t - ONE) * HALF if big else t
    e = ONE if big else ZERO
    zz = z * z
    p = LOG_P[0]
    for c in LOG_P[1:]:
        p = p * z + c
    return z + (p * z * zz + e * LN2_LO - HALF * zz) + e * LN2_HI


@njit(inline="always", fastmath=FASTMATH)
def _softplus(v):
    """log(1 + e^v) without overflow: max(v, 0) + log1p(e^-|v|) (NaN stays NaN)."""
    return (v if v > ZERO else ZERO) + _log1p_unit(_exp(-abs(v)))


MISH_LINEAR = np.float32(20.0)


# One formula per activation code, f(v, alpha, beta) on a float32 scalar. The vector loops inline
# only their code's formula (``activate_const``); ``activate_any`` picks one at run time.
@njit(inline="always", fastmath=FASTMATH)
def _identity(v, alpha, beta):
    return v


@njit(inline="always", fastmath=FASTMATH)
def _relu(v, alpha, beta):
    return ZERO if v < ZERO else v


@njit(inline="always", fastmath=FASTMATH)
def _leaky_relu(v, alpha, beta):
    return v * alpha if v < ZERO else v


@njit(inline="always", fastmath=FASTMATH)
def _clip(v, alpha, beta):
    return min(max(v, alpha), beta)


@njit(inline="always", fastmath=FASTMATH)
def _sigmoid(v, alpha, beta):
    return ONE / (ONE + _exp(-v))


@njit(inline="always", fastmath=FASTMATH)
def _tanh(v, alpha, beta):
    return tanh32(v)


@njit(inline="always", fastmath=FASTMATH)
def _hard_sigmoid(v, alpha, beta):  # the NaN first: min and max return their first argument when it is NaN
    return min(max(alpha * v + beta, ZERO), ONE)


@njit(inline="always", fastmath=FASTMATH)
def _hard_swish(v, alpha, beta):
    return v * max(ZERO, min(ONE, v / SIX + HALF))


@njit(inline="always", fastmath=FASTMATH)
def _elu(v, alpha, beta):
    return v if v >= ZERO else alpha * (_exp(v) - ONE)


@njit(inline="always", fastmath=FASTMATH)
def _selu(v, alpha, beta):
    return beta * v if v > ZERO else beta * (alpha * _exp(v) - alpha)


@njit(inline="always", fastmath=FASTMATH)
def _celu(v, alpha, beta):
    return v if v > ZERO else alpha * (_exp(v / alpha) - ONE)


@njit(inline="always", fastmath=FASTMATH)
def _softplus_of(v, alpha, beta):
    return _softplus(v)


@njit(inline="always", fastmath=FASTMATH)
def _softsign(v, alpha, beta):
    return v / (ONE + abs(v))


@njit(inline="always", fastmath=FASTMATH)
def _mish(v, alpha, beta):
    """v tanh(log(1 + e^v)) = v n / (n + 2) with n = e^v (e^v + 2): exp only, so it vectorises; v itself
    above 20, where the ratio is 1 in float32 (and n would overflow)."""
    e = _exp(min(v, MISH_LINEAR))
    n = e * (e + TWO)
    return v if v > MISH_LINEAR else v * n / (n + TWO)


@njit(inline="always", fastmath=FASTMATH)
def _gelu(v, alpha, beta):
    return HALF * v * (ONE + erf32(v * SQRT1_2))


@njit(inline="always", fastmath=FASTMATH)
def _gelu_tanh(v, alpha, beta):
    return HALF * v * (ONE + tanh32(GELU_K * (v + GELU_C * v * v * v)))


@njit(inline="always", fastmath=FASTMATH)
def _thresholded_relu(v, alpha, beta):
    return v if v > alpha else ZERO


@njit(inline="always", fastmath=FASTMATH)
def _shrink(v, alpha, beta):
    return v + beta if v < -alpha else (v - beta if v > alpha else ZERO)


@njit(inline="always", fastmath=FASTMATH)
def _swish(v, alpha, beta):
    return v / (ONE + _exp(-alpha * v))


FORMULAS = (_identity, _relu, _leaky_relu, _clip, _sigmoid, _tanh, _hard_sigmoid, _hard_swish, _elu, _selu, _celu,
            _softplus_of, _softsign, _mish, _gelu, _gelu_tanh, _thresholded_relu, _shrink, _swish)
"""The formula of each code, in code order."""


def activate_const(v, code, alpha, beta):
    """Activation ``code`` of ``v`` where ``code`` is a compile-time constant (compiled code only)."""
    raise TypeError("activate_const is for compiled code, with a constant code")


@overload(activate_const, inline="always", prefer_literal=True)
def _activate_const(v, code, alpha, beta):
    """Only the constant code's formula is typed and inlined: a loop of it vectorises."""
    if isinstance(code, types.IntegerLiteral):
        formula = FORMULAS[code.literal_value]
        return lambda v, code, alpha, beta: formula(v, alpha, beta)
    return None


@njit(inline="always", fastmath=FASTMATH)
def activate(v, code, alpha, beta):
    """Apply activation ``code`` with parameters alpha, beta to the scalar ``v``: the piecewise-linear
    ones inline, the others out of line (``activate_any``). Kernels that take the code at run time (the
    recurrent cells) inline this at every call site, and Numba types an inlined body once per site:
    with every activation inline, a 2D CNN took 220 s to compile instead of 10."""
    if code == IDENTITY:
        return v
    if code == RELU:
        return _relu(v, alpha, beta)
    if code == LEAKY_RELU:
        return _leaky_relu(v, alpha, beta)
    if code == CLIP:
        return _clip(v, alpha, beta)
    if code == HARD_SIGMOID:
        return _hard_sigmoid(v, alpha, beta)
    if code == HARD_SWISH:
        return _hard_swish(v, alpha, beta)
    return activate_any(v, code, alpha, beta)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def activate_any(v, code, alpha, beta):
    """Every activation ``code``, picked at run time (compiled once, for ``activate``'s rarer codes)."""
    if code == RELU:
        return _relu(v, alpha, beta)
    if code == LEAKY_RELU:
        return _leaky_relu(v, alpha, beta)
    if code == CLIP:
        return _clip(v, alpha, beta)
    if code == SIGMOID:
        return _sigmoid(v, alpha, beta)
    if code == TANH:
        return _tanh(v, alpha, beta)
    if code == HARD_SIGMOID:
        return _hard_sigmoid(v, alpha, beta)
    if code == HARD_SWISH:
        return _hard_swish(v, alpha, beta)
    if code == ELU:
        return _elu(v, alpha, beta)
    if code == SELU:
        return _selu(v, alpha, beta)
    if code == CELU:
        return _celu(v, alpha, beta)
    if code == SOFTPLUS:
        return _softplus_of(v, alpha, beta)
    if code == SOFTSIGN:
        return _softsign(v, alpha, beta)
    if code == MISH:
        return _mish(v, alpha, beta)
    if code == GELU:
        return _gelu(v, alpha, beta)
    if code == GELU_TANH:
        return _gelu_tanh(v, alpha, beta)
    if code == THRESHOLDED_RELU:
        return _thresholded_relu(v, alpha, beta)
    if code == SHRINK:
        return _shrink(v, alpha, beta)
    if code == SWISH:
        return _swish(v, alpha, beta)
    return v


@functools.cache
def rows_loop(code: int):
    """``rows(y, offset, stride, m, n, p1, p2)``: y[offset + i * stride + j] = activation ``code`` of itself
    for i < m, j < n, over a flat float32 array: one small compiled loop per code, which vectorises,
    made once."""

    @njit(cache=True, fastmath=FASTMATH, error_model="numpy")
    def rows(y, offset, stride, m, n, p1, p2):
        prefer_512()
        for i in range(m):
            row = y[offset + i * stride: offset + i * stride + n]  # (one array from 0: no alias or wrap tests)
            for j in range(n):
                row[j] = activate_const(row[j], code, p1, p2)

    return rows


def codes_mask(*codes: int) -> int:
    """The ``codes`` argument of ``activate_in`` for these activation codes (identity needs no bit)."""
    return sum({1 << c for c in codes if c != IDENTITY})


def activate_in(codes, y, offset, stride, m, n, code, p1, p2):
    """In compiled code, with ``codes`` a constant (``codes_mask``): apply activation ``code`` (known at
    run time), if among those codes, in place to m rows of n values at y[offset + i * stride + j], by
    its ``rows_loop``. Only those codes' loops are compiled (a Conv/Gemm kernel made for its node's
    activation compiles no other activation's formula); any other ``code`` leaves y as it is."""
    raise TypeError("activate_in is for compiled code, with a constant mask of codes")


@overload(activate_in, prefer_literal=True)
def _activate_in(codes, y, offset, stride, m, n, code, p1, p2):
    """The lowest code of the literal mask by its loop, the others by ``activate_in`` of the rest."""
    if not isinstance(codes, types.IntegerLiteral):
        return None
    mask = codes.literal_value
    if not mask:
        return lambda codes, y, offset, stride, m, n, code, p1, p2: None
    first, rest = (mask & -mask).bit_length() - 1, mask & (mask - 1)
    loop = rows_loop(first)

    def impl(codes, y, offset, stride, m, n, code, p1, p2):
        if code == first:
            loop(y, offset, stride, m, n, p1, p2)
        elif rest:
            activate_in(rest, y, offset, stride, m, n, code, p1, p2)

    return impl


@functools.cache
def elementwise_kernel(code: int):
    """``kernel(x, out, alpha, beta)``: out = activation ``code``(x) over C-contiguous float32 arrays of
    equal size, in one vector loop; compiled for this code only, when a model first uses it."""

    @njit(cache=True, fastmath=FASTMATH, error_model="numpy")
    def kernel(x, out, alpha, beta):
        prefer_512()
        xf, of = x.reshape(-1), out.reshape(-1)
        a, b = np.float32(alpha), np.float32(beta)
        for j in range(of.size):
            of[j] = activate_const(xf[j], code, a, b)

    return kernel
