"""QLinearConv, QLinearMatMul, com.microsoft QGemm (QOperator-format quantized models, as onnxruntime's
quantize_static writes Conv, MatMul and Gemm), MatMulInteger and ConvInteger, rewritten at load time into
float32 ops that every existing kernel and fusion applies to:

    QLinearConv(x, xs, xz, w, ws, wz, ys, yz, B)
        -> Requantize(Conv(DequantizeLinear(x, 1, xz), float(w - wz), float(B)), xs * ws / ys, yz)

and QLinearMatMul(a, as, az, b, bs, bz, ys, yz) likewise with MatMul, QGemm(a, as, az, b, bs, bz, C, ys, yz)
with Gemm (the multiplier alpha * as * bs / ys; without ys and yz its float output is the sums times
alpha * as * bs, a Mul that may fold into the Gemm's weights: float32 rounding). The Conv, MatMul or Gemm
sums the integers (x - xz)(w - wz) and the int32 bias in float32, exactly while every partial sum stays
below 2**24 in magnitude: max|x - xz| (over x's whole type) times each output's sum of |w - wz|, plus
max|B|. Where that bound could be passed, the K axis (input channels, rows of b) is cut into runs that each
stay below it (``_runs``): per run a float32 op on slices of x and w, cast to int32, the runs added in int32
and cast back, so the sums are onnxruntime's int32 sums at any size (a grouped convolution or a batched b
that would need runs is refused). ``ai.edgekit`` Requantize then multiplies by onnxruntime's float32
multiplier (xs * ws) / ys, rounds half to even and saturates as onnxruntime does after its int32 sums:
outputs are onnxruntime's bit for bit.

MatMulInteger(a, b, az, bz) and ConvInteger(x, w, xz, wz) return those int32 sums themselves (the same
runs, then a Cast to int32). The x zero point may be computed at run time (DynamicQuantizeLinear's, as
onnxruntime's quantize_dynamic writes).

com.microsoft QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu, QLinearAveragePool,
QLinearGlobalAveragePool and QLinearConcat (the rest of what quantize_static writes in QOperator format)
become DequantizeLinear of each input, the float32 op and QuantizeLinear: within one output quantum of
onnxruntime's kernels, which requantize by other roundings or lookup tables (equal on the tests' data).

Weights, scales, zero points and bias must be constants (initializers or Constant nodes); x's scale and zero
point, and the output's, one element each (per tensor); the weights' per tensor or per output channel (per
column of a 2-D b for the matrix products); inputs and weights int8 or uint8. Other forms keep the node,
whose builder below refuses it with the reason.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from edgekit.ir import Graph, Node

from .binary import DOMAIN
from .registry import Unsupported, register

MICROSOFT = "com.microsoft"

ORDER = {"QLinearConv": ("x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "bias"),
         "QLinearMatMul": ("x", "xs", "xz", "w", "ws", "wz", "ys", "yz"),
         "QGemm": ("x", "xs", "xz", "w", "ws", "wz", "bias", "ys", "yz"),
         "MatMulInteger": ("x", "w", "xz", "wz"), "ConvInteger": ("x", "w", "xz", "wz")}
"""Each op's inputs by role: x (or a), its scale and zero point, the weights (w or b), theirs, the output's, bias."""
DOMAINS = {"QLinearConv": "", "QLinearMatMul": "", "QGemm": MICROSOFT, "MatMulInteger": "", "ConvInteger": ""}
INTEGER = ("MatMulInteger", "ConvInteger")
CONV = ("QLinearConv", "ConvInteger")
FLOAT_OP = {"QLinearConv": "Conv", "ConvInteger": "Conv", "QLinearMatMul": "MatMul", "MatMulInteger": "MatMul",
            "QGemm": "Gemm"}
EIGHT_BIT = (np.dtype(np.int8), np.dtype(np.uint8))
EXACT = 2 ** 24
"""float32 holds every integer below this in magnitude: sums that stay below it are exact."""


WRAPPED = {"QLinearAdd": "Add", "QLinearMul": "Mul", "QLinearSigmoid": "Sigmoid", "QLinearLeakyRelu": "LeakyRelu",
           "QLinearAveragePool": "AveragePool", "QLinearGlobalAveragePool": "GlobalAveragePool",
           "QLinearConcat": "Concat"}
"""com.microsoft elementwise, pooling and concatenation ops on quantized tensors -> their float32 op."""


def qlinear_nodes(graph: Graph, nodes: list[Node]) -> list[Node]:
    """``nodes`` with each QLinearConv, QLinearMatMul, QGemm, MatMulInteger and ConvInteger of constant
    weights, and each com.microsoft op of WRAPPED, rewritten (module docstring); ``graph.constants`` gains
    the float32 weights, bias, multipliers and zero points."""
    out = []
    for n in nodes:
        if n.domain == MICROSOFT and n.op_type in WRAPPED:
            out.extend(_wrapped(n) if _wrapped_refusal(n) is None else [n])
            continue
        roles = _roles(n, graph.constants.get) if DOMAINS.get(n.op_type) == n.domain else None
        out.extend([n] if roles is None or _refusal(n, roles) is not None else _float_nodes(n, roles, graph.constants))
    return out


def _roles(n: Node, value) -> dict[str, np.ndarray | None]:
    """The constant value (``value(name)``; None when not constant or omitted) of each of ``n``'s inputs by role."""
    names = n.inputs + [""] * (len(ORDER[n.op_type]) - len(n.inputs))
    v = {role: value(name) if name else None for role, name in zip(ORDER[n.op_type], names)}
    return {"xs": None, "ws": None, "ys": None, "yz": None, **v}


