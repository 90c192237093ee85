"""LayerNormalization (opset 17+), InstanceNormalization and GroupNormalization (opset 18: scale
and bias per group; 21+: per channel) on ``kernels.norm``, float32 with stage one in float32
(stash_type 1; other stash types are refused).

LayerNormalization's Scale and B broadcast unidirectionally to X: a constant is laid out once as
one row of the normalized size (when it does not vary along the leading axes) or as a full copy;
a run-time one must already be one such row or X's shape. Mean and InvStdDev are written when
the node asks for them, to scratch otherwise.
"""
from __future__ import annotations

import numpy as np

from edgekit.ir import Node

from ..kernels import norm as kn
from .registry import In, Kernel, Out, Tensor, Unsupported, aligned_copy, normalize_axis, register, require_float32


def _stash_float32(node: Node) -> None:
    """Unsupported unless stage one computes in float32 (stash_type 1, the default)."""
    stash = int(node.attrs.get("stash_type", 1))
    if stash != 1:
        raise Unsupported(f"stash_type {stash} (edgekit computes the statistics in float32, stash_type 1)")


def _row_operand(t: Tensor | None, index: int, shape: tuple[int, ...], axis: int, what: str) -> tuple:
    """(argument, row stride) of LayerNormalization's Scale or B read as rows of the normalized size."""
    n = int(np.prod(shape[axis:], dtype=np.int64))
    if t is None:
        return np.zeros(n, np.float32), 0
    if np.broadcast_shapes(t.shape, shape) != shape:
        raise ValueError(f"{what} of shape {t.shape} does not broadcast to X of shape {shape}")
    padded = (1,) * (len(shape) - len(t.shape)) + tuple(t.shape)
    one_row = all(d == 1 for d in padded[:axis])
    if t.is_const and one_row:
        return aligned_copy(np.broadcast_to(t.value.reshape(padded[axis:]), shape[axis:]).reshape(-1)), 0
    if t.is_const:
        return aligned_copy(np.broadcast_to(t.value, shape).reshape(-1)), n
    if one_row and padded[axis:] == shape[axis:]:
        return In(index), 0
    if padded == shape:
        return In(index), n
    raise Unsupported(f"a run-time {what} of shape {t.shape} broadcast within X of shape {shape} "
                      "(make it a constant, or give it the normalized axes' or X's shape)")


@register("LayerNormalization")
def build_layer_norm(node: Node, inputs: list, opset: int) -> Kernel:
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    require_float32(node.op_type, *inputs)
    _stash_float32(node)
    shape = tuple(x.shape)
    if not shape:
        raise ValueError("LayerNormalization of a scalar")
    axis = normalize_axis(int(node.attrs.get("axis", -1)), len(shape))
    outer, n = int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis:], dtype=np.int64))
    s_arg, s_rs = _row_operand(scale, 1, shape, axis, "Scale")
    b_arg, b_rs = _row_operand(bias, 2, shape, axis, "B")
    stat = shape[:axis] + (1,) * (len(shape) - axis)
    wanted = len(node.outputs)
    mean = Out(1) if wanted > 1 else np.empty(stat, np.float32)
    inv_std = Out(2) if wanted > 2 else np.empty(stat, np.float32)
    args = (In(0), Out(0), mean, inv_std, s_arg, b_arg, outer, n, s_rs, b_rs, float(node.attrs.get("epsilon", 1e-5)))
    outputs = [(shape, np.dtype(np.float32)), (stat, np.dtype(np.float32)), (stat, np.dtype(np.float32))]
    return Kernel(kn.layer_norm, args, outputs[:wanted])


def _channel_operand(t: Tensor, index: int, size: int, what: str) -> np.ndarray | In:
    """A per-group or per-channel parameter of ``size`` values: a constant copy, or the run-time input."""
    if tuple(t.shape) != (size,):
        raise ValueError(f"{what} of shape {t.shape}, expected ({size},)")
    return aligned_copy(t.value) if t.is_const else In(index)


def _group_norm(node: Node, inputs: list, groups: int, per_group_params: bool) -> Kernel:
    """The group_norm kernel of X (N, C, D1...) in ``groups`` groups of channels."""
    x, scale, bias = inputs[:3]
    require_float32(node.op_type, *inputs)
    shape = tuple(x.shape)
    if len(shape) < 2:
        raise ValueError(f"{node.op_type} needs X of shape (N, C, D1, ...), got {shape}")
    batch, channels, inner = shape[0], shape[1], int(np.prod(shape[2:], dtype=np.int64))
    if groups < 1 or channels % groups:
        raise ValueError(f"num_groups {groups} does not divide {channels} channels")
    per_group = channels // groups
    size, divisor = (groups, per_group) if per_group_params else (channels, 1)
    s_arg, b_arg = _channel_operand(scale, 1, size, "scale"), _channel_operand(bias, 2, size, "bias")
    args = (In(0), Out(0), s_arg, b_arg, batch, groups, per_group, inner, divisor,
            float(node.attrs.get("epsilon", 1e-5)))
    return Kernel(kn.group_norm, args, [(shape, np.dtype(np.float32))])


@register("InstanceNormalization")
def build_instance_norm(node: Node, inputs: list, opset: int) -> Kernel:
    if len(inputs[0].shape) < 3:
        raise ValueError(f"InstanceNormalization needs X of rank 3 or more, got shape {inputs[0].shape}")
    return _group_norm(node, inputs, inputs[0].shape[1], False)


@register("GroupNormalization")
def build_group_norm(node: Node, inputs: list, opset: int) -> Kernel:
    _stash_float32(node)
    if "num_groups" not in node.attrs:
        raise ValueError("GroupNormalization without num_groups")
    return _group_norm(node, inputs, int(node.attrs["num_groups"]), opset < 21)
