"""Reductions and softmax against onnxruntime: every Reduce* op over adjacent, non-adjacent, negative and
all axes, keepdims on and off, axes as attribute (opset 13) and as input (opset 18), the empty-axes
rules, int64 constant folding, log-sum-exp stability, and Softmax/LogSoftmax in both the opset >= 13
(one axis) and opset < 13 (coerce to 2D) semantics. NaN handling of ReduceMax/Min is checked against
NumPy, since onnxruntime's result depends on where the NaN sits. The mean of rows (GlobalAveragePool,
ReduceMean over trailing axes: float32 vector partial sums, LANES rows per group) on row counts and
lengths around the vector width, and its NaN/Inf propagation against NumPy, also called directly as
the step-program interpreter does; 2-D AveragePool over the whole unpadded plane runs on it too. Softmax rows give
the same bits wherever the output lies, and rows of any length in blocks through the scratch.
Tolerances: rtol 1e-5 / atol 1e-5 for sums of float32
(onnxruntime accumulates in float32; GlobalAveragePool atol 1e-6), exact for max/min.
"""
import numpy as np
import pytest
from onnx import TensorProto, helper

import edgekit
from edgekit.errors import UnsupportedOpError
from edgekit.runtimes.kernels.reduce import MEAN, REDUCE, ROWS, mean_rows, softmax
from edgekit.runtimes.kernels.simd import LANES
from oracle import assert_matches_ort, make_model

RTOL, ATOL = 1e-5, 1e-5
OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
       "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]
POSITIVE = {"ReduceLogSum"}  # (ReduceProd: magnitudes near 1, so products of 120 stay normal, of either sign)
AXES = [None, [1], [-1], [0, 2], [1, 2], [0, 3], [3, 1, 2]]


def _model(op, x_shape, axes, opset, keepdims=1, **attrs):
    """A one-node reduction, axes as input (ReduceSum >= 13, others >= 18) or attribute."""
    as_input = opset >= (13 if op == "ReduceSum" else 18)
    inits, names = {}, ["x"]
    if axes is not None and as_input:
        inits["axes"] = np.array(axes, np.int64)
        names.append("axes")
    elif axes is not None:
        attrs["axes"] = axes
    node = helper.make_node(op, names, ["y"], keepdims=keepdims, **attrs)
    return make_model([node], {"x": (x_shape, np.float32)}, ["y"], inits, opset)


def _input(op, shape, seed):
    rng = np.random.default_rng(seed)
    if op in POSITIVE:
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if op == "ReduceProd":
        return (rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape)).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("opset", [13, 18])
def test_reductions_over_axes(op, opset):
    x = _input(op, (2, 3, 4, 5), 0)
    exact = op in ("ReduceMax", "ReduceMin")
    for axes in AXES:
        for keepdims in (0, 1):
            model = _model(op, x.shape, axes, opset, keepdims)
            assert_matches_ort(model, {"x": x}, 0 if exact else RTOL, 0 if exact else ATOL)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp"])
def test_empty_axes_rules(op):
    x = _input(op, (3, 1, 4), 1)
    for noop in (0, 1):
        assert_matches_ort(_model(op, x.shape, None, 18, noop_with_empty_axes=noop), {"x": x}, RTOL, ATOL)
        model = _model(op, x.shape, [], 18, noop_with_empty_axes=noop)
        assert_matches_ort(model, {"x": x}, RTOL, ATOL)


def test_size_one_axes_and_scalar_shapes():
    x = _input("ReduceSum", (1, 6, 1, 7), 2)
    for axes in ([0], [0, 1], [1, 3], [0, 2], [2]):
        assert_matches_ort(_model("ReduceMean", x.shape, axes, 18), {"x": x}, RTOL, ATOL)
    v = _input("ReduceSum", (9,), 3)
    assert_matches_ort(_model("ReduceMax", v.shape, None, 18, keepdims=0), {"x": v}, 0, 0)


