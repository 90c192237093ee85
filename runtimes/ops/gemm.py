"""Gemm and MatMul (float32) on ``kernels.gemm``: constant B laid out once as row-major (K, N),
ONNX C broadcasting as strides, numpy matmul batching as per-batch offsets, and the fused
activation of Gemm. A Gemm of few rows and fewer outputs than a vector (a classifier head at batch 1)
runs as dot products over K instead of mostly idle vector tiles. Constants are passed as writable copies so that every kernel compiles one
signature (Numba types read-only arrays apart)."""
from __future__ import annotations

import numpy as np

from edgekit.ir import Node

from ..kernels import gemm as kg
from ..kernels.simd import LANES
from .activation import fused_activation
from .registry import In, Kernel, Out, register, require_float32

DOT_MAX_ROWS = 4
"""Gemm with at most this many rows and fewer outputs than a vector runs as dot products over K."""


def _c_strides(shape: tuple[int, ...], m: int, n: int) -> tuple[int, int]:
    """Row and column strides reading C unidirectionally broadcast to (m, n) (0 = repeated)."""
    if len(shape) > 2:
        raise ValueError(f"C of rank {len(shape)} does not broadcast to ({m}, {n})")
    rows, cols = (1,) * (2 - len(shape)) + tuple(shape)
    if rows not in (1, m) or cols not in (1, n):
        raise ValueError(f"C of shape {shape} does not broadcast to ({m}, {n})")
    return (cols if rows > 1 else 0), (1 if cols > 1 else 0)


@register("Gemm")
def build_gemm(node: Node, inputs: list, opset: int) -> Kernel:
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    require_float32("Gemm", a, b, c)
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise ValueError(f"Gemm takes matrices, got shapes {a.shape} and {b.shape}")
    trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    m, k = a.shape[::-1] if trans_a else a.shape
    kb, n = b.shape[::-1] if trans_b else b.shape
    if k != kb:
        raise ValueError(f"inner dimensions differ: A' is ({m}, {k}), B' is ({kb}, {n})")
    a_rs, a_ks = (1, m) if trans_a else (k, 1)
    if c is None:
        c_arg, c_rs, c_cs, beta = np.zeros(1, np.float32), 0, 0, 0.0
    else:
        c_rs, c_cs = _c_strides(c.shape, m, n)
        c_arg = np.array(c.value, np.float32) if c.is_const else In(2)
    code, p1, p2 = fused_activation(node)
    params = np.array([alpha, beta, p1, p2], np.float32)
    gemm_kernel, gemm_dot_kernel = kg.gemm_kernels(code)  # compiled for this activation
    a_arg = np.array(a.value, np.float32) if a.is_const else In(0)
    if m <= DOT_MAX_ROWS and n < LANES and (m == 1 or not trans_a) and (b.is_const or trans_b):
        bt_arg = np.array(b.value if trans_b else b.value.T, np.float32, order="C") if b.is_const else In(1)
        plan = np.array([m, n, k, c_rs, c_cs, code], np.int64)
        return Kernel(gemm_dot_kernel, (a_arg, bt_arg, c_arg, Out(0), plan, params), [((m, n), a.dtype)])
    b_transposed = int(trans_b and not b.is_const)
    b_arg = np.array(b.value.T if trans_b else b.value, np.float32, order="C") if b.is_const else In(1)
    bt = np.zeros(k * n if b_transposed else 1, np.float32)
    plan = np.concatenate([[m, n, k, a_rs, a_ks, c_rs, c_cs, b_transposed, code], np.arange(k) * n]).astype(np.int64)
    return Kernel(gemm_kernel, (a_arg, b_arg, c_arg, Out(0), bt, plan, params), [((m, n), a.dtype)])


@register("MatMul")
def build_matmul(node: Node, inputs: list, opset: int) -> Kernel:
    a, b = inputs[0], inputs[1]
    require_float32("MatMul", a, b)
    if not a.shape or not b.shape:
        raise ValueError("MatMul operands must have at least one dimension")
    a_shape = (1,) + a.shape if len(a.shape) == 1 else a.shape
    b_shape = b.shape + (1,) if len(b.shape) == 1 else b.shape
    (m, k), (kb, n) = a_shape[-2:], b_shape[-2:]
    if k != kb:
        raise ValueError(f"inner dimensions differ: {a.shape} @ {b.shape}")
    batch = np.broadcast_shapes(a_shape[:-2], b_shape[:-2])
    a_index = np.broadcast_to(np.arange(int(np.prod(a_shape[:-2]))).reshape(a_shape[:-2]), batch)
    b_index = np.broadcast_to(np.arange(int(np.prod(b_shape[:-2]))).reshape(b_shape[:-2]), batch)
    offsets = np.stack([a_index.reshape(-1) * (m * k), b_index.reshape(-1) * (k * n)]).astype(np.int64)
    out = batch + ((m,) if len(a.shape) > 1 else ()) + ((n,) if len(b.shape) > 1 else ())
    plan = np.concatenate([[m, n, k], np.arange(k) * n]).astype(np.int64)
    operands = [np.array(t.value, np.float32) if t.is_const else In(i) for i, t in enumerate((a, b))]
    return Kernel(kg.matmul_kernel, (*operands, Out(0), plan, offsets), [(tuple(int(d) for d in out), a.dtype)])
