"""Builders for the ``ai.edgekit`` ops BinaryConv and BinaryGemm (schema: docs/ops.md).

They validate the node's attributes and constant inputs (ModelError when malformed), decode an
MST plan (children's rows hold difference masks), and precompute the tables of
``kernels/binary.py``: root blocks, child entries over nonzero mask words, border classes for
exact zero padding, integer thresholds in popcount units and the float epilogue. Dense stride-1
convs with packed input of whole words go to the AMX tile kernel where the CPU has one.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from edgekit.errors import ModelError
from edgekit.ir import Node

from ..kernels import binary as kb
from .registry import In, Kernel, Out, Unsupported, aligned_copy, register

DOMAIN = "ai.edgekit"
MODES = {"packed": kb.PACKED, "sign": kb.SIGN, "float": kb.FLOAT}
L2_WEIGHTS = 1 << 20  # AMX path: int8 weights up to this size are swept once per 32 rows (they stay in L2)
DOTS_BYTES = 1 << 17  # else rows per sweep: as many as an int32 dots scratch of this size holds


def _fail(node: Node, what: str) -> ModelError:
    return ModelError(f"node {node.name!r} ({node.op_type}): {what}")


def _ints(node: Node, name: str, default: list[int] | None, length: int | None = None,
          minimum: int | None = None) -> list[int]:
    value = node.attrs.get(name, default)
    if value is None:
        raise _fail(node, f"attribute {name!r} is required")
    if isinstance(value, np.ndarray) or not isinstance(value, (list, tuple)) or \
            not all(isinstance(v, (int, np.integer)) for v in value):
        raise _fail(node, f"attribute {name!r} must be a list of ints, got {value!r}")
    if length is not None and len(value) != length:
        raise _fail(node, f"attribute {name!r} must have {length} values, got {list(value)}")
    if minimum is not None and any(v < minimum for v in value):
        raise _fail(node, f"attribute {name!r} values must be >= {minimum}, got {list(value)}")
    return [int(v) for v in value]


def _const(node: Node, inputs: list, index: int, what: str, dtype, shape: tuple) -> np.ndarray | None:
    if index >= len(inputs) or inputs[index] is None:
        return None
    if inputs[index].value is None:
        raise Unsupported(f"input {index} ({what}) must be a constant")
    v = inputs[index].value
    if v.dtype != dtype or v.shape != shape:
        raise _fail(node, f"input {index} ({what}) must be {np.dtype(dtype).name} {list(shape)}, "
                          f"got {v.dtype.name} {list(v.shape)}")
    return v


def decode_weights(node: Node, w: np.ndarray, parents: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Dense packed weights from an MST-coded W (children's rows hold w XOR w_parent), and the
    depth of every channel in its tree."""
    m = w.shape[0]
    depth = np.zeros(m, np.int64)
    if parents is None:
        return w, depth
    if len(parents) != m or any(p < -1 or p >= m for p in parents):
        raise _fail(node, f"attribute 'mst_parents' must hold {m} values in [-1, {m - 1}]")
    kids: list[list[int]] = [[] for _ in range(m)]
    for c, p in enumerate(parents):
        if p >= 0:
            kids[p].append(c)
    queue = deque(c for c in range(m) if parents[c] < 0)
    dense = w.copy()
    seen = len(queue)
    while queue:
        p = queue.popleft()
        for c in kids[p]:
            dense[c] = dense[p] ^ w[c]
            depth[c] = depth[p] + 1
            seen += 1
            queue.append(c)
    if seen != m:
        raise _fail(node, "attribute 'mst_parents' has a cycle (every channel must reach a root)")
    return dense, depth


def child_blocks(node: Node, parents: list[int] | None, depth: np.ndarray) -> list[list[int]]:
    """The blocks of up to 4 children the kernel computes together: consecutive runs of 4 of the
    ``mst_order`` attribute (-1 = empty lane), or by default the children by depth, then channel,
    cut into 4s within each depth. A child's parent must be a root or in an earlier block."""
    order = node.attrs.get("mst_order")
    if parents is None:
        if order is not None:
            raise _fail(node, "attribute 'mst_order' needs 'mst_parents'")
        return []
    kids = [c for c in range(len(parents)) if parents[c] >= 0]
    if order is None:
        blocks = []
        for d in np.unique(depth[kids]):
            level = [c for c in kids if depth[c] == d]
            blocks += [level[i:i + kb.BLOCK] for i in range(0, len(level), kb.BLOCK)]
        return blocks
    order = _ints(node, "mst_order", None, minimum=-1)
    if len(order) % kb.BLOCK or sorted(c for c in order if c >= 0) != kids:
        raise _fail(node, f"attribute 'mst_order' must list every child once in runs of {kb.BLOCK} (-1 = empty)")
    blocks = [[c for c in order[i:i + kb.BLOCK] if c >= 0] for i in range(0, len(order), kb.BLOCK)]
    done = {c for c in range(len(parents)) if parents[c] < 0}
    for block in blocks:
        if any(parents[c] not in done for c in block):
            raise _fail(node, "attribute 'mst_order' computes a child before its parent")
        done.update(block)
    return [b for b in blocks if b]


