"""Edge-sized benchmark models built in code with onnx.helper from fixed-seed weights.

Each builder returns a checked ``onnx.ModelProto`` (opset 17, float32) whose weights depend only
on ``seed``: a 1D CNN on 8 s of 64 Hz signal, a small 2D CNN for 28x28 images, a MobileNet-style
stack of depthwise-separable blocks, an MLP, and a one-Relu model for per-call overhead.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Builder:
    """Accumulates nodes and fixed-seed initializers; ``model()`` assembles and checks the graph."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def _name(self, base: str) -> str:
        return f"{base}{len(self.nodes)}"

    def const(self, base: str, value: np.ndarray) -> str:
        name = self._name(base) + f"_{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, kernel: tuple[int, ...], stride: int = 1, group: int = 1) -> str:
        """Conv (He-initialised, "same" padding for odd kernels) + BatchNormalization."""
        fan_in = cin // group * int(np.prod(kernel))
        w = self.rng.standard_normal((cout, cin // group, *kernel)) * np.sqrt(2.0 / fan_in)
        pads = [k // 2 for k in kernel] * 2
        y = self.op("Conv", [x, self.const("w", w.astype(np.float32))], kernel_shape=list(kernel),
                    pads=pads, strides=[stride] * len(kernel), group=group)
        return self.batchnorm(y, cout)

    def batchnorm(self, x: str, channels: int) -> str:
        gamma = 1.0 + 0.1 * self.rng.standard_normal(channels)
        beta = 0.1 * self.rng.standard_normal(channels)
        mean = 0.1 * self.rng.standard_normal(channels)
        var = 1.0 + 0.1 * self.rng.random(channels)
        params = [self.const(n, v.astype(np.float32)) for n, v in
                  (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var))]
        return self.op("BatchNormalization", [x, *params], epsilon=1e-5)

    def relu6(self, x: str) -> str:
        return self.op("Clip", [x, self.const("lo", np.float32(0)), self.const("hi", np.float32(6))])

    def gemm(self, x: str, n_in: int, n_out: int, out: str | None = None) -> str:
        w = self.rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in)
        b = 0.01 * self.rng.standard_normal(n_out)
        return self.op("Gemm", [x, self.const("w", w.astype(np.float32)), self.const("b", b.astype(np.float32))],
                       out, transB=1)

    def model(self, name: str, x: str, shape: list, y: str, n_out: int) -> onnx.ModelProto:
        batch = shape[0]
        graph = helper.make_graph(
            self.nodes, name, [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, [batch, n_out])], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="edgekit.benchmarks")
        model.ir_version = 8  # readable by every onnxruntime edgekit supports
        onnx.checker.check_model(model, full_check=True)
        return model


def cnn1d(seed: int = 0, batch: int | str = 1, samples: int = 512, classes: int = 4) -> onnx.ModelProto:
    """1D CNN on 8 s of 64 Hz signal: 1->16->32->32 channels (k=7,5,5), BN+ReLU+MaxPool(2), GAP, Gemm."""
    b = _Builder(seed)
    h = "signal"
    for cin, cout, k in ((1, 16, 7), (16, 32, 5), (32, 32, 5)):
        h = b.op("MaxPool", [b.op("Relu", [b.conv(h, cin, cout, (k,))])], kernel_shape=[2], strides=[2])
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    return b.model("cnn1d", "signal", [batch, 1, samples], b.gemm(h, 32, classes, "logits"), classes)


def cnn2d(seed: int = 0) -> onnx.ModelProto:
    """Small 2D CNN for 28x28 images: 1->8->16 channels 3x3, BN+ReLU+MaxPool(2), Flatten, Gemm 784->10."""
    b = _Builder(seed)
    h = "image"
    for cin, cout in ((1, 8), (8, 16)):
        h = b.op("MaxPool", [b.op("Relu", [b.conv(h, cin, cout, (3, 3))])], kernel_shape=[2, 2], strides=[2, 2])
    return b.model("cnn2d", "image", [1, 1, 28, 28], b.gemm(b.op("Flatten", [h]), 16 * 7 * 7, 10, "logits"), 10)


def mobilenet(seed: int = 0) -> onnx.ModelProto:
    """MobileNet-style: 3x3 stem to 32 ch, depthwise-separable blocks (3x3 depthwise + 1x1 pointwise,
    BN, ReLU6 as Clip) 32->64->128->128 on a 56x56 input, GAP, Gemm to 10."""
    b = _Builder(seed)
    h = b.relu6(b.conv("image", 3, 32, (3, 3)))
    for cin, cout, stride in ((32, 64, 2), (64, 128, 2), (128, 128, 1)):
        h = b.relu6(b.conv(h, cin, cin, (3, 3), stride=stride, group=cin))
        h = b.relu6(b.conv(h, cin, cout, (1, 1)))
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])])
    return b.model("mobilenet", "image", [1, 3, 56, 56], b.gemm(h, 128, 10, "logits"), 10)


def mlp(seed: int = 0) -> onnx.ModelProto:
    """MLP 64->256->256->10 with ReLU."""
    b = _Builder(seed)
    h = b.op("Relu", [b.gemm("features", 64, 256)])
    h = b.op("Relu", [b.gemm(h, 256, 256)])
    return b.model("mlp", "features", [1, 64], b.gemm(h, 256, 10, "logits"), 10)


def relu16() -> onnx.ModelProto:
    """One Relu on 16 floats: the per-call overhead of an engine."""
    b = _Builder(0)
    return b.model("relu16", "x", [1, 16], b.op("Relu", ["x"], "y"), 16)


SUITE: dict[str, Callable[[], onnx.ModelProto]] = {
    "cnn1d": cnn1d, "cnn2d": cnn2d, "mobilenet": mobilenet, "mlp": mlp,
}
