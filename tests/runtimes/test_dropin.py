"""``import edgekit as ort`` in onnxruntime code: the same calls run on both modules and behave alike.

Module API (options objects, enums, providers, device), session methods (options, providers,
overridable initializers, profiling, run_async, OrtValues), feeds onnxruntime converts (lists, non-native
byte order), a str for output_names, and outputs declared without type or shape. Results agree with
onnxruntime's to rtol/atol 1e-6 (float32); where edgekit differs on purpose the test says why.
"""
import threading

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

import edgekit
from oracle import make_model

ENGINES = [onnxruntime, edgekit]
RTOL = ATOL = 1e-6


def session(engine, model: onnx.ModelProto, options=None):
    return engine.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def relu_model(dtype=np.float32, shape=("N", 3)) -> onnx.ModelProto:
    return make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (shape, dtype)},
                      {"y": (shape, dtype)})


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_module_api_as_onnxruntime_users_call_it(engine):
    opts = engine.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.execution_mode = engine.ExecutionMode.ORT_PARALLEL
    opts.graph_optimization_level = engine.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    run_opts = engine.RunOptions()
    run_opts.log_severity_level = 3
    assert engine.get_device() == "CPU"
    providers = engine.get_available_providers()
    assert providers and all(isinstance(p, str) for p in providers)

    sess = session(engine, relu_model(), opts)
    got = sess.get_session_options()
    assert (got.intra_op_num_threads, got.log_severity_level) == (2, 3)
    assert got.graph_optimization_level == engine.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert got.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert set(sess.get_provider_options()) == set(sess.get_providers())
    x = np.array([[-1.0, 0.5, 2.0]], np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x}, run_opts)[0], np.maximum(x, 0))


def test_enums_have_onnxruntime_values_and_ort_options_are_read():
    for name in onnxruntime.GraphOptimizationLevel.__members__:
        assert int(edgekit.GraphOptimizationLevel[name]) == int(onnxruntime.GraphOptimizationLevel.__members__[name])
    for name in onnxruntime.ExecutionMode.__members__:
        assert int(edgekit.ExecutionMode[name]) == int(onnxruntime.ExecutionMode.__members__[name])
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 3
    opts.execution_mode = onnxruntime.ExecutionMode.ORT_PARALLEL
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    got = session(edgekit, relu_model(), opts).get_session_options()
    assert got.intra_op_num_threads == 3
    assert got.execution_mode == edgekit.ExecutionMode.ORT_PARALLEL  # kept as set, though edgekit runs sequentially
    assert got.graph_optimization_level == edgekit.GraphOptimizationLevel.ORT_ENABLE_BASIC


def test_options_refuse_unknown_fields_and_outputs_edgekit_cannot_give():
    with pytest.raises(AttributeError, match="intra_op_num_threads"):
        edgekit.SessionOptions().intra_op_num_thread = 1  # a typo is an error, not a silent no-op
    for field, value in [("enable_profiling", True), ("optimized_model_filepath", "opt.onnx")]:
        opts = onnxruntime.SessionOptions()
        setattr(opts, field, value)
        with pytest.raises(edgekit.UnsupportedAPIError, match=field):
            session(edgekit, relu_model(), opts)


def test_run_options_terminate_refuses_the_run():
    opts = edgekit.RunOptions()
    opts.terminate = True
    with pytest.raises(edgekit.InputError, match="terminate"):
        session(edgekit, relu_model(), None).run(None, {"x": np.ones((1, 3), np.float32)}, opts)


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_profiling_and_provider_calls(engine):
    sess = session(engine, relu_model())
    assert sess.end_profiling() == ""  # profiling was not enabled
    assert sess.get_profiling_start_time_ns() == 0
    sess.set_providers(["CPUExecutionProvider"])
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x)


