"""Binarize: float ONNX binary networks -> ``ai.edgekit`` BinaryConv / BinaryGemm on packed bits.

A Conv, Gemm or MatMul is binary when its activation passes through Sign, QONNX BipolarQuant
or Where(x >= 0, 1, -1) (also Where(x < 0, -1, 1)) and its weights are constant +-alpha per
output channel (XNOR-Net style, Rastegari et al., ECCV 2016; bit-packed inference as in Larq
Compute Engine, Bannink et al., MLSys 2021). The layer's integer sum dot (+-1 products) then
determines everything after it:

  * a following bias, BatchNormalization and binarizer fold into one integer threshold per
    channel, +1 iff dot >= T (channels where the slope is negative get their weights flipped);
    when every consumer is another binary layer the output is packed bits, else +-1 floats;
  * without a binarizer the output is scale * dot + bias (alpha, activation scale, bias and
    BatchNormalization folded).

Zero padding is exact (the runtime corrects each border pixel for its outside taps). Ties:
ONNX Sign maps 0 to 0 while a bit is +-1; an input exactly 0 becomes +1 (as BipolarQuant does),
and a converter warning names layers whose folded threshold lands exactly on a reachable
pre-activation of a Sign. A layer that looks binary but whose weights are not +-alpha stays float
with a BinarizeWarning naming it. ``to_float`` exports a converted model back to standard ops
(+-1 Conv/Gemm, Where thresholds) so onnxruntime can check it. Schema: docs/ops.md.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.errors import ModelError
from edgekit.model import ModelSource, check_model, load_model

from .naming import layer_name

__all__ = ["BinarizeWarning", "DOMAIN", "binarize", "dense_weights", "pack_bits", "to_float",
           "unpack_bits"]

DOMAIN = "ai.edgekit"
BINARY_OPS = ("BinaryConv", "BinaryGemm")
QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general")


class BinarizeWarning(UserWarning):
    """A layer that looks binary was left in float (the message names it and says why)."""


def pack_bits(negative: np.ndarray) -> np.ndarray:
    """Pack booleans (True = -1) along the last axis into uint64 words, bit i of word i // 64."""
    c = negative.shape[-1]
    wd = (c + 63) // 64
    bits = np.zeros(negative.shape[:-1] + (wd * 64,), np.uint64)
    bits[..., :c] = negative
    return (bits.reshape(negative.shape[:-1] + (wd, 64)) << np.arange(64, dtype=np.uint64)).sum(-1, dtype=np.uint64)


