"""Layout kernels: strided block copies (Transpose, Slice, Concat, Pad, Expand, Tile, Split),
Gather along an axis, and dtype casts (float16 handled as raw uint16 bits).

A *block* copies a strided box of one flat array into a strided box of another. Builders
describe every copy op as a table of blocks, one int64 row each:

    [array_index, src_offset, dst_offset, shape[R], src_strides[R], dst_strides[R]]

(element offsets and strides into the flattened C-contiguous arrays; strides may be 0 for
broadcast or negative for reversed slices). ``array_index`` picks the source among several
(``copy_blocks``) or the destination among several (``split_blocks``).
"""
import math

import numpy as np
from numba import njit

from . import FASTMATH, KernelInputError

HEAD = 3  # columns before the shape in a block row
TILE = 8  # tile edge of transposing copies (larger tiles thrash L1 sets on power-of-two strides)
SMALL_PLANE = 1 << 18
"""Transposing planes of fewer than TILE source-contiguous rows, or of at most 2 * TILE rows and
this many elements (in L2), are copied row by row: NHWC -> NCHW of 3 channels 2.4 -> 0.9 us at
24 x 24, where the tiles degenerate to 3-element inner loops."""


@njit(inline="always")
def _plane(dst, src, s, d, n0, s0, d0, n1, s1, d1):
    """dst[d + a*d0 + b*d1] = src[s + a*s0 + b*s1] for a < n0, b < n1. Offsets are made unsigned
    so Numba drops its negative-index checks and the contiguous loops vectorise. A transposing
    plane (source contiguous along a, destination along b) is walked in TILE x TILE tiles, or by
    destination rows when it is narrow (SMALL_PLANE)."""
    transposing = s0 == 1 and d1 == 1 and s1 != 0 and s1 != 1 and n0 > 1
    if transposing and (n0 < TILE or (n0 <= 2 * TILE and n0 * n1 <= SMALL_PLANE)):
        for a in range(n0):
            sa, da = s + a, d + a * d0
            for b in range(n1):
                dst[np.uint64(da + b)] = src[np.uint64(sa + b * s1)]
        return
    if transposing:
        ud0 = np.uint64(d0)
        for a0 in range(0, n0, TILE):
            a1 = min(a0 + TILE, n0)
            for b0 in range(0, n1, TILE):
                for b in range(b0, min(b0 + TILE, n1)):
                    sb = np.uint64(s + b * s1)
                    db = np.uint64(d + b)
                    for a in range(np.uint64(a0), np.uint64(a1)):
                        dst[db + a * ud0] = src[sb + a]
        return
    for a in range(n0):
        sa, da = s + a * s0, d + a * d0
        if s1 == 1 and d1 == 1:
            us, ud = np.uint64(sa), np.uint64(da)
            for b in range(np.uint64(n1)):
                dst[ud + b] = src[us + b]
        elif s1 == 0 and d1 == 1:
            v, ud = src[np.uint64(sa)], np.uint64(da)
            for b in range(np.uint64(n1)):
                dst[ud + b] = v
        else:
            for b in range(n1):
                dst[np.uint64(da + b * d1)] = src[np.uint64(sa + b * s1)]


@njit(cache=True, fastmath=FASTMATH)
def copy_block(dst, src, row):
    """dst[dst_offset + sum(i_k * dst_strides_k)] = src[src_offset + sum(i_k * src_strides_k)]
    for every index i in the box ``shape`` (rank >= 2) of one block ``row``, on flat arrays: an
    odometer over the leading dims, a plane copy over the last two. Compiled once per dtype; the
    per-rank entry points below only flatten their arrays and call it."""
    rank = (row.size - HEAD) // 3
    outer = 1
    for k in range(rank - 2):
        outer *= row[HEAD + k]
    a, b = rank - 2, rank - 1
    n0, n1 = row[HEAD + a], row[HEAD + b]
    s0, s1 = row[HEAD + rank + a], row[HEAD + rank + b]
    d0, d1 = row[HEAD + 2 * rank + a], row[HEAD + 2 * rank + b]
    idx = np.zeros(rank, np.int64)
    s = row[1]
    d = row[2]
    for _ in range(outer):
        _plane(dst, src, s, d, n0, s0, d0, n1, s1, d1)
        k = rank - 3
        while k >= 0:
            idx[k] += 1
            s += row[HEAD + rank + k]
            d += row[HEAD + 2 * rank + k]
            if idx[k] < row[HEAD + k]:
                break
            s -= row[HEAD + rank + k] * row[HEAD + k]
            d -= row[HEAD + 2 * rank + k] * row[HEAD + k]
            idx[k] = 0
            k -= 1


