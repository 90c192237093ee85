"""Quantization kernels: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, requantization, and
float-to-integer Cast as onnxruntime does it.

Quantize, requantize and dequantize walk a tensor as rows of ``inner`` elements (the dims after the axis), row r
taking the scale and zero point of channel r % channels (a per-tensor scale is one channel and one
row), so per-tensor and per-axis forms are one loop, compiled once per direction and dtype pair.

ONNX leaves a float-to-integer Cast of NaN, of an infinity or of a value out of the target's range
undefined. onnxruntime (x86-64) truncates toward zero into int32, or int64 for an int64 target, and
gives the type's minimum ("integer indefinite") for NaN, infinities and values out of that range;
8- and 16-bit targets keep the low bits of that int32 (300.7 -> int8 44, 1e10 -> 0). ``float_to_int``
does the same explicitly, so results do not depend on what LLVM emits for an out-of-range conversion.
"""
import numpy as np
from numba import njit

from . import FASTMATH


@njit(cache=True, fastmath=FASTMATH)
def float_to_int(x, out, lo, hi, indefinite):
    """out = x truncated toward zero where lo < x < hi, else ``indefinite``, wrapped to out's type
    (lo, hi: the open range that truncates into the intermediate int32 or int64, in x's type; NaN
    compares false so is indefinite)."""
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for i in range(xf.size):
        v = xf[i]
        of[i] = np.int64(v) if lo < v < hi else indefinite


ROUNDER = np.float32(1.5 * 2 ** 23)
"""v + ROUNDER - ROUNDER is v rounded half to even for |v| <= 2**22 (the sum's unit in the last place is 1):
unlike np.rint, a libm call, it vectorises."""
REACH = np.float32(2 ** 20)
"""x / scale is clamped to +-REACH before rounding: past it every 8- and 16-bit result saturates anyway."""


@njit(inline="always")
def _quantize_row(xf, of, start, n, s, z, lo, hi, multiply):
    """of = clamp(round_half_even(xf / s) + z, lo, hi) over n elements from start (xf * s when ``multiply``,
    as onnxruntime requantizes the int32 sums of QLinearConv and QLinearMatMul): float32 division as
    onnxruntime (no reciprocal: no fastmath here); NaN gives lo, +-inf saturate."""
    for i in range(n):
        j = start + i
        v = np.float32(xf[j]) * s if multiply else np.float32(xf[j]) / s
        v = v if v > -REACH else -REACH  # (NaN -> -REACH -> lo)
        v = v if v < REACH else REACH
        q = (v + ROUNDER) - ROUNDER + z
        q = q if q > lo else lo
        q = q if q < hi else hi
        of[j] = np.int32(q)


@njit(inline="always")
def _dequantize_row(xf, of, start, n, s, z):
    """of = float32(xf - z) * s over n elements from start: the difference in int32, wrapping as
    onnxruntime's (exact for 8- and 16-bit inputs; an int32 input and zero point may overflow), then
    one float32 multiply as onnxruntime."""
    for i in range(n):
        j = start + i
        of[j] = np.float32(np.int32(np.int64(xf[j]) - z)) * s


def _affine(quantizing: bool, multiply: bool = False):
    """The kernel of QuantizeLinear (``quantizing``; requantization, y = clamp(round(x * scale) + zero), when
    also ``multiply``) or DequantizeLinear, ``kernel(x, scale, zero, out, channels, inner, qmin, qmax)``: x
    viewed as rows of ``inner`` elements, row r using scale and zero point r % channels (one channel for
    per-tensor scales). A closure over the bools, so each compiles its branch."""

    @njit(cache=True, error_model="numpy")  # (x / 0 is +-inf or NaN, not ZeroDivisionError)
    def kernel(x, scale, zero, out, channels, inner, qmin, qmax):
        xf = x.reshape(-1)
        of = out.reshape(-1)
        sf = scale.reshape(-1)
        zf = zero.reshape(-1)
        for r in range(xf.size // max(inner, 1)):
            c = r % channels
            if quantizing:
                _quantize_row(xf, of, r * inner, inner, np.float32(sf[c]), np.float32(zf[c]),
                              np.float32(qmin), np.float32(qmax), multiply)
            else:
                _dequantize_row(xf, of, r * inner, inner, np.float32(sf[c]), np.int64(zf[c]))

    return kernel


quantize = _affine(True)
requantize = _affine(True, multiply=True)
dequantize = _affine(False)


@njit(cache=True, error_model="numpy")
def dynamic_quantize(x, out, scale, zero):
    """DynamicQuantizeLinear to uint8 as onnxruntime: the range [min(x, 0), max(x, 0)] gives scale =
    (max - min) / 255 (1 when the range is empty) and zero point round_half_even(clamp(-min / scale, 0, 255)),
    all in float32; out = the quantized x (as QuantizeLinear); ``scale`` and ``zero`` are 0-d arrays.
    NaN in x is undefined (onnx) and gives no particular result."""
    xf = x.reshape(-1)
    lo = np.float32(0.0)
    hi = np.float32(0.0)
    for i in range(xf.size):
        v = np.float32(xf[i])
        lo = v if v < lo else lo
        hi = v if v > hi else hi
    s = np.float32(1.0) if hi == lo else np.float32((hi - lo) / np.float32(255.0))
    z = np.float32(0.0) - lo / s
    z = z if z < np.float32(255.0) else np.float32(255.0)  # max(0, min(255, z)) in onnxruntime's order:
    z = z if z > np.float32(0.0) else np.float32(0.0)  # a NaN z (x holds -inf) gives 255
    z = (z + ROUNDER) - ROUNDER
    scale.reshape(-1)[0] = s
    zero.reshape(-1)[0] = np.uint8(z)
    _quantize_row(xf, out.reshape(-1), 0, xf.size, s, z, np.float32(0.0), np.float32(255.0), False)