def _border_classes(size: int, out: int, k: int, stride: int, pad: int, dil: int) -> tuple[np.ndarray, list]:
    """Class of each output position along one axis (by its set of outside taps) and the sets."""
    patterns: dict[tuple, int] = {}
    cls = np.empty(out, np.int64)
    for o in range(out):
        outside = tuple(not 0 <= o * stride - pad + j * dil < size for j in range(k))
        cls[o] = patterns.setdefault(outside, len(patterns))
    return cls, list(patterns)


def _plan(node: Node, x, w, dense_w, depth, parents, geo: dict, mode: int,
          in_order: np.ndarray, thresholds, scale, bias) -> kb.ConvTables:
    m, kw_words = w.shape
    kh_, kw_ = geo["kernel"]
    taps = kh_ * kw_
    wd = kw_words // taps
    cbits = geo["channels"] * geo["groups"]  # valid bits per tap
    # tap sums S[m, t] of the +-1 weights, for the border correction
    counts = np.bitwise_count(dense_w.reshape(m, taps, wd)).sum(axis=2).astype(np.int64)
    tap_sum = cbits - 2 * counts
    hcls, hpat = _border_classes(geo["h"], geo["oh"], kh_, geo["sh"], geo["pt"], geo["dh"])
    wcls, wpat = _border_classes(geo["w"], geo["ow"], kw_, geo["sw"], geo["pl"], geo["dw"])
    base = np.empty((len(hpat) * len(wpat), m), np.int64)
    for a, hp in enumerate(hpat):
        for b, wp in enumerate(wpat):
            outside = [i * kw_ + j for i in range(kh_) for j in range(kw_) if hp[i] or wp[j]]
            base[a * len(wpat) + b] = taps * cbits - tap_sum[:, outside].sum(axis=1)
    limh = (base - thresholds[None, :]) // 2 if thresholds is not None else np.zeros_like(base)
    roots = [c for c in range(m) if parents is None or parents[c] < 0]
    nb = (len(roots) + kb.BLOCK - 1) // kb.BLOCK
    rmap = np.full(nb * kb.BLOCK, m, np.int64)
    rmap[:len(roots)] = roots
    padded = np.vstack([dense_w, np.zeros((1, kw_words), np.uint64)])
    root_w = np.ascontiguousarray(padded[rmap].reshape(nb, kb.BLOCK, kw_words).transpose(0, 2, 1))
    kids, kptr, kidx, kwords = [], [0], [], []
    for block in child_blocks(node, parents, depth):
        chans = block + [m] * (kb.BLOCK - len(block))  # spare children write the unused slot m
        masks = np.vstack([w[block], np.zeros((kb.BLOCK - len(block), kw_words), np.uint64)])
        dense = np.vstack([dense_w[block], np.zeros_like(masks[len(block):])])
        words = np.flatnonzero(np.any(masks != 0, axis=0))
        kids.append(chans + [parents[c] if c < m else m for c in chans]
                    + [int(np.bitwise_count(masks[j]).sum()) for j in range(kb.BLOCK)])
        kidx.extend(words.tolist())
        kwords.append(np.stack([masks[:, words], dense[:, words] & masks[:, words]], axis=2).transpose(1, 0, 2))
        kptr.append(len(kidx))
    kwords = np.concatenate(kwords).reshape(-1) if kwords else np.zeros(0, np.uint64)
    hp_, wp_ = geo["h"] + geo["pt"] + geo["pb"], geo["w"] + geo["pl"] + geo["pr"]
    offs = np.array([(i * geo["dh"] * wp_ + j * geo["dw"]) * wd for i in range(kh_) for j in range(kw_)], np.int64)
    tiles, pin, pout, pcls = _tiling(geo, hcls[:, None] * len(wpat) + wcls[None, :], hp_, wp_, wd, m, mode,
                                     kw_words)
    return kb.ConvTables(
        n=geo["n"], hin=geo["h"], win=geo["w"], cin=geo["cin"], wd=wd, pt=geo["pt"], pl=geo["pl"], hp=hp_, wp=wp_,
        m=m, plane=geo["oh"] * geo["ow"], mode=mode, in_float=x.dtype == np.float32, offs=offs, order=in_order,
        roots=root_w, rmap=rmap, kids=np.array(kids, np.int64).reshape(-1, 12), kptr=np.array(kptr, np.int64),
        kidx=np.array(kidx, np.int64), kwords=kwords.astype(np.uint64), tiles=tiles, pin=pin, pout=pout, pcls=pcls,
        limh=limh, base=base, scale=scale if scale is not None else np.zeros(m, np.float32),
        bias=bias if bias is not None else np.zeros(m, np.float32))


