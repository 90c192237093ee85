"""ArgMax, ArgMin and TopK against onnxruntime, exactly (indices and values are picked, not computed).

ArgMax/ArgMin: opsets 1, 11, 12 and 13, every axis (negative too), keepdims on and off,
select_last_index on inputs full of ties, float32, int32 and int64, rows (last axis, the two-pass
vectorised scan, on lengths around its lane count) and columns (other axes), onnxruntime's NaN rule
(a NaN wins only at index 0). TopK: k as an attribute (opset 1) and a constant input (10, 11), every
axis, largest and smallest, k from 0 to the whole axis, ties (lower index first), NaN and infinities
(NaN ranks above +inf), the three dtypes, sorted=0 (edgekit returns the same elements, sorted), a
detection-sized axis, both selection paths (heap for small k, quickselect for large k, and its fallback
to the heap) on ascending, descending and constant columns. Also batch > 1, a symbolic batch dimension
run at two sizes, folding of constant inputs, and the refused forms (K fed at run time, float64) naming
their node.
"""
import numpy as np
import pytest
from onnx import TensorProto, helper

import edgekit
from edgekit.errors import ModelError, UnsupportedOpError
from edgekit.runtimes.kernels.ranking import LANES, top_k
from oracle import assert_matches_ort, make_model, ort_session

DTYPES = [np.float32, np.int32, np.int64]
SHAPE = (3, 4, 5)


def _ties(shape, dtype, seed, nan=0.0):
    """Small integers (many ties) as ``dtype``; a fraction ``nan`` of NaNs and as many infinities."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(dtype)
    if nan:
        x[rng.random(shape) < nan] = np.nan
        x[rng.random(shape) < nan / 2] = np.inf
        x[rng.random(shape) < nan / 2] = -np.inf
    return x


def _arg_model(op, x, opset, **attrs):
    node = helper.make_node(op, ["x"], ["y"], name="rank", **attrs)
    return make_model([node], {"x": (x.shape, x.dtype)}, {"y": TensorProto.INT64}, opset=opset)


def _top_k_model(x, k, opset, inputs=None, **attrs):
    """A TopK node, k an attribute before opset 10 and an initializer K since."""
    outputs = {"v": helper.np_dtype_to_tensor_dtype(x.dtype), "i": TensorProto.INT64}
    if opset < 10:  # onnx infers no output shape for TopK-1
        node = helper.make_node("TopK", ["x"], ["v", "i"], name="rank", k=k, **attrs)
        shape = list(x.shape)
        shape[attrs.get("axis", -1)] = k
        outputs, inits = {"v": (shape, x.dtype), "i": (shape, np.int64)}, {}
    else:
        node = helper.make_node("TopK", ["x", "k"], ["v", "i"], name="rank", **attrs)
        inits = {"k": np.array([k], np.int64)}
    return make_model([node], inputs or {"x": (x.shape, x.dtype)}, outputs, inits, opset)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_arg_every_axis_keepdims_and_last_index(op, dtype):
    x = _ties(SHAPE, dtype, seed=1)
    for opset in (12, 13):
        for axis in range(-3, 3):
            for keepdims in (0, 1):
                for last in (0, 1):
                    model = _arg_model(op, x, opset, axis=axis, keepdims=keepdims, select_last_index=last)
                    assert_matches_ort(model, {"x": x}, 0, 0)


@pytest.mark.parametrize("opset", [1, 11])
def test_arg_before_select_last_index(opset):
    x = _ties(SHAPE, np.float32, seed=2)
    for op in ("ArgMax", "ArgMin"):
        assert_matches_ort(_arg_model(op, x, opset), {"x": x}, 0, 0)  # default axis 0, keepdims 1
        for axis in (1, 2):
            assert_matches_ort(_arg_model(op, x, opset, axis=axis, keepdims=0), {"x": x}, 0, 0)
        if opset >= 11:
            assert_matches_ort(_arg_model(op, x, opset, axis=-1), {"x": x}, 0, 0)


@pytest.mark.parametrize("n", [1, 7, LANES - 1, LANES, LANES + 1, 3 * LANES + 5, 1000])
def test_arg_rows_around_the_lane_count(n):
    """The classification head ``logits.argmax(-1)``, batch 8, on row lengths around LANES."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal((8, n)).astype(np.float32)
    x[1] = 0.5  # a whole row of ties
    x[2, -1] = x[2].max() + 1  # the best in the tail after the last full block of lanes
    for op in ("ArgMax", "ArgMin"):
        for last in (0, 1):
            model = _arg_model(op, x, 13, axis=-1, keepdims=0, select_last_index=last)
            assert_matches_ort(model, {"x": x}, 0, 0)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_arg_nan_follows_onnxruntime(axis):
    """onnxruntime keeps a running best from index 0 that only a strictly better (or, with
    select_last_index, an equal) value replaces: NaN wins only at index 0. (NumPy picks the first NaN.)"""
    x = np.array([[1, np.nan, 3, np.nan, 0], [np.nan, 2, 2, 5, 5], [3, 1, 3, -np.inf, np.inf],
                  [np.nan] * 5, [np.inf, 2, np.nan, np.inf, -np.inf]], np.float32)
    x = np.concatenate([x, _ties((3 * LANES, 5), np.float32, seed=3, nan=0.2)])
    xs = np.ascontiguousarray(x if axis else x.T)
    for op in ("ArgMax", "ArgMin"):
        for last in (0, 1):
            model = _arg_model(op, xs, 13, axis=axis, keepdims=0, select_last_index=last)
            assert_matches_ort(model, {"x": xs}, 0, 0)
    first_row = edgekit.InferenceSession(_arg_model("ArgMax", x, 13, axis=1)).run(None, {"x": x})[0][:5, 0]
    np.testing.assert_array_equal(first_row, [2, 0, 4, 0, 0])


