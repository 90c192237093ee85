"""Upsampling (ONNX ConvTranspose and Resize/Upsample, float32, NCL or NCHW).

ConvTranspose, polyphase: for one image and group, Yfull[co, t] = sum_{ci, k} X[ci, i] W[ci, co, k]
over t = i*s + k*d (per spatial axis), and Y is Yfull[pad_begin : pad_begin + Out]. Splitting t =
j*s + r by output phase r < s, only the taps with (k*d) % s == r reach phase r, each from input
i = j - m_k (m_k = (k*d - r) // s), so a phase is a stride-1 correlation of X with its sub-kernel:
no product with an inserted zero. X is copied into a zero-padded plane P (M = max m_k rows and
columns ahead of it, so P[ci, j + M - m_k] = X[ci, j - m_k]) unless no tap shifts it (kernel ==
stride, the usual U-Net up-convolution), and each phase's taps are rows of B at fixed offsets in P
(``boffs``), so Y_phase (Cout/g, rows * Pw) = W_phase (Cout/g, Cin/g * taps) @ B runs on the gemm
micro-kernel with the bias as its C; its rows are Pw wide (the extra columns read the next row
and are never used). Output row j_h*s_h + r_h - pad_top interleaves the column phases of row phase
r_h, so it is gathered whole from their products (contiguous stores; a copy at stride 1), and
the activation is one pass over the output at the end (each kernel of ``conv_transpose_kernels``
is compiled for its activation only). A 1-D ConvTranspose is the 2-D one with a single row.
Weights are packed per phase at plan time, or by a gather on every call when they are given at run
time.

Resize: the last two axes (H, W) of the input are resampled by per-axis source indices computed
once at plan time; leading axes keep their size, or, for nearest, map whole planes (``plane_map``).
Nearest is a gather, y[p, i, j] = x[pm[p], ih[i], iw[j]] (a row equal to the previous one is a
copy); linear is separable, b0 * v0 + b1 * v1 along W into a scratch of H rows, then along H.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import njit

from . import FASTMATH
from .activation import activate_in, codes_mask
from .gemm import matmul_tiles
from .simd import flat, vcopy

FIELDS = ("batch", "channels", "height", "width", "groups", "out_channels", "out_height", "out_width",
          "stride_h", "stride_w", "p_height", "p_width", "shift_h", "shift_w", "in_place", "row_phases", "col_phases",
          "slot", "activation")
"""Leading fields of ConvTranspose's int64 ``plan``: P is p_height x p_width per channel, X sits at
(shift_h, shift_w) in it; ``slot`` is the length of one output channel's rows in a phase's product.
Then per row phase (row0, rows, out_row0), per column phase (col0, cols), per pair of them (taps,
w_off, b_first), the source of every output column (``columns``, Wout entries), and the tap
offsets of every pair."""


def plan(fields: dict, row_phases: list, col_phases: list, pairs: list, columns: np.ndarray,
         boffs: np.ndarray) -> np.ndarray:
    """ConvTranspose's ``plan``: FIELDS by name, then the phase records, ``columns`` and tap offsets."""
    parts = [[int(fields[f]) for f in FIELDS]] + [list(r) for r in row_phases + col_phases + pairs]
    return np.concatenate([np.array(p, np.int64) for p in parts] + [columns.astype(np.int64), boffs.astype(np.int64)])


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _gather_row(prod, base, columns, y, dst, ow, sw):
    """y[dst + o] = prod[base + columns[o]] for o < ow: a copy at stride 1 (one column phase), else a
    gather (measured 1.4x faster than a two-way interleave loop at stride 2)."""
    if sw == 1:
        vcopy(y, dst, prod, base + columns[0], ow)
    else:
        for o in range(ow):
            y[dst + o] = prod[base + columns[o]]


