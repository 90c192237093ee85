"""Activation ops (Relu, LeakyRelu, Clip, Sigmoid, Tanh, HardSigmoid, HardSwish, Elu, Selu, Celu,
Softplus, Softsign, Mish, Gelu, ThresholdedRelu, Shrink, Swish): standalone, and as (code, alpha, beta)
triples that the plan fuses into a preceding Conv or Gemm."""
from __future__ import annotations

import numpy as np

from edgekit.ir import Node

from ..kernels import activation as act
from .registry import FUSED_ACTIVATION, In, Kernel, Out, Unsupported, register


SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875
SIMPLE = {"Softplus": act.SOFTPLUS, "Softsign": act.SOFTSIGN, "Mish": act.MISH}


def activation_params(node: Node, consts: list[np.ndarray | None], opset: int) -> tuple[int, float, float]:
    """(code, alpha, beta) of an activation node; ``consts`` are its constant inputs (Clip bounds)."""
    op, a = node.op_type, node.attrs
    if op == "Relu":
        return act.RELU, 0.0, 0.0
    if op == "LeakyRelu":
        return act.LEAKY_RELU, float(a.get("alpha", 0.01)), 0.0
    if op == "Sigmoid":
        return act.SIGMOID, 0.0, 0.0
    if op == "Tanh":
        return act.TANH, 0.0, 0.0
    if op == "HardSigmoid":
        return act.HARD_SIGMOID, float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    if op == "HardSwish":
        return act.HARD_SWISH, 0.0, 0.0
    if op == "Elu":
        return act.ELU, float(a.get("alpha", 1.0)), 0.0
    if op == "Selu":
        return act.SELU, float(a.get("alpha", SELU_ALPHA)), float(a.get("gamma", SELU_GAMMA))
    if op == "Celu":
        return act.CELU, float(a.get("alpha", 1.0)), 0.0
    if op == "Swish":
        return act.SWISH, float(a.get("alpha", 1.0)), 0.0
    if op in SIMPLE:
        return SIMPLE[op], 0.0, 0.0
    if op == "Gelu":
        approximate = a.get("approximate", "none")
        if approximate not in ("none", "tanh"):
            raise Unsupported(f"Gelu approximate={approximate!r} (the spec knows 'none' and 'tanh')")
        return (act.GELU if approximate == "none" else act.GELU_TANH), 0.0, 0.0
    if op == "ThresholdedRelu":
        return act.THRESHOLDED_RELU, float(a.get("alpha", 1.0)), 0.0
    if op == "Shrink":
        return act.SHRINK, float(a.get("lambd", 0.5)), float(a.get("bias", 0.0))
    if op == "Clip":
        if opset < 11:
            return act.CLIP, float(a.get("min", -np.inf)), float(a.get("max", np.inf))
        lo = consts[1] if len(consts) > 1 and consts[1] is not None else -np.inf
        hi = consts[2] if len(consts) > 2 and consts[2] is not None else np.inf
        return act.CLIP, float(lo), float(hi)
    raise Unsupported(f"{op} is not an activation")


ACTIVATIONS = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Clip", "Elu", "Selu", "Celu",
               "Softplus", "Softsign", "Mish", "Gelu", "ThresholdedRelu", "Shrink", "Swish")


@register(*ACTIVATIONS)
def build_activation(node: Node, inputs: list, opset: int) -> Kernel:
    x = inputs[0]
    if x.dtype != np.float32:
        raise Unsupported(f"{node.op_type} on {x.dtype} (edgekit computes float32)")
    consts = []
    for i, t in enumerate(inputs):
        if i and t is not None and t.value is None:
            raise Unsupported("Clip bounds must be constants")
        consts.append(None if t is None else t.value)
    code, alpha, beta = activation_params(node, consts, opset)
    return Kernel(act.elementwise_kernel(code), (In(0), Out(0), alpha, beta), [(x.shape, x.dtype)])


def fused_activation(node: Node) -> tuple[int, float, float]:
    """The activation the plan fused into this Conv/Gemm node (identity when none)."""
    return node.attrs.get(FUSED_ACTIVATION, (act.IDENTITY, 0.0, 0.0))
