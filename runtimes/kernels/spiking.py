"""Leaky integrate-and-fire neurons over time (ai.edgekit LIF, SpikingJelly's LIF with decay_input).

Layout: x (N, C, T) float32 (time last), v0 (N, C), spikes (N, C, T), v_last (N, C), float32.
Math per step: v = v + (x - (v - v_reset)) / tau; s = v >= threshold; hard reset: v = v_reset
where s, soft reset: v = v - threshold where s. Compiled without fastmath and computed in float32
in exactly this order (a true division, no contraction), so spikes match a float32 graph of
Sub/Div/Add/GreaterOrEqual bit for bit: one ulp at the threshold would flip a spike.
"""
import numpy as np
from numba import njit


CB, TT = 16, 64  # channels updated together (one vector), time steps per transposed tile


@njit(cache=True)
def lif(x, v0, tau, threshold, soft, v_reset, spikes, v_last):
    """Integrate, fire and reset every (n, c) neuron over t; tau, threshold, v_reset are float32.

    Time is sequential, channels are independent: CB channels step together over a (TT, CB) tile
    transposed from the time-last input, branch-free, so the update vectorises across channels.
    """
    n_batch, channels, steps = x.shape
    one = np.float32(1.0)
    zero = np.float32(0.0)
    v = np.empty(CB, np.float32)
    xt = np.empty((TT, CB), np.float32)
    st = np.empty((TT, CB), np.float32)
    for n in range(n_batch):
        for c0 in range(0, channels, CB):
            cb = min(CB, channels - c0)
            for c in range(cb):
                v[c] = v0[n, c0 + c]
            for t0 in range(0, steps, TT):
                tt = min(TT, steps - t0)
                for c in range(cb):
                    for s in range(tt):
                        xt[s, c] = x[n, c0 + c, t0 + s]
                for s in range(tt):
                    for c in range(cb):
                        h = v[c] + (xt[s, c] - (v[c] - v_reset)) / tau
                        fire = h >= threshold
                        st[s, c] = one if fire else zero
                        after = h - threshold if soft else v_reset
                        v[c] = after if fire else h
                for c in range(cb):
                    for s in range(tt):
                        spikes[n, c0 + c, t0 + s] = st[s, c]
            for c in range(cb):
                v_last[n, c0 + c] = v[c]
