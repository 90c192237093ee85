"""Export the small PyTorch models of tests/test_exported_models.py to ONNX (needs torch and onnxscript;
the exported files are committed, so the tests never do): `python tests/models/export_torch.py`.

Each model is a typical signal or image network as users write it, exported by torch.onnx's
TorchScript exporter at opsets 11, 17 and 20 with a dynamic batch dimension, so the tests see the exact
node patterns exporters emit (Shape/Gather chains, Constant nodes, LSTM gate layouts ...); and by the
dynamo exporter (``dynamo=True``, torch.export + onnxscript, torch's default since 2.9) at its default
opset with a dynamic batch dimension (``dynamic_shapes``), which writes other patterns (LayerNormalization
and Gelu as single ops, attention as MatMul/Softmax chains, shape arithmetic on Shape/Slice/Concat),
with and without its optimiser.
"""
from __future__ import annotations

import itertools
import os
import warnings

import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


class CnnLstm(nn.Module):
    """Conv front end and a one-layer LSTM over its feature sequence (activity recognition)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(3, 16, 5, padding=2), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2))
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.fc = nn.Linear(32, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(self.conv(x).transpose(1, 2))
        return self.fc(y[:, -1])


class BiGru(nn.Module):
    """Two-layer bidirectional GRU, mean over time."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(8, 16, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.gru(x)
        return self.fc(y.mean(1))


class TinyTransformer(nn.Module):
    """One transformer encoder layer (attention, LayerNorm, GELU-free MLP) over 8 features."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer(self.embed(x)).mean(1))


class Unet1d(nn.Module):
    """A one-level 1-D U-Net: strided conv down, ConvTranspose up, skip concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv1d(1, 8, 4, stride=2, padding=1)
        self.up = nn.ConvTranspose1d(8, 8, 4, stride=2, padding=1)
        self.out = nn.Conv1d(9, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.relu(self.up(torch.relu(self.down(x))))
        return self.out(torch.cat([u, x], 1))


class Tcn(nn.Module):
    """Causal dilated convolutions (F.pad on the left), GELU and ELU, a residual, softmax head."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 16, 3, dilation=2)
        self.c2 = nn.Conv1d(16, 16, 3, dilation=4)
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.c1(F.pad(x, (4, 0))))
        h = F.elu(self.c2(F.pad(h, (8, 0)))) + h
        return torch.softmax(self.fc(h.mean(-1)), -1)


class SqueezeExcite1d(nn.Module):
    """HardSwish, depthwise conv, PReLU, a squeeze-excitation gate and a log-softmax head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 16, 3, padding=1)
        self.dw = nn.Conv1d(16, 16, 5, padding=2, groups=16)
        self.prelu = nn.PReLU(16)
        self.fc1, self.fc2, self.fc = nn.Linear(16, 4), nn.Linear(4, 16), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.prelu(self.dw(F.hardswish(self.conv(x))))
        h = h * torch.sigmoid(self.fc2(torch.relu(self.fc1(h.mean(-1))))).unsqueeze(-1)
        return F.log_softmax(self.fc(F.adaptive_max_pool1d(h, 1).flatten(1)), -1)


class Mlp(nn.Module):
    """Flatten, Tanh, LeakyReLU, Softplus."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(60, 32), nn.Tanh(), nn.Linear(32, 32), nn.LeakyReLU(0.1),
                                 nn.Linear(32, 3), nn.Softplus())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Cnn2d(nn.Module):
    """Nearest upsampling, conv + BN + SiLU, global pooling, dropout, argmax of the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Dropout(0.1), nn.Linear(8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.up(x)).argmax(-1)


class ShuffleBlock(nn.Module):
    """A ShuffleNetV2 unit: channel split, depthwise stride-1 branch, concat, channel shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8),
                                    nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        a, b = h.chunk(2, dim=1)
        h = torch.cat([a, self.branch(b)], 1)
        n, c, hh, ww = h.shape
        h = h.view(n, 2, c // 2, hh, ww).transpose(1, 2).reshape(n, c, hh, ww)
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


class ResBlock(nn.Module):
    """A ResNet stem (conv, BN, ReLU, 3x3/2 max pool) and a strided basic block with a 1x1 shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.MaxPool2d(3, stride=2, padding=1))
        self.c1 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32))
        self.down = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = torch.relu(self.c2(self.c1(h)) + self.down(h))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


