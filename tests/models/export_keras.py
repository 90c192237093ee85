"""Export the small Keras models of tests/test_exported_models.py to ONNX (needs TensorFlow; the exported
files are committed, so the tests never do): `python tests/models/export_keras.py [model ...]` in a
separate environment made with `pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0 onnx` (Keras 3.15).

Each model is a typical edge network as users write it in Keras, with random weights (and random
BatchNormalization statistics, so folding them is tested), exported the way Keras 3 documents,
``model.export(path, format="onnx", opset_version=N)`` (tf2onnx's ``from_function`` on the TensorFlow
backend), at opsets 13, 17 and 18 (tf2onnx's newest) with a dynamic batch dimension. The graphs are
what tf2onnx writes for TensorFlow: NHWC with Transposes around every conv, MatMul + Add for Dense,
BatchNormalization as Mul + Add, LSTM as the LSTM op (but GRU and SimpleRNN as a Loop over the cell:
tf2onnx does not recognise Keras 3's GRU), Shape/Slice/Concat chains, Squeeze/Unsqueeze, LayerNormalization
as ReduceMean/Sqrt/Reciprocal, MultiHeadAttention as MatMul/Reshape/Transpose. Files are named
keras/<model>_opset<N>.onnx (39 files, about 600 KB).
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keras")
OPSETS = (13, 17, 18)


def conv1d() -> keras.Model:
    """A 1-D signal classifier: Conv1D, BatchNorm, ReLU, MaxPooling1D, GlobalAveragePooling1D, softmax."""
    x = keras.Input((64, 3), name="x")
    h = layers.ReLU()(layers.BatchNormalization()(layers.Conv1D(12, 5, padding="same")(x)))
    h = layers.MaxPooling1D(2)(h)
    h = layers.ReLU()(layers.BatchNormalization()(layers.Conv1D(12, 3)(h)))
    return keras.Model(x, layers.Dense(6, activation="softmax")(layers.GlobalAveragePooling1D()(h)))


def cnn2d() -> keras.Model:
    """A small image CNN: Conv2D, BatchNorm, ReLU, MaxPooling2D, Flatten (of NHWC), Dropout, Dense."""
    x = keras.Input((16, 16, 1), name="x")
    h = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(8, 3)(x)))
    h = layers.MaxPooling2D()(h)
    h = layers.MaxPooling2D()(layers.Conv2D(8, 3, padding="same", activation="relu")(h))
    h = layers.Dropout(0.3)(layers.Flatten()(h))
    return keras.Model(x, layers.Dense(10, activation="softmax")(h))


def mobilenet() -> keras.Model:
    """MobileNet-like blocks: strided stem, DepthwiseConv2D + ReLU6, a residual add, SeparableConv2D, global pool."""
    x = keras.Input((24, 24, 3), name="x")
    h = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(x)))
    b = layers.ReLU(6.0)(layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same", use_bias=False)(h)))
    b = layers.BatchNormalization()(layers.Conv2D(16, 1, use_bias=False)(b))
    h = layers.Add()([h, b])
    h = layers.SeparableConv2D(24, 3, strides=2, padding="same", activation="relu")(h)
    return keras.Model(x, layers.Dense(5)(layers.GlobalAveragePooling2D()(h)))


def lstm() -> keras.Model:
    """A stacked LSTM pair: the first returns sequences, the second its last state, a Dense head."""
    x = keras.Input((20, 8), name="x")
    h = layers.LSTM(8, return_sequences=True)(x)
    return keras.Model(x, layers.Dense(4)(layers.LSTM(8)(h)))


def gru() -> keras.Model:
    """GRUs (reset_after, Keras's default) returning sequences, then a last state; a per-step Dense too."""
    x = keras.Input((20, 8), name="x")
    h = layers.GRU(8, return_sequences=True)(x)
    h = layers.Dense(8, activation="tanh")(h)
    return keras.Model(x, layers.Dense(3, activation="softmax")(layers.GRU(8)(h)))


def rnn_forms() -> keras.Model:
    """The other recurrent-cell Loops tf2onnx writes, on a sequence of any length (trip count from Shape):
    a GRU with reset_after=False, a go_backwards GRU returning sequences (ReverseSequence before the
    Loop) and a go_backwards SimpleRNN returning its last state."""
    x = keras.Input((None, 5), name="x")
    h = layers.GRU(6, return_sequences=True, reset_after=False)(x)
    h = layers.GRU(6, return_sequences=True, go_backwards=True)(h)
    return keras.Model(x, layers.SimpleRNN(4, go_backwards=True)(h))


def mlp() -> keras.Model:
    """A Dense MLP on a flat feature vector: ReLU, ELU, LayerNormalization, sigmoid."""
    x = keras.Input((40,), name="x")
    h = layers.Dense(16, activation="relu")(x)
    h = layers.LayerNormalization()(layers.Dense(16, activation="elu")(h))
    return keras.Model(x, layers.Dense(3, activation="sigmoid")(h))


def tcn() -> keras.Model:
    """A temporal conv net: causal and 'same' dilated Conv1D, a residual, LayerNormalization, global max pool."""
    x = keras.Input((50, 2), name="x")
    h = layers.Conv1D(8, 3, padding="causal", dilation_rate=2, activation="relu")(x)
    r = layers.Conv1D(8, 3, padding="same", dilation_rate=4, activation="relu")(h)
    h = layers.LayerNormalization()(layers.Add()([h, r]))
    h = layers.Conv1D(8, 3, padding="causal", dilation_rate=8)(h)
    return keras.Model(x, layers.Dense(2, activation="softmax")(layers.GlobalMaxPooling1D()(h)))


def autoencoder() -> keras.Model:
    """A small conv autoencoder: strided Conv2D down, Conv2DTranspose and UpSampling2D up, a skip Concatenate."""
    x = keras.Input((16, 16, 1), name="x")
    h = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    h = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(h)
    h = layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu")(h)
    h = layers.Concatenate()([layers.UpSampling2D()(h), x])
    return keras.Model(x, layers.Conv2D(1, 3, padding="same", activation="sigmoid")(h))


def kws() -> keras.Model:
    """A DS-CNN keyword spotter on flat MFCC features reshaped to (49, 10, 1), AveragePooling2D, Flatten."""
    x = keras.Input((490,), name="x")
    h = layers.Reshape((49, 10, 1))(x)
    h = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, (10, 4), strides=2, padding="same")(h)))
    h = layers.ReLU()(layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same")(h)))
    h = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(24, 1)(h)))
    h = layers.Flatten()(layers.AveragePooling2D((25, 5))(h))
    return keras.Model(x, layers.Dense(12, activation="softmax")(h))


