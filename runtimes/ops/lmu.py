"""Builders for the ``ai.edgekit`` ops LMU and LIF (schema: docs/ops.md, section "Spiking LMU ops").

LMU discretises its matrices once (edgekit.legendre) and picks the recurrent kernel, the direct
causal convolution or an FFT convolution by a cost estimate for the concrete T. The FFT runs in
NumPy at the op level because numpy.fft cannot be called from Numba; it is the one form here with
Python work per call (~20 us), and pays off for large d from T ~ 100 (d log T vs d^2 per step).
"""
from __future__ import annotations

import math

import numpy as np

from edgekit.errors import ModelError
from edgekit.ir import Node
from edgekit.legendre import discretize, impulse_response

from ..kernels import lmu as kl
from ..kernels import spiking as ks
from .registry import In, Kernel, Out, Unsupported, register

DOMAIN = "ai.edgekit"
RECURRENT, DIRECT, FFT = "recurrent", "direct", "fft"
# Relative costs, in recurrent multiply-adds (measured: the recurrence runs ~0.1 ns per multiply-add
# at d >= 64, the direct convolution ~0.25 ns per multiply-add while its accumulator stays in
# cache, the FFT ~0.2 ns per point and level plus ~20 us of NumPy calls).
DIRECT_COST = 3.0
FFT_COST = 8.0
FFT_CALL = 2e5
FFT_ROWS = 1 << 17  # complex values per block of rows transformed together: 2 MB, temporaries stay in L2
GROWTH = 1e3  # largest max|H_k| / max|H_0| the FFT takes (its error scales with max|H|; stable LMUs: < 3)


def _fail(node: Node, what: str) -> ModelError:
    return ModelError(f"node {node.name!r} ({node.op_type}): {what}")


def _number(node: Node, name: str, default: float | None, positive: bool = False) -> float:
    value = node.attrs.get(name, default)
    if value is None:
        raise _fail(node, f"attribute {name!r} is required")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or (positive and value <= 0):
        raise _fail(node, f"attribute {name!r} must be a {'positive ' if positive else ''}finite number, "
                          f"got {value!r}")
    return float(value)


