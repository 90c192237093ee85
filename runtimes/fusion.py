"""Graph fusions done once per model: Constant nodes' values join the constants (exporters write
Clip bounds that way); BatchNormalization folds into a preceding Conv, ConvTranspose or Gemm with
constant weights; a residual ``Add(Conv(...), R)`` (R not a constant: a shortcut, not a bias) fuses
into the Conv as a fourth input, so a ResNet block's Conv(+BN) -> Add -> Relu is one node; a following
activation fuses into their epilogue (after the residual); then BN and activations after stride-1
'same' pools fuse into the pool kernel (runtimes/pool_fusion.py).

All only fire when the intermediate tensor has a single consumer and is not a graph output,
so the fused graph computes exactly the same outputs (up to float rounding of the folded
weights).
"""
from __future__ import annotations

import numpy as np

from edgekit.ir import Node

from .ops.activation import ACTIVATIONS, activation_params
from .ops.registry import FUSED_ACTIVATION, Unsupported

FUSABLE = ("Conv", "Gemm", "ConvTranspose")


def fuse(nodes: list[Node], constants: dict[str, np.ndarray], opset: int, graph_outputs: set[str]) -> list[Node]:
    """Return the node list with BN folded and activations fused (Conv/ConvTranspose/Gemm, then
    pools); ``constants`` gains folded weights."""
    from .pool_fusion import fuse_pools  # here, not at the top: pool_fusion builds on this module's helpers

    nodes = constant_nodes(nodes, constants, graph_outputs)
    nodes = _fold_batchnorm(nodes, constants, graph_outputs)
    nodes = _fuse_residuals(nodes, constants, graph_outputs)
    nodes = _fuse_activations(nodes, constants, opset, graph_outputs)
    return fuse_pools(nodes, constants, opset, graph_outputs)


CONSTANT_ATTRS = {"value": None, "value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
                  "value_ints": np.int64}


def constant_nodes(nodes: list[Node], constants: dict, graph_outputs: set[str]) -> list[Node]:
    """Move the values of Constant nodes (as exporters write Clip bounds and BN statistics) into
    ``constants``, so the fusions below see them; Constant nodes that feed a graph output stay."""
    kept = []
    for n in nodes:
        attr = next(iter(n.attrs), None)
        if n.op_type != "Constant" or n.domain or len(n.attrs) != 1 or attr not in CONSTANT_ATTRS \
                or n.outputs[0] in graph_outputs:
            kept.append(n)
            continue
        dtype = CONSTANT_ATTRS[attr]
        constants[n.outputs[0]] = np.asarray(n.attrs[attr], dtype)
    return kept


def single_consumer(nodes: list[Node], graph_outputs: set[str]) -> dict[str, Node]:
    """Map tensor name -> its only consumer, for tensors with exactly one use and not a graph output."""
    uses: dict[str, list[Node]] = {}
    for n in nodes:
        for x in n.inputs:
            uses.setdefault(x, []).append(n)
    return {x: u[0] for x, u in uses.items() if len(u) == 1 and x not in graph_outputs}


def _fold_batchnorm(nodes: list[Node], constants: dict, graph_outputs: set[str]) -> list[Node]:
    consumer = single_consumer(nodes, graph_outputs)
    dropped: set[int] = set()
    for n in nodes:
        if n.op_type not in FUSABLE or n.domain or len(n.outputs) != 1:
            continue
        bn = consumer.get(n.outputs[0])
        affine = batchnorm_affine(bn, n.outputs[0], constants)
        if affine is None:
            continue
        weights = folded_weights(n, *affine, constants)
        if weights is None:
            continue
        read_folded_weights(n, weights, constants, "bn")
        n.outputs = [bn.outputs[0]]
        n.name = f"{n.name}+{bn.name}"
        dropped.add(id(bn))
    return [n for n in nodes if id(n) not in dropped]


