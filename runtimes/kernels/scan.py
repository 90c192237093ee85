"""Scans: running sums along one axis (ONNX CumSum).

The input is viewed C-contiguous as (outer, n, inner) around the scanned axis. Slice t of the output
is the previous slice plus input slice t (inclusive) or t - 1 (exclusive; the first slice is 0),
walking t upward, or downward with ``reverse``. Sums run in order, one slice of ``inner``
contiguous values at a time, as onnxruntime accumulates them. The axis is read at run time (ONNX
feeds it as a tensor), so one plan serves every axis.
"""
from __future__ import annotations

from numba import njit

from edgekit.errors import InputError

from . import FASTMATH


@njit(cache=True, fastmath=FASTMATH)
def cumsum(x, axis, out, shape, exclusive, reverse):
    """out = CumSum(x) along axis[0] (int32/int64, negative from the end) of a C-contiguous x of
    ``shape`` (int64); any numeric dtype. InputError for an axis out of range."""
    rank = shape.size
    a = axis.reshape(-1)[0]
    if a < -rank or a >= rank:
        raise InputError("CumSum axis (input 1) is out of range for the rank of input 0")
    a = a % rank
    outer, n, inner = 1, shape[a], 1
    for i in range(a):
        outer *= shape[i]
    for i in range(a + 1, rank):
        inner *= shape[i]
    if n == 0:
        return  # an empty output: the first slice below would be written out of bounds
    xf, of = x.reshape(-1), out.reshape(-1)
    step = -inner if reverse else inner
    for o in range(outer):
        first = o * n * inner + ((n - 1) * inner if reverse else 0)
        for i in range(inner):
            of[first + i] = 0 if exclusive else xf[first + i]
        for t in range(1, n):
            at = first + t * step
            src = at - step if exclusive else at
            for i in range(inner):
                of[at + i] = of[at - step + i] + xf[src + i]
