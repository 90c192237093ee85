"""Scans: running sums along one axis (ONNX CumSum).

The input is viewed C-contiguous as (outer, n, inner) around the scanned axis. Slice t of the output
is the previous slice plus input slice t (inclusive) or t - 1 (exclusive; the first slice is 0),
walking t upward, or downward with ``reverse``. Sums run in order, one slice of ``inner``
contiguous values at a time, as onnxruntime accumulates them.
"""
from __future__ import annotations

from numba import njit

from . import FASTMATH


@njit(cache=True, fastmath=FASTMATH)
def cumsum(x, out, outer, n, inner, exclusive, reverse):
    """out = CumSum(x) along the middle axis of (outer, n, inner); x and out flat, any numeric dtype."""
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