@pytest.mark.parametrize("opset,dtype", [(1, np.float32), (10, np.float32), *((11, d) for d in DTYPES)])
def test_top_k_every_axis_and_k(opset, dtype):
    """Integer inputs since opset 11."""
    x = _ties((2, 6, 7), dtype, seed=4)
    for axis in range(3):
        n = x.shape[axis]
        for k in sorted({0 if opset >= 10 else 1, 1, min(3, n), n}):  # TopK-1 requires k >= 1
            ax = axis if opset == 1 else axis - 3 * (axis % 2)  # negative axes from opset 10
            assert_matches_ort(_top_k_model(x, k, opset, axis=ax), {"x": x}, 0, 0)
            if opset >= 11:
                assert_matches_ort(_top_k_model(x, k, opset, axis=ax, largest=0), {"x": x}, 0, 0)


@pytest.mark.parametrize("largest", [0, 1])
def test_top_k_nan_and_infinities(largest):
    """NaN ranks above +inf (first when largest, last when smallest), NaNs by lower index."""
    x = _ties((4, 40), np.float32, seed=5, nan=0.2)
    for k in (1, 2, 5, 20, 40):
        assert_matches_ort(_top_k_model(x, k, 11, largest=largest), {"x": x}, 0, 0)
    for k in (1, 4):
        assert_matches_ort(_top_k_model(x, k, 11, axis=0, largest=largest), {"x": x}, 0, 0)
    v, i = edgekit.InferenceSession(_top_k_model(x[:1, :5], 5, 11, largest=largest)).run(None, {"x": x[:1, :5]})
    row = x[0, :5]
    key = np.lexsort((np.arange(5), np.where(np.isnan(row), 0, -row if largest else row),
                      ~np.isnan(row) if largest else np.isnan(row)))
    np.testing.assert_array_equal(i[0], key)


@pytest.mark.parametrize("k", [1, 100, 1000])
def test_top_k_detection_scores(k):
    """A detection head's scores: the k best of 8400 anchors per image, batch 2."""
    x = np.random.default_rng(k).random((2, 8400)).astype(np.float32)
    assert_matches_ort(_top_k_model(x, k, 11), {"x": x}, 0, 0)


def test_top_k_keys_zeros_nan_signs_and_int32_extremes():
    """The path of large k on float32 and int32 (ranking int64 keys): -0 ties +0 (lower index first),
    a NaN with its sign bit set ranks as any NaN, int32's extremes keep their order; along the last
    axis and the first."""
    rng = np.random.default_rng(9)
    pool = np.array([-0.0, 0.0, 1.5, -1.5, np.inf, -np.inf, np.nan, -np.nan, 3e-45, -3e-45], np.float32)
    x = rng.choice(pool, (3, 64))
    i = rng.choice(np.array([-2 ** 31, 2 ** 31 - 1, 0, -1, 1, 7], np.int32), (3, 64))
    for data in (x, i):
        for largest in (0, 1):
            assert_matches_ort(_top_k_model(data, 50, 11, largest=largest), {"x": data}, 0, 0)
            cols = np.ascontiguousarray(data.T)
            assert_matches_ort(_top_k_model(cols, 50, 11, axis=0, largest=largest), {"x": cols}, 0, 0)


@pytest.mark.parametrize("order", ["ascending", "descending", "constant"])
def test_top_k_on_ordered_columns(order):
    """Inputs that are worst cases of a heap (ascending) or of a naive quickselect pivot, on both
    paths: the heap (k = 5) and quickselect (k = 200, 500 of 500), largest and smallest."""
    x = np.random.default_rng(7).standard_normal((2, 500)).astype(np.float32)
    x = {"ascending": np.sort(x), "descending": -np.sort(x), "constant": np.ones_like(x)}[order]
    for largest in (0, 1):
        for k in (5, 200, 500):
            assert_matches_ort(_top_k_model(x, k, 11, largest=largest), {"x": x}, 0, 0)


