"""Leaky integrate-and-fire neurons over time (ai.edgekit LIF, SpikingJelly's LIF with decay_input).

Layout: x (N, C, T) float32 (time last), v0 (N, C), spikes (N, C, T), v_last (N, C), float32.
Math per step: v = v + (x - (v - v_reset)) / tau; s = v >= threshold; hard reset: v = v_reset
where s, soft reset: v = v - threshold where s. Compiled without fastmath and computed in float32
in exactly this order (a true division, no contraction), so spikes match a float32 graph of
Sub/Div/Add/GreaterOrEqual bit for bit: one ulp at the threshold would flip a spike.
"""
import numpy as np
from numba import njit


@njit(cache=True)
def lif(x, v0, tau, threshold, soft, v_reset, spikes, v_last):
    """Integrate, fire and reset every (n, c) neuron over t; tau, threshold, v_reset are float32."""
    n_batch, channels, steps = x.shape
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for n in range(n_batch):
        for c in range(channels):
            v = v0[n, c]
            for t in range(steps):
                v = v + (x[n, c, t] - (v - v_reset)) / tau
                if v >= threshold:
                    spikes[n, c, t] = one
                    v = v - threshold if soft else v_reset
                else:
                    spikes[n, c, t] = zero
            v_last[n, c] = v
