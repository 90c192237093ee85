"""runtimes/ops/control.py: Loop and If against onnxruntime on fresh random inputs (rtol 1e-5, atol 1e-6
unless a test says otherwise): Loop with a trip count only, a condition only, both, loop-carried values
with scan outputs (opsets 11-19), carried values that swap, a while loop whose trips are counted at
load time, a Loop of constants folded at load time, bodies reading outer-scope tensors (run-time and
constant), a Loop nested in a Loop, an If inside a Loop, If with both branches taken at run time and
with a constant condition; forms edgekit refuses (scan outputs without a trip count known at load
time, branches of different shapes, carried values changing shape, sequence values, a loop that never
ends) raise UnsupportedOpError naming the node and op."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

import edgekit
from edgekit.errors import UnsupportedOpError
from oracle import assert_matches_ort, make_model

RTOL, ATOL = 1e-5, 1e-6


def vi(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def body(nodes: list, carried: dict, outputs: list, inits: dict | None = None, scans: dict | None = None,
         prefix: str = "") -> onnx.GraphProto:
    """A Loop body taking (i, cond_in, *carried) and giving (cond_out, *outputs, *scans); float32 values
    (``prefix`` goes before i, cond_in and cond_out: names are unique across nested scopes)."""
    ins = [vi(prefix + "i", T.INT64, []), vi(prefix + "cond_in", T.BOOL, [])] + \
        [vi(n, T.FLOAT, s) for n, s in carried.items()]
    outs = [vi(prefix + "cond_out", T.BOOL, [])] + [vi(n, T.FLOAT, s) for n, s in outputs] + \
        [vi(n, T.FLOAT, s) for n, s in (scans or {}).items()]
    return helper.make_graph(nodes, "body", ins, outs,
                             [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])


def keep_going(prefix: str = "") -> onnx.NodeProto:
    return helper.make_node("Identity", [prefix + "cond_in"], [prefix + "cond_out"])


def f32(*shape) -> tuple:
    return shape, np.float32


def randn(rng, *shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("opset", [11, 13, 16, 19])
def test_trip_count_only_with_carried_values_and_scan_outputs(opset):
    """M constant, cond omitted; two carried values (one read from outside), a tensor and a scalar scan output."""
    nodes = [keep_going(),
             helper.make_node("Mul", ["h_in", "decay"], ["hd"]),
             helper.make_node("Add", ["hd", "x"], ["h_out"]),  # x: outer-scope graph input
             helper.make_node("Add", ["s_in", "h_out"], ["s_out"]),
             helper.make_node("ReduceSumSquare" if opset < 18 else "ReduceL2", ["h_out"], ["energy"], keepdims=0),
             helper.make_node("Identity", ["h_out"], ["h_scan"])]
    g = body(nodes, {"h_in": [2, 3], "s_in": [2, 3]}, [("h_out", [2, 3]), ("s_out", [2, 3])],
             {"decay": np.float32(0.9)}, {"h_scan": [2, 3], "energy": []})
    loop = helper.make_node("Loop", ["M", "", "h0", "s0"], ["h", "s", "hs", "es"], body=g, name="rnn")
    model = make_model([loop], {"x": ((2, 3), np.float32), "h0": ((2, 3), np.float32), "s0": ((2, 3), np.float32)},
                       {"h": f32(2, 3), "s": f32(2, 3), "hs": f32(6, 2, 3), "es": f32(6)}, {"M": np.array(6, np.int64)},
                       opset=opset)
    rng = np.random.default_rng(opset)
    got = assert_matches_ort(model, {n: randn(rng, 2, 3) for n in ("x", "h0", "s0")}, RTOL, ATOL)
    assert got[2].shape == (6, 2, 3) and got[3].shape == (6,)


def test_carried_values_that_swap_and_a_scan_of_a_body_input():
    """a, b, c <- b, a, c + a (outputs that are the body's own inputs, crossed) and a scan output that is an
    input, reshaped."""
    nodes = [keep_going(), helper.make_node("Add", ["c_in", "a_in"], ["ca"]),
             helper.make_node("Reshape", ["a_in", "flat"], ["a_scan"])]
    g = body(nodes, {"a_in": [2, 2], "b_in": [2, 2], "c_in": [2, 2]}, [("b_in", [2, 2]), ("a_in", [2, 2]),
                                                                       ("ca", [2, 2])],
             {"flat": np.array([4])}, {"a_scan": [4]})
    loop = helper.make_node("Loop", ["M", "", "a0", "b0", "c0"], ["a", "b", "c", "as"], body=g, name="swap")
    model = make_model([loop], {n: ((2, 2), np.float32) for n in ("a0", "b0", "c0")},
                       {"a": f32(2, 2), "b": f32(2, 2), "c": f32(2, 2), "as": f32(5, 4)}, {"M": np.array(5, np.int64)})
    rng = np.random.default_rng(11)
    assert_matches_ort(model, {n: randn(rng, 2, 2) for n in ("a0", "b0", "c0")}, RTOL, ATOL)


def test_a_loop_of_constants_folds_at_load_time():
    nodes = [keep_going(), helper.make_node("Sin", ["c_in"], ["c_out"]),
             helper.make_node("Identity", ["c_out"], ["c_scan"])]
    g = body(nodes, {"c_in": [3]}, [("c_out", [3])], scans={"c_scan": [3]})
    loop = helper.make_node("Loop", ["M", "", "c0"], ["c", "cs"], body=g, name="fold")
    nodes = [loop, helper.make_node("Add", ["x", "c"], ["y"])]
    rng = np.random.default_rng(8)
    model = make_model(nodes, {"x": ((3,), np.float32)}, {"y": f32(3), "cs": f32(4, 3)},
                       {"M": np.array(4, np.int64), "c0": randn(rng, 3)})
    session = edgekit.InferenceSession(model)
    assert [n.op_type for n in session.plan(((3,),)).step_nodes] == ["Add"]  # (the Loop ran at load time)
    assert_matches_ort(model, {"x": randn(rng, 3)}, RTOL, ATOL, session=session)


def test_while_loop_with_counters_and_scan_outputs_counts_its_trips_at_load_time():
    """tf2onnx's form of a Keras RNN: M large, cond = (i < 7) and (t + 1 < 9) with t an int32 counter starting
    at a constant, a state updated from run-time data and stacked as a scan output."""
    nodes = [helper.make_node("Add", ["t_in", "one"], ["t_out"]),
             helper.make_node("Cast", ["i"], ["i32"], to=T.INT32),
             helper.make_node("Less", ["i32", "seven"], ["a"]),
             helper.make_node("Less", ["t_out", "nine"], ["b"]),
             helper.make_node("And", ["a", "b"], ["cond_out"]),
             helper.make_node("Gather", ["xs", "t_in"], ["x_t"], axis=0),  # xs: outer-scope sequence, step t
             helper.make_node("Tanh", ["h_in"], ["th"]),
             helper.make_node("Add", ["th", "x_t"], ["h_out"]),
             helper.make_node("Identity", ["h_out"], ["h_scan"])]
    g = helper.make_graph(nodes, "body", [vi("i", T.INT64, []), vi("cond_in", T.BOOL, []), vi("t_in", T.INT32, []),
                                          vi("h_in", T.FLOAT, [2, 3])],
                          [vi("cond_out", T.BOOL, []), vi("t_out", T.INT32, []), vi("h_out", T.FLOAT, [2, 3]),
                           vi("h_scan", T.FLOAT, [2, 3])],
                          [numpy_helper.from_array(np.array(v, np.int32), k) for k, v in (("one", 1), ("seven", 7),
                                                                                          ("nine", 9))])
    loop = helper.make_node("Loop", ["M", "go", "t0", "h0"], ["t", "h", "hs"], body=g, name="while")
    model = make_model([loop], {"xs": ((10, 2, 3), np.float32), "h0": ((2, 3), np.float32)},
                       {"t": ((), np.int32), "h": f32(2, 3), "hs": f32(8, 2, 3)},
                       {"M": np.array(2**31 - 1, np.int64), "go": np.array(True), "t0": np.array(0, np.int32)})
    rng = np.random.default_rng(9)
    got = assert_matches_ort(model, {"xs": randn(rng, 10, 2, 3), "h0": randn(rng, 2, 3)}, RTOL, ATOL)
    assert got[0] == 8 and got[2].shape == (8, 2, 3)  # (the body's condition is read after each iteration)


def halving_body() -> onnx.GraphProto:
    """x <- x / 2 and n <- n + 1 while max|x| > 1 (a data-dependent number of iterations)."""
    nodes = [helper.make_node("Mul", ["x_in", "half"], ["x_out"]),
             helper.make_node("Add", ["n_in", "one"], ["n_out"]),
             helper.make_node("Abs", ["x_out"], ["ax"]),
             helper.make_node("ReduceMax", ["ax"], ["top"], keepdims=0),
             helper.make_node("Greater", ["top", "one"], ["cond_out"])]
    return body(nodes, {"x_in": [4], "n_in": []}, [("x_out", [4]), ("n_out", [])], {"half": np.float32(0.5),
                                                                                      "one": np.float32(1)})


def test_condition_only_runs_a_data_dependent_number_of_iterations():
    loop = helper.make_node("Loop", ["", "c", "x", "n0"], ["y", "n"], body=halving_body(), name="halve")
    model = make_model([loop], {"c": ((), np.bool_), "x": ((4,), np.float32)}, {"y": f32(4), "n": f32()},
                       {"n0": np.float32(0)})
    session = edgekit.InferenceSession(model)
    rng = np.random.default_rng(1)
    for scale, c in ((100.0, True), (3.0, True), (0.5, True), (100.0, False)):
        got = assert_matches_ort(model, {"c": np.array(c), "x": scale * randn(rng, 4)}, RTOL, ATOL, session=session)
    assert got[1] == 0  # cond false on entry: no iteration


def test_trip_count_and_condition_both_fed_at_run_time():
    loop = helper.make_node("Loop", ["M", "c", "x", "n0"], ["y", "n"], body=halving_body(), name="halve")
    model = make_model([loop], {"M": ((), np.int64), "c": ((), np.bool_), "x": ((4,), np.float32)},
                       {"y": f32(4), "n": f32()},
                       {"n0": np.float32(0)})
    session = edgekit.InferenceSession(model)
    rng = np.random.default_rng(2)
    ns = []
    for m in (0, 2, 50, -1):
        got = assert_matches_ort(model, {"M": np.array(m, np.int64), "c": np.array(True), "x": 1e3 * randn(rng, 4)},
                                 RTOL, ATOL, session=session)
        ns.append(int(got[1]))
    assert ns[0] == 0 and ns[1] == 2 and 2 < ns[2] < 50 and ns[3] == 0


def test_body_reads_outer_tensors_computed_before_the_loop():
    """The body reads a run-time tensor of the outer graph (t, read by nothing else), an outer
    initializer (w) and its iteration number; the outer graph also computes a tensor (u) while t is
    alive, so buffer reuse must see the Loop as t's reader."""
    nodes = [keep_going(),
             helper.make_node("Cast", ["i"], ["fi"], to=T.FLOAT),
             helper.make_node("Mul", ["t", "fi"], ["ti"]),
             helper.make_node("MatMul", ["a_in", "w"], ["aw"]),
             helper.make_node("Add", ["aw", "ti"], ["a_out"]),
             helper.make_node("Sigmoid", ["a_out"], ["sig"])]
    g = body(nodes, {"a_in": [3, 4]}, [("a_out", [3, 4])], scans={"sig": [3, 4]})
    outer = [helper.make_node("Tanh", ["x"], ["t"]),
             helper.make_node("Exp", ["x"], ["u"]),
             helper.make_node("Loop", ["M", "", "u"], ["a", "sigs"], body=g, name="mix")]
    rng = np.random.default_rng(3)
    model = make_model(outer, {"x": ((3, 4), np.float32)}, {"a": f32(3, 4), "sigs": f32(4, 3, 4)},
                       {"M": np.array(4, np.int64), "w": 0.5 * randn(rng, 4, 4)})
    assert_matches_ort(model, {"x": randn(rng, 3, 4)}, RTOL, ATOL)


def test_nested_loop_reads_the_outermost_scope_and_the_outer_body():
    inner = body([keep_going("inner_"),
                  helper.make_node("Mul", ["v_in", "k"], ["vk"]),  # k: outermost graph input
                  helper.make_node("Add", ["vk", "p_in"], ["v_out"])],  # p_in: the outer body's carried value
                 {"v_in": [5]}, [("v_out", [5])], prefix="inner_")
    outer_body = body([keep_going(),
                       helper.make_node("Loop", ["three", "", "p_in"], ["p_mid"], body=inner, name="inner"),
                       helper.make_node("Neg", ["p_mid"], ["p_out"]),
                       helper.make_node("ReduceSum", ["p_out"], ["total"], keepdims=0)],
                      {"p_in": [5]}, [("p_out", [5])], {"three": np.array(3, np.int64)}, {"total": []})
    loop = helper.make_node("Loop", ["M", "", "p0"], ["p", "totals"], body=outer_body, name="outer")
    model = make_model([loop], {"k": ((5,), np.float32), "p0": ((5,), np.float32)}, {"p": f32(5), "totals": f32(3)},
                       {"M": np.array(3, np.int64)})
    rng = np.random.default_rng(4)
    assert_matches_ort(model, {"k": 0.5 * randn(rng, 5), "p0": randn(rng, 5)}, 1e-5, 1e-5)


def test_if_inside_a_loop_reads_the_carried_value_and_the_outer_graph():
    """Even iterations add the outer tensor k to the state, odd ones scale it by 0.5."""
    then_g = helper.make_graph([helper.make_node("Add", ["h_in", "k"], ["up"])], "then", [], [vi("up", T.FLOAT, [4])])
    else_g = helper.make_graph([helper.make_node("Mul", ["h_in", "half"], ["down"])], "else", [],
                               [vi("down", T.FLOAT, [4])])
    nodes = [keep_going(), helper.make_node("Mod", ["i", "two"], ["odd"]),
             helper.make_node("Equal", ["odd", "zero"], ["even"]),
             helper.make_node("If", ["even"], ["h_out"], then_branch=then_g, else_branch=else_g, name="step")]
    g = body(nodes, {"h_in": [4]}, [("h_out", [4])], {"two": np.array(2, np.int64), "zero": np.array(0, np.int64),
                                                      "half": np.float32(0.5)})
    loop = helper.make_node("Loop", ["M", "", "h0"], ["h"], body=g, name="alternate")
    model = make_model([loop], {"M": ((), np.int64), "k": ((4,), np.float32), "h0": ((4,), np.float32)}, {"h": f32(4)})
    session = edgekit.InferenceSession(model)
    rng = np.random.default_rng(10)
    for m in (0, 1, 5):
        assert_matches_ort(model, {"M": np.array(m, np.int64), "k": randn(rng, 4), "h0": randn(rng, 4)}, RTOL, ATOL,
                           session=session)


def if_model(cond_const: bool | None = None, else_shape=(2, 3)) -> onnx.ModelProto:
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "y"], ["r"]), helper.make_node("Relu", ["r"], ["t"])],
                               "then", [], [vi("t", T.FLOAT, [2, 3])])
    else_nodes = [helper.make_node("Sub", ["x", "b"], ["e"])] if else_shape == (2, 3) else \
        [helper.make_node("ReduceSum", ["x"], ["e"], keepdims=1, axes=[1])]
    else_g = helper.make_graph(else_nodes, "else", [], [vi("e", T.FLOAT, list(else_shape))])
    node = helper.make_node("If", ["c"], ["z"], then_branch=then_g, else_branch=else_g, name="pick")
    inputs = {"x": ((2, 3), np.float32), "y": ((2, 3), np.float32)}
    inits = {"b": np.float32(1.5)}
    if cond_const is None:
        inputs["c"] = ((), np.bool_)
    else:
        inits["c"] = np.array(cond_const)
    return make_model([node], inputs, {"z": f32("a", "b")}, inits, opset=11 if else_shape != (2, 3) else 17)