def _choice(node: Node, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = node.attrs.get(name, default)
    if value not in allowed:
        raise _fail(node, f"attribute {name!r} must be one of {list(allowed)}, got {value!r}")
    return value


def _arity(node: Node, inputs: list, max_in: int, max_out: int) -> None:
    if not 1 <= len(inputs) <= max_in:
        raise _fail(node, f"takes 1 to {max_in} inputs, got {len(inputs)}")
    if inputs[0] is None:
        raise _fail(node, "input 0 is required, got an empty name")
    if not 1 <= len(node.outputs) <= max_out or not node.outputs[0]:
        raise _fail(node, f"has 1 or {max_out} outputs and output 0 is required, got {node.outputs}")


def _sequence(node: Node, x, what: str) -> tuple[int, int, int]:
    if x.dtype != np.float32:
        raise Unsupported(f"{node.op_type} on {x.dtype} (edgekit computes float32)")
    if len(x.shape) != 3:
        raise _fail(node, f"input {what} must be 3-D (N, C, T), got shape {list(x.shape)}")
    return x.shape


def _state(node: Node, inputs: list, shape: tuple[int, int], what: str) -> tuple[In | np.ndarray, bool]:
    """In(1) for a given initial state (checked against ``shape``), else a zero array."""
    if len(inputs) < 2 or inputs[1] is None:
        return np.zeros(shape, np.float32), False
    s = inputs[1]
    if s.dtype != np.float32 or tuple(s.shape) != shape:
        raise _fail(node, f"input 1 ({what}) must be float32 {list(shape)}, got {s.dtype} {list(s.shape)}")
    return In(1), True


def _final_state(node: Node, shape: tuple[int, int]) -> Out | np.ndarray:
    """Out(1) when the node asks for its final state, else a scratch array the kernel writes it to."""
    return Out(1) if len(node.outputs) > 1 and node.outputs[1] else np.empty(shape, np.float32)


def _fft_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (lengths pocketfft transforms fastest)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def lmu_costs(order: int, steps: int, has_m0: bool) -> dict[str, float]:
    """Cost estimates per batch row of each LMU form, in recurrent multiply-adds (the parallel forms
    pay the M0 term as a recurrence)."""
    recurrent = float(steps) * order * order
    nfft = _fft_len(2 * steps - 1) if steps else 1
    free = recurrent if has_m0 else 0.0
    return {
        RECURRENT: recurrent,
        DIRECT: DIRECT_COST * order * steps * (steps + 1) / 2 + free,
        FFT: FFT_COST * (order + 1) * nfft * max(1.0, math.log2(nfft)) + FFT_CALL + free,
    }


def choose_form(mode: str, order: int, steps: int, has_m0: bool, stable: bool = True) -> str:
    """The cheapest form ``mode`` allows: recurrent, direct or fft ("parallel" excludes recurrent).

    An unstable discretisation (``stable`` False: a growing impulse response, see is_bounded) excludes
    the FFT: its error scales with the largest output, so a growing response swamps the early frames
    (and past float64's range, NaN spreads over every frame); the direct convolution stays causal."""
    if mode == RECURRENT:
        return RECURRENT
    costs = lmu_costs(order, steps, has_m0)
    if mode == "parallel":
        costs.pop(RECURRENT)
    if not stable:
        costs.pop(FFT)
    return min(costs, key=costs.get)


def is_bounded(h: np.ndarray) -> bool:
    """Whether the impulse response H (T, d) stays within GROWTH of |H_0| (and finite): true of every
    stable LMU (zoh always; Euler when theta is long enough for the order), false of a growing one."""
    return not h.size or bool(np.abs(h).max() <= GROWTH * np.abs(h[0]).max())  # (NaN compares False)


def lmu_fft(u: np.ndarray, m0: np.ndarray, hf: np.ndarray, nfft: int, block: int, abar: np.ndarray,
            bbar: np.ndarray, free: np.ndarray | None, out: np.ndarray, m_last: np.ndarray) -> None:
    """Parallel form by FFT: out[n, i] = the first T values of irfft(rfft(u[n]) * hf[i]), plus the
    M0 term Abar^(t+1) m0 (float64, in ``free`` (T, d)) when ``free`` is given.

    An FFT would spread a NaN or Inf of u over every step, so such inputs run the recurrence,
    which keeps them causal as the other forms do."""
    if not np.isfinite(u).all():
        kl.lmu_recurrent(u, m0, abar, bbar, out, m_last)
        return
    steps = out.shape[2]
    spectra = np.fft.rfft(u[:, 0, :].astype(np.float64), n=nfft, axis=-1)
    for n in range(out.shape[0]):
        if free is not None:
            kl.free_response(m0[n], abar, free)
        for i in range(0, hf.shape[0], block):
            y = np.fft.irfft(spectra[n] * hf[i:i + block], n=nfft, axis=-1)[:, :steps]
            if free is not None:
                y += free[:, i:i + block].T
            out[n, i:i + block] = y
            m_last[n, i:i + block] = y[:, -1]


@register("LMU", domain=DOMAIN)
def build_lmu(node: Node, inputs: list, opset: int) -> Kernel:
    """LMU(U[, M0]) -> M[, M_last] by the form ``mode`` allows and the cost estimate picks for this T."""
    _arity(node, inputs, 2, 2)
    n, one, steps = _sequence(node, inputs[0], "U")
    if one != 1:
        raise _fail(node, f"input U must be (N, 1, T), got shape {list(inputs[0].shape)}")
    order = node.attrs.get("order")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise _fail(node, f"attribute 'order' must be an int >= 1, got {order!r}")
    order = int(order)
    theta = _number(node, "theta", None, positive=True)
    method = _choice(node, "discretization", "zoh", ("zoh", "euler"))
    mode = _choice(node, "mode", "auto", ("auto", RECURRENT, "parallel"))
    m0, has_m0 = _state(node, inputs, (n, order), "M0")
    abar, bbar = discretize(order, theta, method)
    form = choose_form(mode, order, steps, has_m0)
    if form != RECURRENT:
        h = impulse_response(abar, bbar, steps)
        if form == FFT and not is_bounded(h):
            form = choose_form(mode, order, steps, has_m0, stable=False)
    outputs = [((n, order, steps), np.dtype(np.float32)), ((n, order), np.dtype(np.float32))]
    m_last = _final_state(node, (n, order))
    if form == RECURRENT:
        return Kernel(kl.lmu_recurrent, (In(0), m0, abar, bbar, Out(0), m_last), outputs)
    if form == DIRECT:
        return Kernel(kl.lmu_convolve, (In(0), m0, h, abar, has_m0, np.empty_like(h), Out(0), m_last), outputs)
    nfft = _fft_len(2 * steps - 1)
    hf = np.ascontiguousarray(np.fft.rfft(h, n=nfft, axis=0).T)
    block = max(1, FFT_ROWS // hf.shape[1])
    free = np.empty_like(h) if has_m0 else None
    return Kernel(lmu_fft, (In(0), m0, hf, nfft, block, abar, bbar, free, Out(0), m_last), outputs)


@register("LIF", domain=DOMAIN)
def build_lif(node: Node, inputs: list, opset: int) -> Kernel:
    """LIF(X[, V0]) -> S[, V_last]: one float32 kernel call over the whole sequence."""
    _arity(node, inputs, 2, 2)
    n, c, steps = _sequence(node, inputs[0], "X")
    tau = _number(node, "tau", 2.0, positive=True)
    threshold = _number(node, "threshold", 1.0)
    soft = _choice(node, "reset", "hard", ("hard", "soft")) == "soft"
    v_reset = _number(node, "v_reset", 0.0)
    v0, _ = _state(node, inputs, (n, c), "V0")
    v_last = _final_state(node, (n, c))
    args = (In(0), v0, np.float32(tau), np.float32(threshold), soft, np.float32(v_reset), Out(0), v_last)
    return Kernel(ks.lif, args, [((n, c, steps), np.dtype(np.float32)), ((n, c), np.dtype(np.float32))])