@pytest.mark.parametrize("budget", [1, 2, 3])
def test_quickselect_out_of_budget_falls_back_to_the_heap(budget):
    """The kernel called directly (as the plan does) with a partition budget too small to finish:
    the heap's result, NaNs and ties included."""
    x = _ties((3, 300), np.float32, seed=8, nan=0.1)
    k = 120
    want = ort_session(_top_k_model(x, k, 11)).run(None, {"x": x})
    for b in (0, budget, 40):
        values, indices = np.empty((3, k), np.float32), np.empty((3, k), np.int64)
        top_k(x, values, indices, 3, 300, 1, k, True, b, np.empty(300, np.float32), np.empty(300, np.int64))
        np.testing.assert_array_equal(values, want[0])
        np.testing.assert_array_equal(indices, want[1])


def test_top_k_unsorted_selects_the_same_elements():
    """sorted=0 leaves the order open: onnxruntime's follows its selection algorithm, edgekit's is the
    sorted one. Same elements, and edgekit's output equals onnxruntime's sorted=1 output."""
    x = _ties((3, 50), np.float32, seed=6, nan=0.1)
    for largest in (0, 1):
        for k in (2, 10, 40):
            unsorted = _top_k_model(x, k, 11, largest=largest, sorted=0)
            ours = edgekit.InferenceSession(unsorted).run(None, {"x": x})
            theirs = ort_session(unsorted).run(None, {"x": x})
            np.testing.assert_array_equal(np.sort(ours[1], -1), np.sort(theirs[1], -1))
            want = ort_session(_top_k_model(x, k, 11, largest=largest)).run(None, {"x": x})
            for got, w in zip(ours, want):
                np.testing.assert_array_equal(got, w)


def test_symbolic_batch_runs_at_two_sizes():
    inputs = {"x": (["batch", 10], np.float32)}
    arg = make_model([helper.make_node("ArgMax", ["x"], ["y"], axis=-1, keepdims=0)], inputs,
                     {"y": TensorProto.INT64}, opset=13)
    top = _top_k_model(np.zeros((1, 10), np.float32), 3, 11, inputs=inputs)
    arg_session, top_session = edgekit.InferenceSession(arg), edgekit.InferenceSession(top)
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 10)).astype(np.float32)
        assert_matches_ort(arg, {"x": x}, 0, 0, session=arg_session)
        assert_matches_ort(top, {"x": x}, 0, 0, session=top_session)


def test_constant_inputs_fold():
    """ArgMax and TopK of an int64 initializer run at build time (the plan folds them)."""
    c = np.array([[3, 9, 1], [7, 2, 8]], np.int64)
    nodes = [helper.make_node("ArgMax", ["c"], ["a"], axis=1, keepdims=0),
             helper.make_node("TopK", ["c", "k"], ["v", "i"], axis=1),
             helper.make_node("Add", ["x", "a"], ["y"]),
             helper.make_node("ReduceSum", ["v"], ["s"], keepdims=0)]
    x = np.array([10, 20], np.int64)
    outputs = {name: TensorProto.INT64 for name in ("y", "s", "i")}
    model = make_model(nodes, {"x": (x.shape, np.int64)}, outputs, {"c": c, "k": np.array([2], np.int64)}, opset=13)
    assert_matches_ort(model, {"x": x}, 0, 0)


def test_refused_forms_name_the_node():
    x = np.zeros((2, 5), np.float32)
    outputs = {"v": (["b", "k"], np.float32), "i": (["b", "k"], np.int64)}  # no shape to infer
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], name="rank")
    model = make_model([node], {"x": (x.shape, np.float32), "k": ((1,), np.int64)}, outputs, opset=11)
    with pytest.raises(UnsupportedOpError, match=r"node 'rank': TopK \(opset 11\): input 1 \(K\) must be a constant"):
        edgekit.InferenceSession(model).run(None, {"x": x, "k": np.array([2], np.int64)})
    x64 = x.astype(np.float64)
    with pytest.raises(UnsupportedOpError, match=r"node 'rank': ArgMax \(opset 13\): ArgMax on float64"):
        edgekit.InferenceSession(_arg_model("ArgMax", x64, 13)).run(None, {"x": x64})
    too_many = make_model([node], {"x": (x.shape, np.float32)}, outputs, {"k": np.array([6], np.int64)}, opset=11)
    with pytest.raises(ModelError, match="k = 6"):
        edgekit.InferenceSession(too_many).run(None, {"x": x})
