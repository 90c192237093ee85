"""Regenerate the small models bundled in demos/models/ from fixed-seed weights.

    python -m edgekit.demos.make_models

cnn1d.onnx: the benchmark suite's 1D CNN (8 s of 64 Hz signal -> 4 classes, dynamic batch), seed 0.
frame_cnn.onnx: a 2D CNN on 3x64x64 camera frames whose stem shrinks the data 6x (the flow demo's
model: splitting it after the stem sends features, not the frame). The outputs are byte-for-byte
reproducible; tests/test_cli.py checks the bundled files against them.
"""
from __future__ import annotations

import os

import onnx

from edgekit.benchmarks.models import _Builder, cnn1d

MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")


def frame_cnn(seed: int = 0, batch: int | str = "batch", classes: int = 10) -> onnx.ModelProto:
    """2D CNN on 3x64x64 frames -> ``classes`` logits. Stem: Conv 3->8 3x3 stride 2 + BN + ReLU +
    MaxPool 2 (8x16x16: 1/6 of the input's bytes); tail: Conv 8->32, 32->32 at 16x16, MaxPool 2,
    Conv 32->64, 64->64 at 8x8 (3x3, BN, ReLU), GlobalAveragePool, Gemm (about 6.5 M multiply-adds a
    frame, 97 % of them in the tail)."""
    b = _Builder(seed)
    h = b.op("MaxPool", [b.op("Relu", [b.conv("frame", 3, 8, (3, 3), stride=2)])], kernel_shape=[2, 2], strides=[2, 2])
    for i, (cin, cout) in enumerate(((8, 32), (32, 32), (32, 64), (64, 64))):
        h = b.op("Relu", [b.conv(h, cin, cout, (3, 3))])
        if i == 1:
            h = b.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    return b.model("frame_cnn", "frame", [batch, 3, 64, 64], b.gemm(h, 64, classes, "logits"), classes)


BUNDLED = {"cnn1d.onnx": lambda: cnn1d(seed=0, batch="batch"), "frame_cnn.onnx": frame_cnn}


def main() -> None:
    os.makedirs(MODELS_DIR, exist_ok=True)
    for name, build in BUNDLED.items():
        path = os.path.join(MODELS_DIR, name)
        onnx.save(build(), path)
        print(f"wrote {path} ({os.path.getsize(path) / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
