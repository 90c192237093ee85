"""QuantizeLinear, DequantizeLinear and narrow-integer Casts against onnxruntime on fresh random inputs.

QuantizeLinear and DequantizeLinear must match exactly (rtol 0, atol 0): per-tensor and per-axis,
with and without zero points, across opsets 10, 13, 19, 21 and 25, on inputs holding NaN, +-inf,
out-of-range values and exact .5 ties (scales are powers of two there, so x / scale is exact), and
with scales of 0, -0, negative, subnormal and infinite. A hand-built QDQ model (uint8 image ->
DequantizeLinear -> Conv with per-channel int8 weights -> QuantizeLinear -> DequantizeLinear -> Relu)
matches within one output quantum: Conv sums in a different order than onnxruntime's, so a value next to
a rounding boundary may land one step away; so does the output of onnxruntime's quantize_static on a small
float model in QDQ format, and exactly in QOperator format (QLinearConv and QGemm, rewritten as
test_qlinear.py checks). DynamicQuantizeLinear matches exactly. Casts between all types are checked in
test_layout.py; here the camera front end uint8 -> float / 255.
"""
import numpy as np
import pytest
import onnx
from onnx import TensorProto, helper, numpy_helper

import edgekit
from edgekit.errors import UnsupportedOpError
from oracle import assert_matches_ort, make_model

EDGES = [np.nan, np.inf, -np.inf, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 1e9, -1e9, 127.5, 128.5, -128.5, 255.5, 65535.5]


def _tensor_type(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _float_input(rng, shape, spread):
    x = (rng.standard_normal(shape) * spread).astype(np.float32)
    x.reshape(-1)[:len(EDGES)] = EDGES
    return x


def _zero_point(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -100), min(info.max, 100), shape, endpoint=True).astype(dtype)


def _run(op, x, scale, zero, out_type, opset, **attrs):
    inits = {"s": scale} if zero is None else {"s": scale, "z": zero}
    node = helper.make_node(op, ["x", *inits], ["y"], **attrs)
    model = make_model([node], {"x": (x.shape, x.dtype)}, {"y": out_type}, inits, opset)
    return assert_matches_ort(model, {"x": x}, 0, 0)[0]


QUANTIZE_CASES = [(10, np.uint8), (10, np.int8), (13, np.uint8), (13, np.int8), (19, np.int8), (21, np.uint8),
                  (21, np.int8), (21, np.int16), (21, np.uint16), (25, np.int8)]


@pytest.mark.parametrize("opset, dtype", QUANTIZE_CASES)
@pytest.mark.parametrize("with_zero", [True, False])
def test_quantize_per_tensor(opset, dtype, with_zero):
    if not with_zero and dtype != np.uint8 and opset < 21:
        pytest.skip("without a zero point the output is uint8 before opset 21 (output_dtype)")
    rng = np.random.default_rng(opset)
    x = _float_input(rng, (2, 3, 5, 7), 200.0)
    zero = _zero_point(rng, dtype, ()) if with_zero else None
    attrs = {} if with_zero or dtype == np.uint8 else {"output_dtype": _tensor_type(dtype)}
    y = _run("QuantizeLinear", x, np.float32(1.0), zero, _tensor_type(dtype), opset, **attrs)
    assert y.reshape(-1)[3] == (0 if zero is None else zero)  # 0.5 rounds to even 0
    _run("QuantizeLinear", x, np.float32(0.07), zero, _tensor_type(dtype), opset, **attrs)


@pytest.mark.parametrize("scale", [0.0, -0.0, -0.5, 1e-40, 1e30, np.inf])
def test_quantize_degenerate_scales(scale):
    """x / 0 is +-inf or NaN (saturated, or the minimum for NaN) as in onnxruntime, not an error."""
    x = np.array([0.0, -0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e-40, 3.5, -7.25], np.float32)
    for dtype in (np.uint8, np.int8, np.int16):
        _run("QuantizeLinear", x, np.float32(scale), np.array(3, dtype), _tensor_type(dtype), 21)


@pytest.mark.parametrize("opset", [13, 19, 21])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_quantize_per_axis(opset, dtype, axis):
    rng = np.random.default_rng(100 + opset)
    x = _float_input(rng, (3, 4, 6), 30.0)
    n = x.shape[axis]
    scale = (2.0 ** rng.integers(-3, 2, n)).astype(np.float32)  # powers of two keep the .5 ties exact
    scale[-1] = 0.0371
    _run("QuantizeLinear", x, scale, _zero_point(rng, dtype, (n,)), _tensor_type(dtype), opset, axis=axis)


DEQUANTIZE_CASES = [(10, np.uint8), (10, np.int8), (10, np.int32), (13, np.int8), (19, np.uint8), (21, np.int16),
                    (21, np.uint16), (21, np.int8), (25, np.uint8)]