def _channels(n: Node, w: np.ndarray) -> int:
    """Output channels (Conv) or columns (MatMul, Gemm) of ``n``, the length of per-channel weight scales."""
    if n.op_type in CONV:
        return w.shape[0]
    return w.shape[0] if n.op_type == "QGemm" and n.attrs.get("transB", 0) else w.shape[-1]


def _refusal(n: Node, v: dict[str, np.ndarray | None]) -> str | None:
    """Why the rewrite does not apply to ``n`` with these constant input values, or None."""
    given = {role for role, name in zip(ORDER[n.op_type], n.inputs) if name}
    if len(given & {"ys", "yz"}) == 1:
        return "one of the output scale and zero point (a float output takes neither)"
    needed = {"w"} | given & {"wz"} if n.op_type in INTEGER else \
        {"xs", "xz", "w", "ws", "wz", *(("ys", "yz") if "ys" in given else ())}
    if any(v[r] is None for r in needed):
        return "run-time weights, scales or zero points (edgekit needs them constant)"
    if any(v[r] is not None and v[r].dtype != np.float32 for r in ("xs", "ws", "ys")):
        return "scales other than float32"
    if any(v[r] is not None and v[r].dtype not in EIGHT_BIT for r in ("xz", "yz", "w")) \
            or v["wz"] is not None and v["wz"].dtype != v["w"].dtype:
        return "inputs, weights or zero points other than int8 and uint8"
    if any(v[r] is not None and v[r].size != 1 for r in ("xs", "xz", "ys", "yz")):
        return "an input or output scale or zero point of more than one element (per-row or per-channel)"
    w, ws, wz = v["w"], v["ws"], _weight_zero(v)
    channels = _channels(n, w)
    widest = wz if ws is None or wz.size > ws.size else ws
    if widest.size not in (1, channels) or min(wz.size, 1 if ws is None else ws.size) not in (1, widest.size) \
            or widest.size > 1 and (n.op_type in CONV and widest.ndim != 1 or n.op_type not in CONV and w.ndim != 2):
        return "weight scales or zero points neither per tensor nor per output channel"
    bias = v.get("bias")
    if bias is not None and (bias.dtype != np.int32 or n.op_type == "QLinearConv" and bias.shape != (channels,)):
        return "a bias other than an int32 vector of one value per output channel"
    if n.op_type in ("MatMulInteger", "QLinearMatMul") and w.ndim < 2:
        return "a 1-D b (edgekit multiplies by matrices)"
    if (n.attrs.get("group", 1) != 1 if n.op_type in CONV else w.ndim > 2) and len(_runs(n, v)) > 1:
        return ("sums past 2**24 (float32's exact integers) in a grouped convolution or a batched b (edgekit "
                "splits the sums of plain convolutions and matrix products into exact runs)")
    return None


def _weight_zero(v: dict[str, np.ndarray | None]) -> np.ndarray:
    """The weights' zero point: its value, or a 0 of the weights' type when omitted."""
    return np.zeros((), v["w"].dtype) if v["wz"] is None else v["wz"]


def _integer_weights(n: Node, w: np.ndarray, wz: np.ndarray) -> np.ndarray:
    """w - wz as exact int32 values, wz per tensor or per output channel (per column of a matrix)."""
    by_rows = n.op_type in CONV or n.op_type == "QGemm" and n.attrs.get("transB", 0)  # (a channel's on one row)
    wz = wz.reshape(-1, *(1,) * (w.ndim - 1)) if by_rows else wz.reshape(-1)
    return w.astype(np.int32) - wz.astype(np.int32)


def _reach(v: dict[str, np.ndarray | None]) -> int:
    """max|x - xz| over x's type; 255, the most of either 8-bit type, when the zero point is omitted or
    computed at run time."""
    if v["xz"] is None:
        return 255
    zero, info = int(v["xz"].reshape(-1)[0]), np.iinfo(v["xz"].dtype)
    return max(zero - info.min, info.max - zero)