def se_net() -> keras.Model:
    """MobileNetV3-like: Rescaling, ZeroPadding2D, hard_swish and swish, squeeze-excitation with hard_sigmoid,
    a 'same' strided max pool, GlobalMaxPooling2D."""
    x = keras.Input((16, 16, 3), name="x")
    h = layers.ZeroPadding2D(1)(layers.Rescaling(1 / 127.5, offset=-1.0)(x))
    h = layers.Activation("hard_swish")(layers.BatchNormalization()(layers.Conv2D(16, 3, strides=2)(h)))
    h = layers.Activation("swish")(layers.BatchNormalization()(layers.DepthwiseConv2D(5, padding="same")(h)))
    g = layers.GlobalAveragePooling2D(keepdims=True)(h)
    g = layers.Conv2D(16, 1, activation="hard_sigmoid")(layers.Conv2D(4, 1, activation="relu")(g))
    h = layers.MaxPooling2D(3, strides=2, padding="same")(layers.Multiply()([h, g]))
    return keras.Model(x, layers.Dense(3)(layers.GlobalMaxPooling2D()(h)))


def imu() -> keras.Model:
    """A gesture recogniser on IMU windows: strided 'same' Conv1D with leaky_relu, AveragePooling1D 'same',
    selu, a Bidirectional LSTM. (No Normalization layer: tf2onnx makes its mean and variance graph inputs.)"""
    x = keras.Input((40, 6), name="x")
    h = layers.Conv1D(12, 5, strides=2, padding="same", activation="leaky_relu")(x)
    h = layers.Conv1D(12, 3, activation="selu")(layers.AveragePooling1D(3, strides=2, padding="same")(h))
    return keras.Model(x, layers.Dense(4)(layers.Bidirectional(layers.LSTM(8))(h)))


def attention() -> keras.Model:
    """A one-block transformer encoder: MultiHeadAttention (Einsum), residuals, LayerNormalization, a gelu MLP."""
    x = keras.Input((12, 8), name="x")
    h = layers.Dense(16)(x)
    h = layers.LayerNormalization()(layers.Add()([h, layers.MultiHeadAttention(2, 8)(h, h)]))
    f = layers.Dense(16)(layers.Dense(16, activation=lambda v: keras.activations.gelu(v, approximate=True))(h))
    h = layers.LayerNormalization()(layers.Add()([h, f]))
    return keras.Model(x, layers.Dense(4, activation="softmax")(layers.GlobalAveragePooling1D()(h)))


MODELS = {f.__name__: f for f in (conv1d, cnn2d, mobilenet, lstm, gru, rnn_forms, mlp, tcn, autoencoder, kws, se_net,
                                  imu, attention)}


def randomize(model: keras.Model, rng: np.random.Generator) -> None:
    """Random weights: kernels N(0, 1/fan_in), biases and BN shifts/means U(-0.5, 0.5), scales and variances U(0.5, 1.5)."""
    for w in model.weights:
        shape, path = tuple(w.shape), w.path
        if path.endswith(("gamma", "moving_variance")):
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) == 1:
            value = rng.uniform(-0.5, 0.5, shape)
        else:
            fan_in = np.prod(shape[:2] if "depthwise" in path else shape[:-1])
            value = rng.standard_normal(shape) / np.sqrt(fan_in)
        w.assign(value.astype(np.float32))


def main() -> None:
    os.makedirs(HERE, exist_ok=True)
    keras.utils.set_random_seed(0)
    only = set(sys.argv[1:])
    for name, make in MODELS.items():
        if only and name not in only:
            continue
        model = make()
        randomize(model, np.random.default_rng(0))
        model(np.zeros((1, *(d or 7 for d in model.input_shape[1:])), np.float32))  # (Keras exports only called models)
        for opset in OPSETS:
            path = os.path.join(HERE, f"{name}_opset{opset}.onnx")
            model.export(path, format="onnx", opset_version=opset, verbose=False)
            print(f"{os.path.basename(path)}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