def batchnorm_affine(bn: Node | None, x: str, constants: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """float64 (scale, shift) with BN(v) = v * scale + shift per channel, if ``bn`` is an inference
    BatchNormalization reading ``x`` with constant statistics and no extra outputs, else None."""
    if bn is None or bn.op_type != "BatchNormalization" or bn.domain or bn.inputs[0] != x or any(bn.outputs[1:]):
        return None
    if bn.attrs.get("training_mode", 0) or not all(i in constants for i in bn.inputs[1:5]):
        return None
    gamma, beta, mean, var = (constants[i].astype(np.float64).reshape(-1) for i in bn.inputs[1:5])
    scale = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    return scale, beta - mean * scale


def folded_weights(n: Node, scale: np.ndarray, shift: np.ndarray, constants: dict
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """Weights and bias of Conv/ConvTranspose/Gemm ``n`` followed by the per-channel affine v * scale + shift;
    None when the node's form does not fold, or when a folded value is not finite in the weights' dtype
    (a non-finite affine, or an overflow: the unfolded graph computes otherwise)."""
    with np.errstate(all="ignore"):
        weights = _folded(n, scale, shift, constants)
    return weights if weights is not None and all(np.isfinite(a).all() for a in weights) else None


def read_folded_weights(n: Node, weights: tuple[np.ndarray, np.ndarray], constants: dict, tag: str) -> None:
    """Make Conv/ConvTranspose/Gemm ``n`` read ``folded_weights``'s result, stored in ``constants`` under
    names of ``n`` and ``tag`` (a Gemm then reads B untransposed and unscaled, as folded)."""
    w_name, b_name = f"{n.name}::{tag}_weight", f"{n.name}::{tag}_bias"
    constants[w_name], constants[b_name] = weights
    n.inputs = [n.inputs[0], w_name, b_name]
    if n.op_type == "Gemm":
        n.attrs = {**n.attrs, "transB": 0, "alpha": 1.0, "beta": 1.0}


def _folded(n: Node, scale: np.ndarray, shift: np.ndarray, constants: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """``folded_weights`` before its finiteness check."""
    if len(n.inputs) < 2 or n.inputs[1] not in constants:
        return None
    if len(n.inputs) > 2 and n.inputs[2] and n.inputs[2] not in constants:
        return None
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
            if c.size != 1 and (c.size != w.shape[1] or c.shape[-1] != w.shape[1]):  # (not a column of rows)
                return None
            bias = bias + c.reshape(-1)
        w = w * scale[None, :]
    elif n.op_type == "ConvTranspose":  # W (Cin, Cout/group, k...): output channels on axis 1, per group
        groups = int(n.attrs.get("group", 1))
        if w.ndim < 3 or w.shape[0] % groups or w.shape[1] * groups != scale.size:
            return None
        bias = constants[n.inputs[2]].astype(np.float64) if len(n.inputs) > 2 and n.inputs[2] else np.zeros(scale.size)
        w = (w.reshape(groups, w.shape[0] // groups, w.shape[1], -1)
             * scale.reshape(groups, 1, -1, 1)).reshape(w.shape)
    else:
        if w.shape[0] != scale.size:
            return None
        bias = constants[n.inputs[2]].astype(np.float64) if len(n.inputs) > 2 and n.inputs[2] else np.zeros(w.shape[0])
        w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    if bias.shape != (scale.size,):  # (a bias the builder refuses: leave the node to it)
        return None
    bias = bias * scale + shift
    dtype = constants[n.inputs[1]].dtype
    return np.ascontiguousarray(w.astype(dtype)), bias.astype(dtype)


def _fuse_residuals(nodes: list[Node], constants: dict, graph_outputs: set[str]) -> list[Node]:
    """``Add(Conv(...), R)`` (either order) -> the Conv with R as a fourth input, placed where the Add
    was (R is computed before it; R cannot depend on the Conv, whose output only the Add reads). A
    Conv whose output is read elsewhere or is a graph output, or already has an activation (applied
    before the Add), is left alone; so is a constant R (a bias-like broadcast). The Conv's builder
    checks R's shape: one of the output's is added in its epilogue (see ops/conv.py)."""
    consumer = single_consumer(nodes, graph_outputs)
    producer = {o: n for n in nodes for o in n.outputs if o}
    fused: dict[int, Node] = {}
    for add in nodes:
        if add.op_type != "Add" or add.domain or len(add.inputs) != 2 or add.attrs:  # (attrs: legacy broadcast)
            continue
        for x, r in (add.inputs, add.inputs[::-1]):
            conv = producer.get(x)
            if conv is not None and conv.op_type == "Conv" and not conv.domain and consumer.get(x) is add \
                    and len(conv.inputs) in (2, 3) and FUSED_ACTIVATION not in conv.attrs \
                    and r and r not in constants:
                conv.inputs = [*conv.inputs[:2], conv.inputs[2] if len(conv.inputs) > 2 else "", r]
                conv.outputs = list(add.outputs)
                conv.name = f"{conv.name}+{add.name}"
                fused[id(add)] = conv
                break
    moved = {id(c) for c in fused.values()}
    return [fused.get(id(n), n) for n in nodes if id(n) not in moved]


def fusable_activation(a: Node | None, x: str, constants: dict, opset: int) -> tuple[int, float, float] | None:
    """The (code, alpha, beta) to fuse if ``a`` is an activation reading ``x`` with constant parameters, else None."""
    if a is None or a.op_type not in ACTIVATIONS or a.domain or a.inputs[0] != x:
        return None
    if any(i and i not in constants for i in a.inputs[1:]):
        return None
    try:
        return activation_params(a, [constants.get(i) for i in a.inputs], opset)
    except Unsupported:
        return None


def _fuse_activations(nodes: list[Node], constants: dict, opset: int, graph_outputs: set[str]) -> list[Node]:
    consumer = single_consumer(nodes, graph_outputs)
    dropped: set[int] = set()
    for n in nodes:
        if n.op_type not in FUSABLE or n.domain or FUSED_ACTIVATION in n.attrs:
            continue
        a = consumer.get(n.outputs[0])
        params = fusable_activation(a, n.outputs[0], constants, opset)
        if params is None:
            continue
        n.attrs = {**n.attrs, FUSED_ACTIVATION: params}
        n.outputs = [a.outputs[0]]
        n.name = f"{n.name}+{a.name}"
        dropped.add(id(a))
    return [n for n in nodes if id(n) not in dropped]
