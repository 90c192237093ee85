"""QLinearConv, QLinearMatMul, QGemm, MatMulInteger and ConvInteger against onnxruntime on fresh random inputs.

Every QLinear case keeps K * max|x - xz| * max|w - wz| + max|B| below 2**24, where the float32 sums are
exact, so the outputs must match onnxruntime's exactly (rtol 0, atol 0): per-tensor and per-channel weights,
uint8 and int8, with and without bias, strides, pads, dilations and groups, 1-D and 2-D convolutions, and
output scales that spread the outputs over many quanta and also saturate some; com.microsoft QGemm (as
onnxruntime's quantize_static writes a Gemm) with transA/transB, alpha, bias, and float output (within
float32 rounding); MatMulInteger and ConvInteger (int32 sums, exact) with and without zero points,
MatMulInteger past 2**24 in runs of K (exact), ConvInteger refused there; com.microsoft QLinearAdd,
QLinearMul, QLinearSigmoid, QLinearLeakyRelu, QLinearAveragePool, QLinearGlobalAveragePool and QLinearConcat
within one quantum. test_quantize.py runs a
quantize_static model in QOperator format end to end, here a quantize_dynamic one (exact). Run-time weights
are refused with the reason.
"""
import numpy as np
import onnx
import pytest
from onnx import helper

import edgekit
from edgekit.errors import UnsupportedOpError
from oracle import assert_matches_ort, make_model


def _ints(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)


def _scale(rng, shape=()):
    return (rng.uniform(0.5, 2.0, shape) * 2.0 ** rng.integers(-9, -4, shape)).astype(np.float32)


def _qparams(rng, wdtype, channels, per_channel):
    shape = (channels,) if per_channel else ()
    zero = rng.integers(-16, 16, shape) + (128 if wdtype == np.uint8 else 0)
    return _scale(rng, shape), zero.astype(wdtype)


def _output_scale(x_scale, w_scale, k, spread):
    """An output scale putting a typical sum of k products about ``spread`` quanta from zero."""
    return np.float32(float(x_scale) * float(np.mean(w_scale)) * 40.0 * np.sqrt(k) * 60.0 / spread)


def _check(model, feeds):
    got = assert_matches_ort(model, feeds, 0, 0)[0]
    assert len(np.unique(got)) > 20  # many quanta, not only the clamps
    return got


