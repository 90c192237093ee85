"""The head of a step model: the window model's head ops, reading the FIFOs.

One rewrite: a Flatten of a FIFO (N, C, W) feeding a Gemm with constant weights (the usual
classifier head) becomes a Conv whose kernel covers the FIFO, then a Flatten: the same sums, but
runtimes compute a single-column convolution over one contiguous buffer as dot products, while a
batch-1 Gemm with few outputs leaves most vector lanes idle. alpha and beta fold into W and bias.
"""
from __future__ import annotations

import numpy as np
import onnx

from .stream_layers import Stream, attrs


def add_head(ctx: Stream, head: list[onnx.NodeProto], fifos: dict[str, str], outputs: set[str]) -> None:
    """Append the head nodes to the step graph, reading ``fifos`` (head input -> FIFO tensor);
    ``outputs`` are the model's outputs, which keep their producers."""
    fifo_tensors = set(fifos.values())
    done: set[str] = set()  # outputs of Gemms already written as Convs
    for n in head:
        if n.output and n.output[0] in done:
            continue
        inputs = [fifos.get(i, i) for i in n.input]
        found = _flatten_gemm(ctx, n, inputs[0] if inputs else "", fifo_tensors, outputs)
        if found is not None:
            _gemm_as_conv(ctx, n, inputs[0], *found)
            done.add(found[0].output[0])
            continue
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        copy.input[:] = inputs
        ctx.g.add(copy)


def _flatten_gemm(ctx: Stream, n: onnx.NodeProto, x: str, fifos: set[str],
                  outputs: set[str]) -> tuple[onnx.NodeProto, np.ndarray, np.ndarray] | None:
    """The Gemm that alone consumes this Flatten of a FIFO, when it can become a Conv, with its weight
    (O, K) and bias (O,), alpha and beta folded in; else None."""
    if n.op_type != "Flatten" or n.domain not in ("", "ai.onnx") or x not in fifos or attrs(n).get("axis", 1) != 1:
        return None
    if len(ctx.shapes.get(n.input[0]) or ()) != 3:
        return None
    users = ctx.consumers.get(n.output[0], [])
    if len(users) != 1 or n.output[0] in outputs:
        return None
    gemm = users[0]
    a = attrs(gemm)
    w = ctx.consts.get(gemm.input[1]) if len(gemm.input) > 1 else None
    if gemm.op_type != "Gemm" or gemm.input[0] != n.output[0] or a.get("transA", 0) or w is None:
        return None
    bias = _bias(ctx, gemm)
    out = w.shape[0 if a.get("transB", 0) else 1] if w.ndim == 2 else -1
    # C must broadcast along the output columns only: a scalar or (1, ..., O)
    if w.dtype != np.float32 or bias is None or bias.size not in (1, out) or bias.shape[-1:] not in ((), (bias.size,)):
        return None
    rows = (w if a.get("transB", 0) else w.T) * np.float32(a.get("alpha", 1.0))
    return gemm, rows, np.broadcast_to(bias.reshape(-1) * np.float32(a.get("beta", 1.0)), (out,))


def _bias(ctx: Stream, gemm: onnx.NodeProto) -> np.ndarray | None:
    """The Gemm's C (zero when absent), None when it is not a constant."""
    if len(gemm.input) < 3 or not gemm.input[2]:
        return np.zeros(1, np.float32)
    return ctx.consts.get(gemm.input[2])


def _gemm_as_conv(ctx: Stream, flatten: onnx.NodeProto, fifo: str, gemm: onnx.NodeProto, w: np.ndarray,
                  bias: np.ndarray) -> None:
    """Flatten -> Gemm as Conv (kernel = the FIFO's width) -> Flatten, writing the Gemm's output;
    ``w`` and ``bias`` as _flatten_gemm gives them."""
    _, channels, width = ctx.shapes[flatten.input[0]]
    base = gemm.output[0]
    weight = ctx.g.const(f"{base}.conv.w", w.reshape(w.shape[0], channels, width).astype(np.float32))
    col = ctx.g.name(f"{base}.conv")
    ctx.g.node("Conv", [fifo, weight, ctx.g.const(f"{base}.conv.b", bias.astype(np.float32))], [col], col,
               kernel_shape=[width])
    ctx.g.node("Flatten", [col], [base], f"{base}.flatten")
