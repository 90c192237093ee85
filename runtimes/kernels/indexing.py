"""Indexing kernels: GatherElements, GatherND, ScatterElements, ScatterND, Trilu, OneHot and Einsum.

Arrays are C-contiguous and read flat. Builders precompute what depends only on shapes (element
offsets, strides, slice sizes) so the kernels are single passes. An index fed at run time is
negative-wrapped as ONNX says and raises IndexError when out of range (the plan turns it into an
InputError naming the node). Scatter reductions are codes: NONE (overwrite), ADD, MUL, MAX, MIN.
"""
import numpy as np
from numba import njit

from . import FASTMATH, KernelInputError
from .gemm import matmul_kernel
from .layout import copy_block

NONE, ADD, MUL, MAX, MIN = 0, 1, 2, 3, 4
REDUCTIONS = {"none": NONE, "add": ADD, "mul": MUL, "max": MAX, "min": MIN}


@njit(inline="always")
def _wrap(t, n):
    """Index t on an axis of size n, negative counting from the end; IndexError when out of range."""
    t = np.int64(t)
    if t < 0:
        t += n
    if t < 0 or t >= n:
        raise KernelInputError("an index fed at run time is out of range for the axis it indexes")
    return t


@njit(inline="always")
def _combine(old, new, reduction):
    """The value a scatter leaves: new (NONE), or old reduced with new."""
    if reduction == ADD:
        return old + new
    if reduction == MUL:
        return old * new
    if reduction == MAX:
        return max(old, new)
    if reduction == MIN:
        return min(old, new)
    return new


@njit(cache=True, fastmath=FASTMATH)
def gather_elements_kernel(data, indices, out, base, n, stride):
    """out[p] = data[base[p] + idx[p] * stride] over the flat indices: ``base`` is the offset of
    p's coordinates off the gather axis, ``stride`` and ``n`` the axis' stride and size in data."""
    d, ix, o = data.reshape(-1), indices.reshape(-1), out.reshape(-1)
    for p in range(ix.size):
        o[p] = d[base[p] + _wrap(ix[p], n) * stride]


@njit(cache=True, fastmath=FASTMATH)
def scatter_elements_kernel(data, indices, updates, out, base, n, stride, reduction):
    """out = data, then out[base[p] + idx[p] * stride] = combine(that, updates[p]) for each flat
    p in order (the later of duplicate indices wins without a reduction, as in onnxruntime)."""
    o, ix, u = out.reshape(-1), indices.reshape(-1), updates.reshape(-1)
    o[:] = data.reshape(-1)
    for p in range(ix.size):
        q = base[p] + _wrap(ix[p], n) * stride
        o[q] = _combine(o[q], u[p], reduction)


@njit(inline="always")
def _tuple_offset(ix, at, dims, strides):
    """Element offset of the index tuple ix[at : at + len(dims)] into axes of sizes ``dims``."""
    off = np.int64(0)
    for c in range(dims.size):
        off += _wrap(ix[at + c], dims[c]) * strides[c]
    return off


