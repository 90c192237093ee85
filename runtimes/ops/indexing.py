"""Indexing and rearrangement ops: GatherElements, GatherND, ScatterElements (and its old name
Scatter), ScatterND, DepthToSpace, SpaceToDepth, Trilu, OneHot and Einsum.

Everything that depends only on shapes (element offsets, strides, block tables) is computed here
once per plan; indices fed at run time are checked by the kernels, constant ones here (a ValueError
that the plan reports as ModelError). DepthToSpace/SpaceToDepth are one strided block copy on the
layout kernels. Einsum of two operands in batch/M/N/K letter roles runs as permuting copies around
the MatMul kernel; any other one- or two-operand equation runs as one strided contraction loop.
"""
from __future__ import annotations

import math

import numpy as np

from edgekit.ir import Node

from ..kernels import indexing as k
from ..kernels import layout as kl
from .layout import block_table
from .registry import Constant, In, Kernel, Out, Tensor, Unsupported, View, const_input, normalize_axis, register


def _strides(shape) -> np.ndarray:
    """Element strides (int64) of a C-contiguous array of this shape."""
    return np.array([math.prod(shape[i + 1:]) for i in range(len(shape))], np.int64)


def _arg(inputs: list, i: int):
    """Kernel argument for input i: its placeholder, or its value (C-contiguous and writable, so
    constant and fed arrays give the kernel one Numba type) when constant."""
    t = inputs[i]
    return In(i) if t.value is None else np.require(t.value, requirements=["C", "W"])


def _check_data(node: Node, t: Tensor) -> None:
    if t.dtype is None or t.dtype.kind not in "biuf" or t.dtype == np.float16:
        raise Unsupported(f"{node.op_type} on {t.dtype} tensors (the Numba kernels need a native type)")


def _check_indices(node: Node, t: Tensor, extent=None) -> None:
    """Indices are int32/int64; constant ones must lie in [-n, n) for the sizes ``extent``
    (one size, or the sizes of the last axis' entries)."""
    if t.dtype not in (np.int32, np.int64):
        raise Unsupported(f"{node.op_type} indices of type {t.dtype}")
    if t.value is None or extent is None or not t.value.size:
        return
    n = np.broadcast_to(np.asarray(extent, np.int64), t.value.shape)
    if np.any(t.value < -n) or np.any(t.value >= n):
        raise ValueError(f"constant indices {t.value.min()}..{t.value.max()} are out of range for sizes {extent}")


def _reduction(node: Node, data: Tensor, opset: int) -> int:
    """Scatter reduction code; refused on bool (no arithmetic) and outside its opset."""
    name = node.attrs.get("reduction", "none")
    allowed = ("none", "add", "mul", "max", "min")[:1 if opset < 16 else 3 if opset < 18 else 5]
    if name not in allowed:
        raise Unsupported(f"{node.op_type} reduction {name!r} at opset {opset}")
    if name != "none" and data.dtype == np.bool_:
        raise Unsupported(f"{node.op_type} reduction {name!r} on bool tensors")
    return k.REDUCTIONS[name]


def _elements_base(node: Node, data: Tensor, idx: Tensor) -> tuple[int, np.ndarray, int, int]:
    """(axis, base offsets, axis size, axis stride) of GatherElements/ScatterElements: base[p] is
    the data offset of index p's coordinates off the axis."""
    rank = len(data.shape)
    axis = normalize_axis(node.attrs.get("axis", 0), rank)
    if len(idx.shape) != rank or any(i > d for j, (i, d) in enumerate(zip(idx.shape, data.shape)) if j != axis):
        raise ValueError(f"indices of shape {idx.shape} do not fit data of shape {data.shape} off axis {axis}")
    _check_indices(node, idx, data.shape[axis])
    strides = _strides(data.shape)
    base = np.zeros(idx.shape, np.int64)
    for j, n in enumerate(idx.shape):
        if j != axis:
            base += (np.arange(n, dtype=np.int64) * strides[j]).reshape((-1,) + (1,) * (rank - 1 - j))
    return axis, base.reshape(-1), data.shape[axis], int(strides[axis])