def test_if_runs_the_branch_the_condition_picks_at_run_time():
    model = if_model()
    session = edgekit.InferenceSession(model)
    rng = np.random.default_rng(5)
    for c in (True, False, False, True):
        assert_matches_ort(model, {"c": np.array(c), "x": randn(rng, 2, 3), "y": randn(rng, 2, 3)}, RTOL, ATOL,
                           session=session)


@pytest.mark.parametrize("cond", [True, False])
def test_if_with_a_constant_condition_builds_only_its_branch(cond):
    """The branches give different shapes; with the condition known at load time that is fine."""
    model = if_model(cond, else_shape=(2, 1))
    rng = np.random.default_rng(6)
    got = assert_matches_ort(model, {"x": randn(rng, 2, 3), "y": randn(rng, 2, 3)}, RTOL, ATOL)
    assert got[0].shape == ((2, 3) if cond else (2, 1))


@pytest.mark.parametrize("cond", [True, False])
def test_if_with_a_constant_condition_computes_only_what_its_branch_reads(cond):
    """A tensor only the branch not taken reads is not computed (the plan has no step for it)."""
    then = helper.make_graph([helper.make_node("Neg", ["x"], ["a"])], "then", [], [vi("a", T.FLOAT, [2, 3])])
    other = helper.make_graph([helper.make_node("Neg", ["e"], ["b"])], "else", [], [vi("b", T.FLOAT, [2, 3])])
    model = make_model([helper.make_node("Exp", ["x"], ["e"], name="for_else"),
                        helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other)],
                       {"x": f32(2, 3)}, ["y"], {"c": np.array(cond)})
    session = edgekit.InferenceSession(model)
    assert [n.name for n in session.plan(((2, 3),)).step_nodes] == (["if"] if cond else ["for_else", "if"])
    assert_matches_ort(model, {"x": randn(np.random.default_rng(7), 2, 3)}, RTOL, ATOL, session=session)