@njit(cache=True, fastmath=FASTMATH)
def gather_nd_kernel(data, indices, out, tuples, dims, strides, slice_, batch_stride):
    """GatherND: data viewed as (batches, ...), indices as (batches, tuples, k) with k = len(dims);
    out slice (b, j) of ``slice_`` elements = data at offset b * batch_stride + the offset of
    index tuple (b, j) (``strides`` are the data strides of the k indexed axes)."""
    d, ix, o = data.reshape(-1), indices.reshape(-1), out.reshape(-1)
    k = dims.size
    for j in range(ix.size // k if k else out.size // slice_):
        src = (j // tuples) * batch_stride + _tuple_offset(ix, j * k, dims, strides)
        dst = j * slice_
        for i in range(slice_):
            o[dst + i] = d[src + i]


@njit(inline="always")
def _combine_run(o, dst, u, src, n, reduction):
    """o[dst + i] = combine(o[dst + i], u[src + i]) for i < n, the reduction dispatched outside the
    loops so each loop is a plain (vectorisable) one."""
    if reduction == NONE:
        for i in range(n):
            o[dst + i] = u[src + i]
    elif reduction == ADD:
        for i in range(n):
            o[dst + i] = _combine(o[dst + i], u[src + i], ADD)
    elif reduction == MUL:
        for i in range(n):
            o[dst + i] = _combine(o[dst + i], u[src + i], MUL)
    elif reduction == MAX:
        for i in range(n):
            o[dst + i] = _combine(o[dst + i], u[src + i], MAX)
    else:
        for i in range(n):
            o[dst + i] = _combine(o[dst + i], u[src + i], MIN)


@njit(cache=True, fastmath=FASTMATH)
def scatter_nd_kernel(data, indices, updates, out, dims, strides, slice_, reduction):
    """ScatterND: out = data, then for each index tuple j (indices viewed as (tuples, k)), the
    ``slice_`` elements at its offset become combine(old, updates slice j), tuples in order."""
    o, ix, u, d = out.reshape(-1), indices.reshape(-1), updates.reshape(-1), data.reshape(-1)
    for i in range(o.size):
        o[i] = d[i]
    k = dims.size
    for j in range(ix.size // k if k else u.size // slice_):
        _combine_run(o, _tuple_offset(ix, j * k, dims, strides), u, j * slice_, slice_, reduction)


@njit(cache=True, fastmath=FASTMATH)
def trilu_kernel(x, out, k, rows, cols, upper):
    """Trilu over x viewed as (batches, rows, cols): out[b, i, j] = x[b, i, j] where j - i >= k[0]
    (upper) or j - i <= k[0] (lower), else 0. k is a one-element array, so it may be fed at run time."""
    xf, of = x.reshape(-1), out.reshape(-1)
    kk = np.int64(k.reshape(-1)[0])
    zero = of.dtype.type(0)
    for b in range(xf.size // (rows * cols) if rows * cols else 0):
        for i in range(rows):
            row = (b * rows + i) * cols
            edge = min(max(i + kk, 0), cols)  # first kept column (upper) or first dropped - 1 (lower)
            if not upper:
                edge = min(max(i + kk + 1, 0), cols)
            for j in range(cols):
                keep = j >= edge if upper else j < edge
                of[row + j] = xf[row + j] if keep else zero


@njit(cache=True, fastmath=FASTMATH)
def one_hot_kernel(indices, values, out, depth, inner):
    """OneHot: out viewed as (outer, depth, inner), indices as (outer, inner); out[o, d, i] =
    values[1] where idx[o, i] (negative counting from the end, truncated when fractional) == d,
    else values[0]. An index outside [-depth, depth) leaves its column all values[0]."""
    ix, of, v = indices.reshape(-1), out.reshape(-1), values.reshape(-1)
    off, on = v[0], v[1]
    of[:] = off
    for p in range(ix.size):
        t = np.int64(ix[p])
        if t < 0:
            t += depth
        if 0 <= t < depth:
            of[((p // inner) * depth + t) * inner + p % inner] = on


@njit(inline="always")
def _inner(af, bf, of, pa, pb, po, m, sa, sb, so):
    """The innermost einsum letter: a dot product when it is summed (so = 0), else an update
    of out; unit-stride forms are written apart so they vectorise. Offsets are unsigned so Numba
    drops its negative-index checks."""
    if so == 0:
        acc = of[po]
        if sa == 1 and sb == 1:
            for i in range(np.uint64(m)):
                acc += af[pa + i] * bf[pb + i]
        elif sa == 1 and sb == 0:
            v = bf[pb]
            for i in range(np.uint64(m)):
                acc += af[pa + i] * v
        else:
            for i in range(np.uint64(m)):
                acc += af[pa + i * sa] * bf[pb + i * sb]
        of[po] = acc
    elif so == 1 and sa == 1 and sb == 0:
        v = bf[pb]
        for i in range(np.uint64(m)):
            of[po + i] += af[pa + i] * v
    else:
        for i in range(np.uint64(m)):
            of[po + i * so] += af[pa + i * sa] * bf[pb + i * sb]


@njit(cache=True, fastmath=FASTMATH)
def einsum_loops_kernel(a, b, out, sizes, sa, sb, so):
    """out[sum(i_l * so_l)] = sum over the letters absent from out (so_l = 0) of
    a[sum(i_l * sa_l)] * b[sum(i_l * sb_l)], odometer over every letter l < len(sizes) (last
    fastest). A one-operand equation passes b = [1] with strides 0; a letter repeated in one
    operand has the sum of its strides there (a diagonal)."""
    af, bf, of = a.reshape(-1), b.reshape(-1), out.reshape(-1)
    of[:] = 0
    n = sizes.size
    total = 1
    for l in range(n):
        total *= sizes[l]
    idx = np.zeros(n, np.int64)
    pa = pb = po = np.int64(0)
    last = n - 1
    m, ua, ub, uo = sizes[last], np.uint64(sa[last]), np.uint64(sb[last]), np.uint64(so[last])
    for _ in range(total // m):
        _inner(af, bf, of, np.uint64(pa), np.uint64(pb), np.uint64(po), m, ua, ub, uo)
        l = last - 1
        while l >= 0:
            idx[l] += 1
            pa += sa[l]
            pb += sb[l]
            po += so[l]
            if idx[l] < sizes[l]:
                break
            pa -= sa[l] * sizes[l]
            pb -= sb[l] * sizes[l]
            po -= so[l] * sizes[l]
            idx[l] = 0
            l -= 1


@njit(cache=True, fastmath=FASTMATH)
def einsum_matmul_kernel(a, b, out, sa, sb, sy, ta, tb, ty, plan, offsets):
    """Einsum as batched matmul: A and B are copied by the block tables ``ta``/``tb`` into scratch
    ``sa`` (batch, M, K) and ``sb`` (batch, K, N) unless their tables are empty (already in that
    order), ``matmul_kernel`` computes (batch, M, N) into ``sy`` (or straight into out when ``ty``
    is empty), and ``ty`` permutes it into out's letter order."""
    af, bf, of = a.reshape(-1), b.reshape(-1), out.reshape(-1)
    for r in range(ta.shape[0]):
        copy_block(sa, af, ta[r])
    for r in range(tb.shape[0]):
        copy_block(sb, bf, tb[r])
    x = sa if ta.shape[0] else af
    w = sb if tb.shape[0] else bf
    y = sy if ty.shape[0] else of
    matmul_kernel(x, w, y, plan, offsets)
    for r in range(ty.shape[0]):
        copy_block(of, sy, ty[r])


@njit(cache=True, fastmath=FASTMATH)
def space_to_depth_kernel(x, out, b, crd):
    """SpaceToDepth of NCHW x: out[n, ch, h, w] = x[n, c, h * b + i, w * b + j] with channel
    ch = (i * b + j) * C + c (DCR) or (c * b + i) * b + j (CRD); walks x row by row."""
    nn, cc, hh, _ = x.shape
    wo = out.shape[3]
    for n in range(nn):
        for c in range(cc):
            for y in range(hh):
                h, i = y // b, y % b
                for j in range(b):
                    ch = (c * b + i) * b + j if crd else (i * b + j) * cc + c
                    for w in range(wo):
                        out[n, ch, h, w] = x[n, c, y, w * b + j]
