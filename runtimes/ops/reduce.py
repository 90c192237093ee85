"""Reduction ops (ReduceSum/Mean/Max/Min/Prod/L1/L2/SumSquare/LogSum/LogSumExp) and Softmax, LogSoftmax.

Axes come from the attribute in older opsets and from input 1 since opset 13 (ReduceSum) or 18 (the
others); empty axes reduce everything unless noop_with_empty_axes, which reduces over no axis (so
ReduceSumSquare still squares, as in onnxruntime). The builder picks the kernel's index form: rows or
columns when the reduced axes are adjacent once size-1 axes are ignored, a gather otherwise.
Softmax follows opset >= 13 (one axis) or the older coerce-to-2D-at-axis semantics.
"""
from __future__ import annotations

import numpy as np

from edgekit.ir import Node

from ..kernels import reduce as kr
from .registry import Constant, In, Kernel, Out, Unsupported, const_input, normalize_axis, register

REDUCE = {"ReduceSum": kr.SUM, "ReduceMean": kr.MEAN, "ReduceMax": kr.MAX, "ReduceMin": kr.MIN,
          "ReduceProd": kr.PROD, "ReduceL1": kr.L1, "ReduceL2": kr.L2, "ReduceSumSquare": kr.SUM_SQUARE,
          "ReduceLogSum": kr.LOG_SUM, "ReduceLogSumExp": kr.LOG_SUM_EXP}
NUMPY = {"ReduceSum": np.sum, "ReduceMax": np.max, "ReduceMin": np.min, "ReduceProd": np.prod}
NO_INDEX = np.zeros(0, np.int64)


def _axes(node: Node, inputs: list, opset: int, rank: int) -> list[int]:
    """Sorted reduced axes, after the empty-axes rules."""
    if opset >= (13 if node.op_type == "ReduceSum" else 18):
        axes = const_input(node, inputs, 1, "axes")
    else:
        axes = node.attrs.get("axes")
    if axes is None or len(axes) == 0:
        return [] if node.attrs.get("noop_with_empty_axes", 0) else list(range(rank))
    return sorted({normalize_axis(int(a), rank) for a in np.asarray(axes).reshape(-1)})


def index_form(shape: tuple, axes: list[int]) -> tuple:
    """(form, outer, n, inner, base, offs) of reducing ``axes`` of a C-contiguous ``shape``."""
    big = [i for i, d in enumerate(shape) if d != 1]
    reduced = [i for i in big if i in axes]
    pos = [big.index(i) for i in reduced]
    size = int(np.prod(shape, dtype=np.int64))
    if not reduced or pos == list(range(pos[0], pos[0] + len(pos))):
        split = reduced[0] if reduced else len(shape)
        last = reduced[-1] + 1 if reduced else len(shape)
        outer, n = int(np.prod(shape[:split], dtype=np.int64)), int(np.prod(shape[split:last], dtype=np.int64))
        inner = int(np.prod(shape[last:], dtype=np.int64))
        return (kr.ROWS if inner == 1 else kr.COLUMNS), outer, n, inner, NO_INDEX, NO_INDEX
    flat = np.arange(size, dtype=np.int64).reshape(shape)
    base = flat[tuple(slice(0, 1) if i in axes else slice(None) for i in range(len(shape)))].reshape(-1)
    offs = flat[tuple(slice(None) if i in axes else slice(0, 1) for i in range(len(shape)))].reshape(-1)
    return kr.GATHER, 0, offs.size, 0, base.copy(), offs.copy()


@register(*REDUCE)
def build_reduce(node: Node, inputs: list, opset: int) -> Kernel | Constant:
    x = inputs[0]
    rank = len(x.shape)
    axes = _axes(node, inputs, opset, rank)
    keep = int(node.attrs.get("keepdims", 1))
    out_shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if keep or i not in axes)
    if x.dtype != np.float32:
        if node.op_type in NUMPY and x.is_const:
            return Constant([np.asarray(NUMPY[node.op_type](x.value, axis=tuple(axes), keepdims=bool(keep)), x.dtype)])
        raise Unsupported(f"{node.op_type} on {x.dtype} (edgekit reduces float32; integer inputs only when constant)")
    form, outer, n, inner, base, offs = index_form(tuple(x.shape), axes)
    args = (In(0), Out(0), outer, n, inner, base, offs)
    return Kernel(kr.REDUCE[REDUCE[node.op_type], form], args, [(out_shape, x.dtype)])


@register("Softmax", "LogSoftmax")
def build_softmax(node: Node, inputs: list, opset: int) -> Kernel:
    x = inputs[0]
    if x.dtype != np.float32:
        raise Unsupported(f"{node.op_type} on {x.dtype} (edgekit computes float32)")
    shape = tuple(x.shape)
    axis = normalize_axis(int(node.attrs.get("axis", -1 if opset >= 13 else 1)), len(shape))
    last = axis + 1 if opset >= 13 else len(shape)
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    n = int(np.prod(shape[axis:last], dtype=np.int64))
    inner = int(np.prod(shape[last:], dtype=np.int64))
    args = (In(0), Out(0), outer, n, inner, node.op_type == "LogSoftmax")
    return Kernel(kr.softmax, args, [(shape, x.dtype)])
