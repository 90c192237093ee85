"""Normalization over contiguous spans of C-contiguous float32 arrays: layer norm (one span per row
of x viewed as (outer, n)) and group norm (one span per (batch, group) of x viewed as (batch,
channels, inner), instance norm being one group per channel).

Statistics are two-pass, mean then mean of squared deviations (no E[x^2] - E[x]^2 cancellation),
computed as onnxruntime does in float32: float32 partial sums that vectorise, over blocks of
BLOCK values whose sums are added in float64, so long spans (a group of a feature map) lose no
more than a block's rounding. Outputs are (x - mean) * inv_std * scale + bias in float32.
"""
import math

import numpy as np
from numba import njit

from . import FASTMATH

BLOCK = 1024
"""Values summed in float32 before the partial sum is added to a float64 total."""


@njit(inline="always", fastmath=FASTMATH)
def _stats(xs, eps):
    """(mean, 1 / sqrt(variance + eps)) of the float32 span ``xs``, as float32."""
    n = xs.size
    total = 0.0
    for start in range(0, n, BLOCK):
        part = xs[start:min(start + BLOCK, n)]
        acc = np.float32(0.0)
        for j in range(part.size):
            acc += part[j]
        total += acc
    mean = np.float32(total / n)
    total = 0.0
    for start in range(0, n, BLOCK):
        part = xs[start:min(start + BLOCK, n)]
        acc = np.float32(0.0)
        for j in range(part.size):
            d = part[j] - mean
            acc += d * d
        total += acc
    return mean, np.float32(1.0 / math.sqrt(total / n + eps))


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def layer_norm(x, y, mean, inv_std, scale, bias, outer, n, s_rs, b_rs, eps):
    """LayerNormalization of x viewed as (outer, n), row r normalized on its own:
    y[r, j] = (x[r, j] - mean[r]) * inv_std[r] * scale[r * s_rs + j] + bias[r * b_rs + j],
    inv_std[r] = 1 / sqrt(var[r] + eps). Row strides s_rs, b_rs are 0 (one row of n values for
    every row) or n (a value per element); mean and inv_std receive the (outer,) statistics."""
    xf, yf, mf, vf = x.reshape(-1), y.reshape(-1), mean.reshape(-1), inv_std.reshape(-1)
    sf, bf = scale.reshape(-1), bias.reshape(-1)
    for r in range(outer):
        xr, yr = xf[r * n:(r + 1) * n], yf[r * n:(r + 1) * n]
        sr, br = sf[r * s_rs:r * s_rs + n], bf[r * b_rs:r * b_rs + n]
        m, iv = _stats(xr, eps)
        for j in range(n):
            yr[j] = (xr[j] - m) * iv * sr[j] + br[j]
        mf[r] = m
        vf[r] = iv


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def group_norm(x, y, scale, bias, batch, groups, per_group, inner, s_div, eps):
    """GroupNormalization of x viewed as (batch, groups * per_group, inner): the statistics of each
    (batch, group) span of per_group * inner values normalize it, then channel c gets
    y = (x - mean) * inv_std * scale[c // s_div] + bias[c // s_div] (s_div 1: a scale per channel,
    per_group: one per group). InstanceNormalization is per_group = 1."""
    xf, yf, sf, bf = x.reshape(-1), y.reshape(-1), scale.reshape(-1), bias.reshape(-1)
    span = per_group * inner
    for b in range(batch):
        for g in range(groups):
            base = (b * groups + g) * span
            m, iv = _stats(xf[base:base + span], eps)
            for k in range(per_group):
                c = g * per_group + k
                a, shift = iv * sf[c // s_div], bf[c // s_div]
                xr, yr = xf[base + k * inner:base + (k + 1) * inner], yf[base + k * inner:base + (k + 1) * inner]
                for i in range(inner):
                    yr[i] = (xr[i] - m) * a + shift
