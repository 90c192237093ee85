"""Elementwise ops: Add, Sub, Mul, Div, Pow, PRelu, Mod, comparisons, bool And/Or/Xor/Not, BitShift,
Max/Min/Sum/Mean (variadic), Where, unary maps (with IsNaN/IsInf) and inference BatchNormalization.

Builders compute the broadcast output shape and collapse it into the kernels' iteration space once.
Pow by a constant 2, 3, 4, 0.5 or -1 runs as a unary map (POW_BY), by 1 as a view of its base.
Integer tensors that are all constants (shape arithmetic of exported models) are folded here with
NumPy, so no Numba kernel is compiled for them.
"""
from __future__ import annotations

import functools

import numpy as np

from edgekit.ir import Node

from ..kernels import elementwise as ke
from .registry import Constant, In, Kernel, Out, Unsupported, View, register

BINARY = {"Add": ke.ADD, "Sub": ke.SUB, "Mul": ke.MUL, "Div": ke.DIV, "Pow": ke.POW, "PRelu": ke.PRELU,
          "Equal": ke.EQUAL, "Less": ke.LESS, "Greater": ke.GREATER, "LessOrEqual": ke.LESS_EQUAL,
          "GreaterOrEqual": ke.GREATER_EQUAL, "Mod": ke.MOD, "And": ke.AND, "Or": ke.OR, "Xor": ke.XOR,
          "BitShift": ke.SHIFT_LEFT}
COMPARE = ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")
UNARY = {"Neg": ke.NEG, "Abs": ke.ABS, "Sign": ke.SIGN, "Exp": ke.EXP, "Log": ke.LOG, "Sqrt": ke.SQRT,
         "Reciprocal": ke.RECIPROCAL, "Erf": ke.ERF, "Floor": ke.FLOOR, "Ceil": ke.CEIL, "Sin": ke.SIN,
         "Cos": ke.COS, "Tan": ke.TAN, "Asin": ke.ASIN, "Acos": ke.ACOS, "Atan": ke.ATAN, "Sinh": ke.SINH,
         "Cosh": ke.COSH, "Round": ke.ROUND, "IsNaN": ke.ISNAN, "IsInf": ke.ISINF, "Not": ke.NOT}
POW_BY = {2.0: ke.SQUARE, 3.0: ke.CUBE, 4.0: ke.FOURTH, 0.5: ke.POW_HALF, -1.0: ke.RECIPROCAL}
"""Pow by these constant exponents runs as the unary map (multiplies, sqrt, 1 / x): libm's powf is a scalar call."""
POW_EXACT = (1.0, 2.0, 3.0, 4.0)
"""The constant exponents of Pow on int32 and int64 bases (by multiplies, so exact; others unsupported)."""
VARIADIC = {"Max": ke.MAX, "Min": ke.MIN, "Sum": ke.ADD, "Mean": ke.ADD}
LOGICAL = ("And", "Or", "Xor", "Not")
BOOL_OUT = (*COMPARE, *LOGICAL, "IsNaN", "IsInf")
INTEGER_OK = {"Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Sign", "Max", "Min", "Sum", *COMPARE}
DTYPES = (np.float32, np.int64, np.int32, np.int8, np.uint8, np.int16, np.uint16)
SHIFTABLE = (np.uint8, np.uint16, np.uint32, np.uint64, np.int32, np.int64)


def _trunc_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    q = np.floor_divide(a, b)
    return q + ((q < 0) & (q * b != a))


NUMPY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _trunc_div, "Mod": np.mod,
         "Equal": np.equal, "Less": np.less, "Greater": np.greater, "LessOrEqual": np.less_equal,
         "GreaterOrEqual": np.greater_equal, "Neg": np.negative, "Abs": np.abs, "Sign": np.sign,
         "Max": np.maximum, "Min": np.minimum, "Sum": np.add, "And": np.logical_and, "Or": np.logical_or,
         "Xor": np.logical_xor, "Not": np.logical_not}


def _strides(shape: tuple, out_shape: tuple) -> list[int]:
    """Element strides of a C-contiguous ``shape`` broadcast (right-aligned) to ``out_shape``."""
    shape = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step if n != 1 else 0)
        step *= n
    return strides[::-1]


