"""Layout and shape-plumbing ops against onnxruntime on fresh random inputs.

Copies and views must match exactly (rtol 0, atol 0): Reshape, Flatten, Squeeze, Unsqueeze,
Identity, Dropout, Transpose, Concat, Slice, Pad, Split, Expand, Tile, Gather, Constant, Shape,
Size, ConstantOfShape, Range and Cast, across the opsets where their signatures differ. Also
checks that the PyTorch export chain Shape -> Gather -> Unsqueeze -> Concat -> Reshape folds to
a plan with no run-time steps, and that views and constants need no steps either.
"""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import edgekit
from edgekit.errors import InputError, ModelError, UnsupportedOpError
from oracle import assert_matches_ort, make_model

I64 = np.iinfo(np.int64)


def _rand(rng, shape, dtype=np.float32):
    if np.dtype(dtype).kind in "iu":
        return rng.integers(-1000, 1000, shape).astype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    return (rng.standard_normal(shape) * 3).astype(dtype)


def _check(node, shape, inits=None, opset=17, dtype=np.float32, seed=0, outputs=None, steps=None):
    """Run one node on a random input ``x`` in both engines (exact match); optionally check the
    number of run-time steps in the plan."""
    rng = np.random.default_rng(seed)
    x = _rand(rng, shape, dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    outs = outputs or {o: elem for o in node.output if o}
    model = make_model([node], {"x": (shape, dtype)}, outs, inits, opset)
    session = edgekit.InferenceSession(model)
    got = assert_matches_ort(model, {"x": x}, 0, 0, session=session)
    if steps is not None:
        (plan,) = session._plans.values()
        assert len(plan.steps) == steps
    return got


def _declared_model(nodes, in_shape, out_shape, inits, opset):
    """float32 x -> y with the output shape declared, for graphs where onnx shape inference
    leaves it unknown (make_model would then fail the checker)."""
    graph = helper.make_graph(
        nodes, "declared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


# ---- views ------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [5, 13, 14, 19])
@pytest.mark.parametrize("target", [[0, -1], [-1, 0, 5], [2, 60], [4, 0, 0, 5], [-1]])
def test_reshape_zero_and_minus_one(opset, target):
    node = helper.make_node("Reshape", ["x", "s"], ["y"])
    _check(node, (4, 3, 2, 5), {"s": np.array(target, np.int64)}, opset, steps=0)


def test_reshape_allowzero_keeps_zero_dims():
    node = helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)
    _check(node, (0, 3), {"s": np.array([3, 0], np.int64)}, opset=14)
    _check(node, (6, 4), {"s": np.array([-1, 2, 3], np.int64)}, opset=14, steps=0)


@pytest.mark.parametrize("opset,axis", [(9, 0), (9, 2), (9, 4), (13, -1), (13, -3)])
def test_flatten(opset, axis):
    _check(helper.make_node("Flatten", ["x"], ["y"], axis=axis), (2, 3, 1, 5), opset=opset, steps=0)


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [None, [1], [-1, 1]])
def test_squeeze(opset, axes):
    if opset < 13:
        node = helper.make_node("Squeeze", ["x"], ["y"], **({} if axes is None else {"axes": axes}))
        inits = None
    else:
        node = helper.make_node("Squeeze", ["x"] + ([] if axes is None else ["a"]), ["y"])
        inits = None if axes is None else {"a": np.array(axes, np.int64)}
    _check(node, (3, 1, 4, 1), inits, opset, steps=0)


@pytest.mark.parametrize("opset", [11, 13, 21])
@pytest.mark.parametrize("axes", [[0], [1, -1], [-4, 2, 0]])
def test_unsqueeze(opset, axes):
    if opset < 13:
        node, inits = helper.make_node("Unsqueeze", ["x"], ["y"], axes=axes), None
    else:
        node, inits = helper.make_node("Unsqueeze", ["x", "a"], ["y"]), {"a": np.array(axes, np.int64)}
    _check(node, (3, 4), inits, opset, steps=0)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
def test_identity(dtype):
    _check(helper.make_node("Identity", ["x"], ["y"]), (2, 5), dtype=dtype, steps=0)


