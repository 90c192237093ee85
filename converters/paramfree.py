"""Parameter-free layers: pooling in place of spatial and depthwise convolutions (Han et al.,
"Learning Features with Parameter-Free Layers", ICLR 2022; block forms of naver-ai/PfLayer).

A depthwise 3x3 convolution mixes each channel with its 3x3 neighbourhood using 9 learned
weights per channel; the paper shows a 3x3 max-pool (stride 1, 'same' padding) does that job
with no weights and no multiplies, at a small accuracy cost recovered by training the rest of
the network around it. This module emits the paper's block forms as ONNX with seeded random
weights (for benchmarks and architecture exploration), and rewrites an existing model's
depthwise convolutions into pools:

- ``bottleneck(..., spatial="conv" | "max" | "hybrid")``: ResNet v1.5 bottleneck, 1x1 reduce
  (Conv+BN+ReLU), spatial op, 1x1 expand x4 (Conv+BN), shortcut add, ReLU. "max" is R-max (3x3
  max-pool with the block's stride, no BN after it); "hybrid" is R-max in stride-1 blocks and
  AvgPool 2 + 3x3 Conv+BN+ReLU in downsampling blocks.
- ``inverted_residual(..., spatial="dw" | "max" | "avg")``: MobileNetV2 block, 1x1 expand
  (Conv+BN+ReLU6), 3x3 depthwise Conv+BN+ReLU6 or a 3x3 pool + BN + ReLU6, 1x1 project (Conv+BN),
  shortcut add when shapes allow.
- ``spatial_op``: the 3x3 spatial op alone (depthwise Conv, MaxPool or AveragePool, + BN + ReLU6).
- ``resnet`` and ``mobilenet``: small whole networks of these blocks.
- ``replace_depthwise(model, op)``: every depthwise Conv (channel multiplier 1, kernel > 1)
  becomes a MaxPool or AveragePool with the same kernel, stride, padding and dilation (one the
  pool cannot express, dilated before the pool's opset takes dilations or padded by the kernel
  size or more, stays and is reported with the reason). The weights and any bias go (a following BatchNormalization keeps the per-channel affine); the
  result is a different function that needs retraining, which it says with a warning.

All models: opset 17 unless rewritten, float32, input ``x`` [1, C, H, W], output ``y``.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import EdgekitError
from edgekit.ir import read_graph
from edgekit.model import ModelSource, check_model, load_model, opset_version
from edgekit.stats import macs

from .naming import layer_name

OPSET = 17
POOL_OPS = {"max": "MaxPool", "avg": "AveragePool"}
Size = int | tuple[int, int]


class _Net:
    """Accumulates nodes and seeded random initializers; every method returns its output name."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def _name(self, op: str) -> str:
        return f"{op.lower()}{len(self.nodes)}"

    def _init(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        name = self._name(op)
        self.nodes.append(helper.make_node(op, inputs, [name], name, **attrs))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
             act: str | None = "relu", norm: bool = True) -> str:
        """Conv (He-initialised, no bias, 'same' padding) + BatchNormalization (unless not ``norm``) + activation."""
        w = self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / (cin // groups * k * k))
        name = self._name("Conv")
        y = self.node("Conv", [x, self._init(f"{name}.w", w)], kernel_shape=[k, k], strides=[stride, stride],
                      pads=[k // 2] * 4, group=groups)
        return self.act(self.bn(y, cout) if norm else y, act)

    def bn(self, x: str, c: int) -> str:
        """Inference BatchNormalization with plausible random statistics."""
        name = self._name("BN")
        r = self.rng
        params = [self._init(f"{name}.{p}", v) for p, v in (
            ("scale", r.uniform(0.5, 1.5, c)), ("bias", r.normal(0, 0.1, c)),
            ("mean", r.normal(0, 0.1, c)), ("var", r.uniform(0.5, 1.5, c)))]
        return self.node("BatchNormalization", [x] + params)

    def act(self, x: str, kind: str | None) -> str:
        if kind is None:
            return x
        if kind == "relu":
            return self.node("Relu", [x])
        if kind == "relu6":
            lo, hi = self._name("Clip") + ".min", self._name("Clip") + ".max"
            return self.node("Clip", [x, self._init(lo, np.array(0.0)), self._init(hi, np.array(6.0))])
        raise ValueError(f"unknown activation {kind!r}")

    def pool(self, x: str, op: str, k: int, stride: int, pad: int) -> str:
        """MaxPool or AveragePool (average over the window's real pixels, not its padding)."""
        extra = {"count_include_pad": 0} if op == "avg" else {}
        return self.node(POOL_OPS[op], [x], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, **extra)

    def model(self, x_shape: tuple[int, ...], y: str, name: str) -> onnx.ModelProto:
        """The checked, shape-inferred model from input ``x`` to ``y`` (the last node's output, renamed "y")."""
        assert self.nodes[-1].output[0] == y
        self.nodes[-1].output[0] = "y"
        graph = helper.make_graph(
            self.nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], self.inits)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgekit")
        proto.ir_version = 8
        proto = onnx.shape_inference.infer_shapes(proto)
        check_model(proto)
        return proto

    # Blocks ---------------------------------------------------------------------------------

    def bottleneck(self, x: str, cin: int, width: int, stride: int, spatial: str) -> str:
        cout = 4 * width
        h = self.conv(x, cin, width, 1)
        if spatial == "conv" or (spatial == "hybrid" and stride > 1):
            if spatial == "hybrid":
                h = self.pool(h, "avg", 2, 2, 0)
            h = self.conv(h, width, width, 3, stride if spatial == "conv" else 1)
        elif spatial in ("max", "hybrid"):
            h = self.pool(h, "max", 3, stride, 1)
        else:
            raise ValueError(f"bottleneck spatial must be 'conv', 'max' or 'hybrid', not {spatial!r}")
        h = self.conv(h, width, cout, 1, act=None)
        short = x if stride == 1 and cin == cout else self.conv(x, cin, cout, 1, stride, act=None)
        return self.node("Relu", [self.node("Add", [h, short])])

    def inverted_residual(self, x: str, cin: int, cout: int, expand: int, stride: int, spatial: str) -> str:
        hidden = cin * expand
        h = self.conv(x, cin, hidden, 1, act="relu6") if expand != 1 else x
        if spatial == "dw":
            h = self.conv(h, hidden, hidden, 3, stride, groups=hidden, act="relu6")
        elif spatial in POOL_OPS:
            h = self.act(self.bn(self.pool(h, spatial, 3, stride, 1), hidden), "relu6")
        else:
            raise ValueError(f"inverted_residual spatial must be 'dw', 'max' or 'avg', not {spatial!r}")
        h = self.conv(h, hidden, cout, 1, act=None)
        return self.node("Add", [h, x]) if stride == 1 and cin == cout else h

    def head(self, x: str, c: int, classes: int) -> str:
        flat = self.node("Flatten", [self.node("GlobalAveragePool", [x])])
        name = self._name("Gemm")
        w = self._init(f"{name}.w", self.rng.standard_normal((classes, c)) / np.sqrt(c))
        b = self._init(f"{name}.b", np.zeros(classes))
        return self.node("Gemm", [flat, w, b], transB=1)


def _hw(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def bottleneck(cin: int, width: int, size: Size, stride: int = 1, spatial: str = "max",
               seed: int = 0) -> onnx.ModelProto:
    """One ResNet bottleneck on [1, cin, H, W] -> [1, 4*width, H/stride, W/stride] (see module doc)."""
    net = _Net(seed)
    y = net.bottleneck("x", cin, width, stride, spatial)
    return net.model((1, cin, *_hw(size)), y, f"bottleneck_{spatial}")


def inverted_residual(cin: int, size: Size, cout: int | None = None, expand: int = 6, stride: int = 1,
                      spatial: str = "max", seed: int = 0) -> onnx.ModelProto:
    """One MobileNetV2 inverted residual on [1, cin, H, W] -> [1, cout, H/stride, W/stride]."""
    net = _Net(seed)
    y = net.inverted_residual("x", cin, cout or cin, expand, stride, spatial)
    return net.model((1, cin, *_hw(size)), y, f"inverted_residual_{spatial}")


def spatial_op(spatial: str, channels: int, size: Size, epilogue: bool = True, seed: int = 0) -> onnx.ModelProto:
    """The spatial op of an inverted residual alone, stride 1 'same': a 3x3 depthwise Conv ("dw") or
    a 3x3 MaxPool/AveragePool ("max"/"avg"), each followed by BN + ReLU6 unless ``epilogue`` is False
    (then the depthwise Conv has no BN either)."""
    net = _Net(seed)
    if spatial == "dw":
        y = net.conv("x", channels, channels, 3, groups=channels, act="relu6" if epilogue else None, norm=epilogue)
    elif spatial in POOL_OPS:
        y = net.pool("x", spatial, 3, 1, 1)
        y = net.act(net.bn(y, channels), "relu6") if epilogue else y
    else:
        raise ValueError(f"spatial must be 'dw', 'max' or 'avg', not {spatial!r}")
    return net.model((1, channels, *_hw(size)), y, f"spatial_{spatial}")


def resnet(spatial: str = "max", layers: tuple[int, ...] = (1, 1, 1, 1), width: int = 16, size: Size = 112,
           in_channels: int = 3, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """A ResNet of bottlenecks: a 3x3/2 stem Conv+BN+ReLU to 4*width channels, then stage i of
    ``layers[i]`` blocks of width ``width * 2**i`` (stages after the first start by downsampling), GAP, Gemm."""
    net = _Net(seed)
    c = 4 * width
    x = net.conv("x", in_channels, c, 3, 2)
    for i, n in enumerate(layers):
        for j in range(n):
            w = width * 2 ** i
            x = net.bottleneck(x, c, w, 2 if i and not j else 1, spatial)
            c = 4 * w
    return net.model((1, in_channels, *_hw(size)), net.head(x, c, classes), f"resnet_{spatial}")


MOBILENET = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 1, 1))
"""(expansion, channels, blocks, stride of the first block) per stage: MobileNetV2's first stages."""


def mobilenet(spatial: str = "max", stages: tuple = MOBILENET, size: Size = 112, in_channels: int = 3,
              classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """A MobileNetV2-style network: 3x3/2 stem (32 channels), inverted residual stages, GAP, Gemm."""
    net = _Net(seed)
    c = 32
    x = net.conv("x", in_channels, c, 3, 2, act="relu6")
    for t, cout, n, s in stages:
        for j in range(n):
            x = net.inverted_residual(x, c, cout, t, s if j == 0 else 1, spatial)
            c = cout
    return net.model((1, in_channels, *_hw(size)), net.head(x, c, classes), f"mobilenet_{spatial}")


# The rewrite ---------------------------------------------------------------------------------


@dataclass
class Rewrite:
    """The rewritten model and what changed: replaced and skipped depthwise convolutions (with the
    reason), parameter counts (float initializer elements) and Conv/Gemm/MatMul MACs at ``dims``."""

    model: onnx.ModelProto
    op: str
    replaced: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0

    def __str__(self) -> str:
        def change(a: int, b: int) -> str:
            return f"{a:,} -> {b:,} ({(b - a) / a * 100:+.1f}%)" if a else f"{a:,} -> {b:,}"

        lines = [f"depthwise convolutions replaced by {POOL_OPS[self.op]}: {len(self.replaced)}"
                 + (f" ({', '.join(self.replaced[:6])}{', ...' if len(self.replaced) > 6 else ''})"
                    if self.replaced else "")]
        lines += [f"  kept {name}: {why}" for name, why in self.skipped.items()]
        lines.append(f"parameters: {change(self.params_before, self.params_after)}")
        lines.append(f"MACs:       {change(self.macs_before, self.macs_after)}")
        lines.append("accuracy: the pools compute a different function; retrain (or fine-tune) before use"
                     if self.replaced else "accuracy: unchanged (nothing was replaced: the model is as it was)")
        return "\n".join(lines)


def _parameters(proto: onnx.ModelProto) -> int:
    return sum(a.size for a in read_graph(proto).constants.values() if a.dtype.kind == "f")


def _macs(proto: onnx.ModelProto, dims: dict[str, int] | None) -> int:
    return sum(macs(proto, dims or {}).values())


def _depthwise_reason(node: onnx.NodeProto, weights: dict[str, np.ndarray], opset: int, op: str) -> str | None:
    """None when ``node`` is a depthwise Conv this rewrite replaces, else why it is kept."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    group = int(attrs.get("group", 1))
    w = weights.get(node.input[1]) if len(node.input) > 1 else None
    if group == 1:
        return "not depthwise"
    if w is None:
        return "depthwise, but its weights are not an initializer"
    if w.shape[1] != 1:
        return f"grouped with {w.shape[1]} input channels per group, not depthwise"
    if w.shape[0] != group:
        return f"channel multiplier {w.shape[0] // group} (a pool keeps the channel count)"
    if w.ndim not in (3, 4):
        return f"{w.ndim - 2}D convolution (pools here are 1D or 2D)"
    if max(w.shape[2:]) == 1:
        return "1x1 kernel (a per-channel scale: nothing spatial to replace)"
    pads = [int(v) for v in attrs.get("pads", [])]
    if attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") and pads and \
            any(p >= k for p, k in zip(pads, list(w.shape[2:]) * 2)):
        return f"padding {pads} not below the kernel {list(w.shape[2:])} (a pool window must reach into the input)"
    since = {"max": 10, "avg": 19}[op]  # the first opset whose pool takes dilations
    if any(int(d) != 1 for d in attrs.get("dilations", [])) and opset < since:
        return f"dilated, and {POOL_OPS[op]} takes dilations only from opset {since}"
    return None


def _pool_node(conv: onnx.NodeProto, kernel: tuple[int, ...], op: str) -> onnx.NodeProto:
    keep = {"strides", "pads", "dilations", "auto_pad"}
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute if a.name in keep}
    if isinstance(attrs.get("auto_pad"), bytes):
        attrs["auto_pad"] = attrs["auto_pad"].decode()
    if all(int(d) == 1 for d in attrs.get("dilations", [1])):
        attrs.pop("dilations", None)
    if op == "avg":
        attrs["count_include_pad"] = 0
    return helper.make_node(POOL_OPS[op], [conv.input[0]], [conv.output[0]], conv.name or None,
                            kernel_shape=list(kernel), **attrs)


def replace_depthwise(model: ModelSource, op: str = "max", dims: dict[str, int] | None = None) -> Rewrite:
    """Replace every depthwise Conv of the main graph by a ``op`` ("max" or "avg") pool with the same
    window, stride, padding and dilation; drop initializers nothing reads any more.

    ``dims`` sets symbolic input dims for the MAC count (default 1). Warns (UserWarning) that the
    result needs retraining whenever something was replaced.
    """
    if op not in POOL_OPS:
        raise ValueError(f"op must be 'max' or 'avg', not {op!r}")
    proto = onnx.ModelProto()
    proto.CopyFrom(load_model(model))
    graph, opset = proto.graph, opset_version(proto)
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    result = Rewrite(proto, op, params_before=_parameters(proto), macs_before=_macs(proto, dims))
    for i, node in enumerate(graph.node):
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
            continue
        name = layer_name(node)
        why = _depthwise_reason(node, weights, opset, op)
        if why is not None:
            if why != "not depthwise":
                result.skipped[name] = why
            continue
        graph.node[i].CopyFrom(_pool_node(node, weights[node.input[1]].shape[2:], op))
        result.replaced.append(name)
    used = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    inputs = [vi for vi in graph.input if vi.name in used or vi.name not in weights]
    del graph.input[:]
    graph.input.extend(inputs)
    check_model(proto)
    result.params_after, result.macs_after = _parameters(proto), _macs(proto, dims)
    if result.replaced:
        warnings.warn(f"{len(result.replaced)} depthwise convolution(s) became {POOL_OPS[op]}: the model computes "
                      "a different function and needs retraining before its accuracy means anything", stacklevel=2)
    return result


def convert_paramfree(model_path: str, out_path: str, op: str) -> int:
    """`edgekit convert MODEL --paramfree max|avg -o OUT`: rewrite, save, print the report.

    Returns 0 when the model was written, 1 when it cannot be read or has no depthwise convolution.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:  # printed as a line of the CLI, not a Python warning
            warnings.simplefilter("always")
            result = replace_depthwise(model_path, op)
    except EdgekitError as exc:
        print(f"edgekit convert: {exc}", file=sys.stderr)
        return 1
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(result)
    if not result.replaced:
        print(f"edgekit convert: {model_path} has no depthwise convolution to replace; nothing written",
              file=sys.stderr)
        return 1
    onnx.save(result.model, out_path)
    print(f"written: {out_path}")
    return 0


__all__ = ["bottleneck", "inverted_residual", "spatial_op", "resnet", "mobilenet", "replace_depthwise", "convert_paramfree",
           "Rewrite", "MOBILENET"]
