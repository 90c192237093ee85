"""Scan ops: CumSum (opset 11/14) with its exclusive and reverse attributes.

The axis input must be constant (or computable at load time); any numeric input dtype the kernel
compiles for (float32, float64, int32, int64) is summed in its own type, as onnxruntime does.
"""
from __future__ import annotations

import numpy as np

from edgekit.ir import Node

from ..kernels.scan import cumsum
from .registry import In, Kernel, Out, Unsupported, const_input, normalize_axis, register

DTYPES = (np.float32, np.float64, np.int32, np.int64)


@register("CumSum")
def build_cumsum(node: Node, inputs: list, opset: int) -> Kernel:
    x = inputs[0]
    if x.dtype not in DTYPES:
        raise Unsupported(f"CumSum on {x.dtype} (edgekit sums float32, float64, int32 and int64)")
    axis = const_input(node, inputs, 1, "axis")
    if axis is None or np.asarray(axis).size != 1:
        raise Unsupported("CumSum needs one axis")
    shape = tuple(x.shape)
    a = normalize_axis(int(np.asarray(axis).reshape(-1)[0]), len(shape))
    outer = int(np.prod(shape[:a], dtype=np.int64))
    inner = int(np.prod(shape[a + 1:], dtype=np.int64))
    args = (In(0), Out(0), outer, shape[a] if shape else 1, inner, bool(node.attrs.get("exclusive", 0)),
            bool(node.attrs.get("reverse", 0)))
    return Kernel(cumsum, args, [(shape, x.dtype)])
