"""Activation ops against onnxruntime, standalone and fused into a Conv epilogue (float32, rtol 1e-6 /
atol 1e-6), including NaN and +-Inf inputs."""
import numpy as np
import pytest
from onnx import helper

from oracle import assert_matches_ort, make_model

RTOL, ATOL = 1e-6, 1e-6
CASES = [
    ("Relu", {}), ("LeakyRelu", {"alpha": 0.07}), ("Sigmoid", {}), ("Tanh", {}),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {}),
]


@pytest.mark.parametrize("op,attrs", CASES)
def test_activation_matches_onnxruntime(op, attrs):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((2, 3, 17)) * 4).astype(np.float32)
    model = make_model([helper.make_node(op, ["x"], ["y"], **attrs)], {"x": (x.shape, np.float32)}, ["y"])
    assert_matches_ort(model, {"x": x}, RTOL, ATOL)


def test_clip_with_constant_bounds_and_missing_max():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((4, 9)) * 3).astype(np.float32)
    node = helper.make_node("Clip", ["x", "lo", ""], ["y"])
    model = make_model([node], {"x": (x.shape, np.float32)}, ["y"], {"lo": np.float32(-0.5)})
    assert_matches_ort(model, {"x": x}, RTOL, ATOL)
    node = helper.make_node("Clip", ["x", "lo", "hi"], ["y"])
    model = make_model([node], {"x": (x.shape, np.float32)}, ["y"], {"lo": np.float32(-1), "hi": np.float32(0.25)})
    assert_matches_ort(model, {"x": x}, RTOL, ATOL)


SPECIAL = np.array([[np.nan, -np.inf, np.inf, -1.0, 0.0, 2.0]], np.float32)


@pytest.mark.parametrize("op,attrs", CASES)
def test_nan_and_inf_propagate_like_onnxruntime(op, attrs):
    model = make_model([helper.make_node(op, ["x"], ["y"], **attrs)], {"x": (SPECIAL.shape, np.float32)}, ["y"])
    assert_matches_ort(model, {"x": SPECIAL}, RTOL, ATOL)


@pytest.mark.parametrize("op,attrs", CASES)
def test_nan_and_inf_propagate_through_a_fused_conv_epilogue(op, attrs):
    x = SPECIAL.reshape(1, 1, 1, -1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node(op, ["c"], ["y"], **attrs)]
    model = make_model(nodes, {"x": (x.shape, np.float32)}, ["y"], {"w": np.ones((1, 1, 1, 1), np.float32)})
    assert_matches_ort(model, {"x": x}, RTOL, ATOL)
