"""Pooling ops: MaxPool, AveragePool (1D and 2D) and GlobalAveragePool, GlobalMaxPool (any rank).

Output sizes follow onnxruntime: auto_pad SAME_* pads by the undilated kernel, ceil_mode also
applies to auto_pad outputs, and a ceil-mode window that would start past the input plus its head
padding is dropped. The global pools are reductions over the spatial axes.
"""
from __future__ import annotations

import math

import numpy as np

from edgekit.ir import Node

from ..kernels import activation as ka
from ..kernels import pool as kp
from ..kernels import reduce as kr
from .reduce import NO_INDEX
from .activation import fused_activation
from .registry import In, Kernel, Out, Unsupported, register

POOL_AFFINE = "_edgekit_pool_affine"  # node attribute: (scale, shift) of a BatchNormalization fused after the pool
GROUP_ELEMENTS = 16384  # planes are pooled in groups of about this many inputs (64 KB), so a group stays in L2
SAME_GROUP_ELEMENTS = 4096  # the stride-1 'same' path: input, scratch and output of a group fit in L1 together


def _pads(auto_pad: str, n: int, k: int, s: int, head: int, tail: int) -> tuple[int, int]:
    """(head, tail) padding of one spatial axis after resolving auto_pad (C integer division, as onnxruntime)."""
    if auto_pad in ("NOTSET", ""):
        return head, tail
    if auto_pad == "VALID":
        return 0, 0
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise Unsupported(f"auto_pad {auto_pad!r}")
    needed = (-(-n // s) - 1) * s + k - n
    half = needed + (auto_pad == "SAME_LOWER")
    head = int(half / 2)
    return head, needed - head


def _out_size(n: int, k: int, s: int, d: int, head: int, tail: int, ceil_mode: int) -> int:
    """Output length of one axis; divisions truncate toward zero like onnxruntime's C++."""
    span = n + head + tail - d * (k - 1) - 1
    size = (math.ceil(span / s) if ceil_mode else int(span / s)) + 1
    if ceil_mode and (size - 1) * s >= n + head:
        size -= 1
    if size < 0:
        raise Unsupported(f"the dilated kernel ({d * (k - 1) + 1}) is larger than the padded input ({n + head + tail})")
    return size


def _axis(n: int, k: int, s: int, d: int, head: int, tail: int, out: int, average: bool, include_pad: bool) -> tuple:
    """Per-tap offsets and valid output ranges of one axis, plus 1/count per output for averaging.

    Like onnxruntime, average pooling also ends its windows at a negative tail pad (auto_pad SAME
    with stride > kernel); max pooling reads to the end of the input.
    """
    end = n + min(tail, 0) if average else n
    off = np.arange(k, dtype=np.int64) * d - head
    lo = np.clip(-(off // s), 0, out)  # first o with o*s + off >= 0, i.e. ceil(-off / s)
    hi = np.clip((end - 1 - off) // s + 1, lo, out)
    taps = np.arange(out, dtype=np.int64)[:, None] * s + off[None, :]
    valid = (taps >= -head) & (taps < n + tail) if include_pad else (taps >= 0) & (taps < end)
    count = valid.sum(axis=1)
    inv = np.where(count > 0, 1.0 / np.maximum(count, 1), 0.0)
    return off, lo.astype(np.int64), hi.astype(np.int64), inv


@register("MaxPool", "AveragePool")
def build_pool(node: Node, inputs: list, opset: int) -> Kernel:
    x, a = inputs[0], node.attrs
    if x.dtype != np.float32:
        raise Unsupported(f"{node.op_type} on {x.dtype} (edgekit pools float32)")
    if len(node.outputs) > 1 and node.outputs[1]:
        raise Unsupported("the Indices output of MaxPool")
    kernel = [int(v) for v in a["kernel_shape"]]
    rank = len(kernel)
    if rank not in (1, 2) or len(x.shape) != rank + 2:
        raise Unsupported(f"{rank}D pooling on a rank-{len(x.shape)} input (edgekit pools 1D and 2D)")
    strides = [int(v) for v in a.get("strides", [1] * rank)]
    dilations = [int(v) for v in a.get("dilations", [1] * rank)]
    pads = [int(v) for v in a.get("pads", [0] * 2 * rank)]
    auto_pad = a.get("auto_pad", "NOTSET")
    ceil_mode = int(a.get("ceil_mode", 0))
    include_pad = bool(a.get("count_include_pad", 0))
    axes, out_shape, heads = [], list(x.shape[:2]), []
    for i in range(rank):
        n, k, st, d = x.shape[2 + i], kernel[i], strides[i], dilations[i]
        head, tail = _pads(auto_pad, n, k, st, pads[i], pads[i + rank])
        heads.append(head)
        out = _out_size(n, k, st, d, head, tail, ceil_mode)
        out_shape.append(out)
        axes.append((st,) + _axis(n, k, st, d, head, tail, out, node.op_type == "AveragePool", include_pad))
    if rank == 1:  # NCL pools as a height-1 image with one tap down the columns
        axes.insert(0, (1, np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1, np.int64), np.ones(1)))
    h, w = (x.shape[2], x.shape[3]) if rank == 2 else (1, x.shape[2])
    oh, ow = (out_shape[2], out_shape[3]) if rank == 2 else (1, out_shape[2])
    (sh, h_off, h_lo, h_hi, h_inv), (sw, w_off, w_lo, w_hi, w_inv) = axes
    code = kp.MAX if node.op_type == "MaxPool" else kp.AVG
    if strides == [1] * rank and dilations == [1] * rank and out_shape[2:] == list(x.shape[2:]):
        return _same_pool(node, x, code, kernel, heads, np.outer(h_inv, w_inv).ravel())
    if pool_affine(node) is not None or fused_activation(node)[0] != ka.IDENTITY:
        raise Unsupported("a fused epilogue on a pool that is not stride-1 'same'")
    group = max(1, GROUP_ELEMENTS // (h * w))
    if node.op_type == "MaxPool":
        code, scratch, v, inv = kp.MAX, np.empty(group * oh * w, np.float32), Out(0), np.empty(0)
    else:
        code, scratch, v, inv = kp.AVG, np.empty(group * oh * w), np.empty(group * oh * ow), np.outer(h_inv, w_inv).ravel()
    args = (In(0), Out(0), scratch, v, inv, x.shape[0] * x.shape[1], group, h, w, oh, ow,
            sh, h_off * w, h_lo, h_hi, sw, w_off, w_lo, w_hi)
    return Kernel(kp.POOL[code], args, [(tuple(out_shape), x.dtype)])


def pool_affine(node: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """The per-channel float32 (scale, shift) the plan fused into this pool (runtimes/pool_fusion.py), or None."""
    return node.attrs.get(POOL_AFFINE)


def _same_pool(node: Node, x, code: int, kernel: list[int], heads: list[int], inv: np.ndarray) -> Kernel:
    """The stride-1 'same' fast path, with the BN/activation epilogue the plan may have fused in."""
    h, w = (x.shape[2], x.shape[3]) if len(kernel) == 2 else (1, x.shape[2])
    (kh, kw), (ph, pw) = ([1] + kernel, [0] + heads) if len(kernel) == 1 else (kernel, heads)
    group = max(1, SAME_GROUP_ELEMENTS // (h * w))
    dtype = np.float32 if code == kp.MAX else np.float64
    scratch = np.empty(max((group + 1) * (h + max(ph, kh - 1 - ph)) * w, group * h * w), dtype)
    empty = np.empty(0, np.float32)
    scale, shift = pool_affine(node) or (empty, empty)
    act, alpha, beta = fused_activation(node)
    args = (In(0), Out(0), scratch, x.shape[0] * x.shape[1], group, h, w, kh, kw, ph, pw, inv, x.shape[1],
            scale, shift, act, np.float32(alpha), np.float32(beta))
    return Kernel(kp.SAME_POOL[code], args, [(x.shape, x.dtype)])


@register("GlobalAveragePool", "GlobalMaxPool")
def build_global_pool(node: Node, inputs: list, opset: int) -> Kernel:
    x = inputs[0]
    if x.dtype != np.float32 or len(x.shape) < 3:
        raise Unsupported(f"{node.op_type} on a rank-{len(x.shape)} {x.dtype} input (edgekit pools NC... float32)")
    code = kr.MEAN if node.op_type == "GlobalAveragePool" else kr.MAX
    outer, n = x.shape[0] * x.shape[1], int(np.prod(x.shape[2:]))
    out_shape = tuple(x.shape[:2]) + (1,) * (len(x.shape) - 2)
    args = (In(0), Out(0), outer, n, 1, NO_INDEX, NO_INDEX)
    return Kernel(kr.REDUCE[code, kr.ROWS], args, [(out_shape, x.dtype)])