def _k_axis(n: Node) -> int:
    """The weights' axis that sums run along: a convolution's input channels, a matrix's rows (columns of
    a transposed QGemm b)."""
    if n.op_type in CONV:
        return 1
    return 1 if n.op_type == "QGemm" and n.attrs.get("transB", 0) else -2


def _runs(n: Node, v: dict[str, np.ndarray | None]) -> list[tuple[int, int]]:
    """The weights' K axis (``_k_axis``) cut into runs [start, stop) whose partial sums are exact in float32:
    max|x - xz| times every output's sum of |w - wz| over the run, plus max|bias| for all of them, below
    2**24 (one run for most models)."""
    magnitude = np.abs(_integer_weights(n, v["w"], _weight_zero(v)).astype(np.int64))
    per_k = np.moveaxis(magnitude, _k_axis(n), 0)
    per_k = per_k.reshape(per_k.shape[0], per_k.shape[1], -1).sum(2) if n.op_type in CONV else \
        per_k.reshape(per_k.shape[0], -1)  # (K, outputs): each K slice's |w - wz| towards each output
    bias = v.get("bias")
    limit = (EXACT - 1 - (0 if bias is None else int(np.abs(bias.astype(np.int64)).max(initial=0)))) // _reach(v)
    runs, start, sums = [], 0, np.zeros(per_k.shape[1], np.int64)
    for k in range(per_k.shape[0]):
        if k > start and np.max(sums + per_k[k], initial=0) > limit:
            runs.append((start, k))
            start, sums = k, np.zeros_like(sums)
        sums = sums + per_k[k]
    return [*runs, (start, per_k.shape[0])]


def _exact_sums(n: Node, v: dict[str, np.ndarray], constants: dict, attrs: dict, out: str) -> list[Node]:
    """``out`` = the sums of (x - xz)(w - wz) (+ bias) of ``n``'s float op on the dequantized ``{name}::x``,
    exact: one float32 op when _runs gives one run, else per run a float op on slices of x and w along K,
    each cast to int32, added in int32 and cast back to float32 (int32 when ``n`` is MatMulInteger or
    ConvInteger, whose output ``out`` is)."""
    name = n.outputs[0]
    weights = _integer_weights(n, v["w"], _weight_zero(v)).astype(np.float32)
    runs, k_axis = _runs(n, v), _k_axis(n)
    x_axis = 1 if n.op_type in CONV else 0 if attrs.get("transA", 0) else -1
    bias = [f"{name}::bias"] if v.get("bias") is not None else []
    if bias:
        constants[f"{name}::bias"] = v["bias"].astype(np.float32)
    integer = n.op_type in INTEGER
    if len(runs) == 1:
        constants[f"{name}::w0"] = weights
        total = out if not integer else f"{name}::sum0"
        nodes = [Node(n.name, FLOAT_OP[n.op_type], "", [f"{name}::x", f"{name}::w0", *bias], [total], attrs)]
        return nodes + ([Node(f"{n.name}::int32", "Cast", "", [total], [out], {"to": TensorProto.INT32})]
                        if integer else [])
    nodes, total = [], ""
    constants[f"{name}::axis"] = np.array([x_axis], np.int64)
    for i, (start, stop) in enumerate(runs):
        constants[f"{name}::start{i}"] = np.array([start], np.int64)
        constants[f"{name}::stop{i}"] = np.array([stop], np.int64)
        constants[f"{name}::w{i}"] = weights.take(np.arange(start, stop), axis=k_axis)
        part = f"{name}::int{i}"
        nodes += [Node(f"{n.name}::slice{i}", "Slice", "", [f"{name}::x", f"{name}::start{i}", f"{name}::stop{i}",
                                                          f"{name}::axis"], [f"{name}::x{i}"]),
                  Node(f"{n.name}::run{i}", FLOAT_OP[n.op_type], "", [f"{name}::x{i}", f"{name}::w{i}",
                                                                     *(bias if i == 0 else [])],
                       [f"{name}::sum{i}"], attrs),
                  Node(f"{n.name}::int32_{i}", "Cast", "", [f"{name}::sum{i}"], [part], {"to": TensorProto.INT32})]
        if i:
            summed = f"{name}::total{i}"
            nodes.append(Node(f"{n.name}::add{i}", "Add", "", [total, part], [summed]))
            part = summed
        total = part
    return nodes + [Node(f"{n.name}::exact", "Cast", "", [total], [out],
                         {"to": TensorProto.INT32 if integer else TensorProto.FLOAT})]