@register("GatherElements")
def build_gather_elements(node: Node, inputs: list, opset: int) -> Kernel | Constant:
    data, idx = inputs[0], inputs[1]
    _check_data(node, data)
    _check_indices(node, idx)
    _, base, n, stride = _elements_base(node, data, idx)
    if not base.size:
        return Constant([np.empty(idx.shape, data.dtype)])
    return Kernel(k.gather_elements_kernel, (_arg(inputs, 0), _arg(inputs, 1), Out(0), base, n, stride),
                  [(idx.shape, data.dtype)])


@register("ScatterElements", "Scatter")
def build_scatter_elements(node: Node, inputs: list, opset: int) -> Kernel | View:
    data, idx, upd = inputs[0], inputs[1], inputs[2]
    _check_data(node, data)
    _check_indices(node, idx)
    reduction = _reduction(node, data, opset)
    if upd.shape != idx.shape or upd.dtype != data.dtype:
        raise ValueError(f"updates {upd.shape} {upd.dtype} differ from indices {idx.shape} / data {data.dtype}")
    _, base, n, stride = _elements_base(node, data, idx)
    if not base.size:
        return View(data.shape)
    return Kernel(k.scatter_elements_kernel, (*(_arg(inputs, i) for i in range(3)), Out(0), base, n, stride, reduction),
                  [(data.shape, data.dtype)])


