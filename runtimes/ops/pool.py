"""Pooling ops: MaxPool, AveragePool (1D and 2D) and GlobalAveragePool, GlobalMaxPool (any rank).

Output sizes follow onnxruntime: auto_pad SAME_* pads by the undilated kernel, ceil_mode also
applies to auto_pad outputs, and a ceil-mode window that would start past the input plus its head
padding is dropped. 1-D pools whose windows all lie inside the input (no padding reached, no
dilation) run on the four-argument WINDOW_POOL sweep. On planes narrower than STRIDED3_WIDTH, 3x3 stride-2
pools with head pads 0 or 1 (pads 1, auto_pad SAME) run on the stride-1 pool (STRIDED3); on planes narrower
than WINDOW2_WIDTH, 2x2 stride-2 max pools whose windows all lie inside run on one flat loop over the outputs
(WINDOW2_MAX); such average pools, at any width, run on explicit vectors (AVG2_POOL). The global pools, and
unpadded 2-D average pools whose window is the whole plane, are reductions over the spatial axes.
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
from .conv import positive_ints
from .registry import In, Kernel, Out, Unsupported, register

POOL_AFFINE = "_edgekit_pool_affine"  # node attribute: (scale, shift) of a BatchNormalization fused after the pool
SAME_GROUP_ELEMENTS = 4096  # the stride-1 'same' path: input, scratch and output of a group fit in L1 together
STRIDED3_WIDTH = 100  # 3x3/2 pools of narrower planes skip the strided path, whose per-row loops wider rows amortise
WINDOW2_WIDTH = 64  # the same for 2x2/2 max pools


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
    """Per output of one axis: the first valid input index, the valid taps [ta, tb) (a contiguous
    range), 1/count for averaging; and the interior outputs [o0, o1) where every tap is valid.

    Like onnxruntime, average pooling also ends its windows at a negative tail pad (auto_pad SAME
    with stride > kernel); max pooling reads to the end of the input.
    """
    end = n + min(tail, 0) if average else n
    taps = np.arange(out, dtype=np.int64)[:, None] * s + np.arange(k, dtype=np.int64)[None, :] * d - head
    inside = (taps >= 0) & (taps < end)
    nt = inside.sum(axis=1)
    ta = np.where(nt > 0, inside.argmax(axis=1), 0)
    first = np.where(nt > 0, taps[np.arange(out), ta], 0)
    counted = (taps >= -head) & (taps < n + tail) if include_pad else inside
    count = counted.sum(axis=1)
    inv = np.where(count > 0, 1.0 / np.maximum(count, 1), 0.0)
    full = np.flatnonzero(nt == k)
    o0, o1 = (int(full[0]), int(full[-1]) + 1) if full.size else (0, 0)
    return first.astype(np.int64), ta.astype(np.int64), (ta + nt).astype(np.int64), inv, o0, o1


POOLED_INTEGERS = (np.dtype(np.int8), np.dtype(np.uint8))
"""Integer types MaxPool takes (a quantized CNN in onnxruntime's QOperator format keeps its MaxPool on
uint8): their values are exact in the generic kernel's float32 scratch row."""