@njit(cache=True, fastmath=FASTMATH)
def copy_blocks(dst, blocks, *srcs):
    """Fill C-contiguous ``dst`` from the blocks of ``blocks`` (rows as in the module docstring);
    a row's array_index selects its source in ``srcs`` (same dtype and rank, C-contiguous)."""
    df = dst.reshape(-1)
    for b in range(blocks.shape[0]):
        copy_block(df, srcs[blocks[b, 0]].reshape(-1), blocks[b])


@njit(cache=True, fastmath=FASTMATH)
def split_blocks(src, blocks, *dsts):
    """Scatter C-contiguous ``src`` into ``dsts``: a row's array_index selects its destination."""
    sf = src.reshape(-1)
    for b in range(blocks.shape[0]):
        copy_block(dsts[blocks[b, 0]].reshape(-1), sf, blocks[b])


@njit(cache=True, fastmath=FASTMATH)
def gather_kernel(data, indices, out, outer, n, inner):
    """out[o, j, i] = data[o, idx_j, i], data viewed as (outer, n, inner), out as
    (outer, len(indices), inner); negative indices count from the end, others raise KernelInputError
    (the plan names the node)."""
    d = data.reshape(-1)
    ix = indices.reshape(-1)
    o = out.reshape(-1)
    m = ix.size
    for j in range(m):
        if not -n <= ix[j] < n:
            raise KernelInputError("an index fed to Gather is out of range for the axis it gathers along")
    for a in range(outer):
        for j in range(m):
            t = np.int64(ix[j])
            if t < 0:
                t += n
            s = np.uint64((a * n + t) * inner)
            q = np.uint64((a * m + j) * inner)
            for i in range(np.uint64(inner)):
                o[q + i] = d[s + i]


@njit(cache=True, fastmath=FASTMATH)
def cast_kernel(x, out):
    """out = x converted elementwise (C semantics: float to int truncates, to bool is x != 0)."""
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for i in range(xf.size):
        of[i] = xf[i]


@njit(cache=True, fastmath=FASTMATH)
def to_half_bits(x, bits):
    """bits = IEEE binary16 of float32(x), rounded to nearest even (as onnxruntime: via float32);
    overflow gives inf, NaN stays a quiet NaN."""
    xf = x.reshape(-1)
    bf = bits.reshape(-1)
    scratch = np.empty(1, np.float32)
    word = scratch.view(np.uint32)
    for i in range(xf.size):
        scratch[0] = np.float32(xf[i])
        b = np.int64(word[0])
        sign = (b >> 16) & 0x8000
        exp = (b >> 23) & 0xFF
        mant = b & 0x7FFFFF
        e = exp - 112
        if exp == 0xFF:
            h = 0x7C00 | (0x200 | (mant >> 13) if mant else 0)
        elif e >= 31:
            h = 0x7C00
        elif e <= 0:
            if e < -10:
                h = 0
            else:
                m = mant | 0x800000
                shift = 14 - e
                h = m >> shift
                rem = m & ((1 << shift) - 1)
                half = 1 << (shift - 1)
                if rem > half or (rem == half and (h & 1)):
                    h += 1
        else:
            h = (e << 10) | (mant >> 13)
            rem = mant & 0x1FFF
            if rem > 0x1000 or (rem == 0x1000 and (h & 1)):
                h += 1
        bf[i] = sign | h


@njit(cache=True, fastmath=FASTMATH)
def from_half_bits(bits, out):
    """out = value of the IEEE binary16 ``bits`` (exact in float32), converted to out's dtype."""
    bf = bits.reshape(-1)
    of = out.reshape(-1)
    for i in range(bf.size):
        h = np.int64(bf[i])
        exp = (h >> 10) & 0x1F
        mant = h & 0x3FF
        if exp == 0x1F:
            v = math.nan if mant else math.inf
        elif exp == 0:
            v = math.ldexp(float(mant), -24)
        else:
            v = math.ldexp(float(mant | 0x400), exp - 25)
        if h & 0x8000:
            v = -v
        of[i] = np.float32(v)


def cast_to_half(x: np.ndarray, out: np.ndarray) -> None:
    """Cast into a float16 array. Numba has no float16 type on the CPU, hence this one view."""
    to_half_bits(x, out.view(np.uint16))


def cast_from_half(x: np.ndarray, out: np.ndarray) -> None:
    """Cast from a float16 array. Numba has no float16 type on the CPU, hence this one view."""
    from_half_bits(x.view(np.uint16), out)


@njit(cache=True, fastmath=FASTMATH)
def copy_with_mask(x, out, mask):
    """Inference Dropout with its mask: out = x, mask = all ones (True)."""
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for i in range(xf.size):
        of[i] = xf[i]
    mf = mask.reshape(-1)
    for i in range(mf.size):
        mf[i] = 1