@pytest.mark.parametrize("opset", [12, 13, 22])
def test_dropout_inference_with_mask(opset):
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y", "m"])
    inits = {"r": np.float32(0.3), "t": np.array(False)}
    y, m = _check(node, (3, 7), inits, opset, outputs={"y": TensorProto.FLOAT, "m": TensorProto.BOOL})
    assert m.all()
    _check(helper.make_node("Dropout", ["x"], ["y"]), (3, 7), opset=opset, steps=0)


def test_dropout_opset10_mask_is_all_true():
    """onnxruntime leaves opset-10/11 inference masks False; edgekit follows the reference (True)."""
    node = helper.make_node("Dropout", ["x"], ["y", "m"], ratio=0.2)
    model = make_model([node], {"x": ((4, 5), np.float32)}, {"y": TensorProto.FLOAT, "m": TensorProto.BOOL}, opset=10)
    x = _rand(np.random.default_rng(3), (4, 5))
    y, m = edgekit.InferenceSession(model).run(None, {"x": x})
    ry, rm = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_array_equal(y, x)
    assert m.dtype == np.bool_ and np.array_equal(m, rm) and m.all()


def test_dropout_training_mode_is_unsupported():
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y"])
    model = make_model([node], {"x": ((3, 7), np.float32)}, ["y"], {"r": np.float32(0.3), "t": np.array(True)}, 13)
    with pytest.raises(UnsupportedOpError, match="training"):
        edgekit.InferenceSession(model)


# ---- copies -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
@pytest.mark.parametrize("shape,perm", [
    ((5, 7), None), ((2, 3, 4), None), ((2, 3, 4, 5), [0, 2, 3, 1]), ((2, 3, 4, 5), [0, 3, 1, 2]),
    ((3, 1, 4, 1), [1, 0, 3, 2]), ((2, 3, 4, 5, 6), [4, 1, 3, 0, 2]), ((64, 33), [1, 0]),
    # NHWC -> NCHW as Keras exports write it: narrow planes copied by rows (3, 12, 16 channels), then tiles (17)
    ((1, 24, 24, 3), [0, 3, 1, 2]), ((2, 20, 30, 12), [0, 3, 1, 2]), ((3, 9, 10, 16), [0, 3, 1, 2]),
    ((2, 9, 10, 17), [0, 3, 1, 2]),
])
def test_transpose(dtype, shape, perm):
    kw = {} if perm is None else {"perm": perm}
    _check(helper.make_node("Transpose", ["x"], ["y"], **kw), shape, dtype=dtype)


def test_transpose_of_unit_dims_is_a_view():
    _check(helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0, 2]), (1, 6, 4), steps=0)


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_concat_mixes_inputs_and_constants(dtype, axis):
    rng = np.random.default_rng(4)
    shape = [2, 3, 4]
    other = list(shape)
    other[axis] = 5
    third = list(shape)
    third[axis] = 1
    node = helper.make_node("Concat", ["x", "c", "x", "d"], ["y"], axis=axis)
    _check(node, tuple(shape), {"c": _rand(rng, other, dtype), "d": _rand(rng, third, dtype)}, dtype=dtype, steps=1)


def test_concat_of_two_runtime_inputs_and_an_empty_one():
    rng = np.random.default_rng(5)
    a, b = _rand(rng, (2, 3, 5)), _rand(rng, (2, 2, 5))
    node = helper.make_node("Concat", ["a", "e", "b"], ["y"], axis=1)
    model = make_model([node], {"a": (a.shape, np.float32), "b": (b.shape, np.float32)}, ["y"],
                       {"e": np.zeros((2, 0, 5), np.float32)})
    assert_matches_ort(model, {"a": a, "b": b}, 0, 0)


def test_concat_opset4_and_single_input_view():
    _check(helper.make_node("Concat", ["x", "x"], ["y"], axis=0), (2, 3), opset=4)
    _check(helper.make_node("Concat", ["x"], ["y"], axis=1), (2, 3), opset=13, steps=0)


