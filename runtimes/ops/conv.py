"""Conv (1-D and 2-D, float32): output geometry, pads and auto_pad, the method and the input layout
Q chosen per shape, and the fused epilogue, bound once to ``kernels.conv`` (see its docstring).

A fourth input (never an ONNX Conv's: runtimes/fusion.py adds it for ``Add(Conv(...), R)``) is a
residual R added after the bias and before the fused activation. R of the output's shape is added
in the kernel's epilogue; any other (broadcast) shape runs the convolution, then the Add and the
activation as separate kernels (correct, not fast: plans never see it in the usual networks)."""
from __future__ import annotations

import numpy as np

from edgekit.ir import Node

from ..kernels import conv as kc
from ..kernels.activation import IDENTITY, elementwise_kernel
from .activation import fused_activation
from .elementwise import build_binary
from .registry import In, Kernel, Out, Tensor, Unsupported, aligned_copy, register, require_float32

NARROW_WIDTH = kc.LANES // 2
"""Single-row outputs at most this wide (half a vector) with constant weights and at least
PAIR_MIN_CHANNELS output channels per group take the channel-vectorised method (kernels.conv
GEMM_NARROW): measured 1.8-2.5x faster than the column-vectorised product for 128 -> 128 channels
at 1-8 columns, about equal at 16."""
PAIR_MIN_CHANNELS = 2 * kc.LANES
"""Groups of PAIR_MIN_CHANNELS to NARROW_VECS * LANES - 1 output channels take it too, by tiles of two
channel vectors (kernels.conv PAIR_COLS), up to NARROW_WIDTH columns: measured 32 -> 32 channels,
kernel 4, 1.5x faster at 8 columns and 2.4x at 2 (a streaming hop's layers); slower with fewer
channels (a masked vector)."""
PAIR_WIDTH = kc.LANES
"""Groups of exactly two vectors of output channels, or of whole blocks of NARROW_VECS vectors, take
it up to this width (a vector): measured 16 -> 32 and 32 -> 32 channels at 12-16 columns, 1.2-1.4x
faster, 64 -> 64 at 12 columns 1.6x and 128 -> 128 at 16 (kernel 3) 1.2-1.3x; with a masked last
block of channels (48, 96) slower, so those stop at NARROW_WIDTH."""
ROWS_WIDTH = 128
"""Single-row outputs at most this wide (a streaming step's layers) run on a rows kernel
(``conv_kernel(plan, rows=True)``, whose tiles the streaming step interpreter runs too, in the rows
kernel of its program's convolutions): up to two vectors its short tiles serve them, wider ones with AVX-512
its quads (QUAD_MAX), with 8-lane vectors its product tiles, as ``conv_kernel``'s would (the step
stays in the compiled program)."""


