"""Fashion-MNIST for the bnn and paramfree demos and their training scripts: Debian's package
dataset-fashion-mnist (`apt-get install dataset-fashion-mnist`, MIT licence) and the bundled
evaluation subset, the first 1,000 test images (never trained on)."""
from __future__ import annotations

import gzip
import os
import sys

import numpy as np

DEBIAN = "/usr/share/datasets/fashion-mnist"
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "fashion_mnist_test1000.npz")
SUBSET_SIZE = 1000


def read(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels uint8 [N]) of 'train' or 't10k' from the Debian package; exits
    naming the package when it is missing."""
    paths = [os.path.join(DEBIAN, f"{split}-{kind}-idx{d}-ubyte.gz") for kind, d in (("images", 3), ("labels", 1))]
    if not all(os.path.isfile(p) for p in paths):
        sys.exit(f"Fashion-MNIST not found in {DEBIAN}: apt-get install dataset-fashion-mnist")
    with gzip.open(paths[0]) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(paths[1]) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def pixels(images: np.ndarray) -> np.ndarray:
    """The networks' input from uint8 [N, 28, 28] images: float32 [N, 1, 28, 28] in [0, 1]."""
    return (images.astype(np.float32) / 255.0)[:, None]


def as_float(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixels(images), labels int64 [N])."""
    return pixels(images), labels.astype(np.int64)


def load_images(n: int = SUBSET_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` <= 1000 test images and labels as_float: the bundled subset, or the Debian
    package when the subset is missing."""
    if os.path.exists(DATA):
        with np.load(DATA) as d:
            images, labels = d["images"], d["labels"]
    else:
        images, labels = read("t10k")
    return as_float(images[:n], labels[:n])
