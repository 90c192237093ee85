"""QLinearConv and QLinearMatMul (QOperator-format quantized models), rewritten at load time into float32
ops that every existing kernel and fusion applies to:

    QLinearConv(x, xs, xz, w, ws, wz, ys, yz, B)
        -> Requantize(Conv(DequantizeLinear(x, 1, xz), float(w - wz), float(B)), xs * ws / ys, yz)

and QLinearMatMul(a, as, az, b, bs, bz, ys, yz) likewise with MatMul. The Conv or MatMul sums the integers
(x - xz)(w - wz) in float32, exactly while every partial sum stays below 2**24 in magnitude (K * max|x - xz|
* max|w - wz| + max|B| < 2**24 for K products per output: K <= 514 for uint8 inputs and int8 weights), and
``ai.edgekit`` Requantize multiplies by onnxruntime's float32 multiplier (xs * ws) / ys, rounds half to even
and saturates as onnxruntime does after its int32 sums: then outputs are onnxruntime's bit for bit. Past that
bound a sum may round in float32, and an output next to a rounding boundary may land one quantum away.

Weights, scales, zero points and bias must be constants (initializers or Constant nodes); x's scale and zero
point, and the output's, one element each (per tensor); the weights' per tensor or per output channel (per
column of a 2-D b for QLinearMatMul); inputs and weights int8 or uint8. Other forms keep the node, whose
builder below refuses it with the reason.
"""
from __future__ import annotations

import numpy as np

from edgekit.ir import Graph, Node

from .binary import DOMAIN
from .registry import Unsupported, register

QLINEAR = ("QLinearConv", "QLinearMatMul")
EIGHT_BIT = (np.dtype(np.int8), np.dtype(np.uint8))


def qlinear_nodes(graph: Graph, nodes: list[Node]) -> list[Node]:
    """``nodes`` with each QLinearConv and QLinearMatMul of constant weights rewritten (module docstring);
    ``graph.constants`` gains the float32 weights, bias, multipliers and zero points."""
    out = []
    for n in nodes:
        values = [graph.constants.get(i) if i else None for i in n.inputs]
        if n.op_type not in QLINEAR or n.domain or _refusal(n.op_type, values) is not None:
            out.append(n)
            continue
        out.extend(_float_nodes(n, values, graph.constants))
    return out


def _refusal(op: str, values: list[np.ndarray | None]) -> str | None:
    """Why the rewrite does not apply to ``op`` with these constant input values (None: non-constant), or None."""
    values = values + [None] * (9 - len(values))
    _, xs, xz, w, ws, wz, ys, yz, bias = values
    if any(v is None for v in (xs, xz, w, ws, wz, ys, yz)):
        return "run-time weights, scales or zero points (edgekit needs them constant)"
    if any(v.dtype != np.float32 for v in (xs, ws, ys)):
        return "scales other than float32"
    if xz.dtype not in EIGHT_BIT or w.dtype not in EIGHT_BIT or yz.dtype not in EIGHT_BIT or wz.dtype != w.dtype:
        return "inputs, weights or zero points other than int8 and uint8"
    if any(v.size != 1 for v in (xs, xz, ys, yz)):
        return "an input or output scale or zero point of more than one element (per-row or per-channel)"
    channels = w.shape[0] if op == "QLinearConv" else w.shape[-1]
    if ws.size not in (1, channels) or wz.size not in (1, ws.size) or (
            ws.size > 1 and (op == "QLinearConv" and ws.ndim != 1 or op == "QLinearMatMul" and w.ndim != 2)):
        return "weight scales or zero points neither per tensor nor per output channel"
    if bias is not None and (op != "QLinearConv" or bias.dtype != np.int32 or bias.shape != (channels,)):
        return "a bias other than an int32 vector of one value per output channel"
    return None


def _float_nodes(n: Node, values: list[np.ndarray], constants: dict) -> list[Node]:
    """DequantizeLinear(x, 1, xz) -> Conv | MatMul on float32 integer weights -> Requantize, for ``n``."""
    x, w, ws, wz, ys, yz = n.inputs[0], *values[3:8]
    xs, xz = values[1], n.inputs[2]
    conv = n.op_type == "QLinearConv"
    name = n.outputs[0]
    wz = wz.reshape(-1, *(1,) * (w.ndim - 1)) if conv else wz.reshape(-1)  # (per output channel or column)
    constants[f"{name}::one"] = np.ones((), np.float32)
    constants[f"{name}::w"] = (w.astype(np.int32) - wz.astype(np.int32)).astype(np.float32)
    multiplier = (xs.reshape(-1).astype(np.float32) * ws.reshape(-1)) / ys.reshape(-1)  # (float32, as onnxruntime)
    constants[f"{name}::multiplier"] = multiplier
    constants[f"{name}::zero"] = np.full(multiplier.shape, yz.reshape(-1)[0], yz.dtype)
    ins = [f"{name}::x", f"{name}::w"]
    if conv and len(values) > 8 and values[8] is not None:
        constants[f"{name}::bias"] = values[8].astype(np.float32)
        ins.append(f"{name}::bias")
    return [Node(f"{n.name}::dequantize", "DequantizeLinear", "", [x, f"{name}::one", xz], [f"{name}::x"]),
            Node(n.name, "Conv" if conv else "MatMul", "", ins, [f"{name}::sum"], dict(n.attrs) if conv else {}),
            Node(f"{n.name}::requantize", "Requantize", DOMAIN,
                 [f"{name}::sum", f"{name}::multiplier", f"{name}::zero"], [name], {"axis": 1 if conv else -1})]


@register(*QLINEAR)
def build_qlinear(node: Node, inputs: list, opset: int):
    """Reached only when the load-time rewrite did not apply: refuses with the reason."""
    reason = _refusal(node.op_type, [t.value if t is not None else None for t in inputs])
    raise Unsupported(f"{node.op_type} with {reason}" if reason else
                      f"{node.op_type} whose weights are computed at load time (edgekit rewrites it when its "
                      f"weights, scales and zero points are initializers or Constant nodes)")
