"""Upsampling ops: ConvTranspose (1-D and 2-D), Resize (opsets 10-19, nearest and linear) and the
deprecated Upsample (7, 9), bound once to ``kernels.upsample`` (see its docstring).

ConvTranspose pads follow onnxruntime: with ``output_shape`` or auto_pad SAME_* (Out = L*s, or the
full output s*(L-1) + output_padding + dilated kernel when shorter) the total padding full - Out is
split with the extra one at the end for SAME_UPPER and at the beginning otherwise, and a negative
total (an output_shape past the full output) extends the end with bias-only columns.
Resize source coordinates follow onnxruntime's formulas at its precision (float32), so nearest
picks the same pixel at ties; Resize-10 and Upsample use asymmetric coordinates and, for nearest, floor
(ceil when downsampling), as onnxruntime does. An output of the input's shape is the input (onnxruntime
copies it whatever the scales). Linear blends both neighbours, a weight of 0 included, so NaN and
infinities spread within a plane as in onnxruntime's bilinear blend; its trilinear blend of 3-D and
5-D inputs also spreads them across the leading axis (channel c + 1 into c), which edgekit does not.
"""
from __future__ import annotations

import numpy as np

from edgekit.ir import Node

from ..kernels import upsample as ku
from .activation import fused_activation
from .conv import conv_operands
from .registry import (In, Kernel, Out, Unsupported, View, aligned_copy, check_output_bytes, const_input, normalize_axis,
                       register)


# ---------------------------------------------------------------- ConvTranspose

def _geometry(node: Node, size: list[int], span: list[int], strides: list[int]) -> tuple[list[int], list[int]]:
    """(begin pad, output size) per spatial axis from pads, output_shape or auto_pad."""
    nd = len(size)
    extra = [int(p) for p in node.attrs.get("output_padding", [0] * nd)]
    full = [s * (n - 1) + e + k for n, s, e, k in zip(size, strides, extra, span)]
    auto = node.attrs.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise Unsupported(f"auto_pad {auto!r}")
    shape = node.attrs.get("output_shape")
    if shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        same = [min(n * s, f) for n, s, f in zip(size, strides, full)]  # L*s, or the full output when shorter
        out = [int(v) for v in shape][-nd:] if shape is not None else same
        totals = [f - o for f, o in zip(full, out)]
        begin = [0 if t <= 0 else t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in totals]
        return begin, out
    if auto == "VALID":
        return [0] * nd, full
    pads = [int(p) for p in node.attrs.get("pads", [0] * (2 * nd))]
    if len(pads) != 2 * nd or min(pads) < 0:
        raise ValueError(f"pads {pads} do not give a non-negative begin and end for {nd} spatial axes")
    return pads[:nd], [f - b - e for f, b, e in zip(full, pads[:nd], pads[nd:])]


