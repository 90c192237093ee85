"""PPG heart-rate demo: stream a real recording through a StreamiNNC streaming CNN, hop by hop.

The bundled CNN (demos/models/ppg_cnn.onnx, trained by train_ppg.py) estimates heart rate from
8 s of PPG at 32 Hz. A window model recomputes all 8 s at every 2 s hop; the streaming session
computes only the 2 s that are new in every layer and reuses the rest. The demo feeds heartpy's
recording 'data2' (held out from training) in 2 s chunks as fast as it can, and prints per hop
the reference heart rate (from detected peaks), the streamed and the window estimates and the
latencies of both; then MAE, speedup, and a plot (signal, heart rate, latency) to --out.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import numpy as np

from . import ppg_data as data
from .plotting import add_plot_options, check_plot_options, figure

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "ppg_cnn.onnx")


def _requirements(plot: bool = True) -> str | None:
    """None when the demo's extra packages (matplotlib only to ``plot``) and heartpy's recordings are
    there, else the reason."""
    try:
        data.data_dir()
    except ModuleNotFoundError:
        return data.INSTALL_HINT
    if any(importlib.util.find_spec(m) is None for m in ("scipy", "matplotlib")[:2 if plot else 1]):
        return data.INSTALL_HINT
    return None


def _timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def run(recording: str = "data2", verbose: bool = True) -> dict[str, np.ndarray]:
    """Stream ``recording``; per window: reference, streamed and window bpm and the latencies (s)
    of the streaming push, edgekit's and onnxruntime's full-window run; also the signal and the
    extractor's MACs per window and per hop."""
    import onnx

    import edgekit
    from edgekit.benchmarks.timing import ort_session
    from edgekit.converters.stream import to_streaming
    from edgekit import StreamingSession

    rec = data.load_recording(recording)
    x, ref = data.model_windows(rec)
    n = data.window_count(len(x))
    if verbose:
        print(f"recording {recording!r}: {rec.seconds:.0f} s of PPG at {rec.fs:.1f} Hz -> {data.FS} Hz; "
              f"window {data.WINDOW / data.FS:.0f} s, hop {data.HOP / data.FS:.0f} s ({n} windows)")
        print("loading the kernels ...", end="", flush=True)
    t = time.perf_counter()
    proto = onnx.load(MODEL)
    sm = to_streaming(proto, hop=data.HOP)
    stream = StreamingSession(sm)
    window_ek, window_ort = edgekit.InferenceSession(proto), ort_session(proto)
    warm = np.zeros((1, 1, data.WINDOW), np.float32)
    window_ek.run(None, {"ppg": warm})
    window_ort.run(None, {"ppg": warm})
    stream.push(warm[0, :, :data.HOP])  # binds the stream's engine; reset() keeps it and clears the state
    stream.reset()
    if verbose:
        t = time.perf_counter() - t
        print(f" {t:.1f} s" + (" (compiled for this CPU on this first run and cached: later runs load them in "
                                "about a second)" if t > 5 else ""))

    cols = {k: np.full(n, np.nan) for k in ("ref", "stream", "window", "t_stream", "t_edgekit", "t_ort")}
    cols["ref"][:] = ref
    if verbose:
        print(f"{'time s':>7s} {'ref bpm':>8s} {'stream':>7s} {'window':>7s}   {'stream us':>9s} "
              f"{'window edgekit us':>17s} {'window ort us':>13s}")
    k = 0
    for start in range(0, n * data.HOP + data.WINDOW - data.HOP, data.HOP):
        hops, dt = _timed(stream.push, x[None, start:start + data.HOP])
        for outputs in hops:  # none before the first full window, then one per hop
            win = x[None, None, k * data.HOP:k * data.HOP + data.WINDOW]
            (w,), t_ek = _timed(window_ek.run, None, {"ppg": win})
            _, t_ort = _timed(window_ort.run, None, {"ppg": win})
            cols["stream"][k], cols["window"][k] = float(outputs[0].ravel()[0]), float(w.ravel()[0])
            cols["t_stream"][k], cols["t_edgekit"][k], cols["t_ort"][k] = dt, t_ek, t_ort
            if verbose:
                r = "   -   " if np.isnan(ref[k]) else f"{ref[k]:7.1f}"
                print(f"{(k * data.HOP + data.WINDOW) / data.FS:7.0f} {r:>8s} {cols['stream'][k]:7.1f} "
                      f"{cols['window'][k]:7.1f}   {dt * 1e6:9.0f} {t_ek * 1e6:17.0f} {t_ort * 1e6:13.0f}")
            k += 1
    cols["signal"] = x
    cols["macs"] = np.array([sum(l.macs_window for l in sm.layers), sum(l.macs_hop for l in sm.layers)])
    return cols


