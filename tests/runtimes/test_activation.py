"""Activation ops against onnxruntime, standalone and fused into a Conv epilogue (float32, rtol 1e-6 /
atol 1e-6, 2e-6 for the ones on exp/log/tanh/erf), including NaN and +-Inf inputs, every attribute
with defaults and set, each opset the op has, and the refused forms (Gelu's unknown approximation,
non-float32 inputs)."""
import numpy as np
import pytest
from onnx import helper

import edgekit
from edgekit.errors import UnsupportedOpError
from oracle import assert_matches_ort, make_model

RTOL, ATOL = 1e-6, 1e-6
# (op, attributes, opset)
CASES = [
    ("Relu", {}, 17), ("LeakyRelu", {"alpha": 0.07}, 17), ("Sigmoid", {}, 17), ("Tanh", {}, 17),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, 17), ("HardSwish", {}, 17),
    ("Elu", {}, 6), ("Elu", {"alpha": 0.4}, 22), ("Selu", {}, 6), ("Selu", {"alpha": 1.2, "gamma": 0.8}, 22),
    ("Celu", {}, 12), ("Celu", {"alpha": 2.5}, 12), ("Softplus", {}, 1), ("Softplus", {}, 22),
    ("Softsign", {}, 1), ("Softsign", {}, 22), ("Mish", {}, 18), ("Mish", {}, 22), ("Gelu", {}, 20),
    ("Gelu", {"approximate": "tanh"}, 20), ("Gelu", {"approximate": "none"}, 20),
    ("ThresholdedRelu", {}, 10), ("ThresholdedRelu", {"alpha": -0.5}, 22), ("Shrink", {}, 9),
    ("Shrink", {"lambd": 1.5, "bias": 0.3}, 9), ("Swish", {}, 24), ("Swish", {"alpha": 1.7}, 24),
]
IDS = [f"{op}-{opset}-{'-'.join(map(str, attrs.values()))}" for op, attrs, opset in CASES]


def _model(op, attrs, opset, shape):
    return make_model([helper.make_node(op, ["x"], ["y"], **attrs)], {"x": (shape, np.float32)}, ["y"], opset=opset)


@pytest.mark.parametrize("op,attrs,opset", CASES, ids=IDS)
def test_activation_matches_onnxruntime(op, attrs, opset):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((2, 3, 17)) * 4).astype(np.float32)
    x[0, 0, :4] = [0.0, 1.0, -1.5, 1.5]  # Shrink and ThresholdedRelu boundaries
    assert_matches_ort(_model(op, attrs, opset, x.shape), {"x": x}, 2e-6, ATOL)


@pytest.mark.parametrize("op,attrs,opset", CASES, ids=IDS)
def test_vector_loops_over_the_whole_range(op, attrs, opset):
    """4099 values from -30 to 30 (the vector loop and its remainder, the formulas' branch points,
    where exp underflows and where erf and tanh saturate), fresh random ones among them."""
    x = np.concatenate([np.linspace(-30, 30, 3001), np.random.default_rng(5).uniform(-6, 6, 1098)]).astype(np.float32)
    if op == "Swish":  # onnxruntime's x * logistic(x) has the logistic's ~1e-7 absolute error times |x| <= 30
        (y,) = edgekit.InferenceSession(_model(op, attrs, opset, x.shape)).run(None, {"x": x})
        alpha = attrs.get("alpha", 1.0)  # alpha x is rounded to float32, an error exp scales by |alpha x| <= 51
        np.testing.assert_allclose(y, x / (1 + np.exp(-alpha * x.astype(np.float64))), 5e-6, 1e-30)
        assert_matches_ort(_model(op, attrs, opset, x.shape), {"x": x}, 2e-6, 4e-6)
        return
    assert_matches_ort(_model(op, attrs, opset, x.shape), {"x": x}, 2e-6, ATOL)


def test_activation_with_dynamic_dims():
    x = np.random.default_rng(3).standard_normal((3, 5, 7)).astype(np.float32)
    model = _model("Mish", {}, 18, ("n", 5, "t"))
    assert_matches_ort(model, {"x": x}, 2e-6, ATOL)
    assert_matches_ort(model, {"x": x[:1, :, :2]}, 2e-6, ATOL)


@pytest.mark.parametrize("op,attrs,opset,dtype,message", [
    ("Gelu", {"approximate": "erf"}, 20, np.float32, "approximate='erf'"), ("Elu", {}, 6, np.float64, "float64")])
def test_refused_forms_name_the_node(op, attrs, opset, dtype, message):
    node = helper.make_node(op, ["x"], ["y"], name="act0", **attrs)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = make_model([node], {"x": ((2, 3), dtype)}, {"y": elem}, opset=opset)
    with pytest.raises(UnsupportedOpError, match=f"act0.*{message}"):
        edgekit.InferenceSession(model).run(None, {"x": np.zeros((2, 3), dtype)})


SPECIAL = np.array([[np.nan, -np.inf, np.inf, -1.0, 0.0, 2.0]], np.float32)


@pytest.mark.parametrize("op,attrs,opset", CASES, ids=IDS)
def test_nan_and_inf_propagate_like_onnxruntime(op, attrs, opset):
    assert_matches_ort(_model(op, attrs, opset, SPECIAL.shape), {"x": SPECIAL}, RTOL, ATOL)


@pytest.mark.parametrize("op,attrs,opset", CASES, ids=IDS)
def test_nan_and_inf_propagate_through_a_fused_conv_epilogue(op, attrs, opset):
    x = SPECIAL.reshape(1, 1, 1, -1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node(op, ["c"], ["y"], **attrs)]
    model = make_model(nodes, {"x": (x.shape, np.float32)}, ["y"], {"w": np.ones((1, 1, 1, 1), np.float32)}, opset)
    assert_matches_ort(model, {"x": x}, RTOL, ATOL)


@pytest.mark.parametrize("op,attrs,opset", CASES[6:], ids=IDS[6:])
def test_fused_into_a_batched_conv_and_gemm(op, attrs, opset):
    opset = max(opset, 11)  # Gemm with no C
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node(op, ["c"], ["y"], **attrs)]
    model = make_model(nodes, {"x": (x.shape, np.float32)}, ["y"], {"w": w}, opset)
    assert_matches_ort(model, {"x": x}, 2e-5, 2e-5)
    a = rng.standard_normal((5, 8)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["a", "b"], ["c"]), helper.make_node(op, ["c"], ["y"], **attrs)]
    b = rng.standard_normal((8, 6)).astype(np.float32)
    model = make_model(nodes, {"a": (a.shape, np.float32)}, ["y"], {"b": b}, opset)
    assert_matches_ort(model, {"a": a}, 2e-5, 2e-5)
