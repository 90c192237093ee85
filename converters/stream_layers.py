"""Per-layer rules of the streaming conversion: the geometry each op gives its output stream and
the step-model nodes that compute one hop of it.

A stream tensor X of the feature extractor has a cumulative stride P (input samples per column)
and, at every step, a block of n = hop / P new columns. Its ``lag`` o says which columns: the
block of step h (0-based) holds columns [h*n - o, (h+1)*n - o) of the whole-stream feature map,
so o is how far the block trails the newest sample (look-ahead of 'same' padding, the start of
a valid convolution). A windowed layer (Conv, MaxPool, AveragePool: kernel k, dilation d,
stride s, span (k-1)d+1, left padding p) emits every column it can compute from its input,
which gives its output lag ceil((o + span - p) / s) - 1 and needs the last
``keep = o_out*s + p - o`` input columns of the previous step (a shift buffer) in front of
the new block. Padding is applied once, at the start of the stream: shift buffers start at the
padding value, and columns of a block that precede the stream start are masked to it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx import helper

from edgekit.errors import ModelError

from .naming import layer_name
from .stream_graph import TIME, StepGraph, check_ts_shape


@dataclass
class Geo:
    """A stream tensor: step-model name of its block, stride P, lag o, window width W, channels, dtype."""

    name: str
    stride: int
    lag: int
    width: int
    channels: int
    dtype: np.dtype
    edges: tuple[int, int] = (0, 0)  # window columns at the left/right edge that depend on zero padding


@dataclass
class LayerInfo:
    """What one layer of the feature extractor does per hop (for reports)."""

    name: str
    op: str
    stride: int
    cols_per_hop: int
    window_cols: int
    lag: int
    state_cols: int = 0
    pads: tuple[int, int] = (0, 0)
    macs_window: int = 0
    macs_hop: int = 0


@dataclass
class Stream:
    """Conversion context: the step graph under construction and what is known of every tensor."""

    g: StepGraph
    hop: int
    opset: int
    shapes: dict[str, tuple | None]
    dtypes: dict[str, np.dtype]
    consts: dict[str, np.ndarray]
    consumers: dict[str, list[onnx.NodeProto]]
    block_names: dict[str, str]
    geo: dict[str, Geo] = field(default_factory=dict)
    extra_pads: dict[str, tuple[int, int]] = field(default_factory=dict)  # 1st output of a layer -> Pad folded in
    layers: list[LayerInfo] = field(default_factory=list)

    def ts(self, node: onnx.NodeProto, name: str) -> Geo:
        if name not in self.geo:
            raise ModelError(f"layer {layer_name(node)!r} ({node.op_type}): input {name!r} must be a stream "
                             f"tensor of the feature extractor")
        return self.geo[name]

    def const(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray | None:
        if index >= len(node.input) or not node.input[index]:
            return None
        value = self.consts.get(node.input[index])
        if value is None:
            raise ModelError(f"layer {layer_name(node)!r} ({node.op_type}): its {what} must be a constant to stream")
        return value

    def out(self, node: onnx.NodeProto, index: int, stride: int, lag: int, edges: tuple[int, int]) -> Geo:
        """Register output ``index`` of ``node`` as a stream tensor."""
        name = node.output[index]
        channels, width = check_ts_shape(name, self.shapes.get(name), layer_name(node))
        geo = Geo(self.block_names.get(name, name), stride, lag, width, channels, self.dtypes[name],
                  (min(edges[0], width), min(edges[1], width)))
        self.geo[name] = geo
        return geo

    def align(self, node: onnx.NodeProto, names: list[str]) -> tuple[list[str], Geo]:
        """Block names of the stream inputs ``names``, delayed to the largest lag among them."""
        geos = [self.ts(node, x) for x in names]
        first = geos[0]
        for x, g in zip(names, geos):
            if g.stride != first.stride or g.width != first.width:
                raise ModelError(
                    f"layer {layer_name(node)!r} ({node.op_type}): its inputs are not aligned branches: "
                    f"{names[0]!r} has stride {first.stride} and {first.width} columns per window, {x!r} stride "
                    f"{g.stride} and {g.width}; both branches must downsample and crop alike")
        lag = max(g.lag for g in geos)
        n = self.hop // first.stride
        blocks = [g.name if g.lag == lag
                  else self.g.delay(g.name, n, lag - g.lag, g.channels, g.dtype, layer_name(node)) for g in geos]
        edges = (max(g.edges[0] for g in geos), max(g.edges[1] for g in geos))
        return blocks, Geo("", first.stride, lag, first.width, first.channels, first.dtype, edges)

    def info(self, node: onnx.NodeProto, geo: Geo, **kw) -> None:
        self.layers.append(LayerInfo(layer_name(node), node.op_type, geo.stride, self.hop // geo.stride, geo.width,
                                     geo.lag, **kw))


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _copy(ctx: Stream, node: onnx.NodeProto, inputs: list[str], drop: tuple[str, ...] = (), **extra) -> None:
    """Emit ``node`` with new inputs, its outputs renamed to their block names."""
    kept = {k: v for k, v in attrs(node).items() if k not in drop}
    kept.update(extra)
    outs = [ctx.block_names.get(o, o) if o else "" for o in node.output]
    n = helper.make_node(node.op_type, inputs, outs, name=node.name, domain=node.domain or None, **kept)
    ctx.g.add(n)


def _static_has_no_time_extent(ctx: Stream, node: onnx.NodeProto, name: str) -> None:
    shape = ctx.shapes.get(name)
    if shape is None or len(shape) > 3 or (len(shape) >= 1 and shape[-1] != 1):
        raise ModelError(f"layer {layer_name(node)!r} ({node.op_type}): constant input {name!r} of shape {shape} "
                         f"varies along time, which breaks shift invariance; only per-channel constants stream")


# --- windowed layers -------------------------------------------------------------------------

def _pads(node: onnx.NodeProto, a: dict, width: int, stride: int, span: int) -> tuple[int, int]:
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        total = max((-(-width // stride) - 1) * stride + span - width, 0)
        small, big = total // 2, total - total // 2
        return (small, big) if auto == "SAME_UPPER" else (big, small)
    if auto == "VALID":
        return 0, 0
    pads = list(a.get("pads") or [0, 0])
    if len(pads) != 2:
        raise ModelError(f"layer {layer_name(node)!r} ({node.op_type}): pads {pads} are not those of a 1-D layer")
    return int(pads[0]), int(pads[1])


def windowed(ctx: Stream, node: onnx.NodeProto) -> None:
    """Conv / MaxPool / AveragePool over time: a shift buffer of past inputs, then the layer unpadded."""
    op, a, x, name = node.op_type, attrs(node), node.input[0], layer_name(node)
    src = ctx.ts(node, x)
    macs = 0
    if op == "Conv":
        w = ctx.const(node, 1, "weight")
        ctx.const(node, 2, "bias")
        if w.ndim != 3:
            raise ModelError(f"layer {name!r} (Conv): only 1-D convolutions stream, its weight has "
                             f"rank {w.ndim}")
        k = int(w.shape[2])
        macs = int(w.shape[0] * w.shape[1] * k)
    else:
        ks = list(a.get("kernel_shape") or [])
        if len(ks) != 1:
            raise ModelError(f"layer {name!r} ({op}): only 1-D pooling streams, kernel_shape is {ks}")
        k = int(ks[0])
        macs = src.channels * k
        if len(node.output) > 1 and node.output[1]:
            raise ModelError(f"layer {name!r} (MaxPool): its Indices output holds absolute "
                             f"positions in the window and cannot stream")
    s = int((a.get("strides") or [1])[0])
    d = int((a.get("dilations") or [1])[0])
    span = (k - 1) * d + 1
    width_in = check_ts_shape(x, ctx.shapes.get(x), name)[1]
    pl, pr = _pads(node, a, width_in, s, span)
    width_out = check_ts_shape(node.output[0], ctx.shapes.get(node.output[0]), name)[1]
    if op != "Conv" and a.get("ceil_mode") and (width_out - 1) * s >= width_in + pl:
        raise ModelError(f"layer {name!r} ({op}): with ceil_mode its last window starts in the right padding; "
                         f"onnx shape inference counts that column ({width_out}), the ONNX spec and runtimes drop it, "
                         f"so the window model's width is ambiguous; use a window, padding or stride without it")
    if op == "AveragePool" and (pl or pr) and not a.get("count_include_pad", 0):
        raise ModelError(f"layer {name!r} (AveragePool): padding with count_include_pad=0 divides "
                         f"the first outputs of a stream by fewer samples; export with count_include_pad=1 or no "
                         f"padding")
    extra = ctx.extra_pads.get(node.output[0], (0, 0))
    pl, pr = pl + extra[0], pr + extra[1]
    n_in = ctx.hop // src.stride
    if n_in % s:
        raise ModelError(
            f"layer {name!r} ({op}): the hop of {ctx.hop} samples is not a multiple of the cumulative "
            f"stride {src.stride * s} (= {src.stride} before this layer x stride {s}); choose a hop that is a multiple "
            f"of {src.stride * s}, or pass split={x!r} to run this layer and the rest in the head")
    if pl >= span:
        raise ModelError(f"layer {name!r} ({op}): left padding {pl} is not smaller than the kernel "
                         f"span {span}, so the first outputs would see padding only")
    lag = -(-(src.lag + span - pl) // s) - 1
    keep = lag * s + pl - src.lag
    fill = -np.inf if op == "MaxPool" else 0.0
    block = src.name
    if pl > 0 and src.lag > 0:
        block = ctx.g.mask(block, n_in, src.lag, fill, src.dtype, name)
    if keep > 0:
        block = ctx.g.shift(block, n_in, keep, src.channels, src.dtype, fill, name, "shift")
    elif keep < 0:
        block = ctx.g.slice_time(block, -keep, n_in)
    _copy(ctx, node, [block] + list(node.input[1:]), drop=("pads", "auto_pad", "ceil_mode", "count_include_pad"))
    left = -(-(src.edges[0] + pl) // s)
    right = width_out - 1 - (src.width - src.edges[1] - span + pl) // s
    geo = ctx.out(node, 0, src.stride * s, lag, (left, max(right, 0)))
    ctx.info(node, geo, state_cols=max(keep, 0), pads=(pl, pr),
             macs_window=macs * geo.width, macs_hop=macs * (ctx.hop // geo.stride))


def pad(ctx: Stream, node: onnx.NodeProto) -> None:
    """Pad along time in front of a single Conv/pool: folded into that layer's padding."""
    a, x = attrs(node), node.input[0]
    src = ctx.ts(node, x)
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if ctx.opset >= 11:
        pads = ctx.const(node, 1, "pads")
        value = ctx.const(node, 2, "constant_value")
        axes = ctx.const(node, 3, "axes")
    else:
        pads, value, axes = np.array(a.get("pads", [])), a.get("value", 0.0), None
    value = 0.0 if value is None else float(np.asarray(value).reshape(-1)[0])
    axes = list(range(3)) if axes is None else [int(v) % 3 for v in np.asarray(axes).reshape(-1)]
    pads = [int(v) for v in np.asarray(pads).reshape(-1)]
    begin = dict(zip(axes, pads[:len(axes)]))
    end = dict(zip(axes, pads[len(axes):]))
    users = ctx.consumers.get(node.output[0], [])
    user = users[0] if len(users) == 1 else None
    foldable = user is not None and user.input[0] == node.output[0] and (
        (user.op_type in ("Conv", "AveragePool") and value == 0.0)
        or (user.op_type == "MaxPool" and value == -np.inf))
    if (mode != "constant" or any(begin.get(i, 0) or end.get(i, 0) for i in (0, 1)) or not foldable
            or node.output[0] in ctx.block_names):
        raise ModelError(f"layer {layer_name(node)!r} (Pad): padding along time streams only as zero padding directly "
                         f"in front of one Conv/AveragePool (or -inf in front of a MaxPool)")
    prev = ctx.extra_pads.get(user.output[0], (0, 0))
    ctx.extra_pads[user.output[0]] = (prev[0] + begin.get(TIME, 0), prev[1] + end.get(TIME, 0))
    ctx.geo[node.output[0]] = src


