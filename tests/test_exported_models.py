"""Models as PyTorch exports them (tests/models/*.onnx, written by tests/models/export_torch.py at
opsets 11, 17 and 20 with a dynamic batch; the transformer from 17, as attention exports from 14):
LSTM and GRU nets, a transformer encoder layer, a 1-D U-Net, a TCN, a squeeze-excitation net, an
MLP, 2-D CNNs with Resize and ArgMax, a ShuffleNet unit, a ResNet block, a keyword spotter. They run
on edgekit as on onnxruntime: every output within 1e-4 (absolute and relative; recurrent and
attention layers sum a few hundred products) on fresh standard-normal inputs, at batch 1 and 3,
through one session (one plan per batch size)."""
import glob
import os
import zlib

import numpy as np
import onnx
import pytest

import edgekit
from oracle import assert_matches_ort

MODELS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "models", "*.onnx")))


@pytest.mark.parametrize("path", MODELS, ids=[os.path.basename(p)[:-5] for p in MODELS])
def test_exported_model_matches_onnxruntime(path: str) -> None:
    model = onnx.load(path)
    session = edgekit.InferenceSession(model)
    (x,) = session.get_inputs()
    rng = np.random.default_rng(zlib.crc32(os.path.basename(path).encode()))
    for batch in (1, 3):
        shape = [batch if isinstance(d, str) else d for d in x.shape]
        assert_matches_ort(model, {x.name: rng.standard_normal(shape).astype(np.float32)}, rtol=1e-4, atol=1e-4,
                           session=session)

