"""Binary network demo: a BNN on real Fashion-MNIST images, converted to bit-packed XNOR/popcount
layers with MST compression: accuracy float vs binary, XNOR ops and weight storage saved by MST,
latency of edgekit's binary layers vs onnxruntime running the float model.

The bundled model (demos/models/bnn_fashion.onnx, trained by train_bnn.py with a straight-through
estimator and the MST regulariser) is a standard float ONNX network: a float first conv, then
binary 3x3 convs 32->64->128 (stride 2) and a binary linear layer, with +-alpha weights and
Where(x >= 0, 1, -1) binarizers. The demo converts it (`binarize`, then `mst.compress` at the
chosen depth bound, twice: the paper's plan forced on every layer, and the cost model's choice),
checks the binary model on the 1,000 bundled test images (the first 1,000 of the Fashion-MNIST test
set, never trained on) and the forced MST model against it, and times batch 1 on one thread with
the calls of the engines interleaved.

The paper counts bits; a CPU computes 64-bit words, and a child channel costs a whole word wherever
its mask is nonzero. On this model the masks touch nearly every word, so the paper's plan saves most
XNOR bit-ops but no word-ops, and the cost model keeps the layers dense (the demo says so per layer).
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import onnx

from edgekit.cli_args import positive_int

from .fashion_mnist import SUBSET_SIZE, load_images

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "models", "bnn_fashion.onnx")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgekit demo bnn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=3, help="MST depth bound, >= 0 (default 3)")
    parser.add_argument("--repeat", type=positive_int, default=200, help="timed calls per engine (default 200)")
    parser.add_argument("--images", type=positive_int, default=SUBSET_SIZE,
                        help=f"evaluation images, at most {SUBSET_SIZE} (default {SUBSET_SIZE})")
    args = parser.parse_args(argv)
    if args.depth < 0:
        parser.error(f"argument --depth: expected an integer >= 0, got {args.depth}")
    if args.images > SUBSET_SIZE:
        parser.error(f"argument --images: the bundled subset holds {SUBSET_SIZE} images, got {args.images}")

    import edgekit
    from edgekit.benchmarks.timing import interleaved, median_seconds, ort_session
    from edgekit.converters.binarize import binarize
    from edgekit.converters.mst import compress, fewer, time_layers
    from edgekit.runtimes.kernels import binary as kernels
    from edgekit.runtimes.ops import binary as _registers_binary_ops  # noqa: F401

    kernels.set_threads(1)
    images, labels = load_images(args.images)
    float_model = onnx.load(MODEL)
    meta = {p.key: p.value for p in float_model.metadata_props}
    print(f"model: {os.path.relpath(MODEL)} ({os.path.getsize(MODEL) / 1024:.0f} KiB float ONNX); "
          f"{len(images)} Fashion-MNIST test images\n")

    dense = binarize(float_model)
    planned, report = compress(dense, depth=args.depth)  # the cost model's choice: what runs below
    paper, paper_report = compress(dense, depth=args.depth, force=True, metric="bits")

    time_layers(dense, paper, paper_report, median_seconds)

    ort, ours, forced = (ort_session(float_model), edgekit.InferenceSession(planned),
                         edgekit.InferenceSession(paper))
    (float_logits,) = ort.run(None, {"image": images})
    (binary_logits,) = ours.run(None, {"image": images})
    (paper_logits,) = forced.run(None, {"image": images})
    float_pred, binary_pred = float_logits.argmax(1), binary_logits.argmax(1)
    print(f"accuracy  float model (onnxruntime)        {np.mean(float_pred == labels) * 100:6.2f}%")
    print(f"          binary model (edgekit, packed)   {np.mean(binary_pred == labels) * 100:6.2f}%   "
          f"same predictions {np.mean(float_pred == binary_pred) * 100:.1f}%, "
          f"max |logit diff| {np.abs(float_logits - binary_logits).max():.1e}")
    if "edgekit.bnn.float_reference_accuracy" in meta:
        ref = float(meta["edgekit.bnn.float_reference_accuracy"])
        print(f"          same network in full precision   {ref * 100:6.2f}%   (trained alongside, for reference)")

    totals = paper_report.totals()
    bits, words, stored = totals["bit_ops"], totals["word_ops"], totals["stored_bits"]
    print(f"\nMST at depth <= {args.depth}, the paper's plan (Hamming graph) forced on every binary layer:")
    print(f"  XNOR bit-ops per image  {bits[0]:>12,} -> {bits[1]:>12,}  ({fewer(*bits)})")
    print(f"  64-bit word-ops         {words[0]:>12,} -> {words[1]:>12,}  ({fewer(*words)}: what a CPU runs)")
    print(f"  weight storage, bits    {stored[0]:>12,} -> {stored[1]:>12,}  ({fewer(*stored)}, enumerative code)")
    print(f"  logits vs the dense binary model: max |diff| {np.abs(paper_logits - binary_logits).max():.1e} "
          f"on {len(images)} images (MST is exact)\n")
    print(paper_report.format())
    applied = sum(row.chosen == "mst" for row in report.layers)
    print(f"\nedgekit runs the cost model's choice, MST on {applied} of {len(report.layers)} layers "
          f"(predicted time per call, dense -> MST):")
    print(report.decisions(paper_report))

    one = {"image": images[:1]}
    engines = {"ort": lambda: ort.run(None, one), "edgekit": lambda: ours.run(None, one),
               "forced": lambda: forced.run(None, one)}
    t_ort, t_ours, t_forced = (t * 1e6 for t in interleaved(engines, args.repeat, warmup=1).values())
    print(f"\nlatency, batch 1, one thread, median of {args.repeat}: onnxruntime float {t_ort:.1f} us, "
          f"edgekit binary {t_ours:.1f} us ({t_ort / t_ours:.1f}x; the cost model's choice), "
          f"paper's MST plan forced {t_forced:.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
