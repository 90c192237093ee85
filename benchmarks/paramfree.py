"""`python -m benchmarks.paramfree`: parameter-free layers vs depthwise convolutions, edgekit vs onnxruntime.

Four tables, batch 1, one thread per engine, calls interleaved in rounds (benchmarks.timing):
1. pools: 3x3 stride-1 'same' MaxPool and AveragePool alone, channels 32..256 at 7x7..56x56, per
   call of the session and, for edgekit, of the plan's kernel alone (a pool inside a model pays
   no copy of its input into the session and of its output out of it);
2. strided: the downsampling pools (MaxPool 3x3 stride 2 pad 1, AveragePool 2x2 stride 2) at the
   block shapes, timed the same way;
3. blocks: the 3x3 spatial op with its BN + ReLU6 (depthwise Conv vs MaxPool), the MobileNetV2
   inverted residual (expansion 6) with either, and the ResNet bottleneck (3x3 Conv vs R-max);
4. models: the demo pair (28x28 Fashion-MNIST CNN) and random-weight MobileNetV2-style and
   ResNet-style networks at 112x112, depthwise/conv against max-pool (and the hybrid ResNet).
"speedup" is time(depthwise or conv form) / time(parameter-free form) on the same engine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import onnx

from edgekit.cli_args import positive_int
from edgekit.converters import paramfree as pf
from edgekit.errors import UnsupportedOpError

from .timing import Comparison, compare, edgekit_session, machine

CHANNELS = (32, 64, 128, 256)
SIZES = (7, 14, 28, 56)
BLOCK_SHAPES = ((32, 56), (64, 28), (128, 14), (256, 7))  # (channels, size) as they meet in edge CNNs


def _feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    vi = model.graph.input[0]
    shape = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
    return {vi.name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _timed(name: str, model: onnx.ModelProto, repeat: int) -> Comparison | None:
    try:
        return compare(name, model, _feeds(model), repeat=repeat)
    except UnsupportedOpError as exc:
        ops = sorted({op for _, op, _, _, _ in exc.unsupported})
        print(f"{name}: not runnable on edgekit yet (unsupported {', '.join(ops)})")
        return None


def kernel_us(model: onnx.ModelProto, repeat: int) -> float:
    """Median time of edgekit's plan steps alone (no session input/output copies), in us."""
    feeds = _feeds(model)
    plan = edgekit_session(model).plan(tuple(a.shape for a in feeds.values()))
    for buf, a in zip(plan.input_list, feeds.values()):
        buf[...] = a
    plan.execute()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        plan.execute()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e6


def pool_table(repeat: int) -> list[str]:
    head = f"{'edgekit us':>10s} {'kernel us':>9s} {'ort us':>8s} {'ek/ort':>6s} {'kern/ort':>8s}"
    lines = [f"{'':18s} | {'MaxPool':^45s} | {'AveragePool':^45s}", f"{'3x3 s1 same pool':18s} | {head} | {head}"]
    for c in CHANNELS:
        for s in SIZES:
            cells = []
            for op in ("max", "avg"):
                model = pf.spatial_op(op, c, s, epilogue=False)
                r = _timed(f"{op}pool", model, repeat)
                k = kernel_us(model, repeat)
                cells.append(f"{r.edgekit_median_us:10.1f} {k:9.1f} {r.ort_median_us:8.1f} {r.ratio:6.2f} "
                             f"{k / r.ort_median_us:8.2f}")
            lines.append(f"{f'{c} x {s}x{s}':18s} | " + " | ".join(cells))
    return lines


STRIDED = {"MaxPool 3x3 s2": ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
           "AvgPool 2x2 s2": ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2]))}


def strided_table(repeat: int) -> list[str]:
    from onnx import TensorProto, helper

    head = f"{'edgekit us':>10s} {'kernel us':>9s} {'ort us':>8s} {'ek/ort':>6s} {'kern/ort':>8s}"
    lines = [f"{'':18s} | " + " | ".join(f"{name:^45s}" for name in STRIDED), f"{'channels x size':18s} | {head} | {head}"]
    for c, s in BLOCK_SHAPES + ((64, 112),):
        cells = []
        for op, attrs in STRIDED.values():
            graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "pool",
                                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, s, s])],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, None, None])])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", pf.OPSET)], ir_version=8)
            r = _timed(op, model, repeat)
            k = kernel_us(model, repeat)
            cells.append(f"{r.edgekit_median_us:10.1f} {k:9.1f} {r.ort_median_us:8.1f} {r.ratio:6.2f} "
                         f"{k / r.ort_median_us:8.2f}")
        lines.append(f"{f'{c} x {s}x{s}':18s} | " + " | ".join(cells))
    return lines


