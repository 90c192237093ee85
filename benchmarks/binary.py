"""`python -m benchmarks.binary`: edgekit's BinaryConv vs onnxruntime's float Conv, one thread.

Shapes of ResNet-18 / VGG-small layers: 3x3, stride 1, pad 1, C -> C at 64@56x56, 128@28,
256@14, 512@7, batch 1. BinaryConv reads packed bits and writes packed bits through its
threshold (an inner layer of a binary network); onnxruntime runs the float Conv with the same
+-1 weights on float input (intra_op_num_threads=1, default optimisations). "dense" is the plan
edgekit picks (the AMX int8 tile path where the CPU has one, see kernels/binary.py), "popcount"
the XNOR/popcount kernel on the same layer. Calls are interleaved in rounds; medians. MST
columns: the same layer with the paper's MST plan (Hamming graph, unbounded depth, forced, run
by the popcount kernel), its XNOR bit-ops and the 64-bit word-ops the kernel executes relative
to dense popcount, and what the cost model of converters/mst.py picks for the layer. Weights:
random +-1, or "similar" (each channel a copy of an earlier one with 1% of its bits flipped at
random positions, as an MST-regularised network tends to have). "bad bits" counts output bits
that differ from onnxruntime's float sums thresholded (0 = exact).
--calibrate fits the CostModel constants of converters/mst.py (popcount kernel) on this machine.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import edgekit
from edgekit.benchmarks.timing import interleaved, machine, ort_session
from edgekit.cli_args import positive_int
from edgekit.converters.binarize import DOMAIN, pack_bits, unpack_bits
from edgekit.converters.mst import CostModel, compress
from edgekit.runtimes.kernels import binary as kernels
from edgekit.runtimes.ops import binary as _registers_binary_ops  # noqa: F401

SHAPES = ((64, 56), (128, 28), (256, 14), (512, 7))


def random_signs(rng: np.random.Generator, c: int, similar: float | None) -> np.ndarray:
    """+-1 weights (C, C, 3, 3): independent, or each channel an earlier one with ``similar`` flipped."""
    w = np.where(rng.random((c, c * 9)) < 0.5, -1, 1)
    if similar is not None:
        for i in range(1, c):
            w[i] = w[rng.integers(0, i)] * np.where(rng.random(c * 9) < similar, -1, 1)
    return w.reshape(c, 3, 3, c).transpose(0, 3, 1, 2)


def float_conv(signs: np.ndarray, hw: int) -> onnx.ModelProto:
    c = signs.shape[0]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, hw, hw])],
        [numpy_helper.from_array(signs.astype(np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def binary_conv(signs: np.ndarray, hw: int, thresholds: np.ndarray) -> onnx.ModelProto:
    """BinaryConv packed (1, hw, hw, words) -> packed, +1 iff dot >= thresholds."""
    c = signs.shape[0]
    words = (c + 63) // 64
    node = helper.make_node("BinaryConv", ["x", "w", "t"], ["y"], name="conv", domain=DOMAIN, channels=c,
                            kernel_shape=[3, 3], pads=[1, 1, 1, 1], output="packed")
    graph = helper.make_graph(
        [node], "binary_conv", [helper.make_tensor_value_info("x", TensorProto.UINT64, [1, hw, hw, words])],
        [helper.make_tensor_value_info("y", TensorProto.UINT64, [1, hw, hw, words])],
        [numpy_helper.from_array(pack_bits(signs.transpose(0, 2, 3, 1) < 0).reshape(c, -1), "w"),
         numpy_helper.from_array(thresholds, "t")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                             ir_version=10)


def layer(c: int, hw: int, similar: float | None, seed: int = 0):
    """(float model, binary model, MST model, MST report, float feed, packed feed) for one shape."""
    rng = np.random.default_rng(seed)
    signs = random_signs(rng, c, similar)
    thresholds = rng.integers(-8, 9, c).astype(np.int64)
    x = np.where(rng.random((1, c, hw, hw)) < 0.5, -1.0, 1.0).astype(np.float32)
    packed = pack_bits(x.transpose(0, 2, 3, 1) < 0)
    dense = binary_conv(signs, hw, thresholds)
    mst, report = compress(dense, force=True, metric="bits")
    return float_conv(signs, hw), dense, mst, report, x, packed, thresholds


def check(ort_y: np.ndarray, bits: np.ndarray, thresholds: np.ndarray) -> int:
    """Number of output bits that disagree with onnxruntime's float sums thresholded."""
    expect = ort_y < thresholds[None, :, None, None]
    got = unpack_bits(bits, ort_y.shape[1]).transpose(0, 3, 1, 2)
    return int((expect != got).sum())


