"""Spectral ops: DFT (opset 17 and 20), STFT (17), the Hann, Hamming and Blackman windows and
MelWeightMatrix (17), the front end of audio and vibration models.

DFT and STFT run ``kernels.spectral.dft_rows`` over float32 rows whose places are worked out here;
their lengths, steps and axis must be known at load. The window ops and MelWeightMatrix have only
size-like inputs and are computed at load (constants), in float64 as onnxruntime does, then cast to
``output_datatype``. The STFT window may be computed at run time (its length is its shape's).

The inverse one-sided DFT (IRFFT, defined alike by opsets 17 and 20) takes the bins 0..L-1 of a real
signal's spectrum, complex, and gives the real signal of length n = dft_length (default 2 (L - 1)): it
reads the first n // 2 + 1 bins, zero-padded when L is shorter, completes the rest by conjugate symmetry
and drops the imaginary parts of bin 0 and (even n) bin n / 2, as numpy's and torch's irfft do.
Refused by name: real input to an inverse one-sided transform, complex input to a one-sided forward
transform, a run-time transform length, axis or frame step; a signal shorter than a frame is an input
error.
"""
from __future__ import annotations

import math

import numpy as np

from edgekit.ir import Node, dtype_of

from ..kernels.spectral import Transform, dft_rows
from .registry import Constant, In, Kernel, Out, Unsupported, const_input, normalize_axis, register


def _scalar(node: Node, inputs: list, index: int, what: str) -> int | None:
    value = const_input(node, inputs, index, what)
    if value is None:
        return None
    if value.size != 1:
        raise Unsupported(f"{what} (input {index}) must be a scalar")
    return int(value.reshape(-1)[0])


def _float32(x, op: str) -> None:
    if x.dtype != np.float32:
        raise Unsupported(f"{op} on {x.dtype} (edgekit transforms float32)")