SLICES = [  # starts, ends, axes, steps
    ([1], [3], [0], [1]),
    ([0, 1], [I64.max, -1], [1, 2], [2, 1]),
    ([-1], [I64.min], [1], [-1]),
    ([5, -2], [-100, 0], [0, -1], [-2, -3]),
    ([100], [200], [2], [1]),
    ([2, 1, 0], [0, 9, 7], [0, 1, 2], [-1, 3, 4]),
    ([0], [I64.max], [0], [1]),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES)
@pytest.mark.parametrize("opset", [10, 13])
def test_slice_inputs(opset, starts, ends, axes, steps):
    node = helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"])
    inits = {"s": np.array(starts), "e": np.array(ends), "a": np.array(axes), "t": np.array(steps)}
    _check(node, (4, 6, 7), inits, opset, dtype=np.float32)
    _check(node, (4, 6, 7), inits, opset, dtype=np.int64, seed=1)


def test_slice_defaults_and_int32_params():
    node = helper.make_node("Slice", ["x", "s", "e"], ["y"])
    _check(node, (5, 6), {"s": np.array([1, -4], np.int32), "e": np.array([4, 1000], np.int32)}, 13)
    _check(node, (5, 6), {"s": np.array([0, 0]), "e": np.array([5, 6])}, 13, steps=0)


def test_slice_opset9_attributes():
    node = helper.make_node("Slice", ["x"], ["y"], starts=[1, -3], ends=[3, 100])
    _check(node, (4, 5, 6), opset=9)
    node = helper.make_node("Slice", ["x"], ["y"], starts=[1, -3], ends=[3, 100], axes=[2, 1])
    x = _rand(np.random.default_rng(11), (4, 5, 6))
    assert_matches_ort(_declared_model([node], x.shape, [4, 3, 2], None, 9), {"x": x}, 0, 0)


PADS = [[0, 0, 1, 2, 0, 0, 2, 1], [1, 0, -1, 0, 0, 2, 0, -2], [0, 0, 0, 3, 0, 0, 0, 0],
        [0, 1, -2, 1, 0, 1, 1, -1]]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("pads", PADS)
@pytest.mark.parametrize("opset", [11, 13, 19])
def test_pad_modes_with_negative_pads(mode, pads, opset):
    node = helper.make_node("Pad", ["x", "p", "v"], ["y"], mode=mode)
    inits = {"p": np.array(pads, np.int64), "v": np.float32(-1.5)}
    _check(node, (2, 3, 5, 6), inits, opset)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_opset19_axes_and_int64(mode):
    node = helper.make_node("Pad", ["x", "p", "", "a"], ["y"], mode=mode)
    inits = {"p": np.array([2, -1, 1, 2], np.int64), "a": np.array([-1, 1], np.int64)}
    _check(node, (2, 4, 5), inits, 19, dtype=np.int64)
    _check(node, (2, 4, 5), inits, 19)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_opset2_attributes(mode):
    node = helper.make_node("Pad", ["x"], ["y"], mode=mode, pads=[0, 1, 2, 0, 2, 1], value=0.25)
    _check(node, (2, 4, 5), opset=2)


def test_pad_zero_is_a_view_and_large_reflect_is_unsupported():
    node = helper.make_node("Pad", ["x", "p"], ["y"])
    _check(node, (2, 3), {"p": np.zeros(4, np.int64)}, 13, steps=0)
    node = helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect")
    model = make_model([node], {"x": ((2, 3), np.float32)}, ["y"], {"p": np.array([0, 3, 0, 0], np.int64)}, 13)
    with pytest.raises(UnsupportedOpError, match="reflect"):
        edgekit.InferenceSession(model)


