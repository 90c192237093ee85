"""Train the binary network of `edgekit demo bnn` on Fashion-MNIST and export it as float ONNX.

Needs torch (extra `train`) and Debian's dataset-fashion-mnist (`apt-get install
dataset-fashion-mnist`, MIT licence). Network: a float 3x3 conv 1->32 (28x28) with
BatchNormalization, then binary 3x3 convs 32->64 and 64->128 (stride 2, zero padding) and a
binary linear 6272->10, each followed by BatchNormalization; activations are binarized before
every binary layer. Training (XNOR-Net style, Rastegari et al., ECCV 2016): latent float weights,
forward with sign(w) * mean|w| per output channel and sign(x), backward through the
straight-through estimator (gradient 1 where |x| <= 1). The MST regulariser of the MST-compression
paper (arXiv 2308.13735) pulls every channel's latent weights toward its parent in the current
minimum spanning tree of the layer's Hamming graph (recomputed every 100 steps), which lowers the
total tree distance and so the XNOR work and storage of MST compression.

Export: standard ONNX with constant +-alpha weights and Where(x >= 0, 1, -1) binarizers (the tie
x = 0 -> +1, as the bit-packed runtime), batch dimension dynamic; input "image" [N, 1, 28, 28] in
[0, 1]. The accuracy of the same network in full precision (float weights, Hardtanh instead of
the binarizers, same schedule) is stored in the model's metadata as a reference.

    python -m demos.train_bnn [--epochs 8] [--out demos/models/bnn_fashion.onnx]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .fashion_mnist import SUBSET_SIZE, as_float, read  # SUBSET_SIZE: the bundled evaluation images, never trained on

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "models", "bnn_fashion.onnx")


def build(binary: bool):
    import torch
    from torch import nn

    class SignSTE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.where(x >= 0, 1.0, -1.0)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * (x.abs() <= 1).to(grad.dtype)

    class Binarize(nn.Module):
        """sign(x) with the straight-through estimator; exported as Where(x >= 0, 1, -1)."""

        def forward(self, x):
            if torch.onnx.is_in_onnx_export():
                return torch.where(x >= 0, 1.0, -1.0)
            return SignSTE.apply(x)

    class BinaryWeights(nn.Module):
        """Mixin: the weight used is sign(w) * mean|w| per output channel (STE to the latent w)."""

        def binary_weight(self):
            w = self.weight
            alpha = w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True).detach()
            return SignSTE.apply(w) * alpha

        def weight_used(self):
            # exported after ``export`` stored the binarized weights themselves
            return self.binary_weight() if binary and not torch.onnx.is_in_onnx_export() else self.weight

    class BConv(nn.Conv2d, BinaryWeights):
        def forward(self, x):
            return self._conv_forward(x, self.weight_used(), None)

    class BLinear(nn.Linear, BinaryWeights):
        def forward(self, x):
            return nn.functional.linear(x, self.weight_used())

    def act():
        return Binarize() if binary else nn.Hardtanh()

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), act(),
        BConv(32, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), act(),
        BConv(64, 128, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(128), act(),
        nn.Flatten(), BLinear(128 * 7 * 7, 10, bias=False), nn.BatchNorm1d(10))


def mst_edges(weight) -> list[tuple[int, int]]:
    """(child, parent) edges of the minimum spanning tree of sign(weight)'s Hamming graph."""
    from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree

    s = (weight.detach().reshape(weight.shape[0], -1) >= 0).cpu().numpy().astype(np.float32)
    dist = s @ (1 - s).T + (1 - s) @ s.T + 1e-3  # Hamming distances (+ epsilon: 0 means "no edge")
    np.fill_diagonal(dist, 0)
    tree = minimum_spanning_tree(dist)
    _, pred = breadth_first_order(tree + tree.T, 0, directed=False)
    return [(c, int(p)) for c, p in enumerate(pred) if p >= 0]


def train(binary: bool, epochs: int, reg: float, seed: int, log) -> tuple:
    import torch

    torch.manual_seed(seed)
    x, y = as_float(*read("train"))
    xt, yt = as_float(*read("t10k"))
    model = build(binary)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = epochs * (len(x) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    layers = [m for m in model if hasattr(m, "binary_weight")] if binary else []
    edges: dict = {}
    rng = np.random.default_rng(seed)
    step = 0
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(x))
        for i in range(0, len(order) - 127, 128):
            idx = order[i:i + 128]
            loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
            if reg and layers:
                if step % 100 == 0:
                    edges = {id(m): torch.tensor(mst_edges(m.weight)) for m in layers}
                for m in layers:  # sum over tree edges of the mean distance per weight
                    e = edges[id(m)]
                    w = m.weight.reshape(m.weight.shape[0], -1).clamp(-1, 1)
                    loss = loss + reg * (w[e[:, 0]] - w[e[:, 1]]).abs().mean(dim=1).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        acc = accuracy(model, xt[SUBSET_SIZE:], yt[SUBSET_SIZE:])
        log(f"{'binary' if binary else 'float '} epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, "
            f"accuracy on test images {SUBSET_SIZE}+ {acc * 100:.2f}%")
    return model, accuracy(model, xt[:SUBSET_SIZE], yt[:SUBSET_SIZE])


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(x[i:i + 1000])).argmax(1) for i in range(0, len(x), 1000)])
    return float((pred.numpy() == y).mean())


def export(model, path: str, metadata: dict[str, str]) -> None:
    """Float ONNX with the binarized weights as constants and Where binarizers."""
    import onnx
    import torch

    model.eval()
    for m in model:
        if hasattr(m, "binary_weight"):
            with torch.no_grad():
                m.weight.copy_(m.binary_weight())
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), path, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    proto = onnx.load(path)
    for k, v in metadata.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demos.train_bnn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--mst-reg", type=float, default=2e-3, help="weight of the MST regulariser (0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-reference", action="store_true", help="skip the full-precision reference run")
    parser.add_argument("--reference-accuracy", type=float, default=None,
                        help="the reference's accuracy from an earlier run (skips training it)")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args(argv)
    meta = {"edgekit.bnn.train": f"epochs={args.epochs} mst_reg={args.mst_reg} seed={args.seed}"}
    if args.reference_accuracy is not None:
        meta["edgekit.bnn.float_reference_accuracy"] = f"{args.reference_accuracy:.4f}"
    elif not args.no_reference:
        _, ref = train(False, args.epochs, 0.0, args.seed, print)
        meta["edgekit.bnn.float_reference_accuracy"] = f"{ref:.4f}"
        print(f"full-precision reference: {ref * 100:.2f}% on the {SUBSET_SIZE} evaluation images")
    model, acc = train(True, args.epochs, args.mst_reg, args.seed, print)
    meta["edgekit.bnn.torch_accuracy"] = f"{acc:.4f}"
    export(model, args.out, meta)
    print(f"binary network: {acc * 100:.2f}% on the {SUBSET_SIZE} evaluation images; wrote {args.out} "
          f"({os.path.getsize(args.out) / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
