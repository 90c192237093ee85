"""Export the spectral models of tests/runtimes/test_spectral.py to ONNX with torch's outputs (needs torch
and onnxscript; the exported files are committed, so the tests never do): `python tests/models/export_spectral.py`.

Each model ends in torch.fft.irfft or torch.istft, which the dynamo exporter (``dynamo=True``, opset 20)
writes as DFT with inverse=1 and onesided=1 (IRFFT). onnxruntime does not load the istft model (its
ScatterND takes int32 indices), so each model is saved with an input and torch's output for it
(<model>_dynamo_opset20.npz, arrays x and y), the oracle of the test, in tests/models/irfft/ (out of
the reach of tests/test_exported_models.py, whose oracle is onnxruntime).
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch
import torch.nn as nn

from export_torch import _strip_metadata  # (this folder is on the path of the script)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "irfft")


class SpectralGate(nn.Module):
    """A per-bin gain on the one-sided spectrum of 250-sample blocks (odd bins count: Bluestein in both
    directions), back to the signal by irfft of the blocks' length."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.rand(126))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft(torch.fft.rfft(x, dim=-1) * self.gain, n=250, dim=-1)


class StftMask(nn.Module):
    """Speech-enhancement style: STFT (Hann window of 128, hop 32), a magnitude mask from a linear layer,
    and the inverse STFT (overlap-add of irfft frames) back to the 1024 samples."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(128))
        self.mask = nn.Linear(65, 65)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x, n_fft=128, hop_length=32, window=self.window, center=True, return_complex=True)
        gain = torch.sigmoid(self.mask(spec.abs().transpose(1, 2))).transpose(1, 2)
        return torch.istft(spec * gain, n_fft=128, hop_length=32, window=self.window, center=True, length=1024)


MODELS = {"spectral_gate": (SpectralGate, (3, 250)), "stft_mask": (StftMask, (1024,))}
"""name -> (model class, input shape without the batch dimension)."""


def main() -> None:
    torch.manual_seed(0)
    warnings.filterwarnings("ignore")
    for name, (cls, shape) in MODELS.items():
        model = cls().eval()
        path = os.path.join(OUT, f"{name}_dynamo_opset20.onnx")
        torch.onnx.export(model, (torch.zeros(2, *shape),), path, opset_version=20, input_names=["x"],
                          output_names=["y"], dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                          external_data=False, verbose=False)
        _strip_metadata(path)
        x = torch.randn(3, *shape)
        with torch.no_grad():
            y = model(x)
        np.savez(path[:-len(".onnx")] + ".npz", x=x.numpy(), y=y.numpy())
        print(os.path.basename(path))


if __name__ == "__main__":
    main()
