"""QuantizeLinear and DequantizeLinear: the boundaries of QDQ-format quantized models.

Both are per-tensor (a scalar scale and zero point) or per-axis (1-D ones along ``axis``), on int8,
uint8, int16 and uint16 (and int32 for DequantizeLinear, the usual form of quantized biases),
with float32 scales: y = clamp(round_half_even(x / scale) + zero_point) and y = (x - zero_point) * scale.
Refused with the reason: float8, 4-bit and 2-bit types, blocked quantization (``block_size``), float16
inputs and scales, and a ``precision`` or ``output_dtype`` other than float32 (edgekit computes float32).
DynamicQuantizeLinear quantizes to uint8 by x's range, as onnxruntime.
``ai.edgekit`` Requantize is y = clamp(round_half_even(x * scale) + zero_point): the last step of QLinearConv
and QLinearMatMul as runtimes/ops/qlinear.py rewrites them.
"""
from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto

from edgekit.ir import Node, dtype_of

from ..kernels import quantize as kq
from .binary import DOMAIN
from .registry import In, Kernel, Out, Tensor, Unsupported, normalize_axis, register, require_float32

QUANTIZED = tuple(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16))
DEQUANTIZED = (*QUANTIZED, np.dtype(np.int32))


def _channels(node: Node, x: Tensor, scale: Tensor, zero: Tensor | None) -> tuple[int, int]:
    """(channels, inner) of the [outer, channels, inner] view: (1, size) for a one-element scale,
    else the ``axis`` dimension, whose length the 1-D scale (and zero point) must have."""
    if node.attrs.get("block_size", 0):
        raise Unsupported(f"{node.op_type} with block_size (blocked quantization)")
    per_tensor = math.prod(scale.shape) == 1 and len(scale.shape) <= 1  # a scalar, or [1]
    if zero is not None and zero.shape != scale.shape and not (
            per_tensor and math.prod(zero.shape) == 1 and len(zero.shape) <= 1):
        raise ValueError(f"{node.op_type}: zero point shape {list(zero.shape)} differs from scale shape "
                         f"{list(scale.shape)}")
    if per_tensor:
        return 1, math.prod(x.shape)
    axis = normalize_axis(node.attrs.get("axis", 1), len(x.shape))
    if len(scale.shape) != 1 or scale.shape[0] != x.shape[axis]:
        raise ValueError(f"{node.op_type}: scale of shape {list(scale.shape)} for axis {axis} of an input of "
                         f"shape {list(x.shape)} (a scalar, or 1-D of the axis length)")
    return x.shape[axis], math.prod(x.shape[axis + 1:])


def _zero(zero: Tensor | None, dtype: np.dtype, channels: int) -> In | np.ndarray:
    """The zero point's argument: its input, or 0s of ``dtype``, one per channel, when omitted."""
    return np.zeros(channels, dtype) if zero is None else In(2)


def _optional(inputs: list, index: int) -> Tensor | None:
    return inputs[index] if index < len(inputs) else None


@register("QuantizeLinear")
def build_quantize(node: Node, inputs: list, opset: int) -> Kernel:
    x, scale, zero = inputs[0], inputs[1], _optional(inputs, 2)
    require_float32("QuantizeLinear", x, scale)
    if node.attrs.get("precision", 0) not in (0, TensorProto.FLOAT):
        raise Unsupported("QuantizeLinear with a precision other than float32 (edgekit computes float32)")
    if zero is not None:
        to = zero.dtype
        if node.attrs.get("output_dtype", 0) and dtype_of(node.attrs["output_dtype"]) != to:
            raise ValueError(f"QuantizeLinear: output_dtype {dtype_of(node.attrs['output_dtype'])} differs from the "
                             f"zero point's type {to}")
    elif node.attrs.get("output_dtype", 0):
        to = dtype_of(node.attrs["output_dtype"])
    else:
        to = np.dtype(np.uint8)
    if to not in QUANTIZED:
        raise Unsupported(f"QuantizeLinear to {to} (edgekit quantizes to int8, uint8, int16, uint16)")
    channels, inner = _channels(node, x, scale, zero)
    info = np.iinfo(to)
    args = (In(0), In(1), _zero(zero, to, channels), Out(0), channels, inner, int(info.min), int(info.max))
    return Kernel(kq.quantize, args, [(x.shape, to)])


@register("DequantizeLinear")
def build_dequantize(node: Node, inputs: list, opset: int) -> Kernel:
    x, scale, zero = inputs[0], inputs[1], _optional(inputs, 2)
    if x.dtype not in DEQUANTIZED:
        raise Unsupported(f"DequantizeLinear of {x.dtype} (edgekit dequantizes int8, uint8, int16, uint16, int32)")
    require_float32("DequantizeLinear", scale)
    if node.attrs.get("output_dtype", 0) not in (0, TensorProto.FLOAT):
        raise Unsupported("DequantizeLinear to a type other than float32 (edgekit computes float32)")
    if zero is not None and zero.dtype != x.dtype:
        raise ValueError(f"DequantizeLinear: zero point of {zero.dtype} for an input of {x.dtype}")
    channels, inner = _channels(node, x, scale, zero)
    return Kernel(kq.dequantize, (In(0), In(1), _zero(zero, x.dtype, channels), Out(0), channels, inner, 0, 0),
                  [(x.shape, np.dtype(np.float32))])


@register("Requantize", domain=DOMAIN)
def build_requantize(node: Node, inputs: list, opset: int) -> Kernel:
    """y = clamp(round_half_even(x * scale) + zero_point) per tensor or per ``axis``: onnxruntime's
    requantization of the int32 sums of QLinearConv and QLinearMatMul (a multiply by x_scale * w_scale /
    y_scale, not QuantizeLinear's division, which may round the other way)."""
    x, scale, zero = inputs
    require_float32("Requantize", x, scale)
    if zero.dtype not in QUANTIZED:
        raise Unsupported(f"Requantize to {zero.dtype} (edgekit quantizes to int8, uint8, int16, uint16)")
    channels, inner = _channels(node, x, scale, zero)
    info = np.iinfo(zero.dtype)
    return Kernel(kq.requantize, (In(0), In(1), In(2), Out(0), channels, inner, int(info.min), int(info.max)),
                  [(x.shape, zero.dtype)])


@register("DynamicQuantizeLinear")
def build_dynamic_quantize(node: Node, inputs: list, opset: int) -> Kernel:
    """uint8 y, its float32 scale and uint8 zero point from x's range (quantize_dynamic's activations)."""
    require_float32("DynamicQuantizeLinear", inputs[0])
    return Kernel(kq.dynamic_quantize, (In(0), Out(0), Out(1), Out(2)),
                  [(inputs[0].shape, np.dtype(np.uint8)), ((), np.dtype(np.float32)), ((), np.dtype(np.uint8))])
