"""`python -m benchmarks.spectral`: audio front ends, edgekit vs onnxruntime.

One second of 16 kHz audio framed every 10 ms (160 samples) and transformed: STFT with a Hann window
of 256 and 512 points (radix-2 FFT) and 400 points (25 ms, not a power of two: Bluestein), each
alone and followed by a power spectrum and a 40-band MelWeightMatrix projection (a log-mel front
end); and DFT of 64 sensor channels of 1024 samples. Medians of interleaved calls, and the largest
difference between the engines' outputs.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekit.benchmarks.timing import compare, machine

RATE, HOP = 16000, 160


def stft_model(frame: int, mel: bool) -> onnx.ModelProto:
    """STFT of [1, RATE, 1] with a periodic Hann window of ``frame`` points; with ``mel``, log of the
    power spectrum projected on 40 mel bands."""
    inits = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in (("frame", frame), ("step", HOP))]
    nodes = [helper.make_node("HannWindow", ["frame"], ["window"]),
             helper.make_node("STFT", ["x", "step", "window", "frame"], ["spec" if mel else "y"])]
    if mel:
        nodes += [helper.make_node("Mul", ["spec", "spec"], ["sq"]),
                  helper.make_node("ReduceSum", ["sq", "last"], ["power"], keepdims=0),
                  helper.make_node("MelWeightMatrix", ["mels", "frame", "rate", "low", "high"], ["bank"]),
                  helper.make_node("MatMul", ["power", "bank"], ["melspec"]),
                  helper.make_node("Add", ["melspec", "eps"], ["floored"]),
                  helper.make_node("Log", ["floored"], ["y"])]
        inits += [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in (("mels", 40), ("rate", RATE), ("last", [-1]))]
        inits += [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in (("low", 20.0), ("high", 7600.0), ("eps", 1e-6))]
    graph = helper.make_graph(nodes, "stft", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, RATE, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def dft_model(channels: int = 64, length: int = 1024) -> onnx.ModelProto:
    """One-sided DFT of [channels, length, 1] along the samples."""
    graph = helper.make_graph([helper.make_node("DFT", ["x"], ["y"], axis=1, onesided=1)], "dft",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [channels, length, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spectral", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=100, help="timed calls per engine and row (default 100)")
    parser.add_argument("--quick", action="store_true", help="20 timed calls per row")
    args = parser.parse_args(argv)
    repeat = 20 if args.quick else args.repeat
    print(f"machine: {machine()}")
    print(f"batch 1, one thread each; median of {repeat} interleaved calls\n")
    print(f"{'model':34s} {'edgekit us':>11s} {'ort us':>11s} {'ratio':>6s} {'max|diff|':>10s}")
    rng = np.random.default_rng(0)
    rows = {f"STFT {f} (Hann, hop {HOP})": stft_model(f, False) for f in (256, 400, 512)}
    rows |= {f"log-mel 40 of STFT {f}": stft_model(f, True) for f in (400, 512)}
    rows["DFT 64 x 1024, one-sided"] = dft_model()
    for name, model in rows.items():
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
        c = compare(name, model, feeds, repeat=repeat, warmup=2)
        print(f"{name:34s} {c.edgekit_median_us:11.1f} {c.ort_median_us:11.1f} {c.ratio:6.2f} {c.max_abs_diff:10.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