def _nd_layout(node: Node, data: Tensor, idx: Tensor, batch: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(k, sizes, strides) of the axes that GatherND/ScatterND index tuples address."""
    _check_indices(node, idx)
    if not idx.shape:
        raise ValueError("indices must have rank >= 1")
    depth = idx.shape[-1]
    if idx.shape[:batch] != data.shape[:batch] or batch + depth > len(data.shape) or batch >= len(idx.shape):
        raise ValueError(f"indices {idx.shape} do not address data {data.shape} with batch_dims {batch}")
    dims = np.array(data.shape[batch:batch + depth], np.int64)
    _check_indices(node, idx, dims)
    return depth, dims, _strides(data.shape)[batch:batch + depth]


@register("GatherND")
def build_gather_nd(node: Node, inputs: list, opset: int) -> Kernel | Constant:
    data, idx = inputs[0], inputs[1]
    _check_data(node, data)
    batch = int(node.attrs.get("batch_dims", 0))
    depth, dims, strides = _nd_layout(node, data, idx, batch)
    out = idx.shape[:-1] + data.shape[batch + depth:]
    if 0 in out:
        return Constant([np.empty(out, data.dtype)])
    tuples = math.prod(idx.shape[batch:-1])
    slice_ = math.prod(data.shape[batch + depth:])
    args = (_arg(inputs, 0), _arg(inputs, 1), Out(0), tuples, dims, strides, slice_, math.prod(data.shape[batch:]))
    return Kernel(k.gather_nd_kernel, args, [(out, data.dtype)])


@register("ScatterND")
def build_scatter_nd(node: Node, inputs: list, opset: int) -> Kernel | View:
    data, idx, upd = inputs[0], inputs[1], inputs[2]
    _check_data(node, data)
    reduction = _reduction(node, data, opset)
    depth, dims, strides = _nd_layout(node, data, idx, 0)
    if upd.shape != idx.shape[:-1] + data.shape[depth:] or upd.dtype != data.dtype:
        raise ValueError(f"updates {upd.shape} {upd.dtype} do not match indices {idx.shape} into data {data.shape}")
    if not math.prod(upd.shape):
        return View(data.shape)
    args = (*(_arg(inputs, i) for i in range(3)), Out(0), dims, strides, math.prod(data.shape[depth:]), reduction)
    return Kernel(k.scatter_nd_kernel, args, [(data.shape, data.dtype)])


def _permute(node: Node, inputs: list, view: tuple, perm: tuple, out: tuple) -> Kernel | View:
    """Input 0 viewed as ``view``, transposed by ``perm`` and viewed as ``out``: one block copy."""
    x = inputs[0]
    _check_data(node, x)
    if math.prod(out) == 0 or perm == tuple(range(len(perm))):
        return View(out)
    src = _strides(view)
    box = [view[p] for p in perm]
    table = block_table([(0, 0, 0, box, [int(src[p]) for p in perm], list(_strides(box)))])
    return Kernel(kl.copy_blocks, (Out(0), table, _arg(inputs, 0)), [(out, x.dtype)])


def _blocksize(node: Node, shape: tuple) -> int:
    b = int(node.attrs["blocksize"])
    if len(shape) != 4 or b < 1:
        raise ValueError(f"{node.op_type} takes NCHW inputs and a positive blocksize, got {shape} and {b}")
    return b


def _mode(node: Node) -> str:
    mode = node.attrs.get("mode", "DCR")
    if mode not in ("DCR", "CRD"):
        raise Unsupported(f"{node.op_type} mode {mode!r}")
    return mode


@register("DepthToSpace")
def build_depth_to_space(node: Node, inputs: list, opset: int) -> Kernel | View:
    """DCR: (N, b, b, C', H, W) -> (N, C', H, b, W, b); CRD: (N, C', b, b, H, W) -> (N, C', H, b, W, b)."""
    shape = inputs[0].shape
    b = _blocksize(node, shape)
    n, c, h, w = shape
    if c % (b * b):
        raise ValueError(f"DepthToSpace: {c} channels do not split into blocks of {b}x{b}")
    mode = _mode(node)
    co = c // (b * b)
    if mode == "DCR":
        view, perm = (n, b, b, co, h, w), (0, 3, 4, 1, 5, 2)
    else:
        view, perm = (n, co, b, b, h, w), (0, 1, 4, 2, 5, 3)
    return _permute(node, inputs, view, perm, (n, co, h * b, w * b))


@register("SpaceToDepth")
def build_space_to_depth(node: Node, inputs: list, opset: int) -> Kernel | View:
    """(N, C, H', b, W', b) -> (N, b, b, C, H', W') (DCR) or (N, C, b, b, H', W') (CRD, opset 28), walked
    in source order by its own kernel (2x faster than a block copy of 2-wide blocks)."""
    shape = inputs[0].shape
    b = _blocksize(node, shape)
    n, c, h, w = shape
    if h % b or w % b:
        raise ValueError(f"SpaceToDepth: spatial size {h}x{w} is not a multiple of blocksize {b}")
    out = (n, c * b * b, h // b, w // b)
    _check_data(node, inputs[0])
    if b == 1 or not math.prod(out):
        return View(out)
    return Kernel(k.space_to_depth_kernel, (_arg(inputs, 0), Out(0), b, _mode(node) == "CRD"), [(out, inputs[0].dtype)])


@register("Trilu")
def build_trilu(node: Node, inputs: list, opset: int) -> Kernel | Constant:
    x = inputs[0]
    _check_data(node, x)
    if len(x.shape) < 2:
        raise ValueError(f"Trilu needs rank >= 2, got shape {x.shape}")
    kt = inputs[1] if len(inputs) > 1 else None
    if kt is None:
        k_arg = np.zeros(1, np.int64)
    elif kt.dtype != np.int64 or math.prod(kt.shape) != 1:
        raise ValueError(f"Trilu k must be one int64, got {kt.dtype} of shape {kt.shape}")
    else:
        k_arg = np.array(kt.value, np.int64).reshape(1) if kt.is_const else In(1)
    if not math.prod(x.shape):
        return Constant([np.empty(x.shape, x.dtype)])
    rows, cols = x.shape[-2:]
    args = (_arg(inputs, 0), Out(0), k_arg, rows, cols, bool(node.attrs.get("upper", 1)))
    return Kernel(k.trilu_kernel, args, [(x.shape, x.dtype)])


@register("OneHot")
def build_one_hot(node: Node, inputs: list, opset: int) -> Kernel | Constant:
    idx, values = inputs[0], inputs[2]
    if idx.dtype.kind not in "iuf" or idx.dtype == np.float16:
        raise Unsupported(f"OneHot indices of type {idx.dtype}")
    _check_data(node, values)
    depth_value = const_input(node, inputs, 1, "depth")
    if depth_value.size != 1 or math.prod(values.shape) != 2:
        raise ValueError(f"OneHot depth must be one value and values two, got {depth_value.size} and {values.shape}")
    depth = int(depth_value.reshape(-1)[0])
    if depth < 0:
        raise ValueError(f"OneHot depth {depth} is negative")
    rank = len(idx.shape)
    axis = node.attrs.get("axis", -1)
    if not -rank - 1 <= axis <= rank:
        raise Unsupported(f"axis {axis} is out of range for rank-{rank} indices")
    axis %= rank + 1
    out = idx.shape[:axis] + (depth,) + idx.shape[axis:]
    if not math.prod(out):
        return Constant([np.empty(out, values.dtype)])
    inner = math.prod(idx.shape[axis:])
    return Kernel(k.one_hot_kernel, (_arg(inputs, 0), _arg(inputs, 2), Out(0), depth, inner), [(out, values.dtype)])


# ---- Einsum ------------------------------------------------------------------------------


def _parse_einsum(equation: str, shapes: list[tuple]) -> tuple[list[str], str]:
    """Operand letter strings and output letters, ellipses replaced by private letters (right
    aligned across operands) and an implicit output made explicit as numpy does."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"Einsum equation {equation!r} names {len(terms)} operands, the node has {len(shapes)}")
    ell_rank = max([len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes) if "..." in t], default=0)
    ell = "".join(chr(0x100 + i) for i in range(ell_rank))
    expanded = []
    for t, s in zip(terms, shapes):
        if "..." in t:
            t = t.replace("...", ell[ell_rank - (len(s) - len(t) + 3):])
        if len(t) != len(s) or not all(c.isalpha() or ord(c) >= 0x100 for c in t):
            raise ValueError(f"Einsum term {t!r} does not match an operand of shape {s}")
        expanded.append(t)
    if arrow:
        out = rhs.replace("...", ell)
    else:
        letters = "".join(expanded)
        out = ell + "".join(sorted(c for c in set(letters) if c.isalpha() and letters.count(c) == 1))
    if len(set(out)) != len(out) or any(c not in "".join(expanded) for c in out):
        raise ValueError(f"Einsum output {rhs!r} repeats a letter or names one no operand has")
    return expanded, out


