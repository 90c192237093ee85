"""Models as exporters write them, each run on edgekit as on onnxruntime at batch 1 and 3 through one
session (one plan per batch size), on fresh standard-normal inputs: every output within 1e-4
(absolute and relative). float32 results differ only by summation order (vector tiles, FMA
contraction, fused BatchNorm) and by the rounding of exp/tanh; recurrent and attention layers sum a
few hundred products, and the longest chains here measure below 1e-5.

PyTorch (tests/models/*.onnx, written by tests/models/export_torch.py at opsets 11, 17 and 20 with a
dynamic batch; the transformer from 17, as attention exports from 14): LSTM and GRU nets, a
transformer encoder layer, a 1-D U-Net, a TCN, a squeeze-excitation net, an MLP, 2-D CNNs with Resize
and ArgMax, a ShuffleNet unit, a ResNet block, a keyword spotter. The same models as the dynamo exporter
(torch 2.13 + onnxscript 0.7, ``dynamo=True``, ``dynamic_shapes`` on the batch) writes them at its default
opset 20 (*_dynamo_opset20.onnx: LayerNormalization and Gelu as single ops, attention as MatMul/Softmax
chains, zero initial states as Shape/Concat/Expand, softplus's threshold as Greater/Where) and without its
optimiser (*_dynamo_noopt_opset20.onnx, older torch's default: BatchNormalization and Constant nodes,
torch.chunk as SplitToSequence/SequenceAt); and, by the dynamo exporter only (the TorchScript one has
no complex tensors), a log-mel keyword spotter on raw audio (torch.stft as STFT, Pow/ReduceSum power).

Keras (tests/models/keras/*.onnx, written by tests/models/export_keras.py with Keras 3.15 / TensorFlow
2.21 / tf2onnx 1.17 at opsets 13, 17 and 18 with a dynamic batch): 1-D and 2-D CNNs in NHWC behind
Transposes, BatchNorm as Mul/Add, MobileNet blocks (depthwise, separable, ReLU6 as Clip, hard_swish,
squeeze-excitation), LSTMs (stacked and bidirectional), GRUs and a SimpleRNN (tf2onnx's Loops over the cell,
which edgekit rewrites to GRU and RNN; reset_after, go_backwards, a sequence of any length: its time dim is
the batch size here), an MLP with LayerNormalization
decomposed into ReduceMean/Sqrt/Reciprocal, a causal dilated TCN (Pad), a conv autoencoder
(Conv2DTranspose, UpSampling2D as Tile/Reshape), a DS-CNN keyword spotter and a transformer block
(MultiHeadAttention as MatMul/Reshape/Transpose chains).
"""
import glob
import os
import zlib

import numpy as np
import onnx
import pytest

import edgekit
from oracle import assert_matches_ort

HERE = os.path.join(os.path.dirname(__file__), "models")
MODELS = sorted(glob.glob(os.path.join(HERE, "*.onnx"))) + sorted(glob.glob(os.path.join(HERE, "keras", "*.onnx")))


@pytest.mark.parametrize("path", [pytest.param(p, id=os.path.relpath(p, HERE)[:-5]) for p in MODELS])
def test_exported_model_matches_onnxruntime(path: str) -> None:
    model = onnx.load(path)
    session = edgekit.InferenceSession(model)
    (x,) = session.get_inputs()
    rng = np.random.default_rng(zlib.crc32(os.path.basename(path).encode()))
    for batch in (1, 3):
        shape = [batch if isinstance(d, str) else d for d in x.shape]
        assert_matches_ort(model, {x.name: rng.standard_normal(shape).astype(np.float32)}, rtol=1e-4, atol=1e-4,
                           session=session)
