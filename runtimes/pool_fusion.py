"""Pool epilogue fusion, done once per model: a BatchNormalization that follows a MaxPool or
AveragePool becomes a per-channel affine on the pooled value, and a following activation the
pool's fused activation, so the parameter-free block's pool + BN + ReLU is one kernel pass.

The BN stays after the pool (y = act(pool(x) * scale[c] + shift[c])), so the fusion is exact
whatever the sign of the scale. It fires for 2D pools with stride 1, no dilation and 'same'
padding (the output keeps the input's size whatever that is; the pool kernel's fast path) and, like
the Conv fusions, only when the intermediate tensor has a single consumer and is not a graph output.
"""
from __future__ import annotations

import numpy as np

from edgekit.ir import Node

from .fusion import batchnorm_affine, fusable_activation, single_consumer
from .ops.pool import POOL_AFFINE
from .ops.registry import FUSED_ACTIVATION

POOLS = ("MaxPool", "AveragePool")


def fuse_pools(nodes: list[Node], constants: dict[str, np.ndarray], opset: int, graph_outputs: set[str]) -> list[Node]:
    """Return the node list with BN and activations after pools fused into them (see module docstring)."""
    consumer = single_consumer(nodes, graph_outputs)
    dropped: set[int] = set()
    for n in nodes:
        if n.op_type not in POOLS or n.domain or any(n.outputs[1:]) or not same_stride1(n):
            continue
        if POOL_AFFINE in n.attrs or FUSED_ACTIVATION in n.attrs:  # fused before: a BN after the activation stays
            continue
        nxt = consumer.get(n.outputs[0])
        affine = batchnorm_affine(nxt, n.outputs[0], constants)
        if affine is not None:
            n.attrs = {**n.attrs, POOL_AFFINE: tuple(v.astype(np.float32) for v in affine)}
            n.outputs, n.name = [nxt.outputs[0]], f"{n.name}+{nxt.name}"
            dropped.add(id(nxt))
            nxt = consumer.get(n.outputs[0])
        params = fusable_activation(nxt, n.outputs[0], constants, opset)
        if params is not None:
            n.attrs = {**n.attrs, FUSED_ACTIVATION: params}
            n.outputs, n.name = [nxt.outputs[0]], f"{n.name}+{nxt.name}"
            dropped.add(id(nxt))
    return [n for n in nodes if id(n) not in dropped]


def same_stride1(node: Node) -> bool:
    """True for a 2D pool whose output has its input's size for every input size: stride 1, no
    dilation, and 'same' padding (head + tail = kernel - 1 per axis, or auto_pad SAME_*)."""
    a = node.attrs
    k = [int(v) for v in a.get("kernel_shape", [])]
    if len(k) != 2 or any(int(v) != 1 for v in list(a.get("strides", [])) + list(a.get("dilations", []))):
        return False
    auto_pad = a.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return True
    pads = [int(v) for v in a.get("pads", [0] * 4)]  # (pads of another length: the pool's builder refuses them)
    return auto_pad in ("NOTSET", "") and len(pads) == 4 and all(pads[i] + pads[i + 2] == k[i] - 1 for i in range(2))
