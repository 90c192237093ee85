"""InferenceSession behaviour beyond single kernels: model sources, onnxruntime-compatible metadata,
dynamic dims, dead-node removal, buffer reuse and result ownership (float32, rtol/atol 1e-6)."""
import numpy as np
import onnx
import pytest
from onnx import helper

import edgekit
from oracle import assert_matches_ort, make_model, ort_session

RTOL = ATOL = 1e-6


def chain_model(length: int = 6, dims=("N", 8)) -> onnx.ModelProto:
    ops = ["Relu", "Sigmoid", "Tanh"]
    names = ["x"] + [f"t{i}" for i in range(length - 1)] + ["y"]
    nodes = [helper.make_node(ops[i % 3], [names[i]], [names[i + 1]]) for i in range(length)]
    return make_model(nodes, {"x": (dims, np.float32)}, ["y"])


@pytest.mark.parametrize("source", ["proto", "bytes", "path"])
def test_loads_from_proto_bytes_and_path(source, tmp_path):
    model = chain_model()
    if source == "bytes":
        arg = model.SerializeToString()
    elif source == "path":
        arg = tmp_path / "m.onnx"
        onnx.save(model, arg)
        arg = str(arg)
    else:
        arg = model
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    assert_matches_ort(model, {"x": x}, RTOL, ATOL, session=edgekit.InferenceSession(arg))


def test_metadata_matches_onnxruntime():
    model = chain_model()
    ours, theirs = edgekit.InferenceSession(model), ort_session(model)
    for a, b in zip(ours.get_inputs() + ours.get_outputs(), theirs.get_inputs() + theirs.get_outputs()):
        assert (a.name, a.shape, a.type) == (b.name, b.shape, b.type)


def test_dynamic_batch_and_length_get_their_own_plans():
    model = chain_model(dims=("N", "L"))
    sess = edgekit.InferenceSession(model)
    rng = np.random.default_rng(1)
    for shape in [(1, 5), (3, 5), (3, 40), (1, 5)]:
        x = rng.standard_normal(shape).astype(np.float32)
        assert_matches_ort(model, {"x": x}, RTOL, ATOL, session=sess)
    assert len(sess._plans) == 3


def test_results_are_not_overwritten_by_the_next_run():
    sess = edgekit.InferenceSession(chain_model())
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 8)).astype(np.float32)
    first = sess.run(None, {"x": a})[0]
    kept = first.copy()
    sess.run(None, {"x": -a})
    np.testing.assert_array_equal(first, kept)


def test_buffers_are_reused_along_a_chain():
    sess = edgekit.InferenceSession(chain_model(length=10, dims=(4, 1000)))
    plan = next(iter(sess._plans.values()))
    one_tensor = 4 * 1000 * 4
    assert len(plan.steps) == 10
    # input + output are pinned; the 9 intermediates need only two arenas between them
    assert plan.arena_bytes <= 4 * one_tensor + 4 * 64


def test_dead_nodes_are_removed_even_if_unsupported():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("NoSuchOp", ["x"], ["z"], domain="custom")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)])
    sess = edgekit.InferenceSession(model)
    assert len(next(iter(sess._plans.values())).steps) == 1


def test_output_names_select_and_order_outputs():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["x"], ["b"])]
    model = make_model(nodes, {"x": ((3,), np.float32)}, ["a", "b"])
    x = np.array([-1, 0, 2], np.float32)
    b, a = edgekit.InferenceSession(model).run(["b", "a"], {"x": x})
    np.testing.assert_allclose(a, np.maximum(x, 0))
    np.testing.assert_allclose(b, 1 / (1 + np.exp(-x)), rtol=RTOL)