def test_log_sum_exp_is_stable():
    x = np.array([[1000.0, 999.0, -1000.0], [-np.inf, -np.inf, -np.inf]], np.float32)
    assert_matches_ort(_model("ReduceLogSumExp", x.shape, [1], 18), {"x": x}, RTOL, ATOL)


@pytest.mark.parametrize("op,fn", [("ReduceMax", np.max), ("ReduceMin", np.min)])
def test_max_min_propagate_nan_like_numpy(op, fn):
    x = np.array([[1, np.nan, 0], [np.nan, 1, 0], [2, 3, 1]], np.float32)
    got = edgekit.InferenceSession(_model(op, x.shape, [1], 18, keepdims=0)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, fn(x, axis=1))


def test_int64_constant_reductions_fold():
    shape = np.array([2, 3, 4], np.int64)
    nodes = [helper.make_node("ReduceProd", ["s"], ["p"], keepdims=1),
             helper.make_node("ReduceSum", ["s", "ax"], ["t"], keepdims=1),
             helper.make_node("Add", ["p", "t"], ["u"]), helper.make_node("Add", ["x", "u"], ["y"])]
    x = np.array([5], np.int64)
    model = make_model(nodes, {"x": (x.shape, np.int64)}, {"y": TensorProto.INT64},
                       {"s": shape, "ax": np.array([0], np.int64)}, opset=13)
    assert_matches_ort(model, {"x": x}, 0, 0)


def test_dynamic_axes_are_unsupported():
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                            helper.make_tensor_value_info("axes", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10)
    with pytest.raises(UnsupportedOpError, match="axes"):
        edgekit.InferenceSession(model).run(None, {"x": np.zeros((2, 3), np.float32), "axes": np.array([1])})


SOFTMAX_CASES = [(13, None), (13, 1), (13, 0), (13, -2), (11, None), (11, 2), (11, -1), (11, 0)]


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,axis", SOFTMAX_CASES)
def test_softmax_semantics_per_opset(op, opset, axis):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((2, 3, 4, 5)) * 5).astype(np.float32)
    attrs = {} if axis is None else {"axis": axis}
    model = make_model([helper.make_node(op, ["x"], ["y"], **attrs)], {"x": (x.shape, np.float32)}, ["y"], opset=opset)
    assert_matches_ort(model, {"x": x}, RTOL, 1e-6)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_is_stable_for_large_logits(op):
    x = np.array([[1000.0, 999.0, -1000.0, 0.0], [-50.0, 80.0, 88.0, 89.0]], np.float32)
    model = make_model([helper.make_node(op, ["x"], ["y"])], {"x": (x.shape, np.float32)}, ["y"], opset=13)
    assert_matches_ort(model, {"x": x}, RTOL, 1e-6)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape", [(1, 2, 12, 12), (3, 12), (700, 7), (3, 5000), (2, 0)])
def test_softmax_rows_in_blocks(op, shape):
    """Rows go through the scratch in blocks of SOFTMAX_BLOCK elements: attention's short rows, a last
    partial block (700 rows of 7), one long row per block, no row at all; a -inf row and a NaN propagate."""
    x = (np.random.default_rng(sum(shape)).standard_normal(shape) * 3).astype(np.float32)
    if x.size:
        x.reshape(-1, shape[-1])[-1, :] = -np.inf
        x.reshape(-1, shape[-1])[0, 1] = np.nan
    model = make_model([helper.make_node(op, ["x"], ["y"])], {"x": (shape, np.float32)}, ["y"], opset=13)
    assert_matches_ort(model, {"x": x}, RTOL, 1e-6)


