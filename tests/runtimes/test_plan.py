"""runtimes/plan.py: a node reading a string input, or a string input no node reads, is refused (UnsupportedOpError
naming node and input); a shape whose size overflows int64 is refused (InputError); a node reading two outputs of
one node runs once, in order (as onnxruntime); a kernel that refuses the values of a run (a
data-dependent check inside it) raises InputError naming the node and op, and the session runs
again afterwards with results equal to onnxruntime's; a tensor read only inside a subgraph (If branch) is an
input of its node, kept alive and not overwritten before it (tolerances in each test)."""
import numpy as np
import onnx
import pytest
from onnx import helper

import edgekit
from edgekit.errors import InputError, UnsupportedOpError
from oracle import assert_matches_ort, make_model


def lstm_with_fed_lengths() -> tuple:
    rng = np.random.default_rng(0)
    hidden, features = 4, 3
    node = helper.make_node("LSTM", ["x", "w", "r", "", "lens"], ["y"], hidden_size=hidden, name="encoder")
    inits = {"w": rng.standard_normal((1, 4 * hidden, features)).astype(np.float32),
             "r": rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32)}
    model = make_model([node], {"x": ((5, 2, features), np.float32), "lens": ((2,), np.int32)},
                       {"y": ((5, 1, 2, hidden), np.float32)}, inits, opset=14)
    return model, rng.standard_normal((5, 2, features)).astype(np.float32)


def test_a_kernel_refusal_names_the_node_and_the_session_recovers():
    model, x = lstm_with_fed_lengths()
    session = edgekit.InferenceSession(model)
    with pytest.raises(InputError, match=r"node 'encoder' \(LSTM\)"):
        session.run(None, {"x": x, "lens": np.array([5, 9], np.int32)})
    assert_matches_ort(model, {"x": x, "lens": np.array([5, 3], np.int32)}, rtol=1e-5, atol=1e-6, session=session)


def test_a_node_reading_two_outputs_of_one_node():
    nodes = [helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2, name="split"),
             helper.make_node("Mul", ["a", "b"], ["y"], name="mul")]
    model = make_model(nodes, {"x": ((3, 8), np.float32)}, ["y"], opset=18)
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    assert_matches_ort(model, {"x": x}, rtol=0, atol=0)


def test_string_inputs_and_overflowing_shapes_are_refused_by_name():
    nodes = [helper.make_node("Identity", ["s"], ["t"])]
    strings = make_model(nodes, {"s": ((2,), np.str_)}, {"t": onnx.TensorProto.STRING})
    with pytest.raises(UnsupportedOpError, match="input 's' is a string tensor"):
        edgekit.InferenceSession(strings)
    passed_on = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": ((2,), np.float32), "s": ((2,), np.str_)},
                           {"y": ((2,), np.float32), "s": ((2,), np.str_)})
    with pytest.raises(UnsupportedOpError, match="'s': graph input .*a string tensor"):
        edgekit.InferenceSession(passed_on)
    huge = 2**31  # (2**32, 2**32), 2**64 elements: int64 size arithmetic would wrap to 0 bytes
    tile = make_model([helper.make_node("Tile", ["x", "repeats"], ["y"])], {"x": ((2, 2), np.float32)}, ["y"],
                      {"repeats": np.array([huge, huge], np.int64)})
    with pytest.raises(InputError, match="GiB"):
        edgekit.InferenceSession(tile)


def test_tensors_read_only_inside_a_subgraph_are_kept_alive_as_inputs_of_its_node():
    """t is read only by the If's then-branch: the node producing it is not dead, the If lists it as an input
    (Node.implicit), and u, computed while t waits for the If, does not take t's buffer."""
    then_g = helper.make_graph([helper.make_node("Add", ["t", "u"], ["a"])], "then", [],
                               [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [2, 3])])
    else_g = helper.make_graph([helper.make_node("Neg", ["u"], ["b"])], "else", [],
                               [helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [2, 3])])
    nodes = [helper.make_node("Tanh", ["x"], ["t"], name="tanh"), helper.make_node("Exp", ["x"], ["u"], name="exp"),
             helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g, name="pick")]
    model = make_model(nodes, {"x": ((2, 3), np.float32), "c": ((), np.bool_)}, {"y": ((2, 3), np.float32)})
    session = edgekit.InferenceSession(model)
    pick = next(n for n in session.prepared.nodes if n.op_type == "If")
    assert sorted(pick.implicit) == ["t", "u"] and pick.inputs == ["c", *pick.implicit]
    assert [n.name for n in session.prepared.nodes] == ["tanh", "exp", "pick"]
    rng = np.random.default_rng(7)
    for c in (True, False):
        x = rng.standard_normal((2, 3)).astype(np.float32)
        assert_matches_ort(model, {"x": x, "c": np.array(c)}, rtol=1e-6, atol=1e-6, session=session)
    tensors = session.plan(((2, 3), ())).tensors
    assert not np.may_share_memory(tensors["t"], tensors["u"])


def test_a_node_whose_kernel_reads_only_constants_is_folded():
    """CastLike(constant, x) reads only x's type: it folds to a constant instead of running per call."""
    w = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    model = make_model([helper.make_node("CastLike", ["w", "x"], ["wc"]), helper.make_node("Add", ["x", "wc"], ["y"])],
                       {"x": ((2, 3), np.float32)}, ["y"], {"w": w.astype(np.float64)})
    session = edgekit.InferenceSession(model)
    assert [n.op_type for n in session.plan(((2, 3),)).step_nodes] == ["Add"]
    assert_matches_ort(model, {"x": np.random.default_rng(4).standard_normal((2, 3)).astype(np.float32)}, 0, 0)