@register("DFT")
def build_dft(node: Node, inputs: list, opset: int) -> Kernel:
    """DFT along one axis of [..., 1 or 2] float32: bins of (real, imaginary) pairs, or with inverse=1
    and onesided=1 (IRFFT) the real signal [..., 1] of one-sided complex bins."""
    x = inputs[0]
    _float32(x, "DFT")
    rank = len(x.shape)
    if rank < 2 or x.shape[-1] not in (1, 2):
        raise Unsupported("DFT input must end in a dimension of 1 (real) or 2 (complex)")
    inverse, onesided = bool(node.attrs.get("inverse", 0)), bool(node.attrs.get("onesided", 0))
    irfft = inverse and onesided
    if irfft and x.shape[-1] == 1:
        raise Unsupported("DFT with inverse=1 and onesided=1 (IRFFT) of a real input: it takes complex bins")
    if onesided and not inverse and x.shape[-1] == 2:
        raise Unsupported("one-sided DFT of a complex input")
    axis = node.attrs.get("axis", 1) if opset < 20 else _scalar(node, inputs, 2, "axis")
    axis = normalize_axis(-2 if axis is None else axis, rank)
    if axis == rank - 1:
        raise Unsupported("DFT axis is the last (real/imaginary) dimension")
    length = x.shape[axis]
    n = _scalar(node, inputs, 1, "dft_length")
    n = (2 * (length - 1) if irfft else length) if n is None else n
    if n < 1:
        raise ValueError(f"DFT length {n} (must be positive)")  # (of the input's shape, or a constant's)
    bins = n // 2 + 1 if onesided and not inverse else n  # output places along the axis
    count = min(length, n // 2 + 1 if irfft else n)  # input places read along the axis
    outer, inner = int(np.prod(x.shape[:axis], dtype=np.int64)), int(np.prod(x.shape[axis + 1:-1], dtype=np.int64))
    rows = np.arange(outer * inner, dtype=np.int64)
    o, i = rows // max(inner, 1), rows % max(inner, 1)
    parts, out_parts = x.shape[-1], 1 if irfft else 2
    base = (o * length * inner + i) * parts
    out_base = (o * bins * inner + i) * out_parts
    shape = (*x.shape[:axis], bins, *x.shape[axis + 1:-1], out_parts)
    args = (In(0), Out(0), base, inner * parts, count, parts == 2, np.ones(n, np.float32), n, bins,
            inverse, irfft, out_base, inner * out_parts, *Transform.of(n, inverse, parts == 1 or irfft).args())
    return Kernel(dft_rows, args, [(shape, np.dtype(np.float32))])


@register("STFT")
def build_stft(node: Node, inputs: list, opset: int) -> Kernel:
    """Frames of [batch, length, 1 or 2] float32, windowed and transformed: [batch, frames, bins, 2]."""
    x = inputs[0]
    _float32(x, "STFT")
    if len(x.shape) != 3 or x.shape[-1] not in (1, 2):
        raise Unsupported("STFT signal must be [batch, length, 1 or 2]")
    step = _scalar(node, inputs, 1, "frame_step")
    window = inputs[2] if len(inputs) > 2 else None
    frame = _scalar(node, inputs, 3, "frame_length")
    if window is not None:
        if len(window.shape) != 1 or window.dtype != np.float32:
            raise Unsupported("STFT window must be a 1-D float32 tensor")
        if frame is not None and frame != window.shape[0]:
            raise ValueError(f"STFT window of {window.shape[0]} values for frame_length {frame}")
        frame = window.shape[0]
    batch, length, parts = x.shape
    frame = length if frame is None else frame
    if step < 1 or not 1 <= frame <= length:
        raise ValueError(f"STFT frame_step {step} and frame_length {frame} for a signal of {length}")
    onesided = bool(node.attrs.get("onesided", 1))
    if onesided and parts == 2:
        raise Unsupported("one-sided STFT of a complex signal")
    frames = (length - frame) // step + 1
    bins = frame // 2 + 1 if onesided else frame
    rows = np.arange(batch * frames, dtype=np.int64)
    base = ((rows // frames) * length + (rows % frames) * step) * parts
    window = np.ones(frame, np.float32) if window is None else In(2) if window.value is None else window.value
    args = (In(0), Out(0), base, parts, frame, parts == 2, window, frame, bins, False, False, rows * bins * 2, 2,
            *Transform.of(frame, False, parts == 1).args())
    return Kernel(dft_rows, args, [((batch, frames, bins, 2), np.dtype(np.float32))])


WINDOWS = {
    "HannWindow": lambda t: 0.5 - 0.5 * np.cos(t),
    "HammingWindow": lambda t: 25.0 / 46.0 - (21.0 / 46.0) * np.cos(t),
    "BlackmanWindow": lambda t: 0.42 - 0.5 * np.cos(t) + 0.08 * np.cos(2.0 * t),
}
"""Each window as a function of 2 pi i / N (N = size when periodic, else size - 1)."""


@register(*WINDOWS)
def build_window(node: Node, inputs: list, opset: int) -> Constant:
    size = _scalar(node, inputs, 0, "size")
    if size < 0:
        raise Unsupported(f"{node.op_type} size {size}")
    span = size if node.attrs.get("periodic", 1) else size - 1
    if size == 1 and span == 0:
        raise Unsupported(f"symmetric {node.op_type} of size 1 (0/0 in its definition)")
    t = 2.0 * np.pi * np.arange(size, dtype=np.float64) / max(span, 1)
    return Constant([WINDOWS[node.op_type](t).astype(dtype_of(node.attrs.get("output_datatype", 1)))])


@register("MelWeightMatrix")
def build_mel_weight_matrix(node: Node, inputs: list, opset: int) -> Constant:
    """[dft_length // 2 + 1, num_mel_bins] triangular filters on the mel scale, peak 1 (the ONNX
    definition: band edges are spectrogram bins rounded down from (dft_length + 1) f / sample_rate)."""
    mels, n, rate = (_scalar(node, inputs, i, w) for i, w in enumerate(("num_mel_bins", "dft_length", "sample_rate")))
    low, high = (float(const_input(node, inputs, i, w).reshape(-1)[0]) for i, w in ((3, "lower_edge_hertz"),
                                                                                   (4, "upper_edge_hertz")))
    if mels < 1 or n < 1 or rate <= 0:
        raise Unsupported(f"MelWeightMatrix of {mels} bins, dft_length {n}, sample_rate {rate}")
    low_mel, high_mel = (2595.0 * np.log10(1.0 + f / 700.0) for f in (low, high))
    edges = low_mel + np.arange(mels + 2) * (high_mel - low_mel) / (mels + 2)
    hertz = 700.0 * (10.0 ** (edges / 2595.0) - 1.0)
    edge = ((n + 1) * hertz // rate).astype(np.int64)
    reach = [math.floor((n + 1) * f / rate) for f in (low, high)]  # the edges' own bins, checked as onnxruntime does
    if not 0 <= reach[0] <= n // 2 or not 0 <= reach[1] <= n // 2:
        raise Unsupported(f"MelWeightMatrix bands reach bins {reach[0]}..{reach[1]} of a {n // 2 + 1}-bin spectrum "
                          f"(edges {low}..{high} Hz for dft_length {n} at sample_rate {rate})")
    weights = np.zeros((n // 2 + 1, mels))
    for m in range(mels):
        left, centre, right = edge[m:m + 3]
        if centre == left:
            weights[centre, m] = 1.0
        else:
            weights[left:centre + 1, m] = (np.arange(left, centre + 1) - left) / (centre - left)
        if right > centre:
            weights[centre:right, m] = (right - np.arange(centre, right)) / (right - centre)
    return Constant([weights.astype(dtype_of(node.attrs.get("output_datatype", 1)))])
