"""Elementwise activations as one inlinable scalar function, so Conv/Gemm epilogues and the
standalone activation ops share a single definition.

Codes and parameters (alpha, beta):
0 identity, 1 Relu, 2 LeakyRelu(alpha), 3 Clip(min, max), 4 Sigmoid, 5 Tanh, 6 HardSigmoid(alpha, beta),
7 HardSwish, 8 Elu(alpha), 9 Selu(alpha, gamma), 10 Celu(alpha), 11 Softplus, 12 Softsign, 13 Mish,
14 Gelu (erf), 15 Gelu (tanh approximation), 16 ThresholdedRelu(alpha), 17 Shrink(lambd, bias).
Constants are float32, so float32 inputs stay float32 and their loops vectorise; exponentials use
``exp32`` and tanh ``tanh32`` (no libm call, relative error below 3e-7).
"""
import math

import numpy as np

from numba import njit

from . import FASTMATH
from .elementwise import exp32

(IDENTITY, RELU, LEAKY_RELU, CLIP, SIGMOID, TANH, HARD_SIGMOID, HARD_SWISH, ELU, SELU, CELU, SOFTPLUS,
 SOFTSIGN, MISH, GELU, GELU_TANH, THRESHOLDED_RELU, SHRINK) = range(18)
ZERO, HALF, ONE, SIX = np.float32(0.0), np.float32(0.5), np.float32(1.0), np.float32(6.0)
SQRT1_2 = np.float32(math.sqrt(0.5))
GELU_K, GELU_C = np.float32(math.sqrt(2.0 / math.pi)), np.float32(0.044715)


TANH_P = (np.float32(-5.70498872745e-3), np.float32(2.06390887954e-2), np.float32(-5.37397155531e-2),
          np.float32(1.33314422036e-1), np.float32(-3.33332819422e-1))
TANH_SMALL, TWO = np.float32(0.625), np.float32(2.0)


@njit(inline="always", fastmath=FASTMATH)
def tanh32(v):
    """tanh in float32 without a libm call, so loops of it vectorise (Cephes tanhf, about 2 ulp):
    v + v^3 P(v^2) for |v| < 0.625, else sign(v) (1 - 2 / (e^(2|v|) + 1)); NaN stays NaN."""
    z = v * v
    p = (((TANH_P[0] * z + TANH_P[1]) * z + TANH_P[2]) * z + TANH_P[3]) * z + TANH_P[4]
    small = v + v * z * p
    big = ONE - TWO / (exp32(TWO * abs(v)) + ONE)
    return small if abs(v) < TANH_SMALL else (big if v >= ZERO else -big)


@njit(inline="always", fastmath=FASTMATH)
def _softplus(v):
    """log(1 + e^v) without overflow: max(v, 0) + log1p(e^-|v|) (NaN stays NaN)."""
    return (v if v > ZERO else ZERO) + math.log1p(exp32(-abs(v)))


@njit(inline="always", fastmath=FASTMATH)
def activate(v, code, alpha, beta):
    """Apply activation ``code`` with parameters alpha, beta to the scalar ``v``: the piecewise-linear
    ones inline, the others out of line (``activate_any``). Conv/Gemm/pool tiles inline this at every
    call site, and Numba types an inlined body once per site: with every activation inline, a 2D CNN
    took 220 s to compile instead of 10."""
    if code == IDENTITY:
        return v
    if code == RELU:
        return ZERO if v < ZERO else v
    if code == LEAKY_RELU:
        return v * alpha if v < ZERO else v
    if code == CLIP:
        return min(max(v, alpha), beta)
    if code == HARD_SIGMOID:  # the NaN first: min and max return their first argument when it is NaN
        return min(max(alpha * v + beta, ZERO), ONE)
    if code == HARD_SWISH:
        return v * max(ZERO, min(ONE, v / SIX + HALF))
    return activate_any(v, code, alpha, beta)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def activate_any(v, code, alpha, beta):
    """``activate_all`` compiled once, called by the tiles for the activations they do not inline."""
    return activate_all(v, code, alpha, beta)


