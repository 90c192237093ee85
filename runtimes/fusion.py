"""Graph fusions done once per model: fold BatchNormalization into a preceding Conv or Gemm with
constant weights, then fuse a following activation into the Conv/Gemm epilogue.

Both only fire when the intermediate tensor has a single consumer and is not a graph output,
so the fused graph computes exactly the same outputs (up to float rounding of the folded
weights).
"""
from __future__ import annotations

import numpy as np

from edgekit.ir import Node

from .ops.activation import ACTIVATIONS, activation_params
from .ops.registry import FUSED_ACTIVATION, Unsupported

FUSABLE = ("Conv", "Gemm")


def fuse(nodes: list[Node], constants: dict[str, np.ndarray], opset: int, graph_outputs: set[str]) -> list[Node]:
    """Return the node list with BN folded and activations fused; ``constants`` gains folded weights."""
    nodes = _fold_batchnorm(nodes, constants, graph_outputs)
    return _fuse_activations(nodes, constants, opset, graph_outputs)


def _single_consumer(nodes: list[Node], graph_outputs: set[str]) -> dict[str, Node]:
    """Map tensor name -> its only consumer, for tensors with exactly one use and not a graph output."""
    uses: dict[str, list[Node]] = {}
    for n in nodes:
        for x in n.inputs:
            uses.setdefault(x, []).append(n)
    return {x: u[0] for x, u in uses.items() if len(u) == 1 and x not in graph_outputs}


def _fold_batchnorm(nodes: list[Node], constants: dict, graph_outputs: set[str]) -> list[Node]:
    consumer = _single_consumer(nodes, graph_outputs)
    dropped: set[int] = set()
    for n in nodes:
        if n.op_type not in FUSABLE or n.domain or len(n.outputs) != 1:
            continue
        bn = consumer.get(n.outputs[0])
        if bn is None or bn.op_type != "BatchNormalization" or bn.inputs[0] != n.outputs[0]:
            continue
        if len(bn.outputs) > 1 and any(bn.outputs[1:]):
            continue
        if bn.attrs.get("training_mode", 0) or not all(x in constants for x in bn.inputs[1:5]):
            continue
        weights = _folded(n, bn, constants)
        if weights is None:
            continue
        w_name, b_name = f"{n.name}::bn_weight", f"{n.name}::bn_bias"
        constants[w_name], constants[b_name] = weights
        n.inputs = [n.inputs[0], w_name, b_name]
        if n.op_type == "Gemm":
            n.attrs = {**n.attrs, "transB": 0, "alpha": 1.0, "beta": 1.0}
        n.outputs = [bn.outputs[0]]
        n.name = f"{n.name}+{bn.name}"
        dropped.add(id(bn))
    return [n for n in nodes if id(n) not in dropped]


def _folded(n: Node, bn: Node, constants: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """Weights and bias of Conv/Gemm ``n`` with the BatchNormalization ``bn`` folded in."""
    if len(n.inputs) < 2 or n.inputs[1] not in constants:
        return None
    if len(n.inputs) > 2 and n.inputs[2] and n.inputs[2] not in constants:
        return None
    gamma, beta, mean, var = (constants[x].astype(np.float64) for x in bn.inputs[1:5])
    scale = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    w = constants[n.inputs[1]].astype(np.float64)
    if n.op_type == "Gemm":
        if n.attrs.get("transA", 0):
            return None
        w = w.T if n.attrs.get("transB", 0) else w
        w = w * float(n.attrs.get("alpha", 1.0))
        if w.ndim != 2 or w.shape[1] != scale.size:
            return None
        bias = np.zeros(w.shape[1])
        if len(n.inputs) > 2 and n.inputs[2]:
            c = constants[n.inputs[2]].astype(np.float64) * float(n.attrs.get("beta", 1.0))
            if c.size not in (1, w.shape[1]):
                return None
            bias = bias + c.reshape(-1)
        w = w * scale[None, :]
    else:
        if w.shape[0] != scale.size:
            return None
        bias = constants[n.inputs[2]].astype(np.float64) if len(n.inputs) > 2 and n.inputs[2] else np.zeros(w.shape[0])
        w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    bias = (bias - mean) * scale + beta
    dtype = constants[n.inputs[1]].dtype
    return np.ascontiguousarray(w.astype(dtype)), bias.astype(dtype)


def _fuse_activations(nodes: list[Node], constants: dict, opset: int, graph_outputs: set[str]) -> list[Node]:
    consumer = _single_consumer(nodes, graph_outputs)
    dropped: set[int] = set()
    for n in nodes:
        if n.op_type not in FUSABLE or n.domain or FUSED_ACTIVATION in n.attrs:
            continue
        a = consumer.get(n.outputs[0])
        if a is None or a.op_type not in ACTIVATIONS or a.domain or a.inputs[0] != n.outputs[0]:
            continue
        extra = [x for x in a.inputs[1:] if x]
        if any(x not in constants for x in extra):
            continue
        try:
            params = activation_params(a, [constants.get(x) for x in a.inputs], opset)
        except Unsupported:
            continue
        n.attrs = {**n.attrs, FUSED_ACTIVATION: params}
        n.outputs = [a.outputs[0]]
        n.name = f"{n.name}+{a.name}"
        dropped.add(id(a))
    return [n for n in nodes if id(n) not in dropped]