@pytest.mark.parametrize("opset,axis,split,outs", [
    (11, 1, [1, 4, 2], 3), (11, -1, None, 2), (13, 0, [3, 0, 1], 3), (13, 2, None, 3),
    (18, 1, [2, 5], 2), (18, 2, "n", 4), (18, 1, "n", 3),
])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_split(opset, axis, split, outs, dtype):
    names = [f"y{i}" for i in range(outs)]
    kw, ins, inits = {"axis": axis}, ["x"], None
    if split == "n":
        kw["num_outputs"] = outs
    elif split is not None and opset < 13:
        kw["split"] = split
    elif split is not None:
        ins, inits = ["x", "s"], {"s": np.array(split, np.int64)}
    _check(helper.make_node("Split", ins, names, **kw), (4, 7, 6), inits, opset, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
@pytest.mark.parametrize("shape,target", [
    ((3, 1), [2, 3, 4]), ((1, 4, 1), [3, 1, 5]), ((5,), [2, 1, 5]), ((2, 3), [1, 1]), ((2, 1, 3), [2, 4, 3]),
])
def test_expand(dtype, shape, target):
    node = helper.make_node("Expand", ["x", "s"], ["y"])
    _check(node, shape, {"s": np.array(target, np.int64)}, 13, dtype=dtype, steps=0 if shape == (2, 3) else 1)


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
@pytest.mark.parametrize("shape,reps", [((2, 3), [2, 3]), ((3, 1, 4), [1, 5, 2]), ((4,), [3]), ((2, 3), [1, 1])])
def test_tile(dtype, shape, reps):
    node = helper.make_node("Tile", ["x", "r"], ["y"])
    _check(node, shape, {"r": np.array(reps, np.int64)}, 13, dtype=dtype, steps=0 if reps == [1, 1] else 1)


def test_tile_negative_repeats_raise_model_error_naming_the_node():
    """onnxruntime refuses negative repeats; edgekit no longer tiles them into an empty tensor."""
    node = helper.make_node("Tile", ["x", "r"], ["y"], name="tile7")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
                              [numpy_helper.from_array(np.array([-1, 1], np.int64), "r")])
    with pytest.raises(ModelError, match="'tile7'.*non-negative"):
        edgekit.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


@pytest.mark.parametrize("data_dtype", [np.float32, np.int64])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("axis,indices", [
    (0, [[0, -1], [2, 1]]), (1, [3, -4, 0, 3]), (-1, [[-1]]), (2, 1), (-3, -2),
])
def test_gather_with_runtime_and_constant_indices(data_dtype, index_dtype, axis, indices):
    idx = np.array(indices, index_dtype)
    node = helper.make_node("Gather", ["x", "i"], ["y"], axis=axis)
    _check(node, (3, 4, 5), {"i": idx}, 13, dtype=data_dtype)
    rng = np.random.default_rng(6)
    x = _rand(rng, (3, 4, 5), data_dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(data_dtype))
    model = make_model([node], {"x": (x.shape, data_dtype), "i": (idx.shape, index_dtype)}, {"y": elem}, opset=11)
    assert_matches_ort(model, {"x": x, "i": idx}, 0, 0)
    table = helper.make_node("Gather", ["t", "x"], ["y"], axis=axis)  # an embedding lookup: constant data
    model = make_model([table], {"x": (idx.shape, index_dtype)}, {"y": elem}, {"t": x}, opset=13)
    assert_matches_ort(model, {"x": idx}, 0, 0)


@pytest.mark.parametrize("bad", [3, -4])
def test_gather_out_of_range_raises_named_errors(bad):
    """A fed index out of range is bad input (InputError); a constant one is a bad model (ModelError
    naming the node), also when the whole Gather folds at load time."""
    node = helper.make_node("Gather", ["x", "i"], ["y"], name="lookup")
    model = make_model([node], {"x": ((3, 2), np.float32), "i": ((2,), np.int64)}, ["y"])
    with pytest.raises(InputError, match="'lookup' \\(Gather\\).*out of range"):
        edgekit.InferenceSession(model).run(None, {"x": np.zeros((3, 2), np.float32), "i": np.array([0, bad])})
    idx = {"i": np.array([0, bad], np.int64)}
    model = make_model([node], {"x": ((3, 2), np.float32)}, ["y"], idx)
    with pytest.raises(ModelError, match="'lookup'"):
        edgekit.InferenceSession(model)
    table = {"x": np.zeros((3, 2), np.float32)}
    folded = make_model([node, helper.make_node("Relu", ["y", ], ["z"])], {"u": ((1,), np.float32)}, ["z"], {**table, **idx})
    with pytest.raises(ModelError, match="'lookup'"):
        edgekit.InferenceSession(folded)