CONV_CASES = [  # xdtype, wdtype, per_channel, bias, x shape, w shape, attrs
    (np.uint8, np.int8, True, True, (1, 3, 12, 12), (8, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    (np.uint8, np.int8, False, True, (2, 4, 9, 11), (6, 4, 3, 3), {"strides": [2, 1]}),
    (np.uint8, np.uint8, False, False, (1, 4, 10, 10), (4, 4, 1, 1), {}),
    (np.uint8, np.uint8, True, True, (1, 6, 10, 10), (6, 2, 3, 3), {"group": 3, "pads": [1, 0, 1, 2]}),
    (np.int8, np.int8, True, False, (1, 8, 9, 9), (8, 1, 3, 3), {"group": 8, "dilations": [2, 2]}),
    (np.int8, np.int8, False, True, (1, 5, 20), (7, 5, 5), {"strides": [2], "pads": [2, 2]}),
    (np.uint8, np.int8, True, True, (1, 16, 7, 7), (12, 16, 3, 3), {"auto_pad": "SAME_UPPER"}),
]


@pytest.mark.parametrize("xdtype, wdtype, per_channel, bias, xshape, wshape, attrs", CONV_CASES)
def test_qlinear_conv(xdtype, wdtype, per_channel, bias, xshape, wshape, attrs):
    rng = np.random.default_rng(len(str(attrs)) + 7 * per_channel + 3 * bias)
    w_scale, w_zero = _qparams(rng, wdtype, wshape[0], per_channel)
    x_scale, x_zero = _scale(rng), _qparams(rng, xdtype, 1, False)[1]
    k = int(np.prod(wshape[1:]))
    inits = {"xs": x_scale, "xz": x_zero, "w": _ints(rng, wdtype, wshape), "ws": w_scale, "wz": w_zero,
             "ys": _output_scale(x_scale, w_scale, k, 60), "yz": _qparams(rng, xdtype, 1, False)[1]}
    if bias:
        inits["b"] = rng.integers(-20000, 20000, wshape[0]).astype(np.int32)
    node = helper.make_node("QLinearConv", ["x", *inits], ["y"], **attrs)
    model = make_model([node], {"x": (xshape, xdtype)}, {"y": helper.np_dtype_to_tensor_dtype(np.dtype(xdtype))},
                       inits, 13)
    for _ in range(2):
        _check(model, {"x": _ints(rng, xdtype, xshape)})


MATMUL_CASES = [  # adtype, bdtype, per_column, a shape, b shape, opset
    (np.uint8, np.int8, False, (5, 32), (32, 24), 10),
    (np.uint8, np.int8, True, (2, 3, 7, 40), (40, 16), 21),
    (np.int8, np.int8, True, (9, 64), (64, 30), 21),
    (np.uint8, np.uint8, False, (4, 6, 50), (50, 33), 10),
]


@pytest.mark.parametrize("adtype, bdtype, per_column, ashape, bshape, opset", MATMUL_CASES)
def test_qlinear_matmul(adtype, bdtype, per_column, ashape, bshape, opset):
    rng = np.random.default_rng(sum(ashape) + per_column)
    b_scale, b_zero = _qparams(rng, bdtype, bshape[1], per_column)
    a_scale, a_zero = _scale(rng), _qparams(rng, adtype, 1, False)[1]
    inits = {"as": a_scale, "az": a_zero, "b": _ints(rng, bdtype, bshape), "bs": b_scale, "bz": b_zero,
             "ys": _output_scale(a_scale, b_scale, bshape[0], 60), "yz": _qparams(rng, adtype, 1, False)[1]}
    node = helper.make_node("QLinearMatMul", ["a", *inits], ["y"])
    model = make_model([node], {"a": (ashape, adtype)}, {"y": helper.np_dtype_to_tensor_dtype(np.dtype(adtype))},
                       inits, opset)
    for _ in range(2):
        _check(model, {"a": _ints(rng, adtype, ashape)})


def test_run_time_weights_are_refused_with_the_reason():
    inits = {"as": np.float32(0.1), "az": np.uint8(128), "bs": np.float32(0.1), "bz": np.int8(0),
             "ys": np.float32(0.5), "yz": np.uint8(128)}
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    model = make_model([node], {"a": ((2, 4), np.uint8), "b": ((4, 3), np.int8)},
                       {"y": onnx.TensorProto.UINT8}, inits, 13)
    with pytest.raises(UnsupportedOpError, match="run-time weights"):
        edgekit.InferenceSession(model)


GEMM_CASES = [  # adtype, bdtype, per_column, transA, transB, bias shape (None: no bias), alpha, quantized output
    (np.uint8, np.int8, True, 0, 1, (24,), 1.0, True),
    (np.uint8, np.uint8, False, 1, 0, (5, 24), 0.5, True),
    (np.int8, np.int8, True, 0, 0, None, 1.0, True),
    (np.uint8, np.int8, True, 0, 1, (24,), 1.0, False),
]


@pytest.mark.parametrize("adtype, bdtype, per_column, trans_a, trans_b, bias, alpha, quantized", GEMM_CASES)
def test_qgemm(adtype, bdtype, per_column, trans_a, trans_b, bias, alpha, quantized):
    rng = np.random.default_rng(trans_a + 2 * trans_b + 4 * per_column + 8 * quantized)
    m, k, n = 5, 48, 24
    b_scale, b_zero = _qparams(rng, bdtype, n, per_column)
    a_scale, a_zero = _scale(rng), _qparams(rng, adtype, 1, False)[1]
    inits = {"as": a_scale, "az": a_zero, "b": _ints(rng, bdtype, (n, k) if trans_b else (k, n)), "bs": b_scale,
             "bz": b_zero}
    names = ["a", "as", "az", "b", "bs", "bz"]
    if bias is not None:
        inits["c"] = rng.integers(-20000, 20000, bias).astype(np.int32)
    names.append("c" if bias is not None else "")
    if quantized:
        inits.update(ys=_output_scale(a_scale * alpha, b_scale, k, 60), yz=_qparams(rng, adtype, 1, False)[1])
        names += ["ys", "yz"]
    node = helper.make_node("QGemm", names, ["y"], domain="com.microsoft", alpha=alpha, transA=trans_a,
                            transB=trans_b)
    out = adtype if quantized else np.float32
    model = make_model([node], {"a": ((k, m) if trans_a else (m, k), adtype)}, {"y": ((m, n), out)},
                       inits, 13, domains=("com.microsoft",))
    for _ in range(2):
        feeds = {"a": _ints(rng, adtype, (k, m) if trans_a else (m, k))}
        if quantized:
            _check(model, feeds)
        else:  # (the scale folds into the Gemm's weights: float32 rounding)
            assert_matches_ort(model, feeds, 1e-5, 1e-6)



INTEGER_CASES = [  # op, xdtype, wdtype, zero points ("tensor", "channel" or None: omitted), x shape, w shape, attrs
    ("MatMulInteger", np.uint8, np.int8, "channel", (5, 64), (64, 24), {}),
    ("MatMulInteger", np.int8, np.int8, "tensor", (2, 3, 40), (40, 16), {}),
    ("MatMulInteger", np.uint8, np.uint8, None, (7, 30), (30, 9), {}),
    ("ConvInteger", np.uint8, np.uint8, "tensor", (1, 4, 10, 10), (6, 4, 3, 3), {"pads": [1, 1, 1, 1]}),
    ("ConvInteger", np.uint8, np.uint8, None, (2, 6, 9, 9), (6, 2, 3, 3), {"group": 3, "strides": [2, 2]}),
    ("ConvInteger", np.uint8, np.int8, "tensor", (1, 3, 20), (5, 3, 4), {"dilations": [2]}),
]


@pytest.mark.parametrize("op, xdtype, wdtype, zeros, xshape, wshape, attrs", INTEGER_CASES)
def test_integer_products(op, xdtype, wdtype, zeros, xshape, wshape, attrs):
    """int32 sums, exact: every case keeps max|x - xz| * sum|w - wz| below 2**24."""
    rng = np.random.default_rng(len(xshape) + len(attrs) + 3 * (zeros is None))
    channels = wshape[0] if op == "ConvInteger" else wshape[-1]
    inits = {"w": _ints(rng, wdtype, wshape)}
    if zeros is not None:
        inits["xz"] = _qparams(rng, xdtype, 1, False)[1]
        inits["wz"] = _qparams(rng, wdtype, channels, zeros == "channel")[1]
    node = helper.make_node(op, ["x", *inits], ["y"], **attrs)
    model = make_model([node], {"x": (xshape, xdtype)}, {"y": onnx.TensorProto.INT32}, inits, 13)
    for _ in range(2):
        got = assert_matches_ort(model, {"x": _ints(rng, xdtype, xshape)}, 0, 0)[0]
        assert np.abs(got).max() > 1000


def _cancelling(rng, k):
    """uint8 x rows of k values in 200..255 whose second half is a permutation of the first, and int8
    weights of +127 on the first half of K and -127 on the second: every exact sum is 0 while the partial
    sums reach 255 * 127 * k / 2, far past 2**24, so a float32 sum over all of K would not cancel exactly."""
    half = rng.integers(200, 255, (3, k // 2), endpoint=True).astype(np.uint8)
    x = np.concatenate([half, rng.permuted(half, axis=1)], axis=1)
    w = np.concatenate([np.full(k // 2, 127, np.int8), np.full(k // 2, -127, np.int8)])
    return x, w


@pytest.mark.parametrize("op", ["MatMulInteger", "QLinearMatMul", "QGemm"])
def test_matrix_products_past_float32_sums_are_exact(op):
    """Sums past 2**24 (255 * 127 * 2304 = 74,613,120 in part, 0 in all) run as runs of K each exact in
    float32, added in int32: exact against onnxruntime (a single float32 sum is off by quanta here)."""
    rng = np.random.default_rng(4)
    x, column = _cancelling(rng, 4608)
    w = np.repeat(column[:, None], 40, axis=1)
    w[:, 1] = 127  # (and a column that does not cancel: sums up to 149,226,240)
    if op == "MatMulInteger":
        node, inits, out = helper.make_node(op, ["x", "w"], ["y"]), {"w": w}, onnx.TensorProto.INT32
    else:
        inits = {"xs": np.float32(0.02), "xz": np.uint8(0), "w": w, "ws": np.float32(0.01), "wz": np.int8(0),
                 "ys": np.float32(0.02 * 0.01 * 16), "yz": np.uint8(128)}
        names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"] if op == "QLinearMatMul" else \
            ["x", "xs", "xz", "w", "ws", "wz", "", "ys", "yz"]
        node = helper.make_node(op, names, ["y"], **({"domain": "com.microsoft"} if op == "QGemm" else {}))
        out = onnx.TensorProto.UINT8
    model = make_model([node], {"x": (x.shape, np.uint8)}, {"y": (((3, 40)), np.dtype(np.int32)) if
                       op == "MatMulInteger" else ((3, 40), np.uint8)}, inits, 13,
                       domains=("com.microsoft",) if op == "QGemm" else ())
    got = assert_matches_ort(model, {"x": x}, 0, 0)[0]
    if op == "MatMulInteger":
        assert got[:, 0].tolist() == [0, 0, 0] and got[:, 1].min() > 2 ** 24


@pytest.mark.parametrize("op", ["ConvInteger", "QLinearConv"])
def test_convolutions_past_float32_sums_are_exact(op):
    """A 1x1 convolution over 4608 input channels whose partial sums pass 2**24 and cancel: runs of input
    channels each exact in float32, added in int32: exact against onnxruntime."""
    rng = np.random.default_rng(5)
    x, column = _cancelling(rng, 4608)
    x = x[:1].reshape(1, 4608, 1, 1).repeat(2, axis=2)
    w = np.repeat(column[None, :], 8, axis=0).reshape(8, 4608, 1, 1)
    w[1] = 127
    if op == "ConvInteger":
        node, inits, out = helper.make_node(op, ["x", "w"], ["y"]), {"w": w}, np.int32
    else:
        inits = {"xs": np.float32(0.02), "xz": np.uint8(0), "w": w, "ws": np.float32(0.01), "wz": np.int8(0),
                 "ys": np.float32(0.02 * 0.01 * 16), "yz": np.uint8(128)}
        node, out = helper.make_node(op, ["x", *inits], ["y"]), np.uint8
    model = make_model([node], {"x": (x.shape, np.uint8)}, {"y": ((1, 8, 2, 1), out)}, inits, 13)
    assert_matches_ort(model, {"x": x}, 0, 0)


def test_grouped_convolution_past_float32_sums_is_refused():
    """A grouped convolution whose sums pass 2**24 cannot be cut into runs of input channels: refused."""
    model = make_model([helper.make_node("ConvInteger", ["x", "w"], ["y"], group=2)], {"x": ((1, 1152, 3, 3), np.uint8)},
                       {"y": onnx.TensorProto.INT32}, {"w": np.full((2, 576, 3, 3), 127, np.uint8)}, 13)
    with pytest.raises(UnsupportedOpError, match="sums past 2\\*\\*24 .* grouped convolution"):
        edgekit.InferenceSession(model)


def _q(rng, dtype):
    """A per-tensor (scale, zero point) pair of ``dtype``."""
    return _scale(rng) * 64, _qparams(rng, dtype, 1, False)[1]


WRAPPED_CASES = [  # op, quantized input shapes, attrs
    ("QLinearAdd", [(2, 8, 5, 5), (2, 8, 5, 5)], {}),
    ("QLinearAdd", [(1, 8, 6, 6), (1, 8, 1, 1)], {}),
    ("QLinearMul", [(3, 40), (40,)], {}),
    ("QLinearSigmoid", [(2, 8, 9)], {}),
    ("QLinearLeakyRelu", [(2, 8, 9)], {"alpha": 0.1}),
    ("QLinearAveragePool", [(1, 6, 9, 9)], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("QLinearAveragePool", [(1, 6, 8, 8)], {"kernel_shape": [2, 2], "count_include_pad": 1, "pads": [1, 1, 0, 0]}),
    ("QLinearGlobalAveragePool", [(2, 16, 7, 7)], {}),
    ("QLinearConcat", [(1, 4, 5, 5), (1, 3, 5, 5), (1, 2, 5, 5)], {"axis": 1}),
]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("op, shapes, attrs", WRAPPED_CASES)
def test_contrib_ops_as_float_between_dequantize_and_quantize(op, shapes, attrs, dtype):
    """com.microsoft QLinear* ops run as DequantizeLinear -> float32 op -> QuantizeLinear: within one output
    quantum of onnxruntime (its kernels requantize with other roundings or lookup tables)."""
    rng = np.random.default_rng(len(op) + len(shapes) + len(attrs))
    inits, feeds, names = {}, {}, []
    for i, shape in enumerate(shapes):
        inits[f"s{i}"], inits[f"z{i}"] = _q(rng, dtype)
        feeds[f"x{i}"] = _ints(rng, dtype, shape)
        names += [f"x{i}", f"s{i}", f"z{i}"]
    ys, yz = _q(rng, dtype)
    inits.update(ys=ys * (1 if op in ("QLinearAdd", "QLinearMul") else 0.25), yz=yz)
    if op == "QLinearMul":
        inits["ys"] = np.float32(inits["s0"] * inits["s1"] * 2000)
    if op == "QLinearSigmoid":  # (inputs over -6..6, outputs over 0..1)
        inits.update(s0=np.float32(6 / 128), ys=np.float32(1 / 256))
    names = ["ys", "yz", *names] if op == "QLinearConcat" else [*names, "ys", "yz"]
    node = helper.make_node(op, names, ["y"], domain="com.microsoft", **attrs)
    model = make_model([node], {k: (v.shape, v.dtype) for k, v in feeds.items()},
                       {"y": ([None] * max(map(len, shapes)), dtype)}, inits, 13, domains=("com.microsoft",))
    got = assert_matches_ort(model, feeds, 0, 1)[0]
    assert len(np.unique(got)) > 10


def test_quantize_dynamic_model(tmp_path):
    """onnxruntime's quantize_dynamic (DynamicQuantizeLinear -> MatMulInteger with the run-time zero point ->
    Cast -> Mul) on a small MLP, int8 weights: exact."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(9)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"])]
    inits = {"w": (rng.standard_normal((256, 64)) * 0.1).astype(np.float32),
             "b": (rng.standard_normal(64) * 0.1).astype(np.float32),
             "w2": (rng.standard_normal((64, 10)) * 0.1).astype(np.float32)}
    onnx.save(make_model(nodes, {"x": ((4, 256), np.float32)}, ["y"], inits, 13), tmp_path / "float.onnx")
    quantize_dynamic(tmp_path / "float.onnx", tmp_path / "dynamic.onnx", weight_type=QuantType.QInt8)
    model = onnx.load(tmp_path / "dynamic.onnx")
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {n.op_type for n in model.graph.node}
    session = edgekit.InferenceSession(model)
    for _ in range(3):
        assert_matches_ort(model, {"x": rng.standard_normal((4, 256)).astype(np.float32)}, 0, 0, session=session)