def _letter_strides(term: str, shape: tuple, sizes: dict) -> dict:
    """Element stride of each letter in one operand: summed over repeats (diagonals), 0 where the
    operand's size-1 axis broadcasts."""
    strides, st = {}, _strides(shape)
    for c, n, s in zip(term, shape, st):
        strides[c] = strides.get(c, 0) + (int(s) if n == sizes[c] else 0)
    return strides


def _matmul_roles(terms: list[str], out: str, sizes: dict, shapes: list) -> tuple | None:
    """(batch, M, N, K) letters when the equation is a batched matmul with no repeated, summed-away
    or broadcast letters; None otherwise."""
    if len(terms) != 2 or any(len(set(t)) != len(t) for t in terms):
        return None
    a, b = terms
    if any(sizes[c] != n for t, s in zip(terms, shapes) for c, n in zip(t, s)):
        return None
    if any(c not in out and c not in (b if c in a else a) for c in a + b):
        return None
    batch = [c for c in out if c in a and c in b]
    m = [c for c in out if c in a and c not in b]
    n = [c for c in out if c in b and c not in a]
    return batch, m, n, [c for c in a if c not in out]


def _copy_table(letters: list, sizes: dict, src: dict, dst: dict) -> np.ndarray:
    """Block table copying the box of ``letters`` between two letter-stride maps."""
    box = [sizes[c] for c in letters]
    return block_table([(0, 0, 0, box, [src.get(c, 0) for c in letters], [dst[c] for c in letters])])


