"""Quickstart: run a bundled 1D CNN on edgekit and on onnxruntime, compare outputs and speed.

The model (demos/models/cnn1d.onnx, made by make_models.py) classifies 8 s of a 64 Hz signal;
the input is a synthetic pulse-like signal generated from a fixed seed. Swapping
``onnxruntime.InferenceSession`` for ``edgekit.InferenceSession`` is the whole integration.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import edgekit
from edgekit.benchmarks.timing import compare, ort_session

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "cnn1d.onnx")
RATE_HZ, SECONDS = 64, 8


def synthetic_signal(seed: int = 0) -> np.ndarray:
    """[1, 1, 512]: a 1.2 Hz pulse wave with harmonics, slow baseline wander and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(RATE_HZ * SECONDS) / RATE_HZ
    x = np.sin(2 * np.pi * 1.2 * t) + 0.4 * np.sin(2 * np.pi * 2.4 * t + 0.5) + 0.3 * np.sin(2 * np.pi * 0.2 * t)
    x += 0.1 * rng.standard_normal(t.size)
    return x.astype(np.float32).reshape(1, 1, -1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgekit demo quickstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=300, help="timed calls per engine (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic input (default 0)")
    args = parser.parse_args(argv)

    x = synthetic_signal(args.seed)
    print(f"model: {os.path.relpath(MODEL)} ({os.path.getsize(MODEL) / 1024:.1f} KiB): 1D CNN, "
          f"{SECONDS} s of {RATE_HZ} Hz signal -> 4 class logits")
    print(f"input: signal {list(x.shape)}, synthetic pulse wave + wander + noise (seed {args.seed})\n")

    t0 = time.perf_counter()
    session = edgekit.InferenceSession(MODEL)
    (ours,) = session.run(None, {"signal": x})
    first = time.perf_counter() - t0
    (theirs,) = ort_session(session.model).run(None, {"signal": x})
    with np.printoptions(precision=5, suppress=True):
        print(f"edgekit      logits {ours[0]}")
        print(f"onnxruntime  logits {theirs[0]}")
    print(f"max |difference| {np.abs(ours - theirs).max():.2e}\n")

    c = compare("cnn1d", session.model, {"signal": x}, repeat=args.repeat)
    print(f"edgekit: session + first run {first * 1e3:.1f} ms (the very first start compiles kernels; later starts load them from the Numba cache)")
    print(f"latency, one thread, median of {args.repeat}: edgekit {c.edgekit_median_us:.1f} us, "
          f"onnxruntime {c.ort_median_us:.1f} us (edgekit/onnxruntime {c.ratio:.2f})")
    return 0
