"""Elementwise activations as one inlinable scalar function, so Conv/Gemm epilogues and the
standalone activation ops share a single definition.

Codes: 0 identity, 1 Relu, 2 LeakyRelu(alpha), 3 Clip(alpha=min, beta=max), 4 Sigmoid, 5 Tanh,
6 HardSigmoid(alpha, beta), 7 HardSwish.
"""
import math

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
    if code == HARD_SIGMOID:
        return max(0.0, min(1.0, alpha * v + beta))
    if code == HARD_SWISH:
        return v * max(0.0, min(1.0, v / 6.0 + 0.5))
    return v


@njit(cache=True, fastmath=FASTMATH)
def activation_kernel(x, out, code, alpha, beta):
    """out = activation(x) elementwise over C-contiguous arrays of equal size."""
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for i in range(xf.size):
        of[i] = activate(xf[i], code, alpha, beta)