def unpack_bits(words: np.ndarray, channels: int) -> np.ndarray:
    """Inverse of ``pack_bits``: booleans (..., channels), True where the bit is set (-1)."""
    bits = (words[..., None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    return bits.reshape(words.shape[:-1] + (-1,))[..., :channels].astype(bool)


# --- graph access ---------------------------------------------------------------------------------

class _Graph:
    """Producers, consumers, constants and inferred shapes of a ModelProto's main graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        g = model.graph
        self.nodes = list(g.node)
        self.consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for n in self.nodes:
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in g.output}
        try:
            inferred = onnx.shape_inference.infer_shapes(model).graph
        except Exception:
            inferred = g
        self.shapes: dict[str, tuple] = {}  # dims: int, or the symbolic name (str) / None when unknown
        for vi in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                self.shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                             for d in t.shape.dim)

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _scalar(value: np.ndarray | None) -> float | None:
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


@dataclass
class _Binarizer:
    """A node mapping x to +-1 (times ``scale``): its float input and the nodes it consists of."""

    x: str
    out: str
    scale: float
    kind: str
    nodes: list


def _binarizer(node: onnx.NodeProto | None, g: _Graph) -> _Binarizer | None:
    """Recognise Sign, BipolarQuant(x, s) and Where(x >= 0, 1, -1) / Where(x < 0, -1, 1)."""
    if node is None:
        return None
    if node.op_type == "Sign" and node.domain in ("", "ai.onnx"):
        return _Binarizer(node.input[0], node.output[0], 1.0, "Sign", [node])
    if node.op_type == "BipolarQuant" and node.domain in QONNX_DOMAINS:
        s = _scalar(g.const(node.input[1])) if len(node.input) > 1 else None
        if s is not None and s > 0:
            return _Binarizer(node.input[0], node.output[0], s, "BipolarQuant", [node])
        return None
    if node.op_type == "Where" and node.domain in ("", "ai.onnx"):
        cond = g.producer.get(node.input[0])
        hi, lo = _scalar(g.const(node.input[1])), _scalar(g.const(node.input[2]))
        if cond is None or cond.op_type not in ("GreaterOrEqual", "Less") or _scalar(g.const(cond.input[1])) != 0.0:
            return None
        if cond.op_type == "Less":
            hi, lo = lo, hi
        if hi is None or lo is None or hi <= 0 or lo != -hi or g.only_consumer(cond.output[0]) is not node:
            return None
        return _Binarizer(cond.input[0], node.output[0], hi, "Where", [cond, node])
    return None


# --- layer analysis -------------------------------------------------------------------------------

@dataclass
class _Layer:
    """One binary Conv/Gemm/MatMul and what folds into it."""

    node: onnx.NodeProto
    kind: str                      # "conv" or "gemm"
    act: _Binarizer
    x: str                         # tensor the layer binarizes (or reads packed)
    flatten: onnx.NodeProto | None  # Flatten/Reshape between the binarizer and a gemm
    signs: np.ndarray              # +-1 weights, (M, C, KH, KW) or (M, K)
    alpha: np.ndarray              # (M,) weight magnitudes (times Gemm alpha)
    bias: np.ndarray               # (M,)
    bn: tuple | None               # (gamma, beta, mean, var, eps)
    out: _Binarizer | None
    y: str                         # the tensor the converted layer produces
    absorbed: list = field(default_factory=list)
    mode: str = "float"
    packed_in: bool = False
    attrs: dict = field(default_factory=dict)


def _weights(node: onnx.NodeProto, g: _Graph) -> np.ndarray | None:
    """The constant weight tensor of a layer, also through Sign/BipolarQuant of a constant."""
    w = g.const(node.input[1])
    if w is None:
        b = _binarizer(g.producer.get(node.input[1]), g)
        if b is not None and g.const(b.x) is not None:
            latent = g.const(b.x).astype(np.float64)
            w = np.where(latent < 0, -b.scale, b.scale) if b.kind != "Sign" else np.sign(latent)
    return w


def _plus_minus_alpha(w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(signs, alpha) when every row of ``w`` (output channel first) is +-alpha_row, alpha_row > 0."""
    rows = w.reshape(w.shape[0], -1).astype(np.float64)
    alpha = np.abs(rows[:, 0])
    if np.any(alpha == 0) or np.any(np.abs(rows) != alpha[:, None]):
        return None
    return np.sign(w).astype(np.int8), alpha


def _analyse(node: onnx.NodeProto, g: _Graph) -> tuple[_Layer | None, str | None]:
    """(layer, None) for a binary layer, (None, reason) when it looks binary but is not, (None, None)."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("Conv", "Gemm", "MatMul"):
        return None, None
    src = g.producer.get(node.input[0])
    flatten = None
    if node.op_type != "Conv" and src is not None and _is_flatten(src, g):
        flatten, src = src, g.producer.get(src.input[0])
    act = _binarizer(src, g)
    if act is None:
        return None, None
    a = _attrs(node)
    w = _weights(node, g)
    if w is None:
        return None, "its weights are not constant"
    if node.op_type == "Conv":
        if w.ndim != 4 or a.get("group", 1) != 1:
            return None, "only 2-D convolutions with group 1 are binarized"
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
            return None, "auto_pad SAME_* is not binarized (give explicit pads)"
        rows, gemm_alpha, bias = w, 1.0, g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if len(node.input) > 2 and node.input[2] and bias is None:
            return None, "its bias is not constant"
        kind = "conv"
    else:
        rank = len(g.shapes.get(node.input[0], (0, 0)))  # (unknown: taken as 2-D, as a Gemm's input is)
        if a.get("transA", 0) or w.ndim != 2 or rank != 2:
            return None, "only 2-D products with constant right-hand weights are binarized"
        rows = w if a.get("transB", 0) else w.T
        gemm_alpha = float(a.get("alpha", 1.0))
        bias = None
        if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
            c = g.const(node.input[2])
            if c is None or c.size not in (1, rows.shape[0]):
                return None, "its bias C is not a constant per output"
            bias = np.broadcast_to(c.reshape(-1), (rows.shape[0],)) * float(a.get("beta", 1.0))
        kind = "gemm"
    pm = _plus_minus_alpha(rows)
    if pm is None or gemm_alpha <= 0:
        return None, "its weights are not +-alpha per output channel"
    signs, alpha = pm
    m = rows.shape[0]
    bias = np.zeros(m) if bias is None else np.asarray(bias, np.float64).reshape(-1)
    x = act.x if flatten is None else flatten.output[0]
    layer = _Layer(node, kind, act, x, flatten, signs, alpha * gemm_alpha, bias, None, None, node.output[0], attrs=a)
    _follow(layer, g)
    return layer, None


def _is_flatten(node: onnx.NodeProto, g: _Graph) -> bool:
    if node.op_type == "Flatten":
        return _attrs(node).get("axis", 1) == 1
    if node.op_type == "Reshape":
        shape = g.const(node.input[1])
        return shape is not None and shape.size == 2 and shape[1] == -1 and shape[0] in (0, 1, -1)
    return False


def _follow(layer: _Layer, g: _Graph) -> None:
    """Absorb a following per-channel Add, BatchNormalization and binarizer into the layer."""
    y = layer.node.output[0]
    m = layer.signs.shape[0]
    nxt = g.only_consumer(y)
    if nxt is not None and nxt.op_type == "Add" and layer.bn is None:
        other = nxt.input[1] if nxt.input[0] == y else nxt.input[0]
        c = g.const(other)
        per_channel = c is not None and (c.size == m and (c.ndim <= 1 or (layer.kind == "conv" and c.shape[-2:] == (1, 1))
                                                         or (layer.kind == "gemm" and c.shape[-1] == m)))
        if per_channel:
            layer.bias = layer.bias + c.reshape(-1).astype(np.float64)
            layer.absorbed.append(nxt)
            y, nxt = nxt.output[0], g.only_consumer(nxt.output[0])
    if nxt is not None and nxt.op_type == "BatchNormalization" and nxt.input[0] == y:
        params = [g.const(i) for i in nxt.input[1:5]]
        if all(p is not None and p.size == m for p in params) and not _attrs(nxt).get("training_mode", 0) \
                and (len(nxt.output) == 1 or not any(nxt.output[1:])):
            gamma, beta, mean, var = (p.reshape(-1).astype(np.float64) for p in params)
            layer.bn = (gamma, beta, mean, var, float(_attrs(nxt).get("epsilon", 1e-5)))
            layer.absorbed.append(nxt)
            y, nxt = nxt.output[0], g.only_consumer(nxt.output[0])
    if nxt is not None and nxt.op_type in ("GreaterOrEqual", "Less"):  # the condition of a Where form
        nxt = g.only_consumer(nxt.output[0])
    out = _binarizer(nxt, g)
    if out is not None and out.x == y:
        layer.out = out
        layer.absorbed.extend(out.nodes)
        y = out.out
    layer.y = y


def _affine(layer: _Layer) -> tuple[np.ndarray, np.ndarray]:
    """Slope and offset (float64, per channel) of the layer's output before any binarizer, in dot."""
    slope = layer.alpha * layer.act.scale
    offset = layer.bias.copy()
    if layer.bn is not None:
        gamma, beta, mean, var, eps = layer.bn
        k = gamma / np.sqrt(var + eps)
        slope, offset = slope * k, (offset - mean) * k + beta
    return slope, offset


def _thresholds(layer: _Layer, fan_in: int, parity: set[int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Per channel (T, flip, ties): after flipping, output +1 iff dot >= T; ties lists Sign channels
    whose pre-activation can be exactly 0."""
    slope, offset = _affine(layer)
    m = slope.size
    t = np.empty(m, np.int64)
    flip = slope < 0
    ties = []
    big = fan_in + 1
    for c in range(m):
        s, o = slope[c], offset[c]
        if s == 0:
            t[c] = -big if o >= 0 else big
            continue
        f = (lambda d: s * d + o) if s > 0 else (lambda d: o - s * d)  # the flipped channel sees -dot
        cand = math.ceil(-o / s) if s > 0 else math.ceil(o / s)
        cand = min(max(cand, -big), big)
        while cand > -big and f(cand - 1) >= 0:
            cand -= 1
        while cand < big and f(cand) < 0:
            cand += 1
        t[c] = cand
        if f(cand) == 0 and cand % 2 in parity and abs(cand) <= fan_in:
            ties.append(c)
    return t, flip, ties


# --- conversion -----------------------------------------------------------------------------------

def binarize(model: ModelSource) -> onnx.ModelProto:
    """Replace every binary Conv/Gemm/MatMul of ``model`` by BinaryConv/BinaryGemm (module docstring).

    Warns (BinarizeWarning) for layers that look binary but stay float, and for Sign ties.
    """
    proto = load_model(model)
    g = _Graph(proto)
    layers: list[_Layer] = []
    for node in g.nodes:
        layer, reason = _analyse(node, g)
        if reason:
            warnings.warn(BinarizeWarning(f"node {layer_name(node)!r} ({node.op_type}) looks binary but stays float: "
                                          f"{reason}"), stacklevel=2)
        if layer is not None:
            layers.append(layer)
    for layer in layers:
        layer.mode = "float" if layer.out is None else ("packed" if _packable(layer, layers, g) else "sign")
    for layer in layers:  # a consumer of a converted producer reads its bits, or its +-1 output
        prod = next((p for p in layers if p.out is not None and p.out.out == layer.act.out), None)
        if prod is not None and prod.mode == "packed":
            layer.x, layer.packed_in = prod.y, True
        elif prod is not None and layer.flatten is None:
            layer.x = prod.y
    return _rewrite(proto, g, layers)


def _packable(layer: _Layer, layers: list[_Layer], g: _Graph) -> bool:
    """True when every reader of the layer's +-1 output is a binary layer (directly or via a flatten)."""
    name = layer.out.out
    readers = g.consumers.get(name, [])
    if name in g.outputs or not readers:
        return False
    shape = g.shapes.get(name, ())
    chw_known = layer.kind == "gemm" or (len(shape) == 4 and all(isinstance(d, int) for d in shape[1:]))
    for r in readers:
        direct = any(l.node is r and l.flatten is None for l in layers)
        flat = chw_known and any(l.flatten is r for l in layers) and len(g.consumers.get(r.output[0], [])) == 1 \
            and r.output[0] not in g.outputs
        if not (direct or flat):
            return False
    return True


def _rewrite(proto: onnx.ModelProto, g: _Graph, layers: list[_Layer]) -> onnx.ModelProto:
    """Swap in the binary nodes, drop absorbed nodes and then every node nothing reads any more."""
    replaced = {id(l.node): l for l in layers}
    absorbed = {id(n) for l in layers for n in l.absorbed}
    nodes, inits, infos = [], [], []
    for n in g.nodes:
        if id(n) in replaced:
            new, tensors, info = _binary_node(replaced[id(n)], g)
            nodes.extend(new)
            inits.extend(tensors)
            infos.extend(info)
        elif id(n) not in absorbed:
            nodes.append(n)
    needed = {o.name for o in proto.graph.output}
    live = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            live.append(n)
            needed.update(n.input)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    del out.graph.node[:]
    out.graph.node.extend(reversed(live))
    out.graph.initializer.extend(inits)
    known = {v.name for v in out.graph.value_info} | {o.name for o in out.graph.output}
    out.graph.value_info.extend(v for v in infos if v.name not in known)
    _prune_initializers(out)
    if not any(o.domain == DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    check_model(out)
    return out


def _prune_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _binary_node(l: _Layer, g: _Graph):
    """The BinaryConv/BinaryGemm node of a layer (and a Mul to +-scale after a 'sign' output of a scaled
    binarizer), its initializers and the value_info of its output."""
    name = layer_name(l.node)
    m = l.signs.shape[0]
    signs = l.signs.astype(np.int64)
    attrs: dict = {"output": l.mode}
    inputs = [l.x, f"{name}::w"]
    tensors = []
    if l.kind == "conv":
        _, c, kh, kw = signs.shape
        pads = [int(p) for p in l.attrs.get("pads", [0, 0, 0, 0])]
        # a padded 0 is reachable: sums over 0..kh*kw taps; without padding only the full fan-in
        parity = {c * kh * kw % 2} if not any(pads) else ({0, 1} if c % 2 else {0})
        fan_in = c * kh * kw
    else:
        c = fan_in = signs.shape[1]
        parity = {c % 2}
    if l.mode == "float":
        slope, offset = _affine(l)
        tensors += [numpy_helper.from_array(slope.astype(np.float32), f"{name}::scale"),
                    numpy_helper.from_array(offset.astype(np.float32), f"{name}::bias")]
        inputs += ["", f"{name}::scale", f"{name}::bias"]
    else:
        t, flip, ties = _thresholds(l, fan_in, parity)
        signs = np.where(flip.reshape((-1,) + (1,) * (signs.ndim - 1)), -signs, signs)
        if ties and l.out.kind == "Sign":
            warnings.warn(BinarizeWarning(
                f"node {name!r}: a pre-activation of exactly 0 is reachable at channels {ties[:8]}; ONNX Sign "
                f"gives 0 there, the binary layer +1"), stacklevel=3)
        tensors.append(numpy_helper.from_array(t, f"{name}::thresholds"))
        inputs.append(f"{name}::thresholds")
    if l.kind == "conv":
        packed = pack_bits(signs.transpose(0, 2, 3, 1) < 0).reshape(m, -1)
        attrs.update(channels=c, kernel_shape=[kh, kw], strides=[int(s) for s in l.attrs.get("strides", [1, 1])],
                     dilations=[int(d) for d in l.attrs.get("dilations", [1, 1])], pads=pads)
        op = "BinaryConv"
    else:
        op = "BinaryGemm"
        src = g.shapes.get(l.act.out, ())
        if l.packed_in and len(src) == 4:
            # the producer's packed (N, H, W, words) replaces the NCHW flatten order c * H * W + h * W + w
            _, c, hh, ww = src
            packed = pack_bits(signs.reshape(m, c, hh, ww).transpose(0, 2, 3, 1) < 0).reshape(m, -1)
        else:
            packed = pack_bits(signs < 0)
        attrs.update(channels=c)
    tensors.insert(0, numpy_helper.from_array(packed, f"{name}::w"))
    if l.mode != "sign" or l.out.scale == 1.0:
        return [helper.make_node(op, inputs, [l.y], name=name, domain=DOMAIN, **attrs)], tensors, _out_info(l, g)
    # a scaled binarizer's +-scale, as its float readers see it (binary readers only take its sign)
    tensors.append(numpy_helper.from_array(np.array(l.out.scale, np.float32), f"{name}::out_scale"))
    nodes = [helper.make_node(op, inputs, [f"{l.y}::pm1"], name=name, domain=DOMAIN, **attrs),
             helper.make_node("Mul", [f"{l.y}::pm1", f"{name}::out_scale"], [l.y], name=f"{name}::scale_out")]
    info = _out_info(l, g)
    return nodes, tensors, info + [helper.make_tensor_value_info(f"{l.y}::pm1", onnx.TensorProto.FLOAT,
                                                                 [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim])
                                   for v in info]


def _out_info(l: _Layer, g: _Graph) -> list:
    """value_info of the layer's output (packed: (N, OH, OW, words) or (N, words) uint64)."""
    shape = g.shapes.get(l.out.out if l.out is not None else l.y)
    if shape is None:
        return []
    if l.mode != "packed":
        return [helper.make_tensor_value_info(l.y, onnx.TensorProto.FLOAT, list(shape))]
    if not isinstance(shape[1], int):
        return []
    words = (shape[1] + 63) // 64
    packed = [shape[0], *shape[2:], words]
    return [helper.make_tensor_value_info(l.y, onnx.TensorProto.UINT64, packed)]


# --- reverse export -------------------------------------------------------------------------------

def to_float(model: ModelSource) -> onnx.ModelProto:
    """Standard-op form of a converted model, computing exactly what the binary ops compute.

    Every BinaryConv/BinaryGemm becomes Where(x < 0, -1, 1) on float inputs, a Conv/Gemm with +-1
    weights producing the integer sums (tensor ``<node>::dot``), then scale * dot + bias or
    Where(dot < T, -1, 1). Packed tensors become their +-1 float NCHW (or (N, M)) tensors.
    """
    proto = load_model(model)
    consts = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    renamed: dict[str, tuple[str, bool]] = {}  # packed tensor -> (its +-1 float form, made by a conv)
    nodes, inits = [], []
    for n in proto.graph.node:
        if n.domain != DOMAIN or n.op_type not in BINARY_OPS:
            nodes.append(n)
            continue
        new, tensors = _float_form(n, consts, renamed)
        nodes.extend(new)
        inits.extend(tensors)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(inits)
    _prune_initializers(out)
    keep = [o for o in out.opset_import if o.domain != DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(keep)
    check_model(out)
    return out


def dense_weights(w: np.ndarray, parents: list[int] | None) -> np.ndarray:
    """Packed dense weights from W whose children rows hold masks (w_child XOR w_parent)."""
    if not parents:
        return w
    dense = w.copy()
    done = [p < 0 for p in parents]
    while not all(done):
        progress = False
        for c, p in enumerate(parents):
            if not done[c] and done[p]:
                dense[c] = dense[p] ^ w[c]
                done[c] = progress = True
        if not progress:
            raise ModelError("mst_parents has a cycle")
    return dense


def _float_form(n: onnx.NodeProto, consts: dict, renamed: dict) -> tuple[list, list]:
    a = _attrs(n)
    name = layer_name(n)
    mode = a.get("output", b"float")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    c = int(a["channels"])
    w = dense_weights(consts[n.input[1]], list(a.get("mst_parents", [])))
    m = w.shape[0]
    nodes, tensors = [], []
    one, minus = f"{name}::one", f"{name}::minus_one"
    tensors += [numpy_helper.from_array(np.array(1.0, np.float32), one),
                numpy_helper.from_array(np.array(-1.0, np.float32), minus),
                numpy_helper.from_array(np.array(0.0, np.float32), f"{name}::zero")]
    x = n.input[0]
    if x in renamed:
        xb, from_conv = renamed[x]
    else:
        from_conv = False
        xb = f"{name}::x_pm1"
        nodes += [helper.make_node("Less", [x, f"{name}::zero"], [f"{name}::x_neg"]),
                  helper.make_node("Where", [f"{name}::x_neg", minus, one], [xb])]
        if "input_order" in a:
            tensors.append(numpy_helper.from_array(np.array(a["input_order"], np.int64), f"{name}::order"))
            nodes.append(helper.make_node("Gather", [xb, f"{name}::order"], [f"{name}::x_ordered"], axis=1))
            xb = f"{name}::x_ordered"
    dot = f"{name}::dot"
    if n.op_type == "BinaryConv":
        kh, kw = a["kernel_shape"]
        signs = np.where(unpack_bits(w.reshape(m, kh, kw, -1), c), -1.0, 1.0).transpose(0, 3, 1, 2)
        tensors.append(numpy_helper.from_array(signs.astype(np.float32), f"{name}::w_pm1"))
        nodes.append(helper.make_node("Conv", [xb, f"{name}::w_pm1"], [dot], kernel_shape=[kh, kw],
                                      strides=list(a.get("strides", [1, 1])), pads=list(a.get("pads", [0, 0, 0, 0])),
                                      dilations=list(a.get("dilations", [1, 1]))))
    else:
        wd = (c + 63) // 64
        groups = w.shape[1] // wd
        signs = np.where(unpack_bits(w.reshape(m, groups, wd), c), -1.0, 1.0).reshape(m, -1)
        if from_conv:  # packed conv output (N, H, W, words), even of one pixel: NCHW -> NHWC -> (N, H*W*C)
            tensors.append(numpy_helper.from_array(np.array([0, -1], np.int64), f"{name}::flat"))
            nodes += [helper.make_node("Transpose", [xb], [f"{name}::nhwc"], perm=[0, 2, 3, 1]),
                      helper.make_node("Reshape", [f"{name}::nhwc", f"{name}::flat"], [f"{name}::x_flat"])]
            xb = f"{name}::x_flat"
        tensors.append(numpy_helper.from_array(signs.astype(np.float32), f"{name}::w_pm1"))
        nodes.append(helper.make_node("Gemm", [xb, f"{name}::w_pm1"], [dot], transB=1))
    y = n.output[0]
    shape = (1, m, 1, 1) if n.op_type == "BinaryConv" else (1, m)  # per channel: axis 1
    if mode == "float":
        bias = n.input[4] if len(n.input) > 4 and n.input[4] else None
        scaled = f"{name}::scaled" if bias else y
        tensors.append(numpy_helper.from_array(consts[n.input[3]].reshape(shape), f"{name}::scale_c"))
        nodes.append(helper.make_node("Mul", [dot, f"{name}::scale_c"], [scaled]))
        if bias:
            tensors.append(numpy_helper.from_array(consts[bias].reshape(shape), f"{name}::bias_c"))
            nodes.append(helper.make_node("Add", [scaled, f"{name}::bias_c"], [y]))
    else:
        t = consts[n.input[2]].astype(np.float32)
        tensors.append(numpy_helper.from_array(t.reshape(shape), f"{name}::t_float"))
        out = f"{y}::pm1" if mode == "packed" else y
        nodes += [helper.make_node("Less", [dot, f"{name}::t_float"], [f"{name}::below"]),
                  helper.make_node("Where", [f"{name}::below", minus, one], [out])]
        if mode == "packed":
            renamed[y] = (out, n.op_type == "BinaryConv")
    return nodes, tensors

