"""Scan ops: CumSum (opset 11/14) with its exclusive and reverse attributes.

The axis may be a run-time input (the kernel reads it each call; a constant one is checked here);
any numeric input dtype the kernel compiles for (float32, float64, int32, int64) is summed in its
own type, as onnxruntime does.
"""
from __future__ import annotations

import numpy as np

from edgekit.ir import Node

from ..kernels.scan import cumsum
from .registry import In, Kernel, Out, Unsupported, normalize_axis, register

DTYPES = (np.float32, np.float64, np.int32, np.int64)


@register("CumSum")
def build_cumsum(node: Node, inputs: list, opset: int) -> Kernel:
    x, axis = inputs[0], inputs[1]
    if x.dtype not in DTYPES:
        raise Unsupported(f"CumSum on {x.dtype} (edgekit sums float32, float64, int32 and int64)")
    if len(x.shape) == 0 or int(np.prod(axis.shape, dtype=np.int64)) != 1:
        raise Unsupported("CumSum needs an input of rank >= 1 and one axis")
    if axis.is_const:
        normalize_axis(int(np.asarray(axis.value).reshape(-1)[0]), len(x.shape))
    args = (In(0), In(1), Out(0), np.array(x.shape, np.int64), bool(node.attrs.get("exclusive", 0)),
            bool(node.attrs.get("reverse", 0)))
    return Kernel(cumsum, args, [(tuple(x.shape), x.dtype)])