@pytest.mark.parametrize("opset, dtype", DEQUANTIZE_CASES)
@pytest.mark.parametrize("per_axis", [False, True])
def test_dequantize(opset, dtype, per_axis):
    if per_axis and opset < 13:
        pytest.skip("per-axis scales need opset 13")
    rng = np.random.default_rng(200 + opset)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, (2, 5, 3), endpoint=True).astype(dtype)
    x.reshape(-1)[:2] = [info.min, info.max]
    shape = (5,) if per_axis else ()
    scale = (rng.random(shape) * 0.1 + 1e-3).astype(np.float32)
    zero = None if dtype == np.int32 else _zero_point(rng, dtype, shape)
    _run("DequantizeLinear", x, scale, zero, TensorProto.FLOAT, opset)
    if zero is not None:
        _run("DequantizeLinear", x, scale, None, TensorProto.FLOAT, opset)


def test_quantize_with_run_time_scale():
    rng = np.random.default_rng(3)
    x = _float_input(rng, (4, 8), 50.0)
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    model = make_model([node], {"x": (x.shape, np.float32), "s": ((), np.float32)}, {"y": TensorProto.INT8},
                       {"z": np.array(3, np.int8)}, opset=13)
    for s in (0.25, 0.9):
        assert_matches_ort(model, {"x": x, "s": np.array(s, np.float32)}, 0, 0)


@pytest.mark.parametrize("scale_shape, zero_shape", [((), (1,)), ((1,), ())])
@pytest.mark.parametrize("op", ["QuantizeLinear", "DequantizeLinear"])
def test_per_tensor_scale_and_zero_point_of_one_element_in_either_form(op, scale_shape, zero_shape):
    """A scalar scale with a [1] zero point, or the reverse, is per-tensor, as onnxruntime runs it."""
    rng = np.random.default_rng(8)
    x = _float_input(rng, (3, 6), 40.0) if op == "QuantizeLinear" else rng.integers(-128, 127, (3, 6)).astype(np.int8)
    out = TensorProto.INT8 if op == "QuantizeLinear" else TensorProto.FLOAT
    _run(op, x, np.full(scale_shape, 0.5, np.float32), np.full(zero_shape, -3, np.int8), out, 13)


def test_dequantize_int32_wraps_as_onnxruntime():
    """x - zero point of int32 wraps in int32 as onnxruntime's (2^31 - 1 - (-5) becomes negative)."""
    x = np.array([2 ** 31 - 1, -2 ** 31, 0, 7], np.int32)
    _run("DequantizeLinear", x, np.float32(0.5), np.int32(-5), TensorProto.FLOAT, 13)
    _run("DequantizeLinear", x, np.float32(0.5), np.int32(5), TensorProto.FLOAT, 13)


def test_quantize_refuses_an_output_dtype_other_than_the_zero_points():
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], output_dtype=TensorProto.UINT8)
    model = make_model([node], {"x": ((2, 4), np.float32)}, {"y": ((2, 4), np.uint8)},
                       {"s": np.array(1.0, np.float32), "z": np.array(0, np.int8)}, opset=21)
    with pytest.raises(edgekit.ModelError, match="output_dtype uint8 differs from the zero point's type int8"):
        edgekit.InferenceSession(model)


def _qdq_model(rng):
    """uint8 image -> DQ -> Conv (per-channel int8 weights, int32 bias, both DQ) -> Q -> DQ -> Relu."""
    w = rng.integers(-127, 127, (8, 3, 3, 3), endpoint=True).astype(np.int8)
    w_scale = (rng.random(8) * 0.01 + 0.002).astype(np.float32)
    x_scale, y_scale = np.float32(1 / 255), np.float32(0.02)
    bias = rng.integers(-2000, 2000, 8).astype(np.int32)
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "bs"], ["bf"], axis=0),
        helper.make_node("Conv", ["xf", "wf", "bf"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "ys", "yz"], ["d"]),
        helper.make_node("Relu", ["d"], ["y"]),
    ]
    inits = {"xs": x_scale, "xz": np.array(0, np.uint8), "w": w, "ws": w_scale, "wz": np.zeros(8, np.int8),
             "b": bias, "bs": (x_scale * w_scale).astype(np.float32), "ys": y_scale, "yz": np.array(128, np.uint8)}
    return make_model(nodes, {"x": ((1, 3, 12, 12), np.uint8)}, ["y"], inits, opset=13), y_scale


def test_qdq_conv_model_end_to_end():
    rng = np.random.default_rng(5)
    model, quantum = _qdq_model(rng)
    session = edgekit.InferenceSession(model)
    for _ in range(3):
        x = rng.integers(0, 255, (1, 3, 12, 12), endpoint=True).astype(np.uint8)
        got = assert_matches_ort(model, {"x": x}, 0, quantum * 1.001, session=session)[0]
    assert np.ptp(got) > 10 * quantum  # the conv output spreads over many quanta, not only the clamps