def conv_transpose_kernels(code: int) -> tuple:
    """(``kernel(x, w, bias, y, scratch, plan, params)``, ``packing_kernel(..., gather, packed)``) for
    ConvTranspose with the fused activation ``code``, compiled for that activation only.

    ``kernel``: y = act(conv_transpose(x, W) + bias) for x (N, C, [H,] W) and y (N, Cout, [Hout,] Wout),
    C-contiguous. ``w`` holds per phase pair and group W_phase (Cout/g, taps) row-major (offsets in
    ``plan``), ``bias`` Cout entries, ``params`` the activation's two parameters. ``scratch`` holds P (C *
    p_height * p_width floats, its pad kept zero; absent when X is read in place), then the products
    of one row phase's column phases, one slot per output channel each. Every output row is then
    gathered whole from them: y[.., o] = product[columns[o] + row offset].

    ``packing_kernel``: the same for W given at run time: packs it first, packed[i] = W.flat[gather[i]].
    """
    return _conv_transpose_entries(codes_mask(code))


@functools.cache
def _conv_transpose_entries(codes: int) -> tuple:
    """``conv_transpose_kernels`` for a mask of activation codes (a closure over an int keeps the cache
    key stable)."""

    @njit(cache=True, fastmath=FASTMATH)
    def kernel(x, w, bias, y, scratch, plan, params):
        """y = act(conv_transpose(x, W) + bias): see ``conv_transpose_kernels``."""
        _conv_transpose(x, w, bias, y, scratch, plan)
        yf = flat(y)
        activate_in(codes, yf, np.int64(0), yf.size, np.int64(1), yf.size, plan[18], params[0], params[1])

    @njit(cache=True, fastmath=FASTMATH)
    def packing_kernel(x, w, bias, y, scratch, plan, params, gather, packed):
        """``kernel`` for W given at run time, packed first: see ``conv_transpose_kernels``."""
        wf = flat(w)
        for i in range(gather.size):
            packed[i] = wf[gather[i]]
        _conv_transpose(x, packed, bias, y, scratch, plan)
        yf = flat(y)
        activate_in(codes, yf, np.int64(0), yf.size, np.int64(1), yf.size, plan[18], params[0], params[1])

    return kernel, packing_kernel


@njit(cache=True, fastmath=FASTMATH)
def _conv_transpose(x, w, bias, y, scratch, plan):
    """conv_transpose(x, W) + bias into y, without the activation (see ``conv_transpose_kernels``)."""
    n_img, c_in, h, wd, groups, c_out, oh, ow = plan[0], plan[1], plan[2], plan[3], plan[4], plan[5], plan[6], plan[7]
    sh, sw, ph, pw, mh, mw, in_place = plan[8], plan[9], plan[10], plan[11], plan[12], plan[13], plan[14]
    n_rows, n_cols, slot = plan[15], plan[16], plan[17]
    rec_rows = 19
    rec_cols = rec_rows + 3 * n_rows
    rec_pairs = rec_cols + 2 * n_cols
    columns = plan[rec_pairs + 3 * n_rows * n_cols:rec_pairs + 3 * n_rows * n_cols + ow]
    boffs = plan[rec_pairs + 3 * n_rows * n_cols + ow:]
    cin_g, cout_g = c_in // groups, c_out // groups
    plane = h * wd if in_place else ph * pw
    yw_off = 0 if in_place else c_in * plane
    xf, wf, yf = flat(x), flat(w), flat(y)
    one, zero, unit = np.int64(1), np.int64(0), np.float32(1.0)
    for img in range(n_img):
        x_off = img * c_in * h * wd
        src, src_off = xf, x_off
        if not in_place:
            for c in range(c_in):
                for i in range(h):
                    vcopy(scratch, c * plane + (mh + i) * pw + mw, xf, x_off + (c * h + i) * wd, wd)
            src, src_off = scratch, zero
        for g in range(groups):
            for fr in range(n_rows):
                row0, rows, orow = plan[rec_rows + 3 * fr], plan[rec_rows + 3 * fr + 1], plan[rec_rows + 3 * fr + 2]
                for fc in range(n_cols):
                    col0, cols = plan[rec_cols + 2 * fc], plan[rec_cols + 2 * fc + 1]
                    pair = rec_pairs + 3 * (fr * n_cols + fc)
                    k, w_off, b0 = plan[pair], plan[pair + 1], plan[pair + 2]
                    n = (rows - 1) * pw + cols
                    b_add = src_off + g * cin_g * plane + row0 * pw + col0
                    matmul_tiles(wf, w_off + g * cout_g * k, k, one, src, boffs[b0:b0 + k], b_add, bias, g * cout_g,
                                 one, zero, unit, scratch, yw_off + fc * cout_g * slot, slot, cout_g, n, k, unit)
                for co in range(cout_g):
                    for r in range(rows):
                        dst = ((img * c_out + g * cout_g + co) * oh + orow + r * sh) * ow
                        _gather_row(scratch, yw_off + co * slot + r * pw, columns, yf, dst, ow, sw)