# --- column-local layers ---------------------------------------------------------------------

def elementwise(ctx: Stream, node: onnx.NodeProto) -> None:
    """Ops acting on each column alone: stream inputs are aligned, constants must be per-channel."""
    stream_inputs = [x for x in node.input if x in ctx.geo]
    for x in node.input:
        if x and x not in ctx.geo:
            _static_has_no_time_extent(ctx, node, x)
    blocks, src = ctx.align(node, stream_inputs)
    mapping = dict(zip(stream_inputs, blocks))
    _copy(ctx, node, [mapping.get(x, x) for x in node.input])
    for i, o in enumerate(node.output):
        if o:
            geo = ctx.out(node, i, src.stride, src.lag, src.edges)
    ctx.info(node, geo)


def unary(ctx: Stream, node: onnx.NodeProto) -> None:
    """Activations and other per-value ops: one stream input, constant parameters."""
    src = ctx.ts(node, node.input[0])
    if any(x in ctx.geo for x in node.input[1:]):
        raise ModelError(f"layer {layer_name(node)!r} ({node.op_type}): only its first input may be a stream tensor")
    if node.op_type in ("Dropout", "BatchNormalization") and any(node.output[1:]):
        raise ModelError(f"layer {layer_name(node)!r} ({node.op_type}): only the first output streams (inference mode)")
    if node.op_type == "BatchNormalization" and attrs(node).get("training_mode", 0):
        raise ModelError(f"layer {layer_name(node)!r} (BatchNormalization): training_mode=1 does not stream")
    _copy(ctx, node, [src.name] + list(node.input[1:]))
    ctx.info(node, ctx.out(node, 0, src.stride, src.lag, src.edges))


