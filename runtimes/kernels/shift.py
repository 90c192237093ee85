"""Pooling that writes its output into the tail columns of a streaming shift buffer.

A streaming step keeps, per layer, a buffer B (N, C, H + S) whose first H columns are the layer's
history and whose last S columns are this hop's new inputs. When a 1-D pool produces those S
columns, writing them straight into B saves the Concat that would copy them there (a few hundred
short rows per hop).
"""
from __future__ import annotations

from numba import njit

from . import FASTMATH
from .pool import AVG, MAX, _sweep


def _window_pooling_into(code: int):
    """The 1-D full-window pool of ``code`` writing into columns [col, W) of (N, C, W) rows."""

    @njit(cache=True, fastmath=FASTMATH)
    def kernel(x, buf, k, stride, col):
        """buf[p, col + j] = reduce over t < k of x[p, j*stride + t] for j < W - col: x (N, C, L),
        buf (N, C, W), every window full (as ``pool.WINDOW_POOL``, whose NaN and rounding rules apply)."""
        xf, bf = x.reshape(-1), buf.reshape(-1)
        rows, n, w = x.shape[0] * x.shape[1], x.shape[2], buf.shape[2]
        lo = w - col
        scale = 1.0 / k
        for p in range(rows):
            if k == stride == 4:
                _sweep(xf, bf, p * n, p * w + col, lo, 4, 4, scale, code)
            elif k == stride == 2:
                _sweep(xf, bf, p * n, p * w + col, lo, 2, 2, scale, code)
            else:
                _sweep(xf, bf, p * n, p * w + col, lo, stride, k, scale, code)

    return kernel


WINDOW_POOL_INTO = {MAX: _window_pooling_into(MAX), AVG: _window_pooling_into(AVG)}