def collapse(out_shape: tuple, shapes: list[tuple]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The kernels' iteration space: ``out_shape`` without size-1 dims, adjacent dims fused wherever
    every operand allows it, and each operand's element strides over it (0 where broadcast)."""
    per_op = [_strides(s, out_shape) for s in shapes]
    dims = [(n, [s[i] for s in per_op]) for i, n in enumerate(out_shape) if n != 1]
    merged: list[tuple[int, list[int]]] = []
    for n, ss in dims:
        if merged and all(p == s * n for p, s in zip(merged[-1][1], ss)):
            merged[-1] = (merged[-1][0] * n, ss)
        else:
            merged.append((n, ss))
    if not merged:
        merged = [(1, [0] * len(shapes))]
    shape = np.array([n for n, _ in merged], np.int64)
    return shape, [np.array([ss[k] for _, ss in merged], np.int64) for k in range(len(shapes))]


def _binary_kernel(code: int, sa: np.ndarray, sb: np.ndarray):
    """The binary kernel of ``code`` for the inner strides of a collapsed space."""
    return ke.BINARY[code, int(sa[-1]), int(sb[-1])]


def _legacy_shape(node: Node, a: tuple, b: tuple, opset: int) -> tuple:
    """Shape of B under the opset < 7 ``broadcast``/``axis`` attributes (B aligned at ``axis`` of A)."""
    if opset >= 7 or not node.attrs.get("broadcast", 0):
        return b
    axis = int(node.attrs.get("axis", len(a) - len(b)))
    axis = axis % len(a) if len(a) else 0
    return (1,) * axis + tuple(b) + (1,) * (len(a) - axis - len(b))


def _check_dtype(node: Node, dtype: np.dtype) -> None:
    op = node.op_type
    ok = (np.bool_,) if op in LOGICAL else SHIFTABLE if op == "BitShift" else DTYPES if op in INTEGER_OK \
        else (np.float32,)
    if dtype not in ok:
        raise Unsupported(f"{node.op_type} on {dtype} (edgekit computes {', '.join(np.dtype(d).name for d in ok)})")


def _fold(node: Node, values: list) -> Constant | None:
    """NumPy result for all-constant non-float32 inputs (``values`` holds None when one is not), else None."""
    if node.op_type not in NUMPY or any(v is None for v in values) or values[0].dtype == np.float32:
        return None
    fn = np.fmod if node.op_type == "Mod" and node.attrs.get("fmod", 0) else NUMPY[node.op_type]
    result = fn(values[0]) if node.op_type in UNARY else functools.reduce(fn, values)
    return Constant([np.asarray(result, bool if node.op_type in BOOL_OUT else values[0].dtype)])


def _binary_code(node: Node, dtype: np.dtype, opset: int) -> int:
    """The kernel code of a binary node on ``dtype`` operands (Div, Mod and BitShift have forms)."""
    op, fmod = node.op_type, node.attrs.get("fmod", 0)
    if op == "Div" and dtype != np.float32:
        return ke.IDIV
    if op == "Mod" and dtype == np.float32:
        if not fmod and opset < 28:
            raise Unsupported(f"Mod of float32 with fmod=0 at opset {opset} (before 28 the spec requires fmod=1 "
                              "for floats)")
        return ke.FMOD if fmod else ke.FLOOR_MOD
    if op == "Mod":
        return ke.CMOD if fmod else ke.MOD
    if op == "BitShift":
        if dtype.kind == "i" and opset < 28:
            raise Unsupported(f"BitShift on {dtype} at opset {opset} (signed shifts come with opset 28)")
        direction = node.attrs.get("direction")
        if direction not in ("LEFT", "RIGHT"):
            raise Unsupported(f"BitShift direction={direction!r} (the spec knows 'LEFT' and 'RIGHT')")
        return ke.SHIFT_LEFT if direction == "LEFT" else ke.SHIFT_RIGHT
    return BINARY[op]


@register(*BINARY)
def build_binary(node: Node, inputs: list, opset: int) -> Kernel | Constant | View:
    a, b = inputs[0], inputs[1]
    if node.op_type == "PRelu" and opset < 7:
        raise Unsupported("PRelu before opset 7 (legacy slope broadcasting)")
    b_shape = _legacy_shape(node, a.shape, b.shape, opset)
    if node.op_type == "Pow" and np.broadcast_shapes(a.shape, b_shape) == tuple(a.shape):
        special = _pow_by_constant(a, b)
        if special is not None:
            return special
    if node.op_type == "Pow" and a.dtype in (np.int32, np.int64):
        raise Unsupported(f"Pow of {a.dtype} by an exponent other than a constant 1, 2, 3 or 4 (edgekit raises integers "
                          "by multiplies)")
    _check_dtype(node, a.dtype)
    if b.dtype != a.dtype and node.op_type != "Pow":
        raise Unsupported(f"{node.op_type} of {a.dtype} and {b.dtype}")
    if node.op_type in ("Div", "Mod") and a.dtype.kind in "iu" and b.is_const and not b.value.all():
        raise ValueError(f"integer {node.op_type} by zero: the constant divisor holds a 0")
    folded = _fold(node, [a.value, None if b.value is None else b.value.reshape(b_shape)])
    if folded is not None:
        return folded
    out_shape = tuple(np.broadcast_shapes(a.shape, b_shape))
    if node.op_type == "PRelu" and out_shape != tuple(a.shape):
        raise Unsupported(f"PRelu slope {b.shape} does not broadcast to X {a.shape}")
    code = _binary_code(node, a.dtype, opset)
    b_arg = In(1)
    if node.op_type == "Pow" and b.dtype != a.dtype:
        if not b.is_const and b.dtype.kind == "i":  # Numba lowers float ** int to an unlinked compiler-rt call
            raise Unsupported(f"Pow of {a.dtype} by a run-time {b.dtype} exponent (make it a constant or Cast it)")
        if b.is_const:
            b_arg = b.value.astype(a.dtype)
    shape, (sa, sb) = collapse(out_shape, [a.shape, b_shape])
    out_dtype = np.dtype(bool) if node.op_type in BOOL_OUT else a.dtype
    return Kernel(_binary_kernel(code, sa, sb), (In(0), b_arg, Out(0), shape, sa, sb), [(out_shape, out_dtype)])


def _pow_by_constant(a, b) -> Kernel | View | None:
    """Pow of ``a`` by a constant ``b`` (broadcast into ``a``) holding one exponent of POW_BY: a map of ``a``,
    or ``a`` itself for 1 (no step at run time); integer ``a`` (exact: multiplies) for 1 to 4 only. Else None."""
    if not b.is_const or not b.value.size or not np.all(b.value == b.value.flat[0]) or a.dtype not in DTYPES:
        return None
    e = float(b.value.flat[0])
    if a.dtype != np.float32 and e not in POW_EXACT:
        return None
    if e == 1.0:
        return View(tuple(a.shape))
    if e in POW_BY:
        return Kernel(ke.UNARY[POW_BY[e]], (In(0), Out(0)), [(a.shape, a.dtype)])
    return None


@register(*VARIADIC)
def build_variadic(node: Node, inputs: list, opset: int) -> Kernel | Constant:
    present = [t for t in inputs if t is not None]
    _check_dtype(node, present[0].dtype)
    if any(t.dtype != present[0].dtype for t in present):
        raise Unsupported(f"{node.op_type} of mixed dtypes")
    folded = _fold(node, [t.value for t in present])
    if folded is not None:
        return folded
    shapes = [tuple(t.shape) for t in present]
    out_shape = tuple(np.broadcast_shapes(*shapes))
    if len(present) == 2 and node.op_type != "Mean":
        shape, (sa, sb) = collapse(out_shape, shapes)
        ins = [In(i) for i, t in enumerate(inputs) if t is not None]
        kernel = _binary_kernel(VARIADIC[node.op_type], sa, sb)
        return Kernel(kernel, (*ins, Out(0), shape, sa, sb), [(out_shape, present[0].dtype)])
    shape, strides = collapse(out_shape, shapes + [out_shape])
    scale = 1.0 / len(present) if node.op_type == "Mean" else 1.0
    args = (Out(0), shape, np.stack(strides), scale) + tuple(In(i) for i, t in enumerate(inputs) if t is not None)
    return Kernel(ke.VARIADIC[VARIADIC[node.op_type]], args, [(out_shape, present[0].dtype)])


@register(*UNARY)
def build_unary(node: Node, inputs: list, opset: int) -> Kernel | Constant:
    x = inputs[0]
    _check_dtype(node, x.dtype)
    folded = _fold(node, [x.value])
    if folded is not None:
        return folded
    out = [(x.shape, np.dtype(bool) if node.op_type in BOOL_OUT else x.dtype)]
    code = UNARY[node.op_type]
    if node.op_type == "IsInf":
        positive, negative = node.attrs.get("detect_positive", 1), node.attrs.get("detect_negative", 1)
        if not (positive or negative):
            return Constant([np.zeros(x.shape, bool)])
        code = ke.ISINF if positive and negative else ke.ISINF_POS if positive else ke.ISINF_NEG
    return Kernel(ke.UNARY[code], (In(0), Out(0)), out)


@register("Where")
def build_where(node: Node, inputs: list, opset: int) -> Kernel | Constant:
    c, a, b = inputs
    if a.dtype != b.dtype or c.dtype != np.bool_:
        raise Unsupported(f"Where of {c.dtype}, {a.dtype}, {b.dtype}")
    if all(t.is_const for t in inputs) and a.dtype != np.float32:
        return Constant([np.where(c.value, a.value, b.value)])
    out_shape = tuple(np.broadcast_shapes(c.shape, a.shape, b.shape))
    shape, (sc, sa, sb) = collapse(out_shape, [c.shape, a.shape, b.shape])
    return Kernel(ke.where, (In(0), In(1), In(2), Out(0), shape, sc, sa, sb), [(out_shape, a.dtype)])


@register("BatchNormalization")
def build_batch_norm(node: Node, inputs: list, opset: int) -> Kernel:
    x, attrs = inputs[0], node.attrs
    if attrs.get("training_mode", 0) or any(node.outputs[1:]):
        raise Unsupported("BatchNormalization in training mode (edgekit runs inference only)")
    if not attrs.get("spatial", 1):
        raise Unsupported("BatchNormalization with spatial=0")
    if x.dtype != np.float32 or len(x.shape) < 2:
        raise Unsupported(f"BatchNormalization of a rank-{len(x.shape)} {x.dtype} input")
    channels = x.shape[1]
    if any(t.shape != (channels,) for t in inputs[1:5]):
        raise Unsupported(f"BatchNormalization parameters of shapes {[t.shape for t in inputs[1:5]]} for {channels} channels")
    inner = int(np.prod(x.shape[2:]))
    args = (In(0), Out(0), In(1), In(2), In(3), In(4), float(attrs.get("epsilon", 1e-5)), x.shape[0], channels, inner)
    return Kernel(ke.batch_norm, args, [(x.shape, x.dtype)])
