"""Layout and shape-plumbing ops.

Views (no copy, no run-time step): Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout.
Copies as tables of strided blocks for one Numba kernel: Transpose, Slice, Concat, Pad, Expand,
Tile, Split; plus Gather and Cast. Shape queries (Shape, Size, ConstantOfShape, Range, Constant)
are known at plan time, so exporter chains such as Shape -> Gather -> Unsqueeze -> Concat ->
Reshape fold into one view: plans are specialised to concrete input shapes.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from edgekit.ir import Node, dtype_of

from ..kernels import layout as k
from ..kernels import quantize as kq
from .registry import Constant, In, Kernel, Out, Tensor, Unsupported, View, const_input, normalize_axis, register

Block = tuple[int, int, int, list[int], list[int], list[int]]
CAST_TYPES = {np.dtype(t) for t in (np.float16, np.float32, np.float64, np.int8, np.uint8, np.int16, np.uint16,
                                     np.int32, np.int64, np.bool_)}


def _strides(shape) -> list[int]:
    """Element strides of a C-contiguous array of this shape."""
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= int(d)
    return out[::-1]


def _coalesce(shape, src, dst) -> tuple[list[int], list[int], list[int]]:
    """Drop unit dims and merge neighbours that are contiguous in both source and destination
    (so most copies become a few long contiguous runs); box dims may be visited in any order."""
    dims: list[list[int]] = []
    for n, s, d in zip(shape, src, dst):
        if n == 1:
            continue
        if dims and dims[-1][1] == s * n and dims[-1][2] == d * n:
            dims[-1] = [dims[-1][0] * n, s, d]
        else:
            dims.append([n, s, d])
    if dims and dims[-1][2] == 1 and dims[-1][1] not in (0, 1):
        # a transposing copy: the source-contiguous dim goes next to last, so the kernel tiles the pair
        unit = [dim for dim in dims[:-1] if dim[1] == 1]
        if unit:
            dims.remove(unit[0])
            dims.insert(len(dims) - 1, unit[0])
    dims = dims or [[1, 0, 0]]
    return [d[0] for d in dims], [d[1] for d in dims], [d[2] for d in dims]


def block_table(blocks: list[Block]) -> np.ndarray:
    """Blocks as the int64 rows the kernels read, coalesced and padded to one rank (at least 2)."""
    rows = [(i, so, do, *_coalesce(shape, ss, ds)) for i, so, do, shape, ss, ds in blocks if 0 not in shape]
    rank = max([2] + [len(r[3]) for r in rows])
    table = np.zeros((len(rows), k.HEAD + 3 * rank), np.int64)
    for b, (i, so, do, shape, ss, ds) in enumerate(rows):
        pad = rank - len(shape)
        table[b, :k.HEAD] = (i, so, do)
        table[b, k.HEAD:k.HEAD + rank] = [1] * pad + shape
        table[b, k.HEAD + rank + pad:k.HEAD + 2 * rank] = ss
        table[b, k.HEAD + 2 * rank + pad:] = ds
    return table


def _check_dtype(node: Node, t: Tensor) -> None:
    if t.dtype == np.float16 or t.dtype.kind in "OSUV":
        raise Unsupported(f"{node.op_type} on {t.dtype} tensors (the Numba kernels need a native type)")


def _source(inputs: list, i: int):
    """Kernel argument for input i: its placeholder, or its value (writable, so every source
    array has the same Numba type) when constant."""
    t = inputs[i]
    return In(i) if t.value is None else np.require(t.value, requirements=["C", "W"])


def _copy(node: Node, inputs: list, blocks: list[Block], out_shape, extra: tuple = ()) -> Kernel | View | Constant:
    """A copy op from its blocks; a view when it is input 0 unchanged, a constant when empty."""
    x = inputs[0]
    _check_dtype(node, x)
    out_shape = tuple(int(d) for d in out_shape)
    if 0 in out_shape:
        return Constant([np.empty(out_shape, x.dtype)])
    table = block_table(blocks)
    size = math.prod(x.shape)
    if len(table) == 1 and list(table[0]) == [0, 0, 0, 1, size, 0, 1, 0, 1]:
        return View(out_shape)
    srcs = [_source(inputs, i) for i in range(len(inputs))]
    return Kernel(k.copy_blocks, (Out(0), table, *srcs, *extra), [(out_shape, x.dtype)])


# ---- views -------------------------------------------------------------------------------


@register("Reshape")
def build_reshape(node: Node, inputs: list, opset: int) -> View:
    x = inputs[0]
    shape = node.attrs["shape"] if opset < 5 else const_input(node, inputs, 1, "shape")
    if shape is None:
        raise ValueError("Reshape needs a shape")
    allowzero = opset >= 14 and node.attrs.get("allowzero", 0)
    out = [x.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(int(v) for v in shape)]
    if out.count(-1) > 1:
        raise ValueError(f"Reshape shape {list(shape)} has more than one -1")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known and math.prod(x.shape) % known:
            raise ValueError(f"{math.prod(x.shape)} values of shape {tuple(x.shape)} do not divide into shape {[int(v) for v in shape]}")
        out[out.index(-1)] = math.prod(x.shape) // known if known else 0
    return View(tuple(out))


@register("Flatten")
def build_flatten(node: Node, inputs: list, opset: int) -> View:
    shape = inputs[0].shape
    axis = node.attrs.get("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis <= len(shape):
        raise Unsupported(f"axis {node.attrs.get('axis')} is out of range for a rank-{len(shape)} input")
    return View((math.prod(shape[:axis]), math.prod(shape[axis:])))


@register("Squeeze")
def build_squeeze(node: Node, inputs: list, opset: int) -> View:
    shape = inputs[0].shape
    axes = node.attrs.get("axes") if opset < 13 else const_input(node, inputs, 1, "axes")
    if axes is None:
        return View(tuple(d for d in shape if d != 1))
    drop = {normalize_axis(int(a), len(shape)) for a in axes}
    if any(shape[a] != 1 for a in drop):
        raise ValueError(f"Squeeze axes {list(axes)} of shape {shape} are not all 1")
    return View(tuple(d for i, d in enumerate(shape) if i not in drop))


@register("Unsqueeze")
def build_unsqueeze(node: Node, inputs: list, opset: int) -> View:
    shape = list(inputs[0].shape)
    axes = node.attrs.get("axes") if opset < 13 else const_input(node, inputs, 1, "axes")
    if axes is None:
        raise ValueError("Unsqueeze needs axes")
    rank = len(shape) + len(axes)
    where = sorted(normalize_axis(int(a), rank) for a in axes)
    if len(set(where)) != len(where):
        raise ValueError(f"Unsqueeze axes {list(axes)} repeat")
    for a in where:
        shape.insert(a, 1)
    return View(tuple(shape))


@register("Identity")
def build_identity(node: Node, inputs: list, opset: int) -> View:
    if inputs[0].dtype is None:
        raise Unsupported("Identity on sequence or optional values")
    return View(inputs[0].shape)


@register("Dropout")
def build_dropout(node: Node, inputs: list, opset: int) -> View | Kernel:
    """Inference dropout is the identity; its optional mask is all True (all ones before opset 10)."""
    x = inputs[0]
    if opset >= 12 and bool(const_input(node, inputs, 2, "training_mode")):
        ratio = const_input(node, inputs, 1, "ratio")
        if ratio is None or float(ratio) != 0.0:
            raise Unsupported("Dropout in training mode (random masks)")
    if opset < 7 and not node.attrs.get("is_test", 0):
        raise Unsupported("Dropout with is_test=0 (training mode)")
    if len(node.outputs) < 2 or not node.outputs[1]:
        return View(x.shape)
    _check_dtype(node, x)
    mask = np.dtype(np.bool_) if opset >= 10 else x.dtype
    return Kernel(k.copy_with_mask, (In(0), Out(0), Out(1)), [(x.shape, x.dtype), (x.shape, mask)])


# ---- shape queries and constants --------------------------------------------------------


@register("Constant")
def build_constant(node: Node, inputs: list, opset: int) -> Constant:
    a = node.attrs
    if "value" in a:
        return Constant([np.asarray(a["value"])])
    for name, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                        ("value_int", np.int64), ("value_ints", np.int64)):
        if name in a:
            return Constant([np.array(a[name], dtype)])
    raise Unsupported(f"Constant with attribute {sorted(a)} (sparse and string constants)")


@register("Shape")
def build_shape(node: Node, inputs: list, opset: int) -> Constant:
    start, end = node.attrs.get("start", 0), node.attrs.get("end")
    return Constant([np.array(inputs[0].shape[start:end], np.int64)])


@register("Size")
def build_size(node: Node, inputs: list, opset: int) -> Constant:
    return Constant([np.array(math.prod(inputs[0].shape), np.int64)])


@register("ConstantOfShape")
def build_constant_of_shape(node: Node, inputs: list, opset: int) -> Constant:
    shape = const_input(node, inputs, 0, "shape")
    value = np.asarray(node.attrs.get("value", np.zeros(1, np.float32))).reshape(-1)
    return Constant([np.full(tuple(int(d) for d in shape), value[0], value.dtype)])


@register("Range")
def build_range(node: Node, inputs: list, opset: int) -> Constant:
    """start, start + delta, ... below limit, accumulated in the input type as onnxruntime does."""
    start, limit, delta = (const_input(node, inputs, i, n) for i, n in enumerate(("start", "limit", "delta")))
    if delta == 0:
        raise ValueError("Range delta is 0")
    n = max(math.ceil(float(limit - start) / float(delta)), 0)
    steps = np.full(n, delta, start.dtype)
    steps[:1] = start
    return Constant([np.add.accumulate(steps, dtype=start.dtype)])


def _cast(node: Node, x: Tensor, to: np.dtype | None) -> View | Kernel:
    """Cast with onnxruntime's results: float to integer as ``kq.float_to_int`` documents (ONNX leaves
    NaN, infinities and out-of-range values undefined), integer to narrower integer wraps, to bool is
    x != 0, and float16 is rounded to nearest even through float32."""
    if to == x.dtype:
        return View(x.shape)
    if to not in CAST_TYPES or x.dtype not in CAST_TYPES:
        raise Unsupported(f"Cast from {x.dtype} to {to}")
    if x.dtype.kind == "f" and to.kind in "iu":
        wide = to == np.int64
        limit = 2.0 ** 63 if wide else 2.0 ** 31
        lo = np.nextafter(-limit, -np.inf) if wide else -limit - 1  # the open range that truncates into int64/int32
        src = np.float32 if x.dtype == np.float16 else x.dtype.type  # (float16 is decoded to float32 first)
        fn = _half_to_int if x.dtype == np.float16 else kq.float_to_int
        return Kernel(fn, (In(0), Out(0), src(lo), src(limit), np.int64(-limit)), [(x.shape, to)])
    fn = k.cast_to_half if to == np.float16 else k.cast_from_half if x.dtype == np.float16 else k.cast_kernel
    return Kernel(fn, (In(0), Out(0)), [(x.shape, to)])


def _half_to_int(x: np.ndarray, out: np.ndarray, lo: float, hi: float, indefinite: int) -> None:
    """float16 -> integer: decode to float32 (exact), then ``kq.float_to_int``."""
    wide = np.empty(x.shape, np.float32)
    k.cast_from_half(x, wide)
    kq.float_to_int(wide, out, lo, hi, indefinite)


@register("Cast")
def build_cast(node: Node, inputs: list, opset: int) -> View | Kernel:
    to = node.attrs["to"]
    if not isinstance(to, int):
        raise Unsupported("Cast with a string 'to' (opset 1)")
    return _cast(node, inputs[0], dtype_of(to))


@register("CastLike")
def build_cast_like(node: Node, inputs: list, opset: int) -> View | Kernel:
    return _cast(node, inputs[0], inputs[1].dtype)


# ---- copies ------------------------------------------------------------------------------


@register("Transpose")
def build_transpose(node: Node, inputs: list, opset: int) -> Kernel | View | Constant:
    shape = inputs[0].shape
    perm = [int(p) for p in node.attrs.get("perm", range(len(shape) - 1, -1, -1))]
    if sorted(perm) != list(range(len(shape))):
        raise ValueError(f"Transpose perm {perm} is not a permutation of rank {len(shape)}")
    out = [shape[p] for p in perm]
    src = _strides(shape)
    return _copy(node, inputs, [(0, 0, 0, out, [src[p] for p in perm], _strides(out))], out)


def _slice_axis(dim: int, start: int, end: int, step: int) -> tuple[int, int]:
    """(first index, length) of start:end:step on an axis of size dim, clamped as ONNX says."""
    if step == 0:
        raise ValueError("Slice step is 0")
    start += dim if start < 0 else 0
    end += dim if end < 0 else 0
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        return start, max(0, -(-(end - start) // step))
    start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return start, max(0, -(-(start - end) // -step))


@register("Slice")
def build_slice(node: Node, inputs: list, opset: int) -> Kernel | View | Constant:
    shape = inputs[0].shape
    if opset < 10:
        starts, ends, axes, steps = node.attrs["starts"], node.attrs["ends"], node.attrs.get("axes"), None
    else:
        starts, ends = const_input(node, inputs, 1, "starts"), const_input(node, inputs, 2, "ends")
        axes, steps = const_input(node, inputs, 3, "axes"), const_input(node, inputs, 4, "steps")
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    first, step, out = [0] * len(shape), [1] * len(shape), list(shape)
    for a, s, e, st in zip(axes, starts, ends, steps):
        a = normalize_axis(int(a), len(shape))
        step[a] = int(st)
        first[a], out[a] = _slice_axis(shape[a], int(s), int(e), int(st))
    src = _strides(shape)
    offset = sum(f * s for f, s in zip(first, src))
    return _copy(node, inputs[:1], [(0, offset, 0, out, [s * t for s, t in zip(src, step)], _strides(out))], out)


@register("Concat")
def build_concat(node: Node, inputs: list, opset: int) -> Kernel | View | Constant:
    rank = len(inputs[0].shape)
    axis = normalize_axis(node.attrs.get("axis", 1), rank)
    out = list(inputs[0].shape)
    out[axis] = sum(t.shape[axis] for t in inputs)
    if any(len(t.shape) != rank or any(a != b for i, (a, b) in enumerate(zip(t.shape, out)) if i != axis)
           for t in inputs):
        raise ValueError(f"Concat inputs {[t.shape for t in inputs]} differ off axis {axis}")
    dst, blocks, at = _strides(out), [], 0
    for i, t in enumerate(inputs):
        blocks.append((i, 0, at * dst[axis], list(t.shape), _strides(t.shape), dst))
        at += t.shape[axis]
    return _copy(node, inputs, blocks, out)


def _pad_segments(mode: str, n: int, before: int, after: int) -> tuple[int, list[tuple]]:
    """Output size and segments (dst_start, length, from_fill, src_start, src_step) of one axis:
    negative pads crop first, then the cropped axis is padded as onnxruntime does."""
    crop_b, crop_a, pb, pa = max(-before, 0), max(-after, 0), max(before, 0), max(after, 0)
    m = n - crop_b - crop_a
    if m < 0:
        raise ValueError(f"Pad crops {crop_b + crop_a} from an axis of size {n}")
    mid = (pb, m, False, crop_b, 1)
    if not pb and not pa:
        return m, [mid]
    if mode == "constant":
        edges = (True, 0, 0), (True, 0, 0)
    elif mode == "edge" and m >= 1:
        edges = (False, crop_b, 0), (False, crop_b + m - 1, 0)
    elif mode == "reflect" and max(pb, pa) <= m - 1:
        edges = (False, crop_b + pb, -1), (False, crop_b + m - 2, -1)
    elif mode == "wrap" and max(pb, pa) <= m:
        edges = (False, crop_b + m - pb, 1), (False, crop_b, 1)
    else:
        raise Unsupported(f"Pad mode {mode!r} with pads ({before}, {after}) on an axis of size {n}")
    segs = [(0, pb, *edges[0]), mid, (pb + m, pa, *edges[1])]
    return pb + m + pa, [s for s in segs if s[1]]


@register("Pad")
def build_pad(node: Node, inputs: list, opset: int) -> Kernel | View | Constant:
    x = inputs[0]
    rank, mode = len(x.shape), node.attrs.get("mode", "constant")
    if opset < 11:
        pads, value, axes = node.attrs.get("pads", node.attrs.get("paddings")), node.attrs.get("value", 0.0), None
    else:
        pads, value = const_input(node, inputs, 1, "pads"), const_input(node, inputs, 2, "constant_value")
        axes = const_input(node, inputs, 3, "axes") if opset >= 18 else None
    axes = list(range(rank)) if axes is None else [normalize_axis(int(a), rank) for a in axes]
    pads = [int(p) for p in pads]
    if len(pads) != 2 * len(axes):
        raise ValueError(f"Pad has {len(pads)} pads for {len(axes)} axes")
    before, after = [0] * rank, [0] * rank
    for j, a in enumerate(axes):
        before[a], after[a] = pads[j], pads[j + len(axes)]
    axis_segs = [_pad_segments(mode, n, b, a) for n, b, a in zip(x.shape, before, after)]
    out = [size for size, _ in axis_segs]
    src, dst, blocks = _strides(x.shape), _strides(out), []
    for combo in itertools.product(*(segs for _, segs in axis_segs)):
        shape = [s[1] for s in combo]
        dst_off = sum(s[0] * d for s, d in zip(combo, dst))
        if any(s[2] for s in combo):
            blocks.append((1, 0, dst_off, shape, [0] * rank, dst))
        else:
            blocks.append((0, sum(s[3] * t for s, t in zip(combo, src)), dst_off, shape,
                           [s[4] * t for s, t in zip(combo, src)], dst))
    fill = np.full((1,) * rank, 0 if value is None else value, x.dtype)
    return _copy(node, inputs[:1], blocks, out, extra=(fill,))


@register("Expand")
def build_expand(node: Node, inputs: list, opset: int) -> Kernel | View | Constant:
    shape = inputs[0].shape
    out = np.broadcast_shapes(shape, tuple(int(d) for d in const_input(node, inputs, 1, "shape")))
    lead, src = len(out) - len(shape), _strides(shape)
    strides = [0 if j < lead or shape[j - lead] != out[j] else src[j - lead] for j in range(len(out))]
    return _copy(node, inputs[:1], [(0, 0, 0, list(out), strides, _strides(out))], out)


@register("Tile")
def build_tile(node: Node, inputs: list, opset: int) -> Kernel | View | Constant:
    """Output viewed as (r0, d0, r1, d1, ...): one block reading the input with stride 0 over r."""
    if opset < 6:
        raise Unsupported("Tile before opset 6 (tiles/axis inputs)")
    shape = inputs[0].shape
    reps = [int(r) for r in const_input(node, inputs, 1, "repeats")]
    if len(reps) != len(shape) or min(reps, default=0) < 0:
        raise ValueError(f"Tile repeats {reps} are not {len(shape)} non-negative integers")
    out = [d * r for d, r in zip(shape, reps)]
    src, dst = _strides(shape), _strides(out)
    box = [v for r, d in zip(reps, shape) for v in (r, d)]
    box_src = [v for s in src for v in (0, s)]
    box_dst = [v for d, t in zip(shape, dst) for v in (d * t, t)]
    return _copy(node, inputs[:1], [(0, 0, 0, box, box_src, box_dst)], out)


@register("Split")
def build_split(node: Node, inputs: list, opset: int) -> Kernel | View:
    x = inputs[0]
    _check_dtype(node, x)
    axis = normalize_axis(node.attrs.get("axis", 0), len(x.shape))
    n, count = x.shape[axis], len(node.outputs)
    sizes = node.attrs.get("split") if opset < 13 else const_input(node, inputs, 1, "split")
    if sizes is None and "num_outputs" in node.attrs:
        chunk = -(-n // node.attrs["num_outputs"])
        sizes = [chunk] * (count - 1) + [n - chunk * (count - 1)]
    elif sizes is None:
        if n % count:
            raise ValueError(f"Split cannot cut an axis of {n} into {count} equal parts")
        sizes = [n // count] * count
    sizes = [int(s) for s in sizes]
    if len(sizes) != count or sum(sizes) != n or min(sizes) < 0:
        raise ValueError(f"Split sizes {sizes} do not cut an axis of {n} into {count} outputs")
    if count == 1:
        return View(x.shape)
    src, blocks, outs, at = _strides(x.shape), [], [], 0
    for j, size in enumerate(sizes):
        shape = list(x.shape)
        shape[axis] = size
        blocks.append((j, at * src[axis], 0, shape, src, _strides(shape)))
        outs.append((tuple(shape), x.dtype))
        at += size
    return Kernel(k.split_blocks, (_source(inputs, 0), block_table(blocks), *(Out(j) for j in range(count))), outs)


@register("Gather")
def build_gather(node: Node, inputs: list, opset: int) -> Kernel | Constant:
    data, idx = inputs[0], inputs[1]
    _check_dtype(node, data)
    if idx.dtype not in (np.int32, np.int64):
        raise Unsupported(f"Gather indices of type {idx.dtype}")
    axis = normalize_axis(node.attrs.get("axis", 0), len(data.shape))
    if idx.is_const and idx.value.size and not (-data.shape[axis] <= idx.value.min() <= idx.value.max() < data.shape[axis]):
        raise ValueError(f"Gather indices {idx.value.min()}..{idx.value.max()} are out of range for an axis of {data.shape[axis]}")
    out = data.shape[:axis] + idx.shape + data.shape[axis + 1:]
    if 0 in out:
        return Constant([np.empty(out, data.dtype)])
    outer, inner = math.prod(data.shape[:axis]), math.prod(data.shape[axis + 1:])
    return Kernel(k.gather_kernel, (In(0), In(1), Out(0), outer, data.shape[axis], inner), [(out, data.dtype)])
