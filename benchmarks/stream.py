"""`python -m benchmarks.stream`: per-hop latency of a StreamingSession vs recomputing the window.

For window L and hop S, a window model recomputes all L samples at every hop; the streaming
session computes the S new ones per layer (StreamiNNC), so the ideal speedup is L/S. Measured on
the PPG demo CNN (1 channel, 16/32/32 filters, pools 4/2/2) and the paper's EEG-style network
(23 channels, 3 x [Conv k=3 128 filters, BN, ReLU, MaxPool 4], Flatten + Gemm head) for L/S in
2..32: L stays at the paper's value (256, 1024) while S = L/(L/S) is a multiple of the network's
pooling product (16, 64); past that S stays at the pooling product and L grows. Batch 1, one
thread each, calls interleaved in rounds. Columns: the StreamingSession's push of one hop; the
window model on onnxruntime (the baseline of the speedup) and on edgekit's InferenceSession; the
converter's ONNX step model run hop by hop on onnxruntime, states fed back.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import edgekit
from edgekit.benchmarks.timing import interleaved, machine, ort_session
from edgekit.converters.stream import to_streaming
from edgekit import StreamingSession

RATIOS = (2, 4, 8, 16, 32)


def ppg_net(window: int) -> onnx.ModelProto:
    """The bundled PPG demo model with its time axis set to ``window`` samples."""
    from edgekit.demos.ppg import MODEL

    proto = onnx.load(MODEL)
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_value = window
    return proto


def eeg_net(window: int, channels: int = 23, filters: int = 128, seed: int = 0) -> onnx.ModelProto:
    """StreamiNNC's EEG-style network, random weights: 3 x [causal Conv k=3, BatchNorm, ReLU,
    MaxPool 4], Flatten, Gemm -> 2 logits. Input 'eeg' (1, channels, window). BatchNorm is folded
    into the conv's weights and bias here, as edgekit's and onnxruntime's graph fusions do anyway."""
    rng = np.random.default_rng(seed)
    inits, nodes, prev, cin = [], [], "eeg", channels
    for i in range(3):
        w = rng.standard_normal((filters, cin, 3)) / np.sqrt(3 * cin)
        gamma, beta = rng.uniform(0.5, 1.5, filters), rng.normal(0, 0.1, filters)
        mean, var = rng.normal(0, 0.1, filters), rng.uniform(0.5, 1.5, filters)
        scale = gamma / np.sqrt(var + 1e-5)
        inits += [numpy_helper.from_array((w * scale[:, None, None]).astype(np.float32), f"conv{i}.w"),
                  numpy_helper.from_array((beta - mean * scale).astype(np.float32), f"conv{i}.b")]
        nodes += [
            helper.make_node("Conv", [prev, f"conv{i}.w", f"conv{i}.b"], [f"conv{i}"], f"conv{i}", kernel_shape=[3],
                             pads=[2, 0]),
            helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], f"relu{i}"),
            helper.make_node("MaxPool", [f"relu{i}"], [f"pool{i}"], f"pool{i}", kernel_shape=[4], strides=[4]),
        ]
        prev, cin = f"pool{i}", filters
    flat = filters * (window // 64)
    inits += [numpy_helper.from_array((rng.standard_normal((2, flat)) / np.sqrt(flat)).astype(np.float32), "fc.w"),
              numpy_helper.from_array(np.zeros(2, np.float32), "fc.b")]
    nodes += [helper.make_node("Flatten", [prev], ["flat"], "flatten"),
              helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], "fc", transB=1)]
    graph = helper.make_graph(nodes, "eeg_net", [helper.make_tensor_value_info("eeg", TensorProto.FLOAT, [1, channels, window])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto


# name -> (builder, channels, paper window, pooling product)
NETS: dict[str, tuple[Callable[[int], onnx.ModelProto], int, int, int]] = {
    "ppg": (ppg_net, 1, 256, 16),
    "eeg": (eeg_net, 23, 1024, 64),
}


def shapes(window: int, pool: int, ratio: int) -> tuple[int, int]:
    """(L, S) for a ratio L/S: the paper's L while L/ratio is a multiple of ``pool``, else S = pool."""
    hop = max(window // ratio, pool)
    return hop * ratio, hop


def measure(net: str, ratio: int, repeat: int, seed: int = 0) -> dict[str, float]:
    """Median latency per hop (s) of each column of the table, and the row's L and S."""
    build, channels, window0, pool = NETS[net]
    window, hop = shapes(window0, pool, ratio)
    proto = build(window)
    name = proto.graph.input[0].name
    rng = np.random.default_rng(seed)
    chunks = rng.standard_normal((16, channels, hop)).astype(np.float32)
    full = {name: rng.standard_normal((1, channels, window)).astype(np.float32)}
    stream = StreamingSession(proto, hop=hop)
    stream.push(rng.standard_normal((channels, window)).astype(np.float32))  # fill the window
    sm = to_streaming(proto, hop=hop)
    step, states = ort_session(sm.step_model), sm.initial_states(1)
    ek, ort = edgekit.InferenceSession(proto), ort_session(proto)
    cycle = itertools.cycle(chunks)

    def ort_step() -> None:
        res = step.run(None, {sm.input: next(cycle)[None], **states})
        states.update(zip((st.input for st in sm.states), res[len(sm.outputs):]))

    fns = {"stream": lambda: stream.push(next(cycle)), "ort_step": ort_step,
           "edgekit": lambda: ek.run(None, full), "ort": lambda: ort.run(None, full)}
    for fn in fns.values():
        for _ in range(5):
            fn()
    return {"L": window, "S": hop, **interleaved(fns, repeat)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="timed hops per engine and row (default 200)")
    parser.add_argument("--quick", action="store_true", help="40 timed hops per row")
    parser.add_argument("--nets", default=",".join(NETS), help=f"comma-separated subset of {','.join(NETS)}")
    args = parser.parse_args(argv)
    nets = [n for n in args.nets.split(",") if n]
    if any(n not in NETS for n in nets):
        parser.error(f"unknown net in {nets}; choose from {list(NETS)}")
    repeat = 40 if args.quick else args.repeat
    print(f"machine: {machine()}")
    print(f"batch 1, one thread each; median of {repeat} hops; speedup = full window on onnxruntime / streaming\n")
    print(f"{'net':4s} {'L':>5s} {'S':>4s} {'L/S':>4s} {'stream us':>10s} {'ort window us':>14s} {'speedup':>8s} "
          f"{'of ideal':>9s} {'edgekit window us':>18s} {'ort step us':>12s}")
    for net in nets:
        for ratio in RATIOS:
            m = measure(net, ratio, repeat)
            speedup = m["ort"] / m["stream"]
            print(f"{net:4s} {m['L']:5d} {m['S']:4d} {ratio:4d} {m['stream'] * 1e6:10.1f} {m['ort'] * 1e6:14.1f} "
                  f"{speedup:7.2f}x {speedup / ratio:9.2f} {m['edgekit'] * 1e6:18.1f} {m['ort_step'] * 1e6:12.1f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