def _phases(n: int, k: int, s: int, d: int, begin: int, out: int) -> tuple[int, int, list]:
    """Polyphase split of one axis: (shift M, P length, [(r, [(tap, m)], j0, j1)]) for the phases r
    that reach an output: taps with (tap*d) % s == r read X at j - m, outputs j in [j0, j1)."""
    taps = [(t, (t * d) // s) for t in range(k)]
    shift = max(m for _, m in taps)
    phases = []
    for r in range(s):
        j0, j1 = -((r - begin) // s), (begin + out - 1 - r) // s + 1
        if j1 > j0:
            phases.append((r, [(t, m) for t, m in taps if (t * d) % s == r], j0, j1))
    length = shift + max([n] + [j1 for *_, j1 in phases])
    return shift, length, phases


@register("ConvTranspose")
def build_conv_transpose(node: Node, inputs: list, opset: int) -> Kernel:
    x, w, b, nd, groups, kernel, strides, dilations = conv_operands(node, inputs)
    n, c, *size = x.shape
    cout_g = w.shape[1]
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    begin, out = _geometry(node, size, span, strides)
    if min(out) < 1:
        raise ValueError(f"pads leave no output (sizes {out})")
    check_output_bytes(node, (n, cout_g * groups, *out), x.dtype)  # (before tables of the output's size)
    if nd == 1:  # a single row
        size, kernel, strides, dilations, out = ([1] + v for v in (size, kernel, strides, dilations, out))
        begin = [0] + begin
    (mh, ph, rows), (mw, pw, cols) = (_phases(*a) for a in zip(size, kernel, strides, dilations, begin, out))
    in_place = mh == mw == 0 and (ph, pw) == tuple(size)
    cin_g = c // groups
    wv = np.arange(int(np.prod(w.shape))).reshape(groups, cin_g, cout_g, kernel[0], kernel[1])  # W's flat indices
    slot = max(r[3] - r[2] for r in rows) * pw  # rows of the tallest row phase
    columns = np.zeros(out[1], np.int64)  # output column -> its column phase's slot and column there
    for fc, (rw, _, j0, j1) in enumerate(cols):
        o = np.arange(j0, j1) * strides[1] + rw - begin[1]
        columns[o] = fc * cout_g * slot + np.arange(j1 - j0)
    packed, pairs, boffs = [], [], []
    for rh, taps_h, _, _ in rows:
        for rw, taps_w, _, _ in cols:
            th = np.array([t for t, _ in taps_h], np.int64)
            tw = np.array([t for t, _ in taps_w], np.int64)
            sub = wv[:, :, :, th][:, :, :, :, tw]  # (g, cin_g, cout_g, |th|, |tw|)
            a = sub.transpose(0, 2, 1, 3, 4).reshape(groups, cout_g, -1)  # W_phase per group, taps (ci, kh, kw)
            ci, dh, dw = np.meshgrid(np.arange(cin_g), [mh - m for _, m in taps_h], [mw - m for _, m in taps_w],
                                     indexing="ij")
            offs = (ci * (size[0] * size[1] if in_place else ph * pw) + dh * pw + dw).reshape(-1)
            pairs.append((a.shape[2], sum(p.size for p in packed), sum(len(o) for o in boffs)))
            packed.append(a.reshape(-1))
            boffs.append(offs)
    scratch = np.zeros((0 if in_place else c * ph * pw) + len(cols) * cout_g * slot, np.float32)
    code, p1, p2 = fused_activation(node)
    plan = ku.plan(dict(batch=n, channels=c, height=size[0], width=size[1], groups=groups, out_channels=cout_g * groups,
                        out_height=out[0], out_width=out[1], stride_h=strides[0], stride_w=strides[1], p_height=ph,
                        p_width=pw, shift_h=mh, shift_w=mw, in_place=in_place, row_phases=len(rows),
                        col_phases=len(cols), slot=slot, activation=code),
                   [(i0, i1 - i0, i0 * strides[0] + rh - begin[0]) for rh, _, i0, i1 in rows],
                   [(j0, j1 - j0) for _, _, j0, j1 in cols], pairs, columns, np.concatenate(boffs))
    gather = np.concatenate(packed)  # packed weights = W.flat[gather]
    bias = In(2) if b is not None and not b.is_const else aligned_copy(
        np.zeros(cout_g * groups, np.float32) if b is None else b.value.reshape(-1), np.float32)
    y_shape = (n, cout_g * groups, *out[-nd:])
    params = np.array([p1, p2], np.float32)
    kernel, packing_kernel = ku.conv_transpose_kernels(code)  # compiled for this activation
    if w.is_const:
        weights = aligned_copy(w.value.reshape(-1)[gather], np.float32)
        return Kernel(kernel, (In(0), weights, bias, Out(0), scratch, plan, params),
                      [(y_shape, x.dtype)])
    return Kernel(packing_kernel, (In(0), In(1), bias, Out(0), scratch, plan, params, gather,
                                   aligned_copy(np.zeros(gather.size, np.float32))),
                  [(y_shape, x.dtype)])


# ---------------------------------------------------------------- Resize, Upsample

COORDINATES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
               "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")


def _source(out: int, n: int, scale: np.float32, mode: str, sized: bool) -> np.ndarray:
    """Source coordinate of every output position of one axis: onnxruntime's formulas at its
    precision (float32; half_pixel_symmetric's last step in float64), so nearest ties agree. For
    an output given by ``sizes``, asymmetric and tf_half_pixel_for_nn ties agree with onnxruntime
    when computed exactly, x * n / out (measured over 1,160 size pairs and rounding modes: 1
    disagreement instead of 7)."""
    f = np.float32
    x = np.arange(out, dtype=f)
    if scale == 1:  # onnxruntime maps such an axis to itself whatever the mode
        return x
    if sized and mode in ("asymmetric", "tf_half_pixel_for_nn"):
        return (np.arange(out) + (0.5 if mode == "tf_half_pixel_for_nn" else 0.0)) * n / out
    if mode == "half_pixel":
        return (x + f(0.5)) / scale - f(0.5)
    if mode == "pytorch_half_pixel":
        return (x + f(0.5)) / scale - f(0.5) if out > 1 else np.zeros(out, f)
    if mode == "align_corners":
        return x * f(n - 1) / f(out - 1) if out > 1 else np.zeros(out, f)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + f(0.5)) / scale
    offset = f(n) / f(2) * (f(1) - f(out) / (scale * f(n)))  # half_pixel_symmetric
    return (np.float64(offset) + (x + 0.5) / np.float64(scale) - 0.5).astype(f)


def _nearest(coord: np.ndarray, n: int, rule: str, scale: np.float32) -> np.ndarray:
    """Source index per output position: ``coord`` rounded by ``rule``, clamped into [0, n)."""
    coord = coord.astype(np.float64)  # rounding a float32 in float64 cannot carry
    away = np.where(coord >= 0, np.floor(coord + 0.5), np.ceil(coord - 0.5))  # std::round
    if rule == "round_prefer_floor":
        idx = np.where(coord == np.trunc(coord) + 0.5, np.floor(coord), away)
    elif rule == "round_prefer_ceil":
        idx = away
    elif rule == "floor":
        idx = np.floor(coord)
    elif rule == "ceil" or scale < 1:  # "simple": ceil when downsampling, else truncation
        idx = np.ceil(coord)
    else:
        idx = np.trunc(coord)
    return np.clip(idx, 0, n - 1).astype(np.int64)


def _linear(coord: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, weight of i0, weight of i1) per output position, coord clamped into [0, n - 1]; an
    edge sample clamped onto itself weighs 0.5 + 0.5, as in onnxruntime (so an infinity stays one)."""
    c = np.clip(coord, 0, n - 1).astype(np.float32)
    i0 = np.minimum(c.astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    a = np.where(i0 == i1, np.float32(0.5), c - i0.astype(np.float32)).astype(np.float32)
    return i0, i1, (np.float32(1) - a).astype(np.float32), a


def _resize(node: Node, x, scales: np.ndarray | None, sizes: np.ndarray | None, mode: str, coordinates: str,
            rule: str) -> Kernel | View:
    """The Kernel resampling ``x`` to ``sizes`` (or by ``scales``), all axes given; a View when
    the output has the input's shape."""
    if x.dtype != np.float32:
        raise Unsupported(f"{node.op_type} on {x.dtype} (edgekit computes float32)")
    rank = len(x.shape)
    if sizes is not None:
        out = [int(v) for v in sizes]
        scale = [np.float32(o) / np.float32(i) if i else np.float32(1) for o, i in zip(out, x.shape)]
    else:
        scale = [np.float32(s) for s in scales]
        out = [int(np.floor(s * np.float32(i))) for s, i in zip(scale, x.shape)]
    if min(out, default=0) < 0 or any(o and not i for o, i in zip(out, x.shape)):
        raise ValueError(f"{node.op_type} of shape {list(x.shape)} to {out}: a negative size or an empty axis enlarged")
    check_output_bytes(node, out, x.dtype)  # (before tables of the output's size)
    if out == list(x.shape):  # onnxruntime copies the input then, whatever the scales (1.25 of 2 is 2)
        return View(tuple(out))
    shape = [1] * (2 - rank) + list(x.shape)  # at least (H, W)
    out2 = [1] * (2 - rank) + out
    scale2 = [np.float32(1)] * (2 - rank) + scale
    lead, (h, w), (oh, ow) = shape[:-2], shape[-2:], out2[-2:]
    if mode == "nearest":
        idx = [_nearest(_source(o, i, s, coordinates, sizes is not None), i, rule, s)
               for o, i, s in zip(out2, shape, scale2)]
        grid = np.ix_(*idx[:-2]) if lead else ()
        plane_map = np.ravel_multi_index(grid, lead).reshape(-1) if lead else np.zeros(1, np.int64)
        plan = np.array([plane_map.size, h, w, oh, ow], np.int64)
        index = np.concatenate([plane_map, idx[-2], idx[-1]]).astype(np.int64)
        return Kernel(ku.resize_nearest_kernel, (In(0), Out(0), plan, index), [(tuple(out), x.dtype)])
    moved = [a - max(0, 2 - rank) for a, (i, o) in enumerate(zip(shape[:-2], out2[:-2])) if i != o]
    if moved:
        raise Unsupported(f"linear {node.op_type} of axis {moved[0]} (edgekit interpolates the last two axes only)")
    (h0, h1, bh0, bh1), (w0, w1, bw0, bw1) = (_linear(_source(o, i, s, coordinates, sizes is not None), i)
                                              for o, i, s in zip(out2[-2:], shape[-2:], scale2[-2:]))
    planes = int(np.prod(lead, dtype=np.int64))
    plan = np.array([planes, h, w, oh, ow], np.int64)
    index = np.concatenate([h0, h1, w0, w1]).astype(np.int64)
    weight = np.concatenate([bh0, bh1, bw0, bw1]).astype(np.float32)
    scratch = np.zeros(h * ow, np.float32)
    return Kernel(ku.resize_linear_kernel, (In(0), Out(0), scratch, plan, index, weight), [(tuple(out), x.dtype)])


@register("Resize")
def build_resize(node: Node, inputs: list, opset: int) -> Kernel | View:
    x = inputs[0]
    mode = node.attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise Unsupported(f"Resize mode {mode!r} (edgekit implements nearest and linear)")
    if opset < 11:
        return _resize(node, x, const_input(node, inputs, 1, "scales"), None, mode, "asymmetric", "simple")
    coordinates = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    if coordinates not in COORDINATES:
        raise Unsupported(f"Resize coordinate_transformation_mode {coordinates!r}")
    rule = node.attrs.get("nearest_mode", "round_prefer_floor")
    if rule not in NEAREST_MODES[:-1]:
        raise ValueError(f"Resize nearest_mode {rule!r}")
    if int(node.attrs.get("antialias", 0)):
        raise Unsupported("Resize with antialias")
    policy = node.attrs.get("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        raise Unsupported(f"Resize keep_aspect_ratio_policy {policy!r} (edgekit implements stretch)")
    scales, sizes = const_input(node, inputs, 2, "scales"), const_input(node, inputs, 3, "sizes")
    scales = None if scales is None or scales.size == 0 else scales.reshape(-1)
    sizes = None if sizes is None or sizes.size == 0 else sizes.reshape(-1)
    if (scales is None) == (sizes is None):
        raise ValueError("Resize needs exactly one of scales and sizes")
    rank = len(x.shape)
    axes = [normalize_axis(int(a), rank) for a in node.attrs.get("axes", range(rank))]
    given = sizes if sizes is not None else scales
    if len(given) != len(axes):
        raise ValueError(f"Resize has {len(given)} scales or sizes for {len(axes)} axes")
    full = list(x.shape) if sizes is not None else [1.0] * rank
    for a, v in zip(axes, given):
        full[a] = v
    return _resize(node, x, None if sizes is not None else np.array(full, np.float32),
                   np.array(full, np.int64) if sizes is not None else None, mode, coordinates, rule)


@register("Upsample")
def build_upsample(node: Node, inputs: list, opset: int) -> Kernel | View:
    mode = node.attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise Unsupported(f"Upsample mode {mode!r} (edgekit implements nearest and linear)")
    scales = node.attrs.get("scales") if opset < 9 else const_input(node, inputs, 1, "scales")
    if scales is None:
        raise ValueError("Upsample needs scales")
    return _resize(node, inputs[0], np.asarray(scales, np.float32).reshape(-1), None, mode, "asymmetric", "simple")