@register("Einsum")
def build_einsum(node: Node, inputs: list, opset: int) -> Kernel | Constant:
    equation = node.attrs["equation"]
    if len(inputs) > 2:
        raise Unsupported(f"Einsum {equation!r} of {len(inputs)} operands (edgekit contracts one or two)")
    dtype = inputs[0].dtype
    for t in inputs:
        _check_data(node, t)
        if t.dtype != dtype or dtype == np.bool_:
            raise Unsupported(f"Einsum {equation!r} on {[t.dtype for t in inputs]} operands")
    shapes = [t.shape for t in inputs]
    terms, out = _parse_einsum(equation, shapes)
    sizes: dict = {}
    for t, s in zip(terms, shapes):
        for c, n in zip(t, s):
            if sizes.get(c, 1) not in (1, n) and n != 1:
                raise ValueError(f"Einsum {equation!r}: letter {c!r} has sizes {sizes[c]} and {n}")
            sizes[c] = max(sizes.get(c, 1), n)
    out_shape = tuple(sizes[c] for c in out)
    if 0 in sizes.values():
        return Constant([np.zeros(out_shape, dtype)])
    args = [_arg(inputs, i) for i in range(len(inputs))]
    roles = _matmul_roles(terms, out, sizes, shapes) if dtype == np.float32 else None
    if roles is None:
        summed = [c for c in dict.fromkeys("".join(terms)) if c not in out]
        letters = list(out) + summed or [""]
        sizes[""] = 1
        if len(inputs) == 1:
            terms.append("")
            args.append(np.ones(1, dtype))
            shapes.append(())
        sa, sb = (_letter_strides(t, s, sizes) for t, s in zip(terms, shapes))
        so = dict(zip(out, _strides(out_shape).tolist()))
        letters.sort(key=lambda c: (sa.get(c, 0), sb.get(c, 0), so.get(c, 0)), reverse=True)  # inner: contiguous
        table = np.array([[sizes[c] for c in letters]] + [[m.get(c, 0) for c in letters] for m in (sa, sb, so)],
                         np.int64)
        return Kernel(k.einsum_loops_kernel, (*args, Out(0), *table), [(out_shape, dtype)])
    batch, m, n, kk = roles
    canon_a, canon_b, canon_y = batch + m + kk, batch + kk + n, batch + m + n
    tables, scratch = [], []
    for src, dst in ((terms[0], canon_a), (terms[1], canon_b), (canon_y, list(out))):
        if list(src) == list(dst):
            tables.append(np.zeros((0, kl.HEAD + 6), np.int64))
            scratch.append(np.zeros(1, np.float32))
            continue
        shape = tuple(sizes[c] for c in dst)
        scratch.append(np.zeros(math.prod(shape), np.float32))
        src_strides = _letter_strides(src, tuple(sizes[c] for c in src), sizes)
        tables.append(_copy_table(list(dst), sizes, src_strides, _letter_strides(dst, shape, sizes)))
    nb, nm, nn, nk = (math.prod(sizes[c] for c in g) for g in (batch, m, n, kk))
    plan = np.concatenate([[nm, nn, nk], np.arange(nk) * nn]).astype(np.int64)
    offsets = np.stack([np.arange(nb) * nm * nk, np.arange(nb) * nk * nn]).astype(np.int64)
    return Kernel(k.einsum_matmul_kernel, (*args, Out(0), *scratch, *tables, plan, offsets), [(out_shape, dtype)])