@njit(forceinline=True, fastmath=FASTMATH, error_model="numpy")
def activate_all(v, code, alpha, beta):
    """Every activation ``code`` (the standalone kernels' loops, one code per loop). Typed once and
    inlined by LLVM (``forceinline``), which drops the other codes' branches from each loop."""
    if code == RELU:
        return ZERO if v < ZERO else v
    if code == LEAKY_RELU:
        return v * alpha if v < ZERO else v
    if code == CLIP:
        return min(max(v, alpha), beta)
    if code == SIGMOID:
        return ONE / (ONE + exp32(-v))
    if code == TANH:
        return tanh32(v)
    if code == HARD_SIGMOID:  # the NaN first: min and max return their first argument when it is NaN
        return min(max(alpha * v + beta, ZERO), ONE)
    if code == HARD_SWISH:
        return v * max(ZERO, min(ONE, v / SIX + HALF))
    if code == ELU:
        return v if v >= ZERO else alpha * (exp32(v) - ONE)
    if code == SELU:
        return beta * v if v > ZERO else beta * (alpha * exp32(v) - alpha)
    if code == CELU:
        return v if v > ZERO else alpha * (exp32(v / alpha) - ONE)
    if code == SOFTPLUS:
        return _softplus(v)
    if code == SOFTSIGN:
        return v / (ONE + abs(v))
    if code == MISH:
        return v * tanh32(_softplus(v))
    if code == GELU:
        return HALF * v * (ONE + math.erf(v * SQRT1_2))
    if code == GELU_TANH:
        return HALF * v * (ONE + tanh32(GELU_K * (v + GELU_C * v * v * v)))
    if code == THRESHOLDED_RELU:
        return v if v > alpha else ZERO
    if code == SHRINK:
        return v + beta if v < -alpha else (v - beta if v > alpha else ZERO)
    return v


@njit(inline="always", fastmath=FASTMATH)
def _activate_common(v, code, alpha, beta):
    """``activate`` with Sigmoid and Tanh inline too: the standalone loops' (which vectorise them)."""
    if code == SIGMOID:
        return ONE / (ONE + exp32(-v))
    if code == TANH:
        return tanh32(v)
    return activate(v, code, alpha, beta)


@njit(inline="always", fastmath=FASTMATH)
def _loop(src, dst, n, code, p1, p2):
    """dst[j] = activation ``code`` of src[j]; inlined by Numba with ``code`` a constant, so only that
    activation's branch is left in the loop and it vectorises."""
    for j in range(n):
        dst[j] = _activate_common(src[j], code, p1, p2)


@njit(inline="always", fastmath=FASTMATH)
def _dispatch(src, dst, n, code, p1, p2):
    """dst[j] = activation(src[j]) for j < n, src and dst slices indexed from 0 (no negative-index
    wrap). The common activations get a loop each, their code a constant, so the loop holds that
    activation alone and vectorises; the rarer ones share one loop (compiling a vector loop for
    each of them made this kernel take minutes to compile)."""
    if code == RELU:
        _loop(src, dst, n, RELU, p1, p2)
    elif code == LEAKY_RELU:
        _loop(src, dst, n, LEAKY_RELU, p1, p2)
    elif code == CLIP:
        _loop(src, dst, n, CLIP, p1, p2)
    elif code == SIGMOID:
        _loop(src, dst, n, SIGMOID, p1, p2)
    elif code == TANH:
        _loop(src, dst, n, TANH, p1, p2)
    elif code == HARD_SIGMOID:
        _loop(src, dst, n, HARD_SIGMOID, p1, p2)
    elif code == HARD_SWISH:
        _loop(src, dst, n, HARD_SWISH, p1, p2)
    elif code != IDENTITY:
        _loop_any(src, dst, n, code, p1, p2)
    else:
        _loop(src, dst, n, IDENTITY, p1, p2)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _loop_any(src, dst, n, code, p1, p2):
    """The shared loop of the rarer activations (the code read per element)."""
    for j in range(n):
        dst[j] = activate_all(src[j], code, p1, p2)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def activate_rows(y, offset, stride, m, n, code, p1, p2):
    """Apply activation ``code`` in place to m rows of n values at y[offset + i * stride + j]
    (the code dispatched outside the loops, so each activation's loop vectorises)."""
    if code == IDENTITY:
        return
    for i in range(m):
        row = y[offset + i * stride: offset + i * stride + n]
        _dispatch(row, row, n, code, p1, p2)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def activation_kernel(x, out, code, alpha, beta):
    """out = activation(x) elementwise over C-contiguous float32 arrays of equal size, in one pass."""
    of = out.reshape(-1)
    _dispatch(x.reshape(-1), of, of.size, code, np.float32(alpha), np.float32(beta))