def test_other_providers_warn_and_run_on_the_cpu_in_the_constructor_and_set_providers():
    """As onnxruntime warns and falls back to its CPU provider; a str is not a list of providers."""
    with pytest.warns(UserWarning, match="CPU only"):
        sess = edgekit.InferenceSession(relu_model(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.warns(UserWarning, match="CPU only"):
        sess.set_providers([("CUDAExecutionProvider", {"device_id": 0})])
    for call in (lambda: sess.set_providers("CPUExecutionProvider"),
                 lambda: edgekit.InferenceSession(relu_model(), providers="CPUExecutionProvider")):
        with pytest.raises(TypeError, match="list of provider names"):
            call()
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x)


def test_other_onnxruntime_options_methods_are_refused_by_name():
    opts = edgekit.SessionOptions()
    assert opts.execution_order == edgekit.ExecutionOrder.DEFAULT
    for name in ("register_custom_ops_library", "add_initializer", "add_free_dimension_override_by_name"):
        with pytest.raises(edgekit.UnsupportedAPIError, match=name):
            getattr(opts, name)
    with pytest.raises(AttributeError):
        opts.no_such_method
    ort_opts = onnxruntime.SessionOptions()
    ort_opts.execution_order = onnxruntime.ExecutionOrder.PRIORITY_BASED
    got = session(edgekit, relu_model(), ort_opts).get_session_options()
    assert got.execution_order == edgekit.ExecutionOrder.PRIORITY_BASED


def test_overridable_initializers_are_listed_but_not_fed():
    model = make_model([helper.make_node("Add", ["x", "w"], ["y"])], {"x": ([2, 3], np.float32)}, ["y"],
                       {"w": np.array([1, 2, 3], np.float32)})
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [3]))
    ort_sess, ek_sess = session(onnxruntime, model), session(edgekit, model)
    as_tuples = lambda args: [(a.name, a.shape, a.type) for a in args]  # noqa: E731
    assert as_tuples(ek_sess.get_overridable_initializers()) == as_tuples(ort_sess.get_overridable_initializers())
    assert as_tuples(ek_sess.get_inputs()) == as_tuples(ort_sess.get_inputs())
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(ek_sess.run(None, {"x": x})[0], ort_sess.run(None, {"x": x})[0])
    with pytest.raises(edgekit.InputError, match="initializers"):  # edgekit folds w into its plan
        ek_sess.run(None, {"x": x, "w": np.zeros(3, np.float32)})


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_run_async_calls_back_with_results_or_the_error(engine):
    sess = session(engine, relu_model(shape=[2, 3]))
    done, got = threading.Event(), []

    def callback(results, user_data, err):
        got.append((results, user_data, err, threading.current_thread() is threading.main_thread()))
        done.set()

    x = np.array([[-1, 0, 1], [2, -3, 4]], np.float32)
    assert sess.run_async(None, {"x": x}, callback, "mine") is None
    assert done.wait(60)
    results, user_data, err, on_main = got.pop()
    np.testing.assert_array_equal(results[0], np.maximum(x, 0))
    assert (user_data, err, on_main) == ("mine", "", False)
    done.clear()
    sess.run_async(None, {"x": np.ones((2, 4), np.float32)}, callback, "mine")
    assert done.wait(60)
    results, user_data, err, _ = got.pop()
    assert results == [] and user_data == "mine" and "3" in err and "4" in err
    done.clear()
    sess.run_async(["nope"], {"x": x}, callback, "mine")  # a bad output name also reaches the callback
    assert done.wait(60)
    results, _, err, _ = got.pop()
    assert results == [] and "nope" in err


def test_run_with_ort_values_round_trips():
    sess = session(edgekit, relu_model())
    x = np.array([[-1.0, 2.0, -3.0]], np.float32)
    (y,) = sess.run_with_ort_values(None, {"x": onnxruntime.OrtValue.ortvalue_from_numpy(x)})
    assert isinstance(y, onnxruntime.OrtValue)
    np.testing.assert_array_equal(y.numpy(), np.maximum(x, 0))


