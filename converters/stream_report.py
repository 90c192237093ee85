"""How far a streaming model is from window inference: the structural bound and the measured NRMSE.

Bound. Streamed features equal the feature extractor run on the whole stream, so they can differ
from window inference only in feature-map columns whose receptive field reaches the zero padding
of the window; the converter tracks how many such columns each head input has at its left and
right edge. Pooling adds nothing: the converter only accepts hops that keep every pooling layer
aligned, where the StreamiNNC paper's misaligned-pooling bound ((L_p - 1) * 2*pi*A*f_max/f_s per
output for a signal band-limited to f_max with |x| <= A) does not apply. Zero edge columns means
exact streaming.

Measurement. Both the step model and the window model run on the user's data or on a synthetic
band-limited signal, in the engine the caller passes (the CLI passes edgekit.InferenceSession;
converters never import edgekit's runtime themselves) or else in onnxruntime, the reference. Every
streamed hop output is compared with window inference on the window it stands for,
[T - delay - L, T - delay). NRMSE = RMSE / (max - min of the window outputs), in percent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgekit.arrays import as_array
from edgekit.errors import InputError

if TYPE_CHECKING:
    from .stream import StreamingModel


@dataclass
class StreamReport:
    """Result of ``report``; ``str()`` gives a readable summary."""

    hop: int
    window: int
    delay: int
    edge_columns: dict[str, tuple[int, int, int]]  # head input -> (left, right, window columns)
    hops_compared: int
    nrmse_percent: float
    max_abs_error: float
    exact: bool
    source: str
    macs_window: int
    macs_hop: int

    def __str__(self) -> str:
        lines = [f"streaming: window {self.window} samples, hop {self.hop} (L/S = {self.window // self.hop}), "
                 f"output delay {self.delay} samples",
                 f"extractor MACs: {self.macs_window:,} per window -> {self.macs_hop:,} per hop "
                 f"({self.macs_window / max(self.macs_hop, 1):.1f}x fewer)"]
        for t, (left, right, width) in self.edge_columns.items():
            lines.append(f"bound: head input {t!r}: {left + right} of {width} columns can differ from window "
                         f"inference (zero padding: {left} at the left edge, {right} at the right edge)")
        lines.append("bound: pooling is aligned at every layer (paper's misaligned-pooling error: 0)")
        lines.append(f"measured on {self.source}, {self.hops_compared} hops: NRMSE {self.nrmse_percent:.4g}%, "
                     f"max |error| {self.max_abs_error:.3g} ({'exact' if self.exact else 'approximate'})")
        return "\n".join(lines)


def band_limited(channels: int, samples: int, f_max: float = 0.05, seed: int = 0) -> np.ndarray:
    """(channels, samples) of white noise low-passed to ``f_max`` (cycles/sample), scaled to |x| <= 1."""
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal((channels, samples)), axis=-1)
    spec[:, np.fft.rfftfreq(samples) > f_max] = 0
    x = np.fft.irfft(spec, n=samples, axis=-1)
    return x / max(np.abs(x).max(), 1e-12)


def report(sm: "StreamingModel", data: np.ndarray | None = None, hops: int = 64, seed: int = 0,
           session: Callable[[Any], Any] | None = None) -> StreamReport:
    """The error bound of ``sm`` and its measured NRMSE against window inference.

    ``data`` is the user's signal, (C, T) or (N, C, T); all its full hops are used. Without data,
    a synthetic band-limited signal covering ``hops`` compared hops is generated. A (C, T) signal
    (or the synthetic one) is repeated to the model's batch when it is fixed. ``session(model)``
    returns an object with onnxruntime's ``run(output_names, feeds)`` (e.g. edgekit.InferenceSession);
    default: onnxruntime on one thread.
    """
    if data is None:
        x = band_limited(sm.channels, (sm.warmup_hops + hops) * sm.hop, seed=seed)
        source = "a synthetic band-limited signal (f_max = 0.05 f_s)"
    else:
        x = as_array(data, "data")
        if x.ndim not in (2, 3) or x.shape[-2] != sm.channels:
            raise InputError(f"data must be (C, T) or (N, C, T) with C = {sm.channels}, got {np.shape(data)}")
        source = f"the given data ({x.shape[-1]} samples)"
    if x.ndim == 2:  # one signal: every stream of a fixed batch gets it
        x = np.repeat(x[None], sm.batch if isinstance(sm.batch, int) else 1, axis=0)
    x = np.ascontiguousarray(x, dtype=sm.dtype)
    if isinstance(sm.batch, int) and x.shape[0] != sm.batch:
        raise InputError(f"the model takes batch {sm.batch}, data has {x.shape[0]}")
    streamed, windows = _run_both(sm, x, session or _ort_session)
    if not streamed:
        raise InputError(f"data too short: the first output needs {(sm.warmup_hops + 1) * sm.hop + sm.delay} samples")
    sq, count, lo, hi, max_abs, exact = 0.0, 0, np.inf, -np.inf, 0.0, True
    for s_out, w_out in zip(streamed, windows):
        for s, w in zip(s_out, w_out):
            s64, w64 = s.astype(np.float64), w.astype(np.float64)
            diff = s64 - w64
            sq += float((diff ** 2).sum())
            count += diff.size
            lo, hi = min(lo, float(w64.min())), max(hi, float(w64.max()))
            max_abs = max(max_abs, float(np.abs(diff).max()))
            exact &= bool(np.allclose(s64, w64, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(w64).max()))))
    scale = hi - lo if hi > lo else max(abs(hi), 1.0)
    edges = {t: (*h.edges, h.width) for t, h in sm.head_inputs.items()}
    return StreamReport(sm.hop, sm.window, sm.delay, edges, len(streamed),
                        100.0 * float(np.sqrt(sq / max(count, 1))) / scale, max_abs, exact, source,
                        sum(layer.macs_window for layer in sm.layers), sum(layer.macs_hop for layer in sm.layers))


def _ort_session(model: Any) -> Any:
    """onnxruntime on one thread: the default engine of the measurement."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _run_both(sm: "StreamingModel", x: np.ndarray, session: Callable[[Any], Any]) -> tuple[list, list]:
    """Streamed outputs of every hop past the warm-up, and window inference for the same hops."""
    step, win = session(sm.step_model), session(sm.window_model)
    states = sm.initial_states(x.shape[0])
    out_names = sm.outputs + [s.output for s in sm.states]
    streamed, windows = [], []
    for h in range(x.shape[-1] // sm.hop):
        end = (h + 1) * sm.hop
        res = step.run(out_names, {sm.input: x[:, :, end - sm.hop:end], **states})
        states = {s.input: v for s, v in zip(sm.states, res[len(sm.outputs):])}
        if h >= sm.warmup_hops:
            stop = end - sm.delay
            streamed.append(res[:len(sm.outputs)])
            windows.append(win.run(sm.outputs, {sm.input: x[:, :, stop - sm.window:stop]}))
    return streamed, windows