@register("MaxPool", "AveragePool")
def build_pool(node: Node, inputs: list, opset: int) -> Kernel:
    x, a = inputs[0], node.attrs
    integer = node.op_type == "MaxPool" and x.dtype in POOLED_INTEGERS
    if x.dtype != np.float32 and not integer:
        raise Unsupported(f"{node.op_type} on {x.dtype} (edgekit pools float32, and max-pools int8 and uint8)")
    if len(node.outputs) > 1 and node.outputs[1]:
        raise Unsupported("the Indices output of MaxPool")
    kernel = [int(v) for v in a["kernel_shape"]]
    rank = len(kernel)
    if rank not in (1, 2) or len(x.shape) != rank + 2:
        raise Unsupported(f"{rank}D pooling on a rank-{len(x.shape)} input (edgekit pools 1D and 2D)")
    kernel, strides, dilations = (positive_ints(node, name, rank) for name in ("kernel_shape", "strides", "dilations"))
    pads = [int(v) for v in a.get("pads", [0] * 2 * rank)]
    auto_pad = a.get("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", "") and (len(pads) != 2 * rank or not all(0 <= p < k for p, k in zip(pads, kernel * 2))):
        raise ValueError(f"pads {pads} must be {2 * rank} integers from 0 to below the kernel {kernel} (as onnxruntime)")
    ceil_mode = int(a.get("ceil_mode", 0))
    include_pad = bool(a.get("count_include_pad", 0))
    axes, out_shape, heads, tails = [], list(x.shape[:2]), [], []
    for i in range(rank):
        n, k, st, d = x.shape[2 + i], kernel[i], strides[i], dilations[i]
        head, tail = _pads(auto_pad, n, k, st, pads[i], pads[i + rank])
        heads.append(head)
        tails.append(tail)
        out = _out_size(n, k, st, d, head, tail, ceil_mode)
        out_shape.append(out)
        axes.append(_axis(n, k, st, d, head, tail, out, node.op_type == "AveragePool", include_pad))
    code = kp.MAX if node.op_type == "MaxPool" else kp.AVG
    if rank == 1:  # NCL pools as a height-1 image with one tap down the columns
        axes.insert(0, (np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1, np.int64), np.ones(1), 0, 1))
    (_, h_ta, h_tb, h_inv, _, _), (_, w_ta, w_tb, w_inv, j0, j1) = axes
    inv = np.outer(h_inv, w_inv).ravel()
    if integer:  # the generic kernel, on values float32 holds exactly; a window needs a tap (no -inf to store)
        if any(np.any(ta >= tb) for ta, tb in ((h_ta, h_tb), (w_ta, w_tb))):
            raise Unsupported(f"MaxPool on {x.dtype} with a window of padding only")
        if pool_affine(node) is not None or fused_activation(node)[0] != ka.IDENTITY:
            raise Unsupported(f"a fused epilogue on a MaxPool of {x.dtype}")
        return _generic(x, code, rank, out_shape, axes, inv, strides, dilations, kernel)
    if strides == [1] * rank and dilations == [1] * rank and out_shape[2:] == list(x.shape[2:]):
        return _same_pool(node, x, code, kernel, heads, inv)
    if pool_affine(node) is not None or fused_activation(node)[0] != ka.IDENTITY:
        raise Unsupported("a fused epilogue on a pool that is not stride-1 'same'")
    if code == kp.AVG and rank == 2 and kernel == list(x.shape[2:]) and heads + tails == [0, 0, 0, 0]:
        return _whole_plane_mean(x, out_shape)
    if ((kernel, strides, dilations) == ([3, 3], [2, 2], [1, 1]) and x.shape[-1] < STRIDED3_WIDTH and min(out_shape) > 0
            and all(hd in (0, 1) and 2 * o - 1 - hd < n for hd, o, n in zip(heads, out_shape[2:], x.shape[2:]))):
        return _strided3(x, code, out_shape, heads, inv)
    window2 = (rank == 2 and (kernel, strides, dilations, heads) == ([2, 2], [2, 2], [1, 1], [0, 0])
               and all(2 * o <= n for o, n in zip(out_shape[2:], x.shape[2:])))
    if window2 and code == kp.AVG:
        return Kernel(kp.AVG2_POOL, (In(0), Out(0), x.shape[0] * x.shape[1], *x.shape[2:]), [(tuple(out_shape), x.dtype)])
    if window2 and x.shape[-1] < WINDOW2_WIDTH:
        index = _window_starts(x.shape[0] * x.shape[1], *x.shape[2:], *out_shape[2:])
        return Kernel(kp.WINDOW2_MAX, (In(0), Out(0), index, x.shape[3]), [(tuple(out_shape), x.dtype)])
    if rank == 1 and dilations == [1] and heads == [0] and j0 == 0 and j1 == out_shape[2] > 0:
        return Kernel(kp.WINDOW_POOL[code], (In(0), Out(0), kernel[0], strides[0]), [(tuple(out_shape), x.dtype)])
    return _generic(x, code, rank, out_shape, axes, inv, strides, dilations, kernel)


