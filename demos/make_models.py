"""Regenerate the small models bundled in demos/models/ from fixed-seed weights.

    python -m edgekit.demos.make_models

cnn1d.onnx: the benchmark suite's 1D CNN (8 s of 64 Hz signal -> 4 classes, dynamic batch), seed 0.
The output is byte-for-byte reproducible; tests/test_cli.py checks the bundled file against it.
"""
from __future__ import annotations

import os

import onnx

from edgekit.benchmarks.models import cnn1d

MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
BUNDLED = {"cnn1d.onnx": lambda: cnn1d(seed=0, batch="batch")}


def main() -> None:
    os.makedirs(MODELS_DIR, exist_ok=True)
    for name, build in BUNDLED.items():
        path = os.path.join(MODELS_DIR, name)
        onnx.save(build(), path)
        print(f"wrote {path} ({os.path.getsize(path) / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