class KeywordSpotter(nn.Module):
    """A DS-CNN keyword spotter on a (1, 49, 10) MFCC map: depthwise-separable 2-D convs, average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Sequential(nn.Conv2d(1, 24, (10, 4), stride=(2, 2), padding=(5, 1)), nn.BatchNorm2d(24),
                                   nn.ReLU())
        self.ds = nn.Sequential(nn.Conv2d(24, 24, 3, padding=1, groups=24), nn.BatchNorm2d(24), nn.ReLU(),
                                nn.Conv2d(24, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.fc = nn.Linear(32, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ds(self.first(x))
        return self.fc(F.avg_pool2d(h, (25, 5)).flatten(1))  # (the map is 25 x 5; a fixed kernel as in Keras)


class LogMelCnn(nn.Module):
    """Keyword spotting from raw audio: STFT (Hann window of 256, hop 128), power spectrum, a 20-band
    filter bank (a fixed random projection here), log, a 3x3 conv and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(256))
        self.register_buffer("bank", torch.rand(129, 20))
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x, n_fft=256, hop_length=128, window=self.window, center=False, return_complex=True)
        power = torch.view_as_real(spec).pow(2).sum(-1)  # (batch, 129 bins, frames)
        logmel = torch.log(torch.matmul(power.transpose(1, 2), self.bank) + 1e-6)
        return self.fc(self.conv(logmel.unsqueeze(1)).mean((2, 3)))


MODELS = {"cnn_lstm": (CnnLstm, (3, 64)), "bigru": (BiGru, (20, 8)), "transformer": (TinyTransformer, (10, 8)),
          "unet1d": (Unet1d, (1, 64)), "tcn": (Tcn, (2, 50)), "se1d": (SqueezeExcite1d, (4, 40)),
          "mlp": (Mlp, (3, 20)), "cnn2d": (Cnn2d, (1, 14, 14)), "shuffle": (ShuffleBlock, (3, 32, 32)),
          "resblock": (ResBlock, (3, 32, 32)), "kws": (KeywordSpotter, (1, 49, 10)), "logmel": (LogMelCnn, (4000,))}
"""name -> (model class, input shape without the batch dimension)."""
DYNAMO_ONLY = {"logmel"}
"""Models the TorchScript exporter cannot export (it has no complex tensors, which torch.stft returns)."""
OPSETS = (11, 17, 20)
"""Each model is exported at each of these opsets it can be (exporters write other patterns per
opset: Squeeze axes as an attribute or an input, Upsample or Resize, Gelu as one op or as Erf ...);
files are named <model>_opset<N>.onnx."""
DYNAMO_OPSETS = (torch.onnx._constants.ONNX_DEFAULT_OPSET, 20)
"""The dynamo exporter's default opset (20 with torch 2.13) and 20; files are named
<model>_dynamo_opset<N>.onnx, and <model>_dynamo_noopt_opset<N>.onnx without the exporter's optimiser
(``optimize=False``, the default of older torch: SplitToSequence for torch.chunk, BatchNormalization and
Constant nodes unfolded)."""


def main() -> None:
    torch.manual_seed(0)
    warnings.filterwarnings("ignore")
    for name, (cls, shape) in MODELS.items():
        model = cls().eval()
        for m in model.modules():  # non-trivial BN statistics, so folding them is tested
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        for opset in () if name in DYNAMO_ONLY else OPSETS:
            path = os.path.join(HERE, f"{name}_opset{opset}.onnx")
            try:
                torch.onnx.export(model, (torch.randn(2, *shape),), path, opset_version=opset, input_names=["x"],
                                  output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
            except torch.onnx.errors.UnsupportedOperatorError as exc:  # (attention before opset 14)
                print(f"{os.path.basename(path)}: not exported ({str(exc).splitlines()[0]})")
                continue
            print(os.path.basename(path))
        for opset, optimize in itertools.product(sorted(set(DYNAMO_OPSETS)), (True, False)):
            path = os.path.join(HERE, f"{name}_dynamo{'' if optimize else '_noopt'}_opset{opset}.onnx")
            # (zeros, not randn: the RNG, and so the weights of the TorchScript models after, stay as seeded)
            torch.onnx.export(model, (torch.zeros(2, *shape),), path, opset_version=opset, input_names=["x"],
                              output_names=["y"], dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                              optimize=optimize, external_data=False, verbose=False)
            _strip_metadata(path)
            print(os.path.basename(path))


def _strip_metadata(path: str) -> None:
    """Drop the dynamo exporter's per-node and per-value metadata (stack traces, module paths: most of
    the file), which no runtime reads; the graph stays as exported."""
    model = onnx.load(path)
    g = model.graph
    for item in (*g.node, *g.value_info, *g.input, *g.output, *g.initializer):
        item.ClearField("metadata_props")
    onnx.save(model, path)


if __name__ == "__main__":
    main()