@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("scale", [1e4, 1e20])
def test_log_softmax_keeps_log_sum_next_to_large_tied_logits(axis, scale):
    """Tied maxima far from zero: (x - max) - log(sum) as onnxruntime computes it gives -log(ties);
    x - (max + log(sum)) would round log(sum) away. Rows (last axis) and columns (axis 1)."""
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((2, 6, 6)) * scale).astype(np.float32)
    x[:, :3, :3] = x[:, 3:, 3:] = np.float32(8 * scale)
    model = make_model([helper.make_node("LogSoftmax", ["x"], ["y"], axis=axis)], {"x": (x.shape, np.float32)}, ["y"])
    assert_matches_ort(model, {"x": x}, RTOL, 1e-6)


@pytest.mark.parametrize("n", [5, 7, 16, 33])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_rows_do_not_depend_on_where_the_output_lies(n, log):
    """The same row gives the same bits wherever ``out`` sits (in place, just after the input, far):
    a streaming session restored from a state_dict lays its buffers out anew and must stay
    bit-exact. (A sum inside a loop that also stored was vectorised or not by LLVM's overlap check.)"""
    x0 = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    results = set()
    for gap in [*range(0, 70), 300, None]:
        buf = np.zeros(2 * n + 400, np.float32)
        x = buf[:n]
        x[:] = x0
        out = x if gap is None else buf[n + gap:2 * n + gap]
        softmax(x, out, 1, n, 1, log)
        results.add(out.tobytes())
    assert len(results) == 1


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 15, 25), (2, LANES, LANES), (1, LANES + 1, 2 * LANES + 1),
                                   (3, 11, 7, 9), (1, 32, 4 * LANES), (1, 5, 1000)])
def test_mean_of_rows_matches_onnxruntime(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    gap = make_model([helper.make_node("GlobalAveragePool", ["x"], ["y"])], {"x": (shape, np.float32)}, ["y"])
    assert_matches_ort(gap, {"x": x}, RTOL, 1e-6)
    assert_matches_ort(_model("ReduceMean", shape, [-1], 13), {"x": x}, RTOL, ATOL)


def test_mean_of_rows_propagates_nan_and_infinity():
    """A NaN, +Inf, both infinities, -Inf alone: NaN, +Inf, NaN, -Inf, as NumPy's mean; through a
    session and called directly (flat arrays, as the interpreter does)."""
    x = np.random.default_rng(0).standard_normal((1, 2 * LANES + 3, 25)).astype(np.float32)
    x[0, 1, 3], x[0, 4, 24], x[0, 7, 0], x[0, 7, 1], x[0, LANES + 2, 0] = np.nan, np.inf, np.inf, -np.inf, -np.inf
    with np.errstate(invalid="ignore"):
        want = x.astype(np.float64).mean(axis=2)
    gap = make_model([helper.make_node("GlobalAveragePool", ["x"], ["y"])], {"x": (x.shape, np.float32)}, ["y"])
    got = edgekit.InferenceSession(gap).run(None, {"x": x})[0][..., 0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    out = np.zeros(x.shape[1], np.float32)
    mean_rows(x.ravel(), out, x.shape[1], x.shape[2])
    np.testing.assert_array_equal(out, got[0])


@pytest.mark.parametrize("shape,attrs", [
    ((1, 24, 25, 5), {}), ((3, 7, 9, 4), {"auto_pad": "VALID"}), ((2, 3, 6, 6), {"ceil_mode": 1}),
    ((1, 4, 5, 5), {"strides": [5, 5], "auto_pad": "SAME_UPPER"}),
])
def test_whole_plane_average_pool_is_the_mean_of_rows(shape, attrs):
    """An unpadded 2-D AveragePool whose one window is the whole plane (Keras DS-CNN heads) runs as the mean of
    rows; with SAME padding resolved to none it does too (count_include_pad has nothing to count)."""
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=list(shape[2:]), count_include_pad=1, **attrs)
    model = make_model([node], {"x": (shape, np.float32)}, ["y"], opset=19)
    session = edgekit.InferenceSession(model)
    assert_matches_ort(model, {"x": x}, RTOL, 1e-6, session=session)
    ((fn, _),) = session.plan((shape,)).steps
    assert fn is REDUCE[MEAN, ROWS]