def test_float16_copy_is_unsupported():
    model = make_model([helper.make_node("Transpose", ["x"], ["y"])], {"x": ((2, 3), np.float16)},
                       {"y": TensorProto.FLOAT16})
    with pytest.raises(UnsupportedOpError, match="float16"):
        edgekit.InferenceSession(model)


# ---- constants, shape queries and casts --------------------------------------------------


@pytest.mark.parametrize("attr,value", [
    ("value", helper.make_tensor("t", TensorProto.INT32, [2, 2], [1, -2, 3, 4])),
    ("value_float", 2.5), ("value_floats", [1.5, -2.0]),
    ("value_int", -7), ("value_ints", [3, 0, 9]),
])
def test_constant_attributes(attr, value):
    node = helper.make_node("Constant", [], ["c"], **{attr: value})
    add = helper.make_node("Identity", ["c"], ["y"])
    out_type = {"value": TensorProto.INT32, "value_float": TensorProto.FLOAT, "value_floats": TensorProto.FLOAT}
    model = make_model([node, add], {"x": ((1,), np.float32)}, {"y": out_type.get(attr, TensorProto.INT64)}, opset=13)
    assert_matches_ort(model, {"x": np.zeros(1, np.float32)}, 0, 0)


@pytest.mark.parametrize("opset,start,end", [(13, None, None), (15, 1, None), (15, -3, -1), (15, 2, 100), (19, -9, 1)])
def test_shape(opset, start, end):
    kw = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    node = helper.make_node("Shape", ["x"], ["y"], **kw)
    _check(node, (2, 3, 4, 5), opset=opset, outputs={"y": TensorProto.INT64}, steps=0)


@pytest.mark.parametrize("opset", [1, 13, 19])
def test_size(opset):
    _check(helper.make_node("Size", ["x"], ["y"]), (2, 3, 4, 5), opset=opset, outputs={"y": TensorProto.INT64}, steps=0)


@pytest.mark.parametrize("value,out_type", [
    (None, TensorProto.FLOAT), (helper.make_tensor("v", TensorProto.INT64, [1], [7]), TensorProto.INT64),
    (helper.make_tensor("v", TensorProto.FLOAT, [1], [-0.5]), TensorProto.FLOAT),
    (helper.make_tensor("v", TensorProto.BOOL, [1], [True]), TensorProto.BOOL),
])
def test_constant_of_shape_from_shape(value, out_type):
    kw = {} if value is None else {"value": value}
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("ConstantOfShape", ["s"], ["y"], **kw)]
    model = make_model(nodes, {"x": ((2, 3), np.float32)}, {"y": out_type}, opset=13)
    session = edgekit.InferenceSession(model)
    assert_matches_ort(model, {"x": _rand(np.random.default_rng(7), (2, 3))}, 0, 0, session=session)
    assert all(not p.steps for p in session._plans.values())


@pytest.mark.parametrize("dtype,start,limit,delta", [
    (np.int64, 2, 17, 3), (np.int64, 10, -5, -4), (np.int32, 0, 0, 1), (np.float32, 0.1, 7.3, 0.0173),
    (np.float32, 5.0, 1.0, -0.7), (np.float64, -1.0, 1.0, 0.3),
])
def test_range(dtype, start, limit, delta):
    node = helper.make_node("Range", ["s", "l", "d"], ["y"])
    inits = {"s": np.array(start, dtype), "l": np.array(limit, dtype), "d": np.array(delta, dtype)}
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = make_model([node], {"x": ((1,), np.float32)}, {"y": elem}, inits, opset=11)
    assert_matches_ort(model, {"x": np.zeros(1, np.float32)}, 0, 0)


CAST_TYPES = [np.float32, np.float64, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.int64, np.bool_, np.float16]


def _cast_input(rng, dtype):
    x = (rng.standard_normal(200) * 40).astype(np.float64)
    x[:12] = [0.0, -0.0, 0.5, -1.5, 2.5, 65504.0, 65519.0, 65520.0, 1e5, 6e-8, 3e-5, -2.9e-8]
    x[12:23] = [np.nan, np.inf, -np.inf, 300.7, -128.9, 255.5, -0.9, 3e9, -2147483648.5, 2147483648.0, 1e19]
    if np.dtype(dtype).kind == "f":
        with np.errstate(over="ignore"):  # 65520 and 1e5 overflow float16 on purpose
            return x.astype(dtype)
    return _rand(rng, (200,), dtype)