def popcount_session(onnx_model: onnx.ModelProto) -> edgekit.InferenceSession:
    """A session whose binary layers run the XNOR/popcount kernel even where the AMX path applies."""
    try:
        kernels.set_amx(False)
        return edgekit.InferenceSession(onnx_model)
    finally:
        kernels.set_amx(True)


def run(repeat: int) -> None:
    print(f"machine: {machine()}")
    print("batch 1, one thread each; BinaryConv packed bits in and out; medians of "
          f"{repeat} interleaved calls; speedup = onnxruntime float / edgekit\n")
    print(f"AMX tile path: {'yes' if kernels.amx() else 'no'}")
    print(f"{'layer':<14}{'weights':<9}{'ort float us':>13}{'dense us':>10}{'popcount us':>12}{'MST us':>9}"
          f"{'speedup dense':>15}{'speedup popcount':>18}{'speedup MST':>13}{'MST bit-ops':>13}{'MST word-ops':>14}"
          f"{'picks':>8}{'bad bits':>10}")
    for similar in (None, 0.01):
        for c, hw in SHAPES:
            fmodel, dense, mst, report, x, packed, thresholds = layer(c, hw, similar)
            ort, ek_dense, ek_mst = ort_session(fmodel), edgekit.InferenceSession(dense), edgekit.InferenceSession(mst)
            ek_pop = popcount_session(dense)
            ort_y = ort.run(None, {"x": x})[0]
            bad = sum(check(ort_y, s.run(None, {"x": packed})[0], thresholds) for s in (ek_dense, ek_pop, ek_mst))
            t_ort, t_dense, t_pop, t_mst = (t * 1e6 for t in interleaved(
                {"ort": lambda: ort.run(None, {"x": x}), "dense": lambda: ek_dense.run(None, {"x": packed}),
                 "popcount": lambda: ek_pop.run(None, {"x": packed}), "mst": lambda: ek_mst.run(None, {"x": packed})},
                repeat, warmup=1).values())
            (bd, bm), (wd, wm) = report.layers[0].plan.bit_ops(), report.layers[0].plan.word_ops()
            choice = compress(dense)[1].layers[0].chosen
            print(f"{c}@{hw}x{hw}".ljust(14) + ("random" if similar is None else "similar").ljust(9)
                  + f"{t_ort:>13.0f}{t_dense:>10.0f}{t_pop:>12.0f}{t_mst:>9.0f}{t_ort / t_dense:>14.1f}x"
                  f"{t_ort / t_pop:>17.1f}x{t_ort / t_mst:>12.1f}x"
                  f"{bm / bd:>12.2f}x{wm / wd:>13.2f}x{choice:>8}{bad:>10}", flush=True)


def calibrate(repeat: int) -> CostModel:
    """Fit CostModel (ns per tile) from dense and forced-MST timings of the benchmark layers."""
    rows, times = [], []
    for similar in (None, 0.01, 0.03):
        for c, hw in SHAPES:
            _, dense, mst, report, _, packed, _ = layer(c, hw, similar)
            plan = report.layers[0].plan
            if similar is not None:
                mst, report = compress(dense, force=True)
                plan = report.layers[0].plan
            tiles = -(-hw * hw // 8)
            s_dense, s_mst = popcount_session(dense), edgekit.InferenceSession(mst)
            t_dense, t_mst = (t * 1e6 for t in interleaved(
                {"dense": lambda: s_dense.run(None, {"x": packed}), "mst": lambda: s_mst.run(None, {"x": packed})},
                repeat, warmup=1).values())
            blocks = -(-c // 4) * plan.k_words
            rows.append([blocks, 0, 0])
            times.append(t_dense * 1000 / tiles)
            rows.append([-(-plan.roots // 4) * plan.k_words, plan.union_words.sum(), len(plan.blocks)])
            times.append(t_mst * 1000 / tiles)
    coef, *_ = np.linalg.lstsq(np.array(rows, float), np.array(times), rcond=None)
    return CostModel(*(round(float(v), 3) for v in coef))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.binary", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=positive_int, default=100, help="timed calls per engine and layer (default 100)")
    parser.add_argument("--calibrate", action="store_true", help="fit and print the MST cost model constants")
    args = parser.parse_args(argv)
    kernels.set_threads(1)
    if args.calibrate:
        print(calibrate(args.repeat))
    else:
        run(args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
