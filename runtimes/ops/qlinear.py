"""QLinearConv, QLinearMatMul and com.microsoft QGemm (QOperator-format quantized models, as onnxruntime's
quantize_static writes Conv, MatMul and Gemm), rewritten at load time into float32 ops that every existing
kernel and fusion applies to:

    QLinearConv(x, xs, xz, w, ws, wz, ys, yz, B)
        -> Requantize(Conv(DequantizeLinear(x, 1, xz), float(w - wz), float(B)), xs * ws / ys, yz)

and QLinearMatMul(a, as, az, b, bs, bz, ys, yz) likewise with MatMul, QGemm(a, as, az, b, bs, bz, C, ys, yz)
with Gemm (the multiplier alpha * as * bs / ys; without ys and yz its float output is the sums times
alpha * as * bs, a Mul that may fold into the Gemm's weights: float32 rounding). The Conv, MatMul or Gemm
sums the integers (x - xz)(w - wz) and the int32 bias in float32, exactly while every partial sum stays
below 2**24 in magnitude (K * max|x - xz| * max|w - wz| + max|B| < 2**24 for K products per output:
K <= 514 for uint8 inputs and int8 weights), and
``ai.edgekit`` Requantize multiplies by onnxruntime's float32 multiplier (xs * ws) / ys, rounds half to even
and saturates as onnxruntime does after its int32 sums: then outputs are onnxruntime's bit for bit. Past that
bound a sum may round in float32, and an output next to a rounding boundary may land one quantum away.

Weights, scales, zero points and bias must be constants (initializers or Constant nodes); x's scale and zero
point, and the output's, one element each (per tensor); the weights' per tensor or per output channel (per
column of a 2-D b for QLinearMatMul and QGemm); inputs and weights int8 or uint8. Other forms keep the
node, whose builder below refuses it with the reason.
"""
from __future__ import annotations

import numpy as np

from edgekit.ir import Graph, Node

from .binary import DOMAIN
from .registry import Unsupported, register

MICROSOFT = "com.microsoft"

