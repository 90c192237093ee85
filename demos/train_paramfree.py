"""Train the parameter-free demo pair: the same small CNN with depthwise blocks and with max-pool
blocks, bundled as demos/models/paramfree_dw.onnx and paramfree_max.onnx (needs torch).

    python -m edgekit.demos.train_paramfree [--epochs 6] [--seed 0]

Network (input 'image' [N, 1, 28, 28], pixels / 255; output 'logits' [N, 10]): stem 3x3/2 Conv 16
+ BN + ReLU6, then four MobileNetV2 inverted residuals (expansion 4; channels/stride 24/1, 24/1,
48/2, 48/1) whose spatial op is a 3x3 depthwise Conv + BN + ReLU6 ("dw") or a 3x3 max-pool with
the block's stride + BN + ReLU6 ("max", the PfLayer form; converters.paramfree builds the same
block), global average pool, Linear 48 -> 10. Both models train with the same seed, data order,
schedule (AdamW, one-cycle, batch 128, random horizontal flips) and epochs.

Data: Fashion-MNIST from Debian's package dataset-fashion-mnist (`apt-get install
dataset-fashion-mnist`, MIT licence): 60,000 training images, 10,000 test images. The script also
writes the evaluation subset the demo ships (the first 1,000 test images, never trained on) to
demos/data/fashion_mnist_test1000.npz.

Results of the bundled models (seed 0, 6 epochs, one thread, 5-15 min per epoch on a shared 2-core
machine), accuracy on the 10,000 test images / on the bundled 1,000:
    depthwise 91.57% / 92.4%      max-pool 90.24% / 92.5%
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time

import numpy as np
import onnx

try:
    import torch
    from torch import nn
except ModuleNotFoundError:  # pragma: no cover - the bundled models need no torch
    sys.exit('train_paramfree needs torch: pip install "edgekit[train]"')

from .fashion_mnist import DATA, SUBSET_SIZE, pixels, read

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = {s: os.path.join(HERE, "models", f"paramfree_{s}.onnx") for s in ("dw", "max")}
STEM = 16
BLOCKS = ((16, 24, 4, 1), (24, 24, 4, 1), (24, 48, 4, 2), (48, 48, 4, 1))  # cin, cout, expansion, stride
CLASSES = 10


def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 spatial op (depthwise conv or max-pool) + BN + ReLU6, 1x1 project, residual."""

    def __init__(self, cin: int, cout: int, expand: int, stride: int, spatial: str) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = conv_bn(cin, hidden)
        if spatial == "dw":
            self.spatial = conv_bn(hidden, hidden, 3, stride, groups=hidden)
        else:
            self.spatial = nn.Sequential(nn.MaxPool2d(3, stride, 1), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.project = conv_bn(hidden, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.spatial(self.expand(x)))
        return x + y if self.residual else y


class Net(nn.Module):
    def __init__(self, spatial: str) -> None:
        super().__init__()
        blocks = [InvertedResidual(a, b, t, s, spatial) for a, b, t, s in BLOCKS]
        self.features = nn.Sequential(conv_bn(1, STEM, 3, 2), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(BLOCKS[-1][1], CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels(images))


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(_tensor(images[i:i + 1000])).argmax(1) for i in range(0, len(images), 1000)])
    return float((pred.numpy() == labels).mean())


def train(spatial: str, data: tuple, epochs: int, seed: int) -> nn.Module:
    (x, y), (xt, yt) = data
    torch.manual_seed(seed)
    model = Net(spatial)
    batch = 128
    steps = epochs * (len(x) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps)
    rng = np.random.default_rng(seed)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        t0, order = time.time(), rng.permutation(len(x))
        for i in range(len(x) // batch):
            idx = order[i * batch:(i + 1) * batch]
            xb = _tensor(x[idx])
            flip = torch.from_numpy(rng.random(batch) < 0.5)
            xb[flip] = xb[flip].flip(3)
            loss = loss_fn(model(xb), torch.from_numpy(y[idx].astype(np.int64)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"  {spatial} epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, test accuracy "
              f"{accuracy(model, xt, yt):.4f} ({time.time() - t0:.0f} s)", flush=True)
    return model.eval()


def export(model: nn.Module, path: str) -> None:
    """ONNX opset 17 with a dynamic batch (the legacy exporter folds BN into the convs before it), with
    the Identity nodes it puts on initializers removed."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buf = io.BytesIO()
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), buf, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    inits = {t.name for t in proto.graph.initializer}
    alias = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "Identity" and n.input[0] in inits}
    nodes = [n for n in proto.graph.node if n.output[0] not in alias]
    for n in nodes:
        n.input[:] = [alias.get(x, x) for x in n.input]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: small convs gain little from more)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_set, test_set = read("train"), read("t10k")
    os.makedirs(os.path.dirname(DATA), exist_ok=True)
    np.savez_compressed(DATA, images=test_set[0][:SUBSET_SIZE], labels=test_set[1][:SUBSET_SIZE])
    results = {}
    for spatial in ("dw", "max"):
        model = train(spatial, (train_set, test_set), args.epochs, args.seed)
        export(model, MODELS[spatial])
        results[spatial] = (accuracy(model, *test_set), accuracy(model, test_set[0][:SUBSET_SIZE], test_set[1][:SUBSET_SIZE]))
    print("RESULTS (accuracy on 10,000 test images / on the bundled 1,000):")
    for spatial, (full, sub) in results.items():
        print(f"  {spatial:4s} {full:.4f} / {sub:.4f}  {MODELS[spatial]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