def _float_nodes(n: Node, v: dict[str, np.ndarray], constants: dict) -> list[Node]:
    """DequantizeLinear(x, 1, xz) -> Conv | MatMul | Gemm on float32 integer weights -> Requantize (or, for
    QGemm's float output, a Mul by the scale; for MatMulInteger and ConvInteger, a Cast to int32), for ``n``."""
    name, conv = n.outputs[0], n.op_type in CONV
    constants[f"{name}::one"] = np.ones((), np.float32)
    x_zero = n.inputs[2] if len(n.inputs) > 2 else ""
    dequantize = Node(f"{n.name}::dequantize", "DequantizeLinear", "", [n.inputs[0], f"{name}::one", x_zero],
                      [f"{name}::x"])
    attrs = dict(n.attrs) if conv else {k: n.attrs[k] for k in ("transA", "transB") if k in n.attrs}
    if n.op_type in INTEGER:
        return [dequantize, *_exact_sums(n, v, constants, attrs, name)]
    nodes = [dequantize, *_exact_sums(n, v, constants, attrs, f"{name}::sum")]
    alpha = np.float32(n.attrs.get("alpha", 1.0) if n.op_type == "QGemm" else 1.0)
    scale = alpha * v["xs"].reshape(-1) * v["ws"].reshape(-1)  # (float32 throughout, in onnxruntime's order)
    if v["ys"] is None:  # (QGemm's float output: the sums times alpha * a_scale * b_scale)
        constants[f"{name}::scale"] = scale
        return [*nodes, Node(f"{n.name}::scale", "Mul", "", [f"{name}::sum", f"{name}::scale"], [name])]
    constants[f"{name}::multiplier"] = scale / v["ys"].reshape(-1)
    constants[f"{name}::zero"] = np.full(scale.shape, v["yz"].reshape(-1)[0], v["yz"].dtype)
    return [*nodes, Node(f"{n.name}::requantize", "Requantize", DOMAIN,
                         [f"{name}::sum", f"{name}::multiplier", f"{name}::zero"], [name], {"axis": 1 if conv else -1})]


def _wrapped_io(n: Node) -> tuple[list[tuple[str, str, str]], tuple[str, str]]:
    """(x, scale, zero point) of each quantized input of com.microsoft op ``n`` of WRAPPED, and (scale, zero
    point) of its output ("" for an omitted zero point)."""
    names = n.inputs + [""] * 8
    if n.op_type == "QLinearConcat":  # (Y_scale, Y_zero_point, then X, scale, zero point per input)
        return [tuple(names[i:i + 3]) for i in range(2, len(n.inputs), 3)], (names[0], names[1])
    if n.op_type in ("QLinearAdd", "QLinearMul"):
        return [tuple(names[0:3]), tuple(names[3:6])], (names[6], names[7])
    return [tuple(names[0:3])], (names[3], names[4])


def _wrapped_refusal(n: Node) -> str | None:
    """Why com.microsoft op ``n`` of WRAPPED is not rewritten, or None."""
    if n.attrs.get("channels_last", 0):
        return "channels_last (edgekit pools NCHW)"
    if not _wrapped_io(n)[1][1]:
        return "its output zero point omitted (edgekit needs it to know the output type)"
    return None


def _wrapped(n: Node) -> list[Node]:
    """DequantizeLinear of each input -> the float32 op -> QuantizeLinear, for com.microsoft op ``n`` of WRAPPED:
    within one output quantum of onnxruntime's integer or table-driven kernels."""
    ins, (scale, zero) = _wrapped_io(n)
    name = n.outputs[0]
    nodes = [Node(f"{n.name}::dequantize{i}", "DequantizeLinear", "", [x, s, z], [f"{name}::in{i}"])
             for i, (x, s, z) in enumerate(ins)]
    attrs = {k: v for k, v in n.attrs.items() if k != "channels_last"}
    return [*nodes, Node(n.name, WRAPPED[n.op_type], "", [f"{name}::in{i}" for i in range(len(ins))],
                         [f"{name}::float"], attrs),
            Node(f"{n.name}::quantize", "QuantizeLinear", "", [f"{name}::float", scale, zero], [name])]


@register(*WRAPPED, domain=MICROSOFT)
def build_wrapped(node: Node, inputs: list, opset: int):
    """Reached only when the load-time rewrite did not apply: refuses with the reason."""
    raise Unsupported(f"{node.op_type} with {_wrapped_refusal(node)}")


@register("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger")
@register("QGemm", domain=MICROSOFT)
def build_qlinear(node: Node, inputs: list, opset: int):
    """Reached only when the load-time rewrite did not apply: refuses with the reason."""
    values = {name: t.value for name, t in zip(node.inputs, inputs) if name and t is not None}
    reason = _refusal(node, _roles(node, values.get))
    raise Unsupported(f"{node.op_type} with {reason}" if reason else
                      f"{node.op_type} whose weights are computed at load time (edgekit rewrites it when its "
                      f"weights, scales and zero points are initializers or Constant nodes)")
