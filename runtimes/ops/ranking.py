"""Ranking ops: ArgMax, ArgMin (all opsets: axis, keepdims, select_last_index since 12) and TopK (k as
an attribute before opset 10, a constant input K since; largest and sorted since 11) on float32, int32
and int64 inputs, indices int64. The ranked axis becomes the middle of an (outer, n, inner) view.
K fed at run time is Unsupported: it sets the output shape, and plans are specialised on shapes.
TopK with sorted=0 returns its k elements sorted anyway (the ONNX spec leaves their order open;
onnxruntime's depends on its selection algorithm), the same elements onnxruntime selects.
"""
from __future__ import annotations

import math

import numpy as np

from edgekit.ir import Node

from ..kernels import ranking as kr
from .registry import In, Kernel, Out, Tensor, Unsupported, const_input, normalize_axis, register

DTYPES = (np.float32, np.int32, np.int64)
SELECT_MIN_K, SELECT_EXPONENT = 4, 0.725
"""TopK selects from the whole column when k >= SELECT_MIN_K and k >= n ** SELECT_EXPONENT (onnxruntime's
measured rule; k = 1000 of 8400: 1.7x faster than the heap, which is kept for smaller k): by int64 keys
on float32 and int32 (``top_k_keys``, 1.6x faster again), by a quickselect of pairs on int64."""


def _split(node: Node, x: Tensor, axis: int) -> tuple[int, int, int, int]:
    """(axis, outer, n, inner) of ranking ``x`` along ``axis`` (normalised), after the dtype check."""
    if x.dtype not in DTYPES:
        raise Unsupported(f"{node.op_type} on {x.dtype} (edgekit ranks float32, int32 and int64)")
    if not x.shape:
        raise ValueError(f"{node.op_type} needs an input of rank >= 1")
    axis = normalize_axis(axis, len(x.shape))
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
    return axis, outer, int(x.shape[axis]), inner


@register("ArgMax", "ArgMin")
def build_arg(node: Node, inputs: list, opset: int) -> Kernel:
    x = inputs[0]
    axis, outer, n, inner = _split(node, x, int(node.attrs.get("axis", 0)))
    if n == 0:
        raise ValueError(f"{node.op_type} over an empty axis {axis} of shape {x.shape}")
    keep = int(node.attrs.get("keepdims", 1))
    last = bool(node.attrs.get("select_last_index", 0))
    out_shape = x.shape[:axis] + ((1,) if keep else ()) + x.shape[axis + 1:]
    is_max = node.op_type == "ArgMax"
    if inner == 1:
        args = (In(0), Out(0), outer, n, is_max, last, np.empty(kr.LANES, x.dtype))
        return Kernel(kr.arg_rows, args, [(out_shape, np.dtype(np.int64))])
    args = (In(0), Out(0), outer, n, inner, is_max, last, np.empty(inner, x.dtype))
    return Kernel(kr.arg_columns, args, [(out_shape, np.dtype(np.int64))])


@register("TopK")
def build_top_k(node: Node, inputs: list, opset: int) -> Kernel:
    x = inputs[0]
    axis, outer, n, inner = _split(node, x, int(node.attrs.get("axis", -1)))
    if opset < 10:
        k = int(node.attrs["k"])
    else:
        value = const_input(node, inputs, 1, "K")
        if value is None or value.size != 1:
            raise ValueError("TopK needs K, a tensor of one value")
        k = int(value.reshape(-1)[0])
    if not 0 <= k <= n:
        raise ValueError(f"TopK's k = {k} is not within [0, {n}], the size of axis {axis}")
    largest = bool(node.attrs.get("largest", 1))
    out_shape = x.shape[:axis] + (k,) + x.shape[axis + 1:]
    select = k >= SELECT_MIN_K and math.log2(k) >= SELECT_EXPONENT * math.log2(n)
    if select and x.dtype != np.int64:
        args = (In(0), Out(0), Out(1), outer, n, inner, k, largest, x.dtype == np.float32, np.empty(n + k, np.int64))
        return Kernel(kr.top_k_keys, args, [(out_shape, x.dtype), (out_shape, np.dtype(np.int64))])
    budget = 2 * n.bit_length() + 8 if select else 0  # partitions before quickselect gives up for the heap
    scratch = np.empty(n if select else k, x.dtype), np.empty(n if select else k, np.int64)
    args = (In(0), Out(0), Out(1), outer, n, inner, k, largest, budget, *scratch)
    return Kernel(kr.top_k, args, [(out_shape, x.dtype), (out_shape, np.dtype(np.int64))])