def test_io_binding_is_refused_naming_run():
    sess = session(edgekit, relu_model())
    for call in [lambda: sess.io_binding(), lambda: sess.run_with_iobinding(None)]:
        with pytest.raises(edgekit.UnsupportedAPIError, match=r"run\(output_names, input_feed\)"):
            call()


@pytest.mark.parametrize("dtype, value", [
    (np.float32, [[1, 2, 3], [-4, 5, 6]]),  # ints to a float input
    (np.float32, [[1.5, 2.0, 3.0], [-4.0, 5.0, 6.25]]),
    (np.float32, [[True, False, True], [False, True, False]]),
    (np.int64, [[1, -2, 3], [2 ** 40, 5, 6]]),
    (np.int64, [[1.7, -2.2, 3.0], [4.0, 5.0, 6.0]]),  # floats to an int input truncate, as onnxruntime
    (np.int32, [[1, -2, 3], [4, 5, 6]]),
    (np.bool_, [[1, 0, 1], [0, 0, 1]]),
])
def test_lists_are_converted_to_the_declared_dtype(dtype, value):
    model = make_model([helper.make_node("Identity", ["x"], ["y"])], {"x": ([2, 3], dtype)}, {"y": ([2, 3], dtype)})
    expected = session(onnxruntime, model).run(None, {"x": value})[0]
    got = session(edgekit, model).run(None, {"x": value})[0]
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype, value", [(np.int32, [[2 ** 40, 0, 0], [0, 0, 0]]), (np.float32, [["a"] * 3] * 2),
                                          (np.float32, [[1.0], [2.0, 3.0]])])
def test_lists_that_do_not_convert_are_refused_by_both(dtype, value):
    model = make_model([helper.make_node("Identity", ["x"], ["y"])], {"x": ([2, 3], dtype)}, {"y": ([2, 3], dtype)})
    with pytest.raises(RuntimeError):
        session(onnxruntime, model).run(None, {"x": value})
    with pytest.raises(edgekit.InputError, match="cannot convert"):
        session(edgekit, model).run(None, {"x": value})


def test_python_scalars_feed_a_0d_input():
    """onnxruntime refuses a Python scalar; edgekit takes it as a 0-d array of the input's dtype."""
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": ([], np.float32)}, {"y": ([], np.float32)})
    (got,) = session(edgekit, model).run(None, {"x": -2})
    assert got.dtype == np.float32 and got.shape == () and got == 0


def test_non_native_byte_order_is_converted():
    """onnxruntime reads a big-endian array's bytes as native; edgekit converts it first, so it computes
    what onnxruntime computes on the same values in native order."""
    model = relu_model()
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    expected = session(onnxruntime, model).run(None, {"x": x})[0]
    got = session(edgekit, model).run(None, {"x": x.astype(">f4")})[0]
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    with pytest.raises(edgekit.InputError, match="dtype"):  # a wrong dtype stays an error in any byte order
        session(edgekit, model).run(None, {"x": x.astype(">f8")})
    with pytest.raises(edgekit.InputError, match="dtype"):
        session(edgekit, model).run(None, {"x": x.astype(np.float64)})


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_a_str_for_output_names_is_a_type_error(engine):
    sess = session(engine, relu_model())
    with pytest.raises(TypeError):
        sess.run("y", {"x": np.ones((1, 3), np.float32)})


def test_str_output_names_error_says_what_to_pass():
    with pytest.raises(TypeError, match=r"\['y'\]"):
        session(edgekit, relu_model()).run("y", {"x": np.ones((1, 3), np.float32)})


def test_outputs_declared_without_type_or_shape_show_the_inferred_ones():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Add", ["x", "x"], ["z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, None])],
        [helper.make_empty_tensor_value_info("y"), helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    as_tuples = lambda s: [(a.name, a.shape, a.type) for a in s.get_outputs()]  # noqa: E731
    expected = as_tuples(session(onnxruntime, model))
    assert expected == [("y", ["N", 3, None], "tensor(float)"), ("z", ["N", 3, None], "tensor(float)")]
    assert as_tuples(session(edgekit, model)) == expected
