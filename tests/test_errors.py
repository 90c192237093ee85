"""Bad models and bad inputs raise edgekit's named errors with useful messages, never a crash."""
import numpy as np
import onnx
import pytest
from onnx import helper

import edgekit
from edgekit.errors import InputError, ModelError, UnsupportedOpError
from oracle import make_model


@pytest.fixture
def relu_model():
    return make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": ((2, 3), np.float32)}, ["y"])


def test_every_unsupported_op_is_listed_at_once():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="ok"),
        helper.make_node("Frobnicate", ["a"], ["b"], name="first_bad", domain="acme"),
        helper.make_node("Twiddle", ["b"], ["y"], name="second_bad", domain="acme"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 3)])
    with pytest.raises(UnsupportedOpError) as info:
        edgekit.InferenceSession(model)
    message = str(info.value)
    for expected in ("first_bad", "Frobnicate", "second_bad", "Twiddle", "opset 3"):
        assert expected in message
    assert len(info.value.unsupported) == 2


def test_truncated_file_raises_model_error(relu_model, tmp_path):
    path = tmp_path / "cut.onnx"
    path.write_bytes(relu_model.SerializeToString()[:-7])
    with pytest.raises(ModelError):
        edgekit.InferenceSession(str(path))


@pytest.mark.parametrize("data", [b"", b"\x00\x01garbage\xff" * 10, b"not an onnx model at all"])
def test_garbage_bytes_raise_model_error(data):
    with pytest.raises(ModelError):
        edgekit.InferenceSession(data)


def test_missing_file_and_wrong_type_raise_model_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        edgekit.InferenceSession(str(tmp_path / "nope.onnx"))
    with pytest.raises(ModelError):
        edgekit.InferenceSession(12345)


def _external_model(tmp_path):
    """A MatMul whose random weight lives in w.bin next to m.onnx, and a feed for it."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((16, 16)).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": ((2, 16), np.float32)}, ["y"], {"w": w})
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    return tmp_path / "m.onnx", w, rng.standard_normal((2, 16)).astype(np.float32)


def test_external_data_loads_from_the_model_path(tmp_path):
    path, w, x = _external_model(tmp_path)
    np.testing.assert_allclose(edgekit.InferenceSession(str(path)).run(None, {"x": x})[0], x @ w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("damage", ["missing", "short", "outside"])
def test_broken_external_data_raises_model_error(damage, tmp_path):
    path, _, _ = _external_model(tmp_path)
    if damage == "missing":
        (tmp_path / "w.bin").unlink()
    elif damage == "short":
        (tmp_path / "w.bin").write_bytes(b"\0" * 10)
    else:
        model = onnx.load(path, load_external_data=False)
        next(e for e in model.graph.initializer[0].external_data if e.key == "location").value = "../w.bin"
        onnx.save(model, path)
    with pytest.raises(ModelError, match="external data"):
        edgekit.InferenceSession(str(path))


def test_external_data_without_a_path_raises_model_error_saying_so(tmp_path):
    path, _, _ = _external_model(tmp_path)
    for source in (path.read_bytes(), onnx.load(path, load_external_data=False)):
        with pytest.raises(ModelError, match="external data.*path"):
            edgekit.InferenceSession(source)


def test_model_failing_the_checker_raises_model_error():
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node, node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    with pytest.raises(ModelError, match="checker"):
        edgekit.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_inputs_and_outputs_of_unknown_rank_load_and_the_rest_is_still_checked():
    """A graph input/output type without a shape (onnxruntime runs it; onnx.checker refuses it)."""
    from oracle import ort_session

    relu = helper.make_node("Relu", ["x"], ["y"])
    unknown = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph([relu], "g", unknown[:1], unknown[1:]),
                              opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(edgekit.InferenceSession(model).run(None, {"x": x})[0],
                                  ort_session(model).run(None, {"x": x})[0])
    twice = helper.make_model(helper.make_graph([relu, relu], "g", unknown[:1], unknown[1:]),
                              opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError, match="checker"):
        edgekit.InferenceSession(twice)


def test_inputs_a_dynamic_model_cannot_run_on_are_input_errors():
    """Shapes the declared dims allow but the graph's arithmetic does not (once a ModelError)."""
    add = make_model([helper.make_node("Add", ["a", "b"], ["y"], name="add")],
                     {"a": ((2, "N"), np.float32), "b": ((2, "M"), np.float32)}, ["y"])
    session = edgekit.InferenceSession(add)
    with pytest.raises(InputError, match=r"inputs of shapes a \(2, 3\), b \(2, 4\): node 'add' \(Add\)"):
        session.run(None, {"a": np.ones((2, 3), np.float32), "b": np.ones((2, 4), np.float32)})
    np.testing.assert_array_equal(session.run(None, {"a": np.ones((2, 3), np.float32), "b": np.ones((2, 3), np.float32)})[0],
                                  np.full((2, 3), 2, np.float32))  # (still usable)
    reshape = make_model([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")], {"x": (("N",), np.float32)}, ["y"],
                         {"s": np.array([-1, 6], np.int64)})
    with pytest.raises(InputError, match=r"5 values of shape \(5,\) do not divide into shape \[-1, 6\]"):
        edgekit.InferenceSession(reshape).run(None, {"x": np.ones(5, np.float32)})


def test_unsupported_ops_each_have_a_reason():
    nodes = [helper.make_node("Det", ["x"], ["y"], name="d"),
             helper.make_node("Foo", ["x"], ["z"], domain="com.acme", name="f"),
             helper.make_node("Bar", ["x"], ["w"], domain="ai.edgekit", name="b")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, [2, 2]) for o in "yzw"])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in
                                                    (("", 17), ("com.acme", 1), ("ai.edgekit", 1))])
    with pytest.raises(UnsupportedOpError) as refused:
        edgekit.InferenceSession(model)
    assert [why for *_, why in refused.value.unsupported] == [
        "not implemented", "edgekit implements no ops of domain 'com.acme'", "not an op of domain 'ai.edgekit'"]
    assert "Run `edgekit ops`" in str(refused.value)