def channel_axis_op(ctx: Stream, node: onnx.NodeProto) -> None:
    """Concat / Split / Softmax-like / Reduce ops along channels only."""
    axes = channel_axes(ctx, node)
    if axes is None or axes != [1]:
        raise ModelError(f"layer {layer_name(node)!r} ({node.op_type}): only its channel-axis form streams "
                         f"(axes {axes})")
    if node.op_type == "Concat":
        elementwise(ctx, node)
        return
    src = ctx.ts(node, node.input[0])
    _copy(ctx, node, [src.name] + list(node.input[1:]))
    for i, o in enumerate(node.output):
        if o:
            geo = ctx.out(node, i, src.stride, src.lag, src.edges)
    ctx.info(node, geo)


def channel_axes(ctx: Stream, node: onnx.NodeProto) -> list[int] | None:
    """Axes an axis-taking op works on (normalised for rank 3), None when it works on all of them."""
    a, op = attrs(node), node.op_type
    if op in ("Softmax", "LogSoftmax", "Hardmax"):
        if ctx.opset < 13:
            return None  # flattens (N, C*L) or (N*C, L): mixes time
        return [int(a.get("axis", -1)) % 3]
    if op in ("Concat", "Split"):
        return [int(a.get("axis", 0)) % 3]
    if op.startswith("Reduce"):
        if not a.get("keepdims", 1):
            return None
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = ctx.consts.get(node.input[1])
            if axes is None:
                return None
        if axes is None or len(np.asarray(axes).reshape(-1)) == 0:
            return None
        return sorted({int(v) % 3 for v in np.asarray(axes).reshape(-1)})
    return None