def _tiling(geo: dict, cls: np.ndarray, hp: int, wp: int, wd: int, m: int, mode: int, k_words: int):
    """Tiles of 8 output pixels: (first slot, lanes, main class), and per slot the pixel's window
    origin in the padded input, its output offset and its class (a short tile repeats its last
    pixel in the spare lanes). Pixels are grouped by border class when the extra tiles that costs
    are cheaper than fixing up lanes of other classes one by one (large images), else tiled in
    raster order (small images, where class groups would be mostly short tiles)."""
    n, oh, ow = geo["n"], geo["oh"], geo["ow"]
    nn, yy, xx = np.meshgrid(np.arange(n), np.arange(oh), np.arange(ow), indexing="ij")
    origin = (((nn * hp + yy * geo["sh"]) * wp + xx * geo["sw"]) * wd).reshape(-1)
    pixel = (yy * ow + xx).reshape(-1)
    dest = (np.arange(n * oh * ow) * ((m + 63) // 64) if mode == kb.PACKED
            else nn.reshape(-1) * m * oh * ow + pixel)
    classes = np.broadcast_to(cls, (n, oh, ow)).reshape(-1)
    if classes.size == 0:  # an empty batch: no tiles
        return np.zeros((0, 3), np.int64), *(np.zeros(0, np.int64) for _ in range(3))
    groups = [np.flatnonzero(classes == c) for c in np.unique(classes)]
    raster = [np.arange(len(classes))]
    extra_tiles = sum(-(-g.size // kb.TILE) for g in groups) - -(-len(classes) // kb.TILE)
    main = np.bincount(classes).argmax()
    off_class = int((classes != main).sum())  # upper bound of the lanes a raster tiling fixes up
    grouped = extra_tiles * -(-m // kb.BLOCK) * k_words * 6 <= off_class * m * 2
    tiles, slots = [], []
    for members in (groups if grouped else raster):
        for start in range(0, members.size, kb.TILE):
            chunk = members[start:start + kb.TILE]
            tiles.append((len(slots), chunk.size, np.bincount(classes[chunk]).argmax()))
            slots.extend(np.concatenate([chunk, np.full(kb.TILE - chunk.size, chunk[-1])]).tolist())
    slots = np.array(slots, np.int64)
    return np.array(tiles, np.int64), origin[slots], dest[slots], classes[slots].astype(np.int64)


def _common(node: Node, inputs: list, words_per_row: int):
    """Validated (W, dense W, tree depths, parents, mode, thresholds, scale, bias)."""
    if len(inputs) < 2 or inputs[1] is None:
        raise _fail(node, "needs inputs X and W")
    if inputs[1].value is None:
        raise Unsupported("input 1 (packed weights) must be a constant")
    w = inputs[1].value
    if w.dtype != np.uint64 or w.ndim != 2 or w.shape[1] != words_per_row or w.shape[0] < 1:
        raise _fail(node, f"input 1 (packed weights) must be uint64 [M, {words_per_row}], "
                          f"got {w.dtype.name} {list(w.shape)}")
    m = w.shape[0]
    mode_name = node.attrs.get("output", "float")
    if mode_name not in MODES:
        raise _fail(node, f"attribute 'output' must be one of {sorted(MODES)}, got {mode_name!r}")
    mode = MODES[mode_name]
    thresholds = _const(node, inputs, 2, "thresholds", np.int64, (m,))
    scale = _const(node, inputs, 3, "scale", np.float32, (m,))
    bias = _const(node, inputs, 4, "bias", np.float32, (m,))
    if mode != kb.FLOAT and thresholds is None:
        raise _fail(node, f"output {mode_name!r} needs input 2 (thresholds, int64 [{m}])")
    if mode == kb.FLOAT and scale is None:
        raise _fail(node, f"output 'float' needs input 3 (scale, float32 [{m}])")
    parents = _ints(node, "mst_parents", [], minimum=-1) or None
    dense_w, depth = decode_weights(node, w, parents)
    return w, dense_w, depth, parents, mode, thresholds, scale, bias


def _input_order(node: Node, x, channels: int) -> np.ndarray:
    order = node.attrs.get("input_order")
    if order is None:
        return np.arange(channels if x.dtype == np.float32 else 0, dtype=np.int64)
    order = _ints(node, "input_order", None)
    if x.dtype != np.float32:
        raise _fail(node, "attribute 'input_order' applies to float inputs only")
    if sorted(order) != list(range(channels)):
        raise _fail(node, f"attribute 'input_order' must be a permutation of range({channels})")
    return np.array(order, np.int64)


def _check_tail_bits(node: Node, dense_w: np.ndarray, groups: int, channels: int) -> None:
    wd = (channels + 63) // 64
    if channels % 64:
        last = dense_w.reshape(dense_w.shape[0], groups, wd)[:, :, -1]
        if np.any(last >> np.uint64(channels % 64)):
            raise _fail(node, f"packed weights have bits set past channel {channels} (they must be 0)")


def _kernel(tables: kb.ConvTables, out_shape: tuple, mode: int) -> Kernel:
    ints, words, floats = tables.arrays()
    xp = np.zeros((tables.n, tables.hp, tables.wp, tables.wd), np.uint64)
    out_dtype = np.dtype(np.uint64) if mode == kb.PACKED else np.dtype(np.float32)
    n = kb.threads()
    if n > 1:
        return Kernel(kb.binary_conv_mt, (In(0), xp, ints, words, floats, Out(0), n), [(out_shape, out_dtype)])
    return Kernel(kb.binary_conv, (In(0), xp, ints, words, floats, Out(0)), [(out_shape, out_dtype)])


def _amx_kernel(dense_w: np.ndarray, geo: dict, mode: int, thresholds, scale, bias, out_shape: tuple) -> Kernel:
    """A dense stride-1 conv with packed input of whole words on the AMX tile unit (kernels/binary.py):
    int8 +-1 weights in the tile unit's VNNI layout, int32 thresholds, the flat padded output grid."""
    m, t_, c = dense_w.shape[0], geo["kernel"][0] * geo["kernel"][1], geo["cin"]
    wd, mp = c // 64, -(-m // 64) * 64
    hp, wp = geo["h"] + geo["pt"] + geo["pb"], geo["w"] + geo["pl"] + geo["pr"]
    offs = [i * geo["dh"] * wp + j * geo["dw"] for i in range(geo["kernel"][0]) for j in range(geo["kernel"][1])]
    q = -(-(geo["oh"] * wp) // 32) * 32
    rows = max(hp * wp, q + max(offs))
    bits = (dense_w[:, :, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    signs = np.zeros((mp, t_, c), np.int8)
    signs[:m] = 1 - 2 * bits.reshape(m, t_, c).astype(np.int8)
    wb = aligned_copy(signs.reshape(mp // 32, 2, 16, t_, wd, 16, 4).transpose(0, 3, 4, 1, 5, 2, 6).reshape(-1))
    thr = np.full(mp, np.iinfo(np.int32).min, np.int32)
    if thresholds is not None:
        thr[:m] = np.clip(thresholds, np.iinfo(np.int32).min + 1, np.iinfo(np.int32).max)
    cfg = np.zeros(64, np.uint8)
    cfg[0] = 1  # palette 1; tiles 0-7: 16 rows of 64 bytes
    cfg[16:32].view(np.uint16)[:] = 64
    cfg[48:56] = 16
    qb = 32 if wb.nbytes <= L2_WEIGHTS else 32 * max(1, min(q // 32, DOTS_BYTES // (32 * 4 * mp)))
    g = np.array([geo["n"], geo["h"], geo["w"], wd, wp, geo["pt"], geo["pl"], geo["oh"], geo["ow"], m, mp, t_, q, rows,
                  mode, geo["oh"] * geo["ow"], qb] + offs, np.int64)
    floats = np.concatenate([scale if scale is not None else np.zeros(m, np.float32),
                             bias if bias is not None else np.zeros(m, np.float32)]).astype(np.float32)
    xi = aligned_copy(np.zeros((geo["n"], rows, c), np.int8))
    dots = aligned_copy(np.zeros((qb, mp), np.int32))
    out_dtype = np.dtype(np.uint64) if mode == kb.PACKED else np.dtype(np.float32)
    return Kernel(kb.binary_conv_amx, (In(0), xi, g, cfg, wb, thr, floats, dots, Out(0)), [(out_shape, out_dtype)])


def _channels(node: Node) -> int:
    c = node.attrs.get("channels")
    if not isinstance(c, (int, np.integer)) or c < 1:
        raise _fail(node, f"attribute 'channels' must be an int >= 1, got {c!r}")
    return int(c)


def _x_dtype(node: Node, x) -> None:
    if x.dtype not in (np.float32, np.uint64):
        raise _fail(node, f"input X must be float32 or packed uint64, got {x.dtype}")


@register("BinaryConv", domain=DOMAIN)
def build_binary_conv(node: Node, inputs: list, opset: int) -> Kernel:
    x = inputs[0]
    _x_dtype(node, x)
    c = _channels(node)
    kh, kw = _ints(node, "kernel_shape", None, 2, 1)
    sh, sw = _ints(node, "strides", [1, 1], 2, 1)
    dh, dw = _ints(node, "dilations", [1, 1], 2, 1)
    pt, pl, pb, pr = _ints(node, "pads", [0, 0, 0, 0], 4, 0)
    wd = (c + 63) // 64
    if len(x.shape) != 4:
        raise _fail(node, f"input X must be 4-D, got shape {list(x.shape)}")
    if x.dtype == np.float32:
        n, cx, h, w = x.shape
        if cx != c:
            raise _fail(node, f"input X has {cx} channels, attribute 'channels' says {c}")
    else:
        n, h, w, words = x.shape
        if words != wd:
            raise _fail(node, f"packed input X has {words} words per pixel, {c} channels need {wd}")
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise _fail(node, f"kernel {kh}x{kw} does not fit the padded {h}x{w} input")
    w_, dense_w, depth, parents, mode, thr, scale, bias = _common(node, inputs, kh * kw * wd)
    _check_tail_bits(node, dense_w, kh * kw, c)
    geo = dict(n=n, h=h, w=w, cin=c, channels=c, groups=1, kernel=(kh, kw), sh=sh, sw=sw, dh=dh, dw=dw,
               pt=pt, pl=pl, pb=pb, pr=pr, oh=oh, ow=ow)
    m = w_.shape[0]
    shape = (n, oh, ow, (m + 63) // 64) if mode == kb.PACKED else (n, m, oh, ow)
    if parents is None and x.dtype == np.uint64 and c % 64 == 0 and sh == sw == 1 and kb.threads() == 1 \
            and kb.amx():
        return _amx_kernel(dense_w, geo, mode, thr, scale, bias, shape)
    tables = _plan(node, x, w_, dense_w, depth, parents, geo, mode, _input_order(node, x, c),
                   thr, scale, bias)
    return _kernel(tables, shape, mode)


@register("BinaryGemm", domain=DOMAIN)
def build_binary_gemm(node: Node, inputs: list, opset: int) -> Kernel:
    x = inputs[0]
    _x_dtype(node, x)
    c = _channels(node)
    wd = (c + 63) // 64
    if x.dtype == np.float32:
        if len(x.shape) != 2 or x.shape[1] != c:
            raise _fail(node, f"float input X must be [N, {c}], got {list(x.shape)}")
        groups = 1
    else:
        if len(x.shape) < 2 or x.shape[-1] != wd:
            raise _fail(node, f"packed input X must be [N, ..., {wd}], got {list(x.shape)}")
        groups = int(np.prod(x.shape[1:-1], dtype=np.int64))
    n = x.shape[0]
    w_, dense_w, depth, parents, mode, thr, scale, bias = _common(node, inputs, groups * wd)
    _check_tail_bits(node, dense_w, groups, c)
    geo = dict(n=n, h=1, w=1, cin=c, channels=c, groups=groups, kernel=(1, 1), sh=1, sw=1, dh=1, dw=1,
               pt=0, pl=0, pb=0, pr=0, oh=1, ow=1)
    tables = _plan(node, x, w_, dense_w, depth, parents, geo, mode, _input_order(node, x, c),
                   thr, scale, bias)
    m = w_.shape[0]
    shape = (n, (m + 63) // 64) if mode == kb.PACKED else (n, m)
    return _kernel(tables, shape, mode)
