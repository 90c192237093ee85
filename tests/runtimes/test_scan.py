"""CumSum against onnxruntime: every axis (also negative) of 1-D to 4-D inputs, exclusive and reverse
in all four combinations, float32 / float64 / int32 / int64 inputs, an int32 axis, a dynamic-T model
as the LMUFormer head uses it, an axis fed at run time (out of range: InputError), a constant
axis out of range (UnsupportedOpError) and an empty scanned axis (nothing written outside the
empty output). Tolerance: rtol 1e-6 / atol 1e-6 for float32 (both sum
in order), exact otherwise.
"""
import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided
from onnx import helper

import edgekit
from edgekit.errors import InputError, UnsupportedOpError
from edgekit.runtimes.kernels.scan import cumsum
from oracle import assert_matches_ort, make_model

RTOL, ATOL = 1e-6, 1e-6
FLAGS = [(e, r) for e in (0, 1) for r in (0, 1)]


def cumsum_model(shape, axis, dtype=np.float32, axis_dtype=np.int64, **attrs):
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], **attrs)
    out = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return make_model([node], {"x": (shape, dtype)}, {"y": out}, {"axis": np.array(axis, axis_dtype)}, opset=14)


@pytest.mark.parametrize("exclusive,reverse", FLAGS)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (2, 3, 4, 5)])
def test_every_axis(shape, exclusive, reverse):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for axis in range(-len(shape), len(shape)):
        assert_matches_ort(cumsum_model(shape, axis, exclusive=exclusive, reverse=reverse), {"x": x}, RTOL, ATOL)


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.int64])
@pytest.mark.parametrize("exclusive,reverse", FLAGS)
def test_dtypes(dtype, exclusive, reverse):
    x = (np.random.default_rng(1).standard_normal((3, 6, 2)) * 50).astype(dtype)
    model = cumsum_model((3, 6, 2), -2, dtype, np.int32, exclusive=exclusive, reverse=reverse)
    assert_matches_ort(model, {"x": x}, 0, 0)


def test_dynamic_length_running_mean():
    """CumSum of features over a dynamic T divided by CumSum of ones: the running mean."""
    nodes = [helper.make_node("CumSum", ["x", "axis"], ["s"]),
             helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("ConstantOfShape", ["shape"], ["ones"],
                              value=helper.make_tensor("one", 1, [1], [1.0])),
             helper.make_node("CumSum", ["ones", "axis"], ["count"]),
             helper.make_node("Div", ["s", "count"], ["y"])]
    model = make_model(nodes, {"x": ((1, 3, "T"), np.float32)}, ["y"], {"axis": np.array(2, np.int64)})
    sess = edgekit.InferenceSession(model)
    for length in (1, 9, 40):
        x = np.random.default_rng(length).standard_normal((1, 3, length)).astype(np.float32)
        assert_matches_ort(model, {"x": x}, 1e-6, 1e-6, session=sess)
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], np.cumsum(x, 2) / np.arange(1, length + 1), rtol=1e-5)


def test_axis_fed_at_run_time():
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], reverse=1)
    model = make_model([node], {"x": ((2, 3, 4), np.float32), "axis": ((), np.int32)}, ["y"])
    x = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    sess = edgekit.InferenceSession(model)
    for axis in (0, 2, -1, -3):
        assert_matches_ort(model, {"x": x, "axis": np.array(axis, np.int32)}, RTOL, ATOL, session=sess)
    for bad in (3, -4):
        with pytest.raises(InputError, match="CumSum axis"):
            sess.run(None, {"x": x, "axis": np.array(bad, np.int32)})


def test_constant_axis_out_of_range():
    with pytest.raises(UnsupportedOpError, match="axis"):
        edgekit.InferenceSession(cumsum_model((2, 3), 2))


@pytest.mark.parametrize("exclusive,reverse", FLAGS)
def test_empty_axis_writes_nothing(exclusive, reverse):
    # The (2, 0, 3) output views the middle of a sentinel buffer: a slice written for a scanned axis
    # of length 0 would land on the sentinels on either side.
    buf = np.full(16, 7.0, np.float32)
    out = as_strided(buf[8:], shape=(2, 0, 3), strides=(12, 12, 4))
    cumsum(np.ones((2, 0, 3), np.float32), np.array([1]), out, np.array([2, 0, 3], np.int64), bool(exclusive),
           bool(reverse))
    np.testing.assert_array_equal(buf, 7.0)
    x = np.zeros((2, 0, 3), np.float32)
    assert_matches_ort(cumsum_model((2, 0, 3), 1, exclusive=exclusive, reverse=reverse), {"x": x}, 0, 0)