def slice_(ctx: Stream, node: onnx.NodeProto) -> None:
    """Slice: a crop along time is a change of column index; slices along channels are copied."""
    src = ctx.ts(node, node.input[0])
    if ctx.opset >= 10:
        starts, ends = ctx.const(node, 1, "starts"), ctx.const(node, 2, "ends")
        axes, steps = ctx.const(node, 3, "axes"), ctx.const(node, 4, "steps")
    else:
        a = attrs(node)
        starts, ends, axes, steps = a.get("starts"), a.get("ends"), a.get("axes"), None
    starts = [int(v) for v in np.asarray(starts).reshape(-1)]
    ends = [int(v) for v in np.asarray(ends).reshape(-1)]
    axes = list(range(len(starts))) if axes is None else [int(v) % 3 for v in np.asarray(axes).reshape(-1)]
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.asarray(steps).reshape(-1)]
    if TIME not in axes:
        _copy(ctx, node, [src.name] + list(node.input[1:]))
        ctx.info(node, ctx.out(node, 0, src.stride, src.lag, src.edges))
        return
    if axes != [TIME] or steps != [1]:
        raise ModelError(f"layer {layer_name(node)!r} (Slice): only a crop along time alone (step 1) streams; "
                         f"slice channels in a separate Slice")
    crop = slice(starts[0], ends[0]).indices(src.width)[0]
    ctx.block_names[node.output[0]] = src.name
    width_out = check_ts_shape(node.output[0], ctx.shapes.get(node.output[0]), layer_name(node))[1]
    edges = (max(src.edges[0] - crop, 0), max(src.edges[1] - (src.width - crop - width_out), 0))
    ctx.info(node, ctx.out(node, 0, src.stride, src.lag + crop, edges))