@pytest.mark.parametrize("quant_format", ["QDQ", "QOperator"])
def test_quantize_static_model(tmp_path, quant_format):
    """onnxruntime's own quantization tool (per-channel int8 weights, uint8 activations) on a small Conv ->
    Relu -> Gemm model: in QDQ format its output matches within one quantum (exact here); in QOperator
    format (QLinearConv, com.microsoft QGemm) exactly."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(7)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1)]
    inits = {"w": (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
             "b": (rng.standard_normal(8) * 0.1).astype(np.float32),
             "w2": (rng.standard_normal((10, 8 * 6 * 6)) * 0.05).astype(np.float32),
             "b2": (rng.standard_normal(10) * 0.1).astype(np.float32)}
    onnx.save(make_model(nodes, {"x": ((1, 3, 12, 12), np.float32)}, ["y"], inits, 13), tmp_path / "float.onnx")

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"x": rng.random((1, 3, 12, 12), dtype=np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(tmp_path / "float.onnx", tmp_path / "q.onnx", Calibration(), quant_format=QuantFormat[quant_format],
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    model = onnx.load(tmp_path / "q.onnx")
    ops = {n.op_type for n in model.graph.node}
    assert {"QLinearConv", "QGemm"} <= ops if quant_format == "QOperator" else "DequantizeLinear" in ops
    quantum = float(numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "y_scale")))
    session = edgekit.InferenceSession(model)
    for _ in range(3):
        got = assert_matches_ort(model, {"x": rng.random((1, 3, 12, 12), dtype=np.float32)}, 0,
                                 quantum * 1.001 if quant_format == "QDQ" else 0, session=session)[0]
        assert np.ptp(got) > 5 * quantum


@pytest.mark.parametrize("low, high", [(-3.0, 5.0), (0.5, 2.0), (-2.0, -1.0), (0.0, 0.0), (-1e-30, 1e-30)])
def test_dynamic_quantize_linear(low, high):
    """DynamicQuantizeLinear: uint8 y, scale and zero point from x's range (widened to hold 0), exactly as
    onnxruntime, including the empty range (scale 1) and one-sided ranges (zero point 0 or 255)."""
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    model = make_model([node], {"x": ((3, 41), np.float32)},
                       {"y": TensorProto.UINT8, "s": TensorProto.FLOAT, "z": TensorProto.UINT8}, {}, 13)
    x = np.random.default_rng(5).uniform(low, high, (3, 41)).astype(np.float32)
    y, scale, zero = assert_matches_ort(model, {"x": x}, 0, 0)
    assert scale.shape == zero.shape == () and (np.ptp(y) > 100 or low == high)


def test_dynamic_quantize_linear_of_negative_infinity_as_onnxruntime():
    """x holding -inf makes the zero point NaN (undefined in ONNX): onnxruntime's max(0, min(255, NaN)) is 255."""
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    model = make_model([node], {"x": ((2, 5), np.float32)},
                       {"y": TensorProto.UINT8, "s": TensorProto.FLOAT, "z": TensorProto.UINT8}, {}, 13)
    x = np.random.default_rng(6).standard_normal((2, 5)).astype(np.float32)
    x[0, 1] = -np.inf
    with np.errstate(invalid="ignore"):
        y, scale, zero = assert_matches_ort(model, {"x": x}, 0, 0)
    assert zero == 255


def test_uint8_camera_front_end():
    """A camera front end: x:uint8 -> Cast(FLOAT) -> Div(255), and the frame cast back to uint8."""
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["f", "k"], ["y"]),
             helper.make_node("Cast", ["f"], ["back"], to=TensorProto.UINT8)]
    model = make_model(nodes, {"x": ((1, 3, 4, 4), np.uint8)}, {"y": TensorProto.FLOAT, "back": TensorProto.UINT8},
                       {"k": np.float32(255)})
    x = np.random.default_rng(6).integers(0, 255, (1, 3, 4, 4), endpoint=True).astype(np.uint8)
    y, back = assert_matches_ort(model, {"x": x}, 1e-6, 0)
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("op, attrs, scale, match", [
    ("QuantizeLinear", {"block_size": 2, "axis": 1}, np.ones((2, 2), np.float32), "block_size"),
    ("DequantizeLinear", {}, np.float16(1.0), "float16"),
    ("QuantizeLinear", {"precision": TensorProto.FLOAT16}, np.float32(1.0), "precision"),
])
def test_refused_forms(op, attrs, scale, match):
    x_type, out = (np.float32, TensorProto.UINT8) if op == "QuantizeLinear" else (np.int8, TensorProto.FLOAT16)
    model = make_model([helper.make_node(op, ["x", "s"], ["y"], **attrs)], {"x": ((2, 4), x_type)}, {"y": out},
                       {"s": scale}, opset=23)
    with pytest.raises(UnsupportedOpError, match=match):
        edgekit.InferenceSession(model)