def _pair_line(label: str, base: Comparison | None, free: Comparison | None) -> str:
    if base is None or free is None:
        return f"{label:34s} | not runnable on edgekit yet"
    return (f"{label:34s} | {base.edgekit_median_us:9.1f} {free.edgekit_median_us:9.1f} "
            f"{base.edgekit_median_us / free.edgekit_median_us:7.2f}x | {base.ort_median_us:9.1f} "
            f"{free.ort_median_us:9.1f} {base.ort_median_us / free.ort_median_us:7.2f}x | "
            f"{base.ratio:5.2f} {free.ratio:5.2f}")


PAIR_HEADER = (f"{'':34s} | {'edgekit us':^29s} | {'onnxruntime us':^29s} | {'ek/ort':^11s}\n"
               f"{'form (channels x size)':34s} | {'dw/conv':>9s} {'pf':>9s} {'speedup':>8s} | "
               f"{'dw/conv':>9s} {'pf':>9s} {'speedup':>8s} | {'dw':>5s} {'pf':>5s}")


def block_table(repeat: int) -> list[str]:
    lines = [PAIR_HEADER]
    for c, s in BLOCK_SHAPES:
        lines.append(_pair_line(f"dw3x3+BN+ReLU6 vs max ({c} x {s}x{s})",
                                _timed("dw", pf.spatial_op("dw", c, s), repeat),
                                _timed("max", pf.spatial_op("max", c, s), repeat)))
    for c, s in BLOCK_SHAPES:
        cin = max(16, c // 6)
        lines.append(_pair_line(f"inverted residual t=6 ({cin}->{6 * cin} x {s}x{s})",
                                _timed("ir_dw", pf.inverted_residual(cin, s, spatial="dw"), repeat),
                                _timed("ir_max", pf.inverted_residual(cin, s, spatial="max"), repeat)))
    for c, s in BLOCK_SHAPES:
        lines.append(_pair_line(f"bottleneck conv vs R-max ({4 * c}/{c} x {s}x{s})",
                                _timed("conv", pf.bottleneck(4 * c, c, s, spatial="conv"), repeat),
                                _timed("rmax", pf.bottleneck(4 * c, c, s, spatial="max"), repeat)))
    return lines


def model_table(repeat: int) -> list[str]:
    from edgekit.demos.paramfree import MODELS

    lines = [PAIR_HEADER]
    demo = [onnx.load(MODELS["depthwise"]), onnx.load(MODELS["max-pool"])] if all(map(os.path.isfile, MODELS.values())) else []
    for proto in demo:  # fix the dynamic batch to 1
        proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    pairs = [("demo CNN 28x28 (dw vs max)", *demo)] if demo else []
    pairs += [("MobileNetV2-style 112 (dw vs max)", pf.mobilenet("dw"), pf.mobilenet("max")),
              ("ResNet-style 112 (conv vs max)", pf.resnet("conv"), pf.resnet("max")),
              ("ResNet-style 112 (conv vs hybrid)", pf.resnet("conv"), pf.resnet("hybrid"))]
    for label, base, free in pairs:
        lines.append(_pair_line(label, _timed("base", base, repeat), _timed("free", free, repeat)))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paramfree", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=positive_int, default=200, help="timed calls per engine and model (default 200)")
    parser.add_argument("--only", choices=("pools", "strided", "blocks", "models"), help="run one table")
    args = parser.parse_args(argv)
    print(machine())
    tables = {"pools": pool_table, "strided": strided_table, "blocks": block_table, "models": model_table}
    for name, fn in tables.items():
        if args.only in (None, name):
            print(f"\n## {name} (medians of {args.repeat} calls, batch 1, one thread)")
            print("\n".join(fn(args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