UNARY = (
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softplus",
    "Softsign", "Gelu", "Mish", "ThresholdedRelu", "Clip", "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Erf",
    "Sin", "Cos", "Floor", "Ceil", "Round", "Sign", "Identity", "Dropout", "Cast", "BatchNormalization", "Shrink",
    "Not", "IsNaN", "IsInf",
)
NARY = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Mod", "Equal", "Greater",
        "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor")
CHANNEL_AXIS = ("Concat", "Split", "Softmax", "LogSoftmax", "Hardmax", "ReduceMean", "ReduceMax", "ReduceMin",
                "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceSumSquare")

RULES: dict[str, Callable[[Stream, onnx.NodeProto], None]] = {
    "Conv": windowed, "MaxPool": windowed, "AveragePool": windowed, "Pad": pad, "Slice": slice_,
    **{op: unary for op in UNARY if op != "PRelu"}, **{op: elementwise for op in NARY + ("PRelu",)},
    **{op: channel_axis_op for op in CHANNEL_AXIS},
}

# Ops that mix the whole time axis: with no split given, the head starts at the first of them.
MIXERS = {
    "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Flatten", "Reshape", "Shape", "Size", "Gemm", "MatMul",
    "Transpose", "Squeeze", "Unsqueeze", "LSTM", "GRU", "RNN", "Einsum", "InstanceNormalization",
    "LayerNormalization", "GroupNormalization", "LpNormalization", "MeanVarianceNormalization", "ArgMax", "ArgMin",
    "TopK", "CumSum", "Gather", "GatherElements", "Expand", "Tile", "Resize", "Upsample", "DFT", "STFT",
    "Attention", "MultiHeadAttention",
}


def mixes_time(ctx: Stream, node: onnx.NodeProto) -> bool:
    """True when ``node`` reads all columns of a window at once (where an automatic split goes)."""
    if node.op_type in MIXERS:
        return True
    if node.op_type in ("MaxPool", "AveragePool", "LpPool"):  # global pooling written as a pool over the whole input
        a, shape, out = attrs(node), ctx.shapes.get(node.input[0]), ctx.shapes.get(node.output[0])
        ks = list(a.get("kernel_shape") or [])
        if (len(ks) == 1 and shape and out and len(shape) == len(out) == 3 and out[2] == 1
                and isinstance(shape[2], int) and 1 < shape[2] <= (ks[0] - 1) * (a.get("dilations") or [1])[0] + 1):
            return True
    if node.op_type in CHANNEL_AXIS:
        axes = channel_axes(ctx, node)
        return axes is None or TIME in axes or 0 in axes
    return False