def _pads(node: Node, size: list[int], span: list[int], strides: list[int]) -> tuple[list[int], list[int]]:
    """(begin, end) pads per spatial axis from ``pads`` or ``auto_pad`` (span = dilated kernel extent)."""
    nd = len(size)
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = [int(p) for p in node.attrs.get("pads", [0] * (2 * nd))]
        if len(pads) != 2 * nd or min(pads) < 0:
            raise ValueError(f"pads {pads} do not give a non-negative begin and end for {nd} spatial axes")
        return pads[:nd], pads[nd:]
    if auto == "VALID":
        return [0] * nd, [0] * nd
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise Unsupported(f"auto_pad {auto!r}")
    begin, end = [], []
    for n, k, s in zip(size, span, strides):
        total = max(0, (-(-n // s) - 1) * s + k - n)
        small = total // 2
        begin.append(small if auto == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return begin, end


def positive_ints(node: Node, name: str, n: int) -> list[int]:
    """Attribute ``name`` of ``node`` (default n ones), raising ValueError unless it holds n integers >= 1."""
    values = [int(v) for v in node.attrs.get(name, [1] * n)]
    if len(values) != n or min(values, default=1) < 1:
        raise ValueError(f"{name} {values} must be {n} integers >= 1")
    return values


def _tap_offsets(cin_g: int, kernel: list[int], dilations: list[int], strides: list[int], qh: int, qw: int,
                 plane: int) -> np.ndarray:
    """Offset in Q of the input row read by each tap (ci, kh, kw), in the order of W's rows."""
    ci, kh, kw = np.meshgrid(np.arange(cin_g), np.arange(kernel[0]), np.arange(kernel[1]), indexing="ij")
    dh, dw = kh * dilations[0], kw * dilations[1]
    phase = (dh % strides[0]) * strides[1] + dw % strides[1]
    offsets = ci * plane + phase * qh * qw + (dh // strides[0]) * qw + dw // strides[1]
    return offsets.reshape(-1).astype(np.int64)


def _layout(size: list[int], begin: list[int], end: list[int], kernel: list[int], strides: list[int],
            dilations: list[int], out: list[int], depthwise: bool) -> tuple[int, bool, int, int, int]:
    """(method, in_place, Qh, Qw, plane) for a 2-D convolution: X is read in place when no pad or
    stride needs the polyphase copy Q and no shifted row runs past the end of X. When every tap reads
    phase (0, 0) (a strided 1x1 convolution, or dilations that are multiples of the strides), Q holds
    that phase only (``plane`` = Qh * Qw)."""
    (h, wd), unpadded = size, not any(begin + end) and strides == [1, 1]
    if depthwise and kernel == [3, 3] and dilations == [1, 1] and strides in ([1, 1], [2, 2]):
        return kc.DEPTHWISE_3X3, True, h, wd, h * wd  # the pads are read as zero lanes and rows
    if unpadded and (depthwise or kernel[1] == 1 or out[0] == 1):
        qh, qw, in_place = h, wd, True
    else:
        qh, qw = (-(-(s + p0 + p1) // st) for s, p0, p1, st in zip(size, begin, end, strides))
        in_place = False
    one_phase = all(k == 1 or d % st == 0 for k, d, st in zip(kernel, dilations, strides))  # every tap in phase 0
    plane = qh * qw if in_place or one_phase else strides[0] * strides[1] * qh * qw
    if depthwise:
        return kc.DEPTHWISE, in_place, qh, qw, plane
    return (kc.GEMM_WIDE if out[0] > 1 and qw != out[1] else kc.GEMM), in_place, qh, qw, plane


def conv_operands(node: Node, inputs: list) -> tuple:
    """(x, w, b, nd, groups, kernel, strides, dilations) of a Conv or ConvTranspose node, checked as
    onnxruntime checks them: float32, 1-D or 2-D, W fitting the input channels in the groups,
    kernel_shape W's, one bias per output channel, strides and dilations >= 1. W is (Cout, C/groups,
    k...) for Conv, (C, Cout/groups, k...) for ConvTranspose."""
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    require_float32(node.op_type, x, w)
    nd = len(x.shape) - 2
    if nd not in (1, 2) or len(w.shape) != nd + 2:
        raise Unsupported(f"{nd}-D {node.op_type} (edgekit implements 1-D and 2-D)")
    groups, c, kernel = int(node.attrs.get("group", 1)), x.shape[1], list(w.shape[2:])
    transposed = node.op_type == "ConvTranspose"
    if (w.shape[0] != c or c % groups) if transposed else (c != w.shape[1] * groups or w.shape[0] % groups):
        raise ValueError(f"weights {w.shape} do not fit {c} input channels in {groups} groups")
    if [int(k) for k in node.attrs.get("kernel_shape", kernel)] != kernel:
        raise ValueError(f"kernel_shape {list(node.attrs['kernel_shape'])} is not W's {kernel}")
    c_out = w.shape[1] * groups if transposed else w.shape[0]
    if b is not None and tuple(b.shape) != (c_out,):
        raise ValueError(f"bias of shape {list(b.shape)}, expected [{c_out}] (one per output channel)")
    return x, w, b, nd, groups, kernel, positive_ints(node, "strides", nd), positive_ints(node, "dilations", nd)


@register("Conv")
def build_conv(node: Node, inputs: list, opset: int) -> Kernel:
    x, w, b, nd, groups, kernel, strides, dilations = conv_operands(node, inputs)
    n, c, *size = x.shape
    c_out, cin_g = w.shape[:2]
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    begin, end = _pads(node, size, span, strides)
    out = [(s + p0 + p1 - k) // st + 1 for s, p0, p1, k, st in zip(size, begin, end, span, strides)]
    if min(out) < 1:
        raise ValueError(f"kernel {kernel} (dilated {span}) is larger than the padded input {size}")
    if nd == 1:  # a 1-D convolution is the 2-D one with a single row
        size, kernel, strides, dilations, out = ([1] + v for v in (size, kernel, strides, dilations, out))
        begin, end = [0] + begin, [0] + end
    depthwise = cin_g == 1 and c_out == groups
    method, in_place, qh, qw, plane = _layout(size, begin, end, kernel, strides, dilations, out, depthwise)
    cout_g = c_out // groups
    boffs = _tap_offsets(cin_g, kernel, dilations, strides, qh, qw, plane)
    if method == kc.GEMM and out == [1, 1] and in_place and np.all(np.diff(boffs) == 1):
        method = kc.DOT  # one column from one contiguous run of X (a kernel covering X): dot products
    elif method == kc.GEMM and out[0] == 1 and w.is_const and (
            (out[1] <= NARROW_WIDTH and cout_g >= PAIR_MIN_CHANNELS)
            or (out[1] <= PAIR_WIDTH and (cout_g == 2 * kc.LANES or cout_g % (kc.NARROW_VECS * kc.LANES) == 0))):
        method = kc.GEMM_NARROW
    h, wd = size
    q_len = 0 if in_place else (1 if method == kc.DEPTHWISE else c) * plane + qw
    tail = {kc.GEMM_WIDE: cout_g * out[0] * qw, kc.DOT: kc.LANES}.get(method, 0)
    scratch = np.zeros(q_len + tail, np.float32)
    code, p1, p2 = fused_activation(node)
    plan = kc.plan(boffs, batch=n, channels=c, height=h, width=wd, groups=groups, out_channels=c_out,
                   out_height=out[0], out_width=out[1], pad_top=begin[0], pad_left=begin[1], stride_h=strides[0],
                   stride_w=strides[1], q_height=qh, q_width=qw, plane=plane, repack=not in_place, method=method,
                   activation=code)
    bias = In(2) if b is not None and not b.is_const else aligned_copy(
        np.zeros(c_out, np.float32) if b is None else b.value.reshape(-1), np.float32)
    weights = aligned_copy(w.value, np.float32) if w.is_const else In(1)  # a writable copy: one compiled signature
    if method == kc.GEMM_NARROW:  # Wt (groups, K, Cout/groups), in W's rank
        wt = weights.reshape(groups, cout_g, -1).transpose(0, 2, 1)
        weights = aligned_copy(wt.reshape(-1, cout_g), np.float32).reshape(wt.shape + (1,) * (weights.ndim - 3))
    params = np.array([p1, p2], np.float32)
    y_shape = (n, c_out, *out[-nd:])
    rows = method in (kc.GEMM_NARROW, kc.DOT) or (method == kc.GEMM and out[0] == 1 and out[1] <= ROWS_WIDTH)
    args = (In(0), weights, bias, Out(0), scratch, plan, params)
    residual = inputs[3] if len(inputs) > 3 else None
    if residual is None:  # (a streaming step program runs a rows kernel in its own: kernels.conv.rows_call)
        return Kernel(kc.conv_kernel(plan, rows), args, [(y_shape, x.dtype)])
    require_float32("Conv residual", residual)
    if tuple(residual.shape) == y_shape:
        return Kernel(kc.conv_kernel(plan, rows, residual=True), args + (In(3),), [(y_shape, x.dtype)])
    plan[kc.FIELDS.index("activation")] = IDENTITY  # the activation follows the Add
    conv = Kernel(kc.conv_kernel(plan, rows), args, [])
    return _unfused_residual(node, conv, y_shape, residual, (code, p1, p2), opset)


def _unfused_residual(node: Node, conv: Kernel, y_shape: tuple, residual: Tensor, act: tuple, opset: int) -> Kernel:
    """The convolution into a buffer of its own, then Add (broadcasting) and the activation into the output."""
    add = build_binary(Node(f"{node.name}/add", "Add", "", ["", ""], [""]), [Tensor(y_shape, np.dtype(np.float32)),
                                                                             residual], opset)
    out_shape = add.outputs[0][0]
    conv_out = np.empty(y_shape, np.float32)
    conv_args = tuple(conv_out if type(a) is Out else a for a in conv.args)
    add_args = tuple(conv_out if type(a) is In and a == 0 else In(3) if type(a) is In else a for a in add.args)
    y_at = len(conv_args) + next(i for i, a in enumerate(add_args) if type(a) is Out)
    return Kernel(_conv_add_activate, (conv.fn, len(conv_args), add.fn, y_at, *act, *conv_args, *add_args),
                  [(out_shape, np.float32)])


def _conv_add_activate(conv, n: int, add, y_at: int, code: int, p1: float, p2: float, *args) -> None:
    """``conv(*args[:n])`` into its own buffer, ``add(*args[n:])`` into the output ``args[y_at]``, then
    the activation in place there (a Python step of three kernels)."""
    conv(*args[:n])
    add(*args[n:])
    if code != IDENTITY:
        elementwise_kernel(code)(args[y_at], args[y_at], p1, p2)