@pytest.mark.parametrize("src", CAST_TYPES)
@pytest.mark.parametrize("dst", CAST_TYPES)
def test_cast_runtime_and_folded(src, dst):
    rng = np.random.default_rng(8)
    x = _cast_input(rng, src)
    to = helper.np_dtype_to_tensor_dtype(np.dtype(dst))
    model = make_model([helper.make_node("Cast", ["x"], ["y"], to=to)], {"x": (x.shape, src)}, {"y": to}, opset=13)
    assert_matches_ort(model, {"x": x}, 0, 0)
    folded = make_model([helper.make_node("Cast", ["c"], ["y"], to=to)], {"x": ((1,), np.float32)}, {"y": to},
                        {"c": x}, opset=19)
    session = edgekit.InferenceSession(folded)
    assert_matches_ort(folded, {"x": np.zeros(1, np.float32)}, 0, 0, session=session)
    assert all(not p.steps for p in session._plans.values())


def test_cast_float_specials_to_half():
    x = np.array([np.nan, np.inf, -np.inf, 1e-10, -7e4, 65504.0, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26], np.float32)
    model = make_model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT16)],
                       {"x": (x.shape, np.float32)}, {"y": TensorProto.FLOAT16})
    y = edgekit.InferenceSession(model).run(None, {"x": x})[0]
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(y, x.astype(np.float16))
    assert_matches_ort(model, {"x": x}, 0, 0)


def test_castlike():
    node = helper.make_node("CastLike", ["x", "t"], ["y"])
    _check(node, (3, 4), {"t": np.zeros(1, np.int32)}, 15, outputs={"y": TensorProto.INT32})
    _check(node, (3, 4), {"t": np.zeros(1, np.float32)}, 15, steps=0)


# ---- folding of exporter shape chains -----------------------------------------------------


def test_pytorch_shape_chain_folds_to_one_view():
    """x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape, no run-time step."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = {"zero": np.array(0, np.int64), "axes": np.array([0], np.int64), "minus1": np.array([-1], np.int64)}
    model = _declared_model(nodes, ["batch", 3, 4, 5], ["batch", 60], inits, 13)
    session = edgekit.InferenceSession(model)
    rng = np.random.default_rng(9)
    for batch in (2, 5):
        assert_matches_ort(model, {"x": _rand(rng, (batch, 3, 4, 5))}, 0, 0, session=session)
    assert len(session._plans) == 2
    assert all(p.steps == [] for p in session._plans.values())


def test_shape_slice_cast_range_chain_folds():
    """Shape -> Slice -> Squeeze -> Cast -> Range -> Cast -> Expand on static shapes: all folded."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "one", "two"], ["s1"]),
        helper.make_node("Squeeze", ["s1"], ["n"]),
        helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.INT32),
        helper.make_node("Range", ["z", "nf", "step"], ["r"]),
        helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
        helper.make_node("Shape", ["x"], ["full"]),
        helper.make_node("Expand", ["rf", "full"], ["y"]),
    ]
    inits = {"one": np.array([1]), "two": np.array([2]), "z": np.array(0, np.int32), "step": np.array(1, np.int32)}
    x = _rand(np.random.default_rng(10), (2, 6, 6))
    model = make_model(nodes, {"x": (x.shape, np.float32)}, ["y"], inits, opset=13)
    session = edgekit.InferenceSession(model)
    assert_matches_ort(model, {"x": x}, 0, 0, session=session)
    (plan,) = session._plans.values()
    assert plan.steps == []


def test_dynamic_reshape_target_is_unsupported():
    node = helper.make_node("Reshape", ["x", "s"], ["y"])
    model = make_model([node], {"x": ((2, 3), np.float32), "s": ((2,), np.int64)}, ["y"])
    with pytest.raises(UnsupportedOpError, match="shape"):
        edgekit.InferenceSession(model)