def _generic(x, code: int, rank: int, out_shape: list[int], axes: list, inv: np.ndarray, strides: list[int],
             dilations: list[int], kernel: list[int]) -> Kernel:
    """The separable sliding-window kernel (``kp.POOL``) for any 1-D or 2-D pool, ``axes`` per axis as
    ``_axis`` gives them (a height axis of one tap first for 1-D), ``inv`` the windows' 1 / tap counts."""
    (h_first, h_ta, h_tb, _, _, _), (w_first, w_ta, w_tb, _, j0, j1) = axes
    h, w = (x.shape[2], x.shape[3]) if rank == 2 else (1, x.shape[2])
    oh, ow = (out_shape[2], out_shape[3]) if rank == 2 else (1, out_shape[2])
    dh, dw = ([1] + dilations if rank == 1 else dilations)
    scratch = np.empty(w, np.float32 if code == kp.MAX else np.float64)
    args = (In(0), Out(0), scratch, inv, x.shape[0] * x.shape[1], h, w, oh, ow, dh, h_first, h_ta, h_tb, strides[-1],
            dw, w_first, w_ta, w_tb, j0, j1, kernel[-1])
    return Kernel(kp.POOL[code], args, [(tuple(out_shape), x.dtype)])


def _whole_plane_mean(x, out_shape: list[int]) -> Kernel:
    """An unpadded 2-D average pool whose one window is the whole plane (Keras DS-CNN heads) is
    GlobalAveragePool: the mean of rows, 5.7 -> 1 us on 24 planes of 25 x 5."""
    args = (In(0), Out(0), x.shape[0] * x.shape[1], int(np.prod(x.shape[2:])), 1, NO_INDEX, NO_INDEX)
    return Kernel(kr.REDUCE[kr.MEAN, kr.ROWS], args, [(tuple(out_shape), x.dtype)])


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
    masks = _max3_masks(h, w, (kh, kw, ph, pw) == (3, 3, 1, 1))
    if code == kp.AVG:  # float32 and padded to whole vectors, for AVG3's vector loads
        inv = np.concatenate([inv, np.zeros(-(h * w) % kp.LANES)]).astype(np.float32)
    args = (In(0), Out(0), scratch, x.shape[0] * x.shape[1], group, h, w, kh, kw, ph, pw, inv, x.shape[1],
            scale, shift, act, np.float32(alpha), np.float32(beta), masks)
    return Kernel(kp.same_pool(code, act), args, [(x.shape, x.dtype)])


def _max3_masks(h: int, w: int, max3: bool = True) -> np.ndarray:
    """The lane masks of MAX3 when the pool runs as MAX3 or AVG3; an empty (5, 0) array otherwise."""
    return kp.max3_masks(h, w) if max3 else np.empty((5, 0), np.uint16)


def _strided3(x, code: int, out_shape: list[int], heads: list[int], inv: np.ndarray) -> Kernel:
    """A 3x3 stride-2 pool whose windows are the stride-1 'same' windows of their centres (2i + 1 - head):
    that pool of every position, then the centres; AVG3's 1 / tap count is the strided outputs' at them."""
    planes, (h, w) = x.shape[0] * x.shape[1], x.shape[2:]
    r0, c0 = 1 - heads[0], 1 - heads[1]
    group = max(1, SAME_GROUP_ELEMENTS // (h * w))
    scratch = np.empty(max((group + 1) * (h + 1) * w, group * h * w), np.float32)
    full_inv = np.zeros(1)  # the max pool's: SAME_POOL's signature for MAX takes float64
    if code == kp.AVG:
        full_inv = np.zeros((h * w + -(h * w) % kp.LANES), np.float32)
        oh, ow = out_shape[2:]
        centres = (np.arange(oh)[:, None] * 2 + r0) * w + np.arange(ow)[None, :] * 2 + c0
        full_inv[centres.ravel()] = inv
    args = (In(0), Out(0), np.empty(x.shape, np.float32), scratch, planes, group, h, w, full_inv, np.empty(0, np.float32),
            _max3_masks(h, w), r0, c0)
    return Kernel(kp.STRIDED3[code], args, [(tuple(out_shape), x.dtype)])


def _window_starts(planes: int, h: int, w: int, oh: int, ow: int) -> np.ndarray:
    """The flat input index of position (2i, 2j) of every plane, for the oh x ow outputs of each (int32)."""
    return (np.arange(planes)[:, None, None] * (h * w) + np.arange(oh)[None, :, None] * (2 * w)
            + np.arange(ow)[None, None, :] * 2).ravel().astype(np.int32)


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