ORDER = {"QLinearConv": ("x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "bias"),
         "QLinearMatMul": ("x", "xs", "xz", "w", "ws", "wz", "ys", "yz"),
         "QGemm": ("x", "xs", "xz", "w", "ws", "wz", "bias", "ys", "yz")}
"""Each op's inputs by role: x (or a), its scale and zero point, the weights (w or b), theirs, the output's, bias."""
DOMAINS = {"QLinearConv": "", "QLinearMatMul": "", "QGemm": MICROSOFT}
EIGHT_BIT = (np.dtype(np.int8), np.dtype(np.uint8))


def qlinear_nodes(graph: Graph, nodes: list[Node]) -> list[Node]:
    """``nodes`` with each QLinearConv, QLinearMatMul and QGemm of constant weights rewritten (module
    docstring); ``graph.constants`` gains the float32 weights, bias, multipliers and zero points."""
    out = []
    for n in nodes:
        roles = _roles(n, graph.constants.get) if DOMAINS.get(n.op_type) == n.domain else None
        out.extend([n] if roles is None or _refusal(n, roles) is not None else _float_nodes(n, roles, graph.constants))
    return out


def _roles(n: Node, value) -> dict[str, np.ndarray | None]:
    """The constant value (``value(name)``; None when not constant or omitted) of each of ``n``'s inputs by role."""
    names = n.inputs + [""] * (len(ORDER[n.op_type]) - len(n.inputs))
    return {role: value(name) if name else None for role, name in zip(ORDER[n.op_type], names)}


def _channels(n: Node, w: np.ndarray) -> int:
    """Output channels (Conv) or columns (MatMul, Gemm) of ``n``, the length of per-channel weight scales."""
    if n.op_type == "QLinearConv":
        return w.shape[0]
    return w.shape[0] if n.op_type == "QGemm" and n.attrs.get("transB", 0) else w.shape[-1]


def _refusal(n: Node, v: dict[str, np.ndarray | None]) -> str | None:
    """Why the rewrite does not apply to ``n`` with these constant input values, or None."""
    given = {role for role, name in zip(ORDER[n.op_type], n.inputs) if name}
    if len(given & {"ys", "yz"}) == 1:
        return "one of the output scale and zero point (a float output takes neither)"
    needed = ("xs", "xz", "w", "ws", "wz", *(("ys", "yz") if "ys" in given else ()))
    if any(v[r] is None for r in needed):
        return "run-time weights, scales or zero points (edgekit needs them constant)"
    if any(v[r] is not None and v[r].dtype != np.float32 for r in ("xs", "ws", "ys")):
        return "scales other than float32"
    if any(v[r] is not None and v[r].dtype not in EIGHT_BIT for r in ("xz", "yz", "w")) \
            or v["wz"].dtype != v["w"].dtype:
        return "inputs, weights or zero points other than int8 and uint8"
    if any(v[r] is not None and v[r].size != 1 for r in ("xs", "xz", "ys", "yz")):
        return "an input or output scale or zero point of more than one element (per-row or per-channel)"
    w, ws, wz = v["w"], v["ws"], v["wz"]
    channels = _channels(n, w)
    if ws.size not in (1, channels) or wz.size not in (1, ws.size) or ws.size > 1 and (
            n.op_type == "QLinearConv" and ws.ndim != 1 or n.op_type != "QLinearConv" and w.ndim != 2):
        return "weight scales or zero points neither per tensor nor per output channel"
    bias = v.get("bias")
    if bias is not None and (bias.dtype != np.int32 or n.op_type == "QLinearConv" and bias.shape != (channels,)):
        return "a bias other than an int32 vector of one value per output channel"
    return None


def _float_nodes(n: Node, v: dict[str, np.ndarray], constants: dict) -> list[Node]:
    """DequantizeLinear(x, 1, xz) -> Conv | MatMul | Gemm on float32 integer weights -> Requantize (or, for
    QGemm's float output, a Mul by the scale), for ``n``."""
    w, ws, wz, ys, yz = v["w"], v["ws"], v["wz"], v["ys"], v["yz"]
    name, conv = n.outputs[0], n.op_type == "QLinearConv"
    by_rows = conv or n.op_type == "QGemm" and n.attrs.get("transB", 0)  # (weights of a channel on one row)
    wz = wz.reshape(-1, *(1,) * (w.ndim - 1)) if by_rows else wz.reshape(-1)
    constants[f"{name}::one"] = np.ones((), np.float32)
    constants[f"{name}::w"] = (w.astype(np.int32) - wz.astype(np.int32)).astype(np.float32)
    alpha = np.float32(n.attrs.get("alpha", 1.0) if n.op_type == "QGemm" else 1.0)
    scale = alpha * v["xs"].reshape(-1) * ws.reshape(-1)  # (float32 throughout, in onnxruntime's order)
    ins = [f"{name}::x", f"{name}::w"]
    if v.get("bias") is not None:
        constants[f"{name}::bias"] = v["bias"].astype(np.float32)
        ins.append(f"{name}::bias")
    attrs = dict(n.attrs) if conv else {}
    if n.op_type == "QGemm":
        attrs = {k: n.attrs[k] for k in ("transA", "transB") if k in n.attrs}
    nodes = [Node(f"{n.name}::dequantize", "DequantizeLinear", "", [n.inputs[0], f"{name}::one", n.inputs[2]],
                  [f"{name}::x"]),
             Node(n.name, {"QLinearConv": "Conv", "QLinearMatMul": "MatMul", "QGemm": "Gemm"}[n.op_type], "",
                  ins, [f"{name}::sum"], attrs)]
    if ys is None:  # (QGemm's float output: the sums times alpha * a_scale * b_scale)
        constants[f"{name}::scale"] = scale
        return [*nodes, Node(f"{n.name}::scale", "Mul", "", [f"{name}::sum", f"{name}::scale"], [name])]
    constants[f"{name}::multiplier"] = scale / ys.reshape(-1)
    constants[f"{name}::zero"] = np.full(scale.shape, yz.reshape(-1)[0], yz.dtype)
    return [*nodes, Node(f"{n.name}::requantize", "Requantize", DOMAIN,
                         [f"{name}::sum", f"{name}::multiplier", f"{name}::zero"], [name], {"axis": 1 if conv else -1})]


@register("QLinearConv", "QLinearMatMul")
@register("QGemm", domain=MICROSOFT)
def build_qlinear(node: Node, inputs: list, opset: int):
    """Reached only when the load-time rewrite did not apply: refuses with the reason."""
    values = {name: t.value for name, t in zip(node.inputs, inputs) if name and t is not None}
    reason = _refusal(node, _roles(node, values.get))
    raise Unsupported(f"{node.op_type} with {reason}" if reason else
                      f"{node.op_type} whose weights are computed at load time (edgekit rewrites it when its "
                      f"weights, scales and zero points are initializers or Constant nodes)")