def summary(cols: dict[str, np.ndarray]) -> str:
    """MAE against the reference, stream-window agreement, median latencies and speedups."""
    ok = ~np.isnan(cols["ref"])
    mae_s = np.mean(np.abs(cols["stream"][ok] - cols["ref"][ok]))
    mae_w = np.mean(np.abs(cols["window"][ok] - cols["ref"][ok]))
    diff = np.max(np.abs(cols["stream"] - cols["window"]))
    t_s, t_ek, t_ort = (np.median(cols[c]) * 1e6 for c in ("t_stream", "t_edgekit", "t_ort"))
    seconds = len(cols["signal"]) / data.FS
    return "\n".join([
        f"MAE vs reference over {ok.sum()} windows with a valid reference: streaming {mae_s:.2f} bpm, "
        f"window inference {mae_w:.2f} bpm (largest streaming-window difference {diff:.1g} bpm: the CNN's "
        f"convolutions are valid, so streaming computes exactly what window inference does)",
        f"median latency per hop: streaming {t_s:.0f} us, full window on edgekit {t_ek:.0f} us "
        f"({t_ek / t_s:.1f}x), on onnxruntime {t_ort:.0f} us ({t_ort / t_s:.1f}x); ideal L/S = "
        f"{data.WINDOW // data.HOP}",
        f"feature extractor: {cols['macs'][0]:,} MACs per window, {cols['macs'][1]:,} per hop streamed "
        f"({cols['macs'][0] / cols['macs'][1]:.1f}x fewer); a network this small is bound by per-call "
        f"overhead, larger ones gain more (python -m benchmarks.stream)",
        f"streamed {seconds:.0f} s of signal in {np.sum(cols['t_stream']) * 1e3:.1f} ms "
        f"({seconds / np.sum(cols['t_stream']):,.0f}x faster than real time)",
    ])


def plot(cols: dict[str, np.ndarray], path: str) -> None:
    """Three panels: the preprocessed signal, heart rate (reference, streamed, window), latency per hop."""
    t_end = (np.arange(len(cols["ref"])) * data.HOP + data.WINDOW) / data.FS
    with figure(path, 3, 1, figsize=(10, 8), sharex=True, constrained_layout=True) as (_, (a, b, c)):
        a.plot(np.arange(len(cols["signal"])) / data.FS, cols["signal"], lw=0.6, color="0.3")
        a.set_ylabel("PPG (normalised)")
        a.set_title("edgekit streaming CNN: heart rate from PPG (8 s window, 2 s hop)")
        b.plot(t_end, cols["ref"], "o", color="0.6", ms=4, label="reference (peaks)")
        b.plot(t_end, cols["window"], "-", color="tab:orange", label="window inference")
        b.plot(t_end, cols["stream"], "--", color="tab:blue", label="streaming")
        b.set_ylabel("heart rate (bpm)")
        b.legend(loc="best", fontsize=8)
        for key, label in (("t_ort", "full window, onnxruntime"), ("t_edgekit", "full window, edgekit"),
                           ("t_stream", "streaming, edgekit")):
            c.plot(t_end, cols[key] * 1e6, ".-", label=label)
        c.set_yscale("log")
        c.set_ylabel("latency per hop (us)")
        c.set_xlabel("time (s), at the end of each window")
        c.legend(loc="best", fontsize=8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgekit demo ppg", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recording", default="data2", choices=sorted(data.RECORDINGS),
                        help="heartpy recording to stream (default data2, held out from training)")
    add_plot_options(parser, "ppg_demo.png")
    parser.add_argument("--quiet", action="store_true", help="print the summary only")
    args = parser.parse_args(argv)
    check_plot_options(parser, args)
    missing = _requirements(plot=not args.no_plot)
    if missing:
        print(f"edgekit demo ppg: {missing}", file=sys.stderr)
        return 1
    cols = run(args.recording, verbose=not args.quiet)
    print(summary(cols))
    if not args.no_plot:
        plot(cols, args.out)
        print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