def test_loading_refuses_an_unknown_opset_and_a_directory(tmp_path):
    relu = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                             [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                             [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    with pytest.raises(ModelError, match="imports ONNX opset 99; the newest"):
        edgekit.InferenceSession(helper.make_model(relu, opset_imports=[helper.make_opsetid("", 99)]))
    with pytest.raises(ModelError, match="is a directory"):
        edgekit.InferenceSession(str(tmp_path))


def test_an_output_without_a_type_loads_and_feeding_an_initializer_is_explained():
    untyped = onnx.ValueInfoProto()
    untyped.name = "y"
    graph = helper.make_graph([helper.make_node("Add", ["x", "b"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])], [untyped],
                              [onnx.numpy_helper.from_array(np.ones(2, np.float32), "b")])
    session = edgekit.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.random.default_rng(3).standard_normal(2).astype(np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], x + 1)
    with pytest.raises(InputError, match=r"\['b'\] are initializers, which edgekit folds into its plans"):
        session.run(None, {"x": x, "b": x})


def group_norm_18(extra: list | None = None) -> onnx.ModelProto:
    """GroupNormalization at opset 18 (its schema is marked deprecated there; onnxruntime runs it)."""
    rng = np.random.default_rng(0)
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2, name="gn")
    inits = [onnx.numpy_helper.from_array(rng.standard_normal(2).astype(np.float32), n) for n in ("s", "b")]
    graph = helper.make_graph([node] + (extra or []), "g", [helper.make_tensor_value_info("x", 1, [2, 4, 5])],
                              [helper.make_tensor_value_info("y", 1, [2, 4, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_an_op_deprecated_at_its_opset_loads_and_the_rest_is_still_checked():
    from oracle import ort_session

    model = group_norm_18()
    x = np.random.default_rng(1).standard_normal((2, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(edgekit.InferenceSession(model).run(None, {"x": x})[0],
                               ort_session(model).run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)
    twice = group_norm_18([helper.make_node("Relu", ["x"], ["y"])])  # y written twice
    with pytest.raises(ModelError, match="checker"):
        edgekit.InferenceSession(twice)
    node = helper.make_node("Upsample", ["x", "s"], ["y"])  # deprecated from opset 10; onnxruntime refuses it there
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", 1, [1, 1, 4, 4])],
                              [onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")])
    with pytest.raises(ModelError, match="checker"):
        edgekit.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]))


@pytest.mark.parametrize("feed,pattern", [
    ({"z": np.zeros((2, 3), np.float32)}, "unknown \\['z'\\], missing \\['x'\\]"),
    ({}, "missing \\['x'\\]"),
    ({"x": np.zeros((2, 3), np.float64)}, "expects dtype float32, got float64"),
    ({"x": np.zeros((2, 4), np.float32)}, "expects shape \\[2, 3\\], got \\[2, 4\\]"),
    ({"x": np.zeros((2, 3, 1), np.float32)}, "rank 2"),
    ([np.zeros((2, 3), np.float32)], "must be a dict"),
    ({"x": np.ma.masked_less(np.arange(6, dtype=np.float32).reshape(2, 3), 2)}, "'x' is a masked array"),
])
def test_bad_inputs_raise_input_error_naming_the_input(relu_model, feed, pattern):
    sess = edgekit.InferenceSession(relu_model)
    with pytest.raises(InputError, match=pattern):
        sess.run(None, feed)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix, on purpose
def test_array_subclasses_without_hidden_values_run_as_plain_arrays(relu_model):
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    sess = edgekit.InferenceSession(relu_model)
    for same in (np.ma.masked_array(x), np.asmatrix(x)):
        (y,) = sess.run(None, {"x": same})
        assert type(y) is np.ndarray
        np.testing.assert_array_equal(y, np.maximum(x, 0))


def test_nan_inputs_propagate_by_default_and_are_refused_when_asked(relu_model):
    """NaN/Inf flow through (a Relu of NaN is NaN); with allow_nan=False the first one is named in the error."""
    x = np.random.default_rng(6).standard_normal((2, 3)).astype(np.float32)
    x[1, 2] = np.nan
    (y,) = edgekit.InferenceSession(relu_model).run(None, {"x": x})
    assert np.isnan(y[1, 2]) and np.array_equal(y[~np.isnan(x)], np.maximum(x[~np.isnan(x)], 0))
    strict = edgekit.InferenceSession(relu_model, allow_nan=False)
    with pytest.raises(InputError, match=r"'x' holds nan at index \(1, 2\).*allow_nan=False"):
        strict.run(None, {"x": x})
    x[1, 2] = -np.inf
    with pytest.raises(InputError, match=r"'x' holds -inf at index \(1, 2\)"):
        strict.run(None, {"x": x})
    x[1, 2] = 1.5
    (y,) = strict.run(None, {"x": x})
    assert np.array_equal(y, np.maximum(x, 0))


def test_inconsistent_symbolic_dims_raise_input_error():
    node = helper.make_node("Relu", ["a"], ["y"])
    model = make_model([node, helper.make_node("Relu", ["b"], ["z"])],
                       {"a": (("N", 3), np.float32), "b": (("N", 3), np.float32)}, ["y", "z"])
    with pytest.raises(InputError, match="'N' is 2 here but 1"):
        edgekit.InferenceSession(model).run(None, {"a": np.zeros((1, 3), np.float32), "b": np.zeros((2, 3), np.float32)})


def test_unknown_output_name_raises_input_error(relu_model):
    with pytest.raises(InputError, match="not an output"):
        edgekit.InferenceSession(relu_model).run(["nope"], {"x": np.zeros((2, 3), np.float32)})


def test_oversized_request_raises_input_error_before_allocating():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (("N", 4), np.float32)}, ["y"])
    sess = edgekit.InferenceSession(model)
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=(2**29, 4), strides=(0, 0))
    with pytest.raises(InputError, match="GiB"):
        sess.run(None, {"x": huge})
    assert sess.run(None, {"x": np.ones((1, 4), np.float32)})[0].shape == (1, 4)
