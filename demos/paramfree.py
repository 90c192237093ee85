"""Parameter-free layers demo: the same small CNN with depthwise convs and with max-pools in their
place, on real Fashion-MNIST images: accuracy, parameters, MACs and latency, edgekit and onnxruntime.

The pair (demos/models/paramfree_dw.onnx and paramfree_max.onnx, trained by train_paramfree.py
with the same seed, data and schedule) differs only in the 3x3 spatial op of its four inverted
residual blocks: a depthwise Conv (9 weights per channel) or a MaxPool (none), the PfLayer
trade (Han et al., ICLR 2022). Accuracy is measured on the 1,000 bundled test images
(demos/data/fashion_mnist_test1000.npz, never trained on), latency at batch 1 on one thread with
the calls of both engines interleaved. Prints a table and the accuracy of the depthwise model
rewritten to max-pools by replace_depthwise without retraining; writes accuracy vs latency to --out
(unless --no-plot).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx

from edgekit.cli_args import positive_int

from .fashion_mnist import load_images  # the bundled evaluation images, [N, 1, 28, 28] float32 in [0, 1], and labels
from .plotting import add_plot_options, check_plot_options, figure

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = {"depthwise": os.path.join(HERE, "models", "paramfree_dw.onnx"),
          "max-pool": os.path.join(HERE, "models", "paramfree_max.onnx")}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def measure(name: str, path: str, images: np.ndarray, labels: np.ndarray, repeat: int) -> dict:
    """Accuracy on both engines (whole set in one batch), parameters, MACs and batch-1 latency of one model."""
    import edgekit
    from edgekit.benchmarks.timing import compare, ort_session
    from edgekit.stats import model_stats

    proto = onnx.load(path)
    stats = model_stats(proto, {"batch": 1})
    (logits,) = edgekit.InferenceSession(proto).run(None, {"image": images})
    (ort_logits,) = ort_session(proto).run(None, {"image": images})
    timing = compare(name, proto, {"image": images[:1]}, repeat=repeat)
    return {"name": name, "accuracy": float(np.mean(logits.argmax(1) == labels)),
            "ort_accuracy": float(np.mean(ort_logits.argmax(1) == labels)),
            "same_predictions": float(np.mean(logits.argmax(1) == ort_logits.argmax(1))),
            "max_abs_diff": float(np.abs(logits - ort_logits).max()),
            "params": stats.parameters, "macs": sum(stats.macs.values()),
            "edgekit_us": timing.edgekit_median_us, "ort_us": timing.ort_median_us}


def rewrite_accuracy(images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the trained depthwise model with its depthwise convs replaced by max-pools, not retrained."""
    import warnings

    import edgekit
    from edgekit.converters.paramfree import replace_depthwise

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the point of this number is the warning's content
        model = replace_depthwise(MODELS["depthwise"], "max").model
    (logits,) = edgekit.InferenceSession(model).run(None, {"image": images})
    return float(np.mean(logits.argmax(1) == labels))


def table(rows: list[dict]) -> str:
    """The printed comparison, depthwise first, and the speedup of the max-pool model per engine."""
    head = (f"{'model':10s} {'accuracy':>8s} {'params':>8s} {'MACs':>10s} {'edgekit us':>11s} "
            f"{'onnxruntime us':>14s} {'edgekit/ort':>11s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['name']:10s} {r['accuracy'] * 100:7.1f}% {r['params']:8,d} {r['macs']:10,d} "
                     f"{r['edgekit_us']:11.1f} {r['ort_us']:14.1f} {r['edgekit_us'] / r['ort_us']:11.2f}")
    dw, pf = rows
    lines += ["", f"max-pool vs depthwise: {pf['params'] / dw['params'] - 1:+.1%} parameters, "
                  f"{pf['macs'] / dw['macs'] - 1:+.1%} MACs, accuracy {(pf['accuracy'] - dw['accuracy']) * 100:+.1f} points; "
                  f"speedup {dw['edgekit_us'] / pf['edgekit_us']:.2f}x on edgekit, {dw['ort_us'] / pf['ort_us']:.2f}x on onnxruntime",
              "edgekit and onnxruntime agree: " + ", ".join(
                  f"{r['name']} {r['same_predictions']:.1%} same predictions (max |logit diff| {r['max_abs_diff']:.1e})"
                  for r in rows)]
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    """Accuracy vs batch-1 latency: one colour per model, one marker per engine."""
    with figure(path, figsize=(7, 4.5), constrained_layout=True) as (_, ax):
        for r, colour in zip(rows, ("tab:blue", "tab:orange")):
            for key, marker, engine in (("edgekit_us", "o", "edgekit"), ("ort_us", "s", "onnxruntime")):
                ax.scatter(r[key], r["accuracy"] * 100, s=80, c=colour, marker=marker, label=f"{r['name']}, {engine}")
                ax.annotate(f"{r['params'] / 1000:.1f}k params, {r['macs'] / 1e6:.2f}M MACs" if marker == "o" else "",
                            (r[key], r["accuracy"] * 100), textcoords="offset points", xytext=(8, -4), fontsize=8)
        ax.set_xlabel("latency per image, batch 1, one thread (us)")
        ax.set_ylabel("accuracy on 1,000 Fashion-MNIST test images (%)")
        ax.set_title("Depthwise convolutions vs parameter-free max-pools")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgekit demo paramfree", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=positive_int, default=300, help="timed calls per engine and model (default 300)")
    add_plot_options(parser, "paramfree_demo.png")
    args = parser.parse_args(argv)
    check_plot_options(parser, args)
    images, labels = load_images()
    print(f"Fashion-MNIST: {len(labels)} bundled test images, 28x28 grey, 10 classes ({', '.join(CLASSES[:3])}, ...)")
    rows = [measure(name, path, images, labels, args.repeat) for name, path in MODELS.items()]
    print(table(rows))
    print(f"the depthwise model rewritten by replace_depthwise(op='max') without retraining: "
          f"{rewrite_accuracy(images, labels):.1%} accuracy (so the max-pool model is trained, not rewritten)")
    if args.no_plot:
        return 0
    try:
        plot(rows, args.out)
    except ModuleNotFoundError:
        print('plot skipped: it needs matplotlib (pip install "edgekit[demo]")', file=sys.stderr)
    else:
        print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