@njit(cache=True, fastmath=FASTMATH)
def resize_nearest_kernel(x, y, plan, index):
    """y[p, i, j] = x[pm[p], ih[i], iw[j]] over the last two axes of C-contiguous x and y.

    ``plan`` = (output planes, H, W, Hout, Wout); ``index`` = pm (one source plane per output
    plane), ih (Hout), iw (Wout). An output row with the same source row as the previous one is
    copied from it.
    """
    planes, h, wd, oh, ow = plan[0], plan[1], plan[2], plan[3], plan[4]
    pm, ih, iw = index[:planes], index[planes:planes + oh], index[planes + oh:]
    xf, yf = flat(x), flat(y)
    for p in range(planes):
        src, dst = pm[p] * h * wd, p * oh * ow
        for i in range(oh):
            row = dst + i * ow
            if i > 0 and ih[i] == ih[i - 1]:
                vcopy(yf, row, yf, row - ow, ow)
            else:
                s = src + ih[i] * wd
                for j in range(ow):
                    yf[row + j] = xf[s + iw[j]]


@njit(cache=True, fastmath=FASTMATH)
def resize_linear_kernel(x, y, scratch, plan, index, weight):
    """Bilinear resampling of the last two axes of C-contiguous x (P, H, W) into y (P, Hout, Wout).

    ``index`` = h0, h1 (Hout), w0, w1 (Wout): the two source positions per output position;
    ``weight`` = their weights, bh0, bh1, bw0, bw1 (summing to 1 per position). Along W first,
    for every input row, into ``scratch`` (H * Wout), then y[p, i, j] = bh0[i] * s[h0[i], j] +
    bh1[i] * s[h1[i], j]. Both terms always, a weight of 0 included, so NaN and infinities spread
    to their neighbours as in onnxruntime's four-term blend (0 * inf is NaN).
    """
    planes, h, wd, oh, ow = plan[0], plan[1], plan[2], plan[3], plan[4]
    h0, h1, w0, w1 = index[:oh], index[oh:2 * oh], index[2 * oh:2 * oh + ow], index[2 * oh + ow:]
    bh0, bh1, bw0, bw1 = weight[:oh], weight[oh:2 * oh], weight[2 * oh:2 * oh + ow], weight[2 * oh + ow:]
    xf, yf = flat(x), flat(y)
    for p in range(planes):
        src, dst = p * h * wd, p * oh * ow
        for i in range(h):
            s, t = src + i * wd, i * ow
            for j in range(ow):
                scratch[t + j] = bw0[j] * xf[s + w0[j]] + bw1[j] * xf[s + w1[j]]
        for i in range(oh):
            a0, a1, r0, r1, row = bh0[i], bh1[i], h0[i] * ow, h1[i] * ow, dst + i * ow
            for j in range(ow):
                yf[row + j] = a0 * scratch[r0 + j] + a1 * scratch[r1 + j]
