"""Elementwise activations as one inlinable scalar function, so Conv/Gemm epilogues and the
standalone activation ops share a single definition.

Codes: 0 identity, 1 Relu, 2 LeakyRelu(alpha), 3 Clip(alpha=min, beta=max), 4 Sigmoid, 5 Tanh,
6 HardSigmoid(alpha, beta), 7 HardSwish.
"""
import math

import numpy as np

from numba import njit

from . import FASTMATH

IDENTITY, RELU, LEAKY_RELU, CLIP, SIGMOID, TANH, HARD_SIGMOID, HARD_SWISH = range(8)


@njit(inline="always", fastmath=FASTMATH)
def activate(v, code, alpha, beta):
    """Apply activation ``code`` with parameters alpha, beta to the scalar ``v``."""
    if code == RELU:
        return 0.0 if v < 0.0 else v
    if code == LEAKY_RELU:
        return v * alpha if v < 0.0 else v
    if code == CLIP:
        return min(max(v, alpha), beta)
    if code == SIGMOID:
        return 1.0 / (1.0 + math.exp(-v))
    if code == TANH:
        return math.tanh(v)
    if code == HARD_SIGMOID:  # the NaN first: min and max return their first argument when it is NaN
        return min(max(alpha * v + beta, 0.0), 1.0)
    if code == HARD_SWISH:
        return v * max(0.0, min(1.0, v / 6.0 + 0.5))
    return v


@njit(cache=True, fastmath=FASTMATH)
def activate_rows(y, offset, stride, m, n, code, p1, p2):
    """Apply activation ``code`` in place to m rows of n values at y[offset + i * stride + j].

    The code is dispatched outside the loops, and each row is a slice indexed from 0 (no
    negative-index wrap), so the loop of each piecewise-linear activation vectorises.
    """
    if code == IDENTITY:
        return
    for i in range(m):
        row = y[offset + i * stride: offset + i * stride + n]
        if code == RELU:
            for j in range(n):
                row[j] = activate(row[j], RELU, p1, p2)
        elif code == LEAKY_RELU:
            for j in range(n):
                row[j] = activate(row[j], LEAKY_RELU, p1, p2)
        elif code == CLIP:
            for j in range(n):
                row[j] = activate(row[j], CLIP, p1, p2)
        elif code == HARD_SIGMOID:
            for j in range(n):
                row[j] = activate(row[j], HARD_SIGMOID, p1, p2)
        elif code == HARD_SWISH:
            for j in range(n):
                row[j] = activate(row[j], HARD_SWISH, p1, p2)
        else:
            for j in range(n):
                row[j] = activate(row[j], code, p1, p2)


@njit(cache=True, fastmath=FASTMATH)
def activation_kernel(x, out, code, alpha, beta):
    """out = activation(x) elementwise over C-contiguous arrays of equal size."""
    of = out.reshape(-1)
    of[:] = x.reshape(-1)
    one = np.int64(1)
    activate_rows(of, np.int64(0), of.size, one, of.size, code, alpha, beta)