def test_refused_forms_name_the_node_and_op():
    with pytest.raises(UnsupportedOpError, match=r"'pick': If .*branches give different outputs"):
        edgekit.InferenceSession(if_model(None, else_shape=(2, 1)))
    scanning = body([helper.make_node("Neg", ["x_in"], ["x_out"]), helper.make_node("Identity", ["x_out"], ["x_scan"]),
                     helper.make_node("ReduceSum", ["x_out"], ["sum"], keepdims=0),
                     helper.make_node("Greater", ["sum", "zero"], ["cond_out"])],
                    {"x_in": [2]}, [("x_out", [2])], {"zero": np.float32(0)}, {"x_scan": [2]})
    loop = helper.make_node("Loop", ["M", "", "x"], ["y", "ys"], body=scanning, name="scanner")
    outputs = {"y": f32(2), "ys": f32("n", 2)}
    for model in (make_model([loop], {"M": ((), np.int64), "x": ((2,), np.float32)}, outputs),  # M fed at run time
                  make_model([loop], {"x": ((2,), np.float32)}, outputs, {"M": np.array(9, np.int64)})):  # cond: data
        with pytest.raises(UnsupportedOpError, match=r"'scanner': Loop .*scan outputs needs its trip count at load"):
            edgekit.InferenceSession(model)
    growing = body([keep_going(), helper.make_node("Concat", ["x_in", "x_in"], ["x_out"], axis=0)],
                   {"x_in": ["n"]}, [("x_out", ["m"])])
    loop = helper.make_node("Loop", ["M", "", "x"], ["y"], body=growing, name="grow")
    model = make_model([loop], {"x": ((2,), np.float32)}, {"y": f32("n")}, {"M": np.array(3, np.int64)})
    with pytest.raises(UnsupportedOpError, match=r"'grow': Loop .*'x_in' enters as float32\[2\] and the body returns "
                                                 r"float32\[4\]"):
        edgekit.InferenceSession(model)
    forever = body([keep_going(), helper.make_node("Neg", ["x_in"], ["x_out"])], {"x_in": [2]}, [("x_out", [2])])
    loop = helper.make_node("Loop", ["", "", "x"], ["y"], body=forever, name="spin")
    with pytest.raises(UnsupportedOpError, match=r"'spin': Loop .*would never end"):
        edgekit.InferenceSession(make_model([loop], {"x": ((2,), np.float32)}, {"y": f32(2)}))


def test_sequence_carried_values_are_refused_by_name():
    seq = helper.make_tensor_sequence_value_info
    g = helper.make_graph([keep_going(), helper.make_node("SequenceInsert", ["s_in", "x"], ["s_out"])], "body",
                          [vi("i", T.INT64, []), vi("cond_in", T.BOOL, []), seq("s_in", T.FLOAT, None)],
                          [vi("cond_out", T.BOOL, []), seq("s_out", T.FLOAT, None)])
    nodes = [helper.make_node("SequenceEmpty", [], ["s0"], dtype=T.FLOAT),
             helper.make_node("Loop", ["M", "", "s0"], ["s"], body=g, name="collect"),
             helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0)]
    model = make_model(nodes, {"x": ((2,), np.float32)}, {"y": f32("n")}, {"M": np.array(3, np.int64)})
    with pytest.raises(UnsupportedOpError) as err:
        edgekit.InferenceSession(model)
    assert "SequenceEmpty" in str(err.value)  # (sequence ops are not registered, so the outer graph is refused first)
