"""runtimes/rewrites.py on small graphs of each pattern tf2onnx writes for Keras: per-channel constant
Mul/Add/Sub/Div chains after Conv (2-D, 1-D, Conv1D as Conv2D + Squeeze) and Gemm/MatMul fold into the
weights, MatMul of rank-2 A and constant B becomes Gemm (absorbing its bias Add), Add(3) -> Clip(0, 6) ->
Mul(1/6) | Div(6) becomes HardSigmoid, x * HardSigmoid(x) HardSwish and x * Sigmoid(x) Swish (fused into a
preceding Conv or Gemm), in every operand order and constant broadcast form; torch's softplus threshold as the
dynamo exporter writes it (Where(Greater(x, 20), x, Softplus(x))) becomes Softplus, fused into the Gemm before
it, also unoptimised (beta = 1 as Mul and Div, constants through CastLike); SequenceAt of SplitToSequence
(torch.chunk / split unoptimised) at constant positions becomes Slice or Gather; a Conv or ConvTranspose bias
Expand([CastLike](c)) of a scalar constant (torch's missing bias unoptimised) becomes a constant, so
BatchNormalization folds; a constant zero Pad of spatial axes before a Conv (pads as an attribute, an input,
with axes) becomes the Conv's padding. Forms that must not rewrite stay as written: an intermediate read twice
or a graph output, per-position constants, non-constant operands, zero divisors, non-finite constants or ones
whose folded weights overflow, a Gemm bias per row, a MatMul of rank-3 A, other Clip bounds, a softplus
threshold below 15 or compared the other way or of beta 2, a sequence another op reads or read at a negative
position of unknown-count chunks, an expanded bias of a vector, a Pad of another value, mode or axis.
tf2onnx's Loops over Keras GRU and SimpleRNN cells (the bundled exports, a trip count below the time
dim, a relu candidate, a given initial state, a read final state) become GRU / RNN nodes, and
ReverseSequence of whole sequences a reversing Slice; Loops that differ (an activation GRU does not
take, an early exit, a read counter, another state, time from 1, a trip count above the condition's
bounds) and other lengths stay.
Each session's prepared op types are checked and its outputs match onnxruntime at batch 1 and 3 within
rtol = atol = 1e-5 (folding rounds the weights once; HardSigmoid computes x/6 + 1/2 for (x + 3)/6; a GRU
sums its products in another order than the Loop's MatMuls; reversing is exact)."""
import os

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import edgekit
from edgekit.ir import read_graph
from edgekit.runtimes.rewrites import rewrite
from oracle import assert_matches_ort, make_model

C, K, H, W = 4, 3, 5, 6
RNG = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return RNG.uniform(0.5, 1.5, shape).astype(np.float32) * RNG.choice([-1, 1], shape).astype(np.float32)


def check(nodes, inits: dict, x_shape: tuple, expect: list[str], outputs=("y",)) -> None:
    """Prepared op types are ``expect``; outputs match onnxruntime at batch 1 and 3."""
    model = make_model(nodes, {"x": (("N",) + x_shape, np.float32)}, list(outputs), inits)
    session = edgekit.InferenceSession(model)
    assert [n.op_type for n in session.prepared.nodes] == expect
    rng = np.random.default_rng(1)
    for batch in (1, 3):
        x = rng.standard_normal((batch,) + x_shape).astype(np.float32)
        assert_matches_ort(model, {"x": x}, rtol=1e-5, atol=1e-5, session=session)


def node(op: str, ins: list[str], out: str, **attrs):
    return helper.make_node(op, ins, [out], name=out, **attrs)


CHANNEL_FORMS = [(1, C, 1, 1), (C, 1, 1), (1, 1, 1, 1), (), (1,)]


@pytest.mark.parametrize("form", CHANNEL_FORMS)
@pytest.mark.parametrize("bias", [False, True])
def test_conv_mul_add_relu_is_one_conv(form, bias):
    inits = {"w": f32(C, K, 3, 3), "s": f32(*form), "t": f32(*form)}
    if bias:
        inits["b"] = f32(C)
    nodes = [node("Conv", ["x", "w"] + (["b"] if bias else []), "c", pads=[1, 1, 1, 1]),
             node("Mul", ["c", "s"], "m"), node("Add", ["t", "m"], "a"), node("Relu", ["a"], "y")]
    check(nodes, inits, (K, H, W), ["Conv"])


def test_sub_div_and_constant_minus_x_fold():
    inits = {"w": f32(C, K, 3), "s": f32(1, C, 1), "t": f32(C, 1), "u": f32(1, C, 1)}
    nodes = [node("Conv", ["x", "w"], "c"), node("Sub", ["c", "s"], "d"), node("Div", ["d", "t"], "e"),
             node("Sub", ["u", "e"], "y")]
    check(nodes, inits, (K, W), ["Conv"])


def test_conv1d_as_conv2d_squeeze_bias_bn_relu_is_conv_then_squeeze():
    inits = {"w": f32(C, K, 1, 3), "axes": np.array([2], np.int64), "b": f32(1, C, 1), "s": f32(1, C, 1),
             "t": f32(1, C, 1)}
    nodes = [node("Unsqueeze", ["x", "axes"], "x4"), node("Conv", ["x4", "w"], "c"),
             node("Squeeze", ["c", "axes"], "q"), node("Add", ["q", "b"], "a"), node("Mul", ["a", "s"], "m"),
             node("Add", ["m", "t"], "n"), node("Relu", ["n"], "y")]
    check(nodes, inits, (K, W), ["Unsqueeze", "Conv", "Squeeze"])


@pytest.mark.parametrize("bias_shape", [(5,), (1, 5), ()])
def test_matmul_add_is_gemm_and_bn_relu_fold(bias_shape):
    inits = {"b": f32(8, 5), "c": f32(*bias_shape), "s": f32(1, 5), "t": f32(5)}
    nodes = [node("MatMul", ["x", "b"], "mm"), node("Add", ["mm", "c"], "a"), node("Mul", ["a", "s"], "m"),
             node("Add", ["m", "t"], "n"), node("Relu", ["n"], "y")]
    check(nodes, inits, (8,), ["Gemm"])


def hard_swish_nodes(x: str, div: bool, swap: bool) -> list:
    """Keras hard_swish on ``x`` in tf2onnx's form, operands swapped or not, /6 as Div or Mul."""
    add = ["three", x] if swap else [x, "three"]
    scale = node("Div", ["cl", "six"], "hs") if div else node("Mul", ["sixth", "cl"] if swap else ["cl", "sixth"], "hs")
    return [node("Add", add, "p3"), node("Clip", ["p3", "zero", "six"], "cl"), scale,
            node("Mul", ["hs", x] if swap else [x, "hs"], "y")]


HS = {"three": np.array(3, np.float32), "zero": np.array(0, np.float32), "six": np.array(6, np.float32),
      "sixth": np.array(1 / 6, np.float32)}


@pytest.mark.parametrize("div", [False, True])
@pytest.mark.parametrize("swap", [False, True])
def test_hard_swish_pattern_is_hardswish(div, swap):
    check(hard_swish_nodes("x", div, swap), HS, (C, W), ["HardSwish"])


def test_conv_bn_hard_swish_is_one_conv():
    inits = {"w": f32(C, K, 3, 3), "s": f32(1, C, 1, 1), "t": f32(1, C, 1, 1), **HS,
             "three": np.full((1, 1, 1, 1), 3, np.float32)}
    nodes = [node("Conv", ["x", "w"], "c"), node("Mul", ["c", "s"], "m"), node("Add", ["m", "t"], "a"),
             *hard_swish_nodes("a", False, False)]
    check(nodes, inits, (K, H, W), ["Conv"])


def test_squeeze_excitation_gate_is_conv_with_hard_sigmoid():
    inits = {"w": f32(K, K, 1, 1), **HS}
    nodes = [node("Conv", ["x", "w"], "c"), node("Add", ["c", "three"], "p3"),
             node("Clip", ["p3", "zero", "six"], "cl"), node("Mul", ["cl", "sixth"], "g"), node("Mul", ["x", "g"], "y")]
    check(nodes, inits, (K, H, W), ["Conv", "Mul"])


@pytest.mark.parametrize("swap", [False, True])
def test_x_times_sigmoid_x_is_swish_fused_into_conv_and_gemm(swap):
    def silu(x: str, out: str) -> list:
        return [node("Sigmoid", [x], f"{out}_s"), node("Mul", [f"{out}_s", x] if swap else [x, f"{out}_s"], out)]

    check(silu("x", "y"), {}, (C, W), ["Swish"])
    check([node("Conv", ["x", "w"], "c"), *silu("c", "y")], {"w": f32(C, K, 3, 3)}, (K, H, W), ["Conv"])
    check([node("Gemm", ["x", "w"], "g", transB=1), *silu("g", "y")], {"w": f32(C, K)}, (K,), ["Gemm"])


def test_sigmoid_read_twice_or_of_another_tensor_stays():
    nodes = [node("Sigmoid", ["x"], "s"), node("Mul", ["x", "s"], "y"), node("Neg", ["s"], "z")]
    check(nodes, {}, (C, W), ["Sigmoid", "Mul", "Neg"], outputs=("y", "z"))
    nodes = [node("Neg", ["x"], "n"), node("Sigmoid", ["n"], "s"), node("Mul", ["x", "s"], "y")]
    check(nodes, {}, (C, W), ["Neg", "Sigmoid", "Mul"])


def test_an_intermediate_read_twice_or_a_graph_output_stops_the_fold():
    inits = {"w": f32(C, K, 3), "s": f32(1, C, 1), "t": f32(1, C, 1)}
    twice = [node("Conv", ["x", "w"], "c"), node("Mul", ["c", "s"], "m"), node("Add", ["m", "t"], "a"),
             node("Add", ["a", "m"], "y")]
    check(twice, inits, (K, W), ["Conv", "Add", "Add"])  # (Conv+Mul fold; the Add reading m twice stays)
    output = [node("Conv", ["x", "w"], "c"), node("Mul", ["c", "s"], "m"), node("Add", ["m", "t"], "y")]
    check(output, inits, (K, W), ["Conv", "Add"], outputs=("y", "m"))


@pytest.mark.parametrize("form", [(1, C, H, W), (W,), (1, 1, H, 1), (2, 1, 1, 1, 1)])
def test_per_position_or_rank_raising_constants_do_not_fold(form):
    inits = {"w": f32(C, K, 3, 3), "s": f32(*form)}
    nodes = [node("Conv", ["x", "w"], "c", pads=[1, 1, 1, 1]), node("Mul", ["c", "s"], "y")]
    check(nodes, inits, (K, H, W), ["Conv", "Mul"])


@pytest.mark.parametrize("op,values", [("Div", [0.0, 1.0, 2.0, 3.0]), ("Mul", [np.inf, 1.0, 2.0, 3.0]),
                                       ("Mul", [np.nan, 1.0, 2.0, 3.0]), ("Mul", [3e38, 1.0, 2.0, 3.0])])
def test_constants_that_would_not_fold_exactly_stay(op, values):
    """A zero divisor, a non-finite constant, or one whose folded weights overflow float32 stays a node
    (folded, the conv would sum inf - inf or overflow where the unfolded graph does not)."""
    inits = {"w": f32(C, K, 3), "s": np.array(values, np.float32).reshape(1, C, 1)}
    inits["w"][0, 0, 0] = 2.0  # (3e38 times it overflows whatever the random weights: the case holds in any test order)
    check([node("Conv", ["x", "w"], "c"), node(op, ["c", "s"], "y")], inits, (K, W), ["Conv", op])


def test_a_gemm_bias_of_one_column_per_row_does_not_fold_as_a_bias_per_column():
    """C of shape (M, 1) with M == N adds a value per row: folding a per-column Mul after it must not
    read it as a bias per column."""
    rng = np.random.default_rng(2)
    inits = {"B": f32(8, 4), "c": rng.standard_normal((4, 1)).astype(np.float32), "s": f32(4)}
    model = make_model([node("Gemm", ["a", "B", "c"], "g"), node("Mul", ["g", "s"], "y")],
                       {"a": ((4, 8), np.float32)}, ["y"], inits)
    assert [n.op_type for n in edgekit.InferenceSession(model).prepared.nodes] == ["Gemm", "Mul"]
    assert_matches_ort(model, {"a": rng.standard_normal((4, 8)).astype(np.float32)}, 1e-5, 1e-5)


def test_non_constant_operands_do_not_rewrite():
    inits = {"w": f32(C, C, 1), **HS}
    conv_mul = [node("Conv", ["x", "w"], "c"), node("Mul", ["c", "x"], "y")]
    check(conv_mul, inits, (C, W), ["Conv", "Mul"])
    not_same_x = [node("Add", ["x", "three"], "p3"), node("Clip", ["p3", "zero", "six"], "cl"),
                  node("Mul", ["cl", "sixth"], "hs"), node("Mul", ["hs", "hs"], "y")]
    check(not_same_x, inits, (C, W), ["HardSigmoid", "Mul"])
    clip5 = {**HS, "six": np.array(5, np.float32)}
    check(hard_swish_nodes("x", False, False), clip5, (C, W), ["Add", "Clip", "Mul", "Mul"])


def test_matmul_of_rank3_a_or_variable_b_stays_matmul():
    check([node("MatMul", ["x", "b"], "mm"), node("Add", ["mm", "c"], "y")], {"b": f32(W, 5), "c": f32(5)}, (C, W),
          ["MatMul", "Add"])
    check([node("MatMul", ["x", "x"], "y")], {}, (C, C), ["MatMul"])


def softplus_threshold_nodes(t: str = "t", greater: tuple[str, str] = ("g", "t"), soft: str = "g") -> list:
    """Gemm, then torch's softplus with its threshold: Where(Greater(g, t), g, Softplus(g))."""
    return [node("Gemm", ["x", "w", "b"], "g"), node("Softplus", [soft], "s"), node("Greater", list(greater), "c"),
            node("Where", ["c", "g", "s"], "y")]


SOFTPLUS_STAYS = ["Gemm", "Softplus", "Greater", "Where"]


def softplus_beta_nodes(beta: str) -> list:
    """torch's softplus(g, beta) unoptimised: Where(Greater(s, t), g, Softplus(s) / beta) for s = g * beta,
    the constants through CastLike."""
    return [node("Gemm", ["x", "w", "b"], "g"), node("CastLike", [beta, "g"], "bc"), node("Mul", ["g", "bc"], "s"),
            node("Softplus", ["s"], "sp"), node("CastLike", [beta, "sp"], "bc2"), node("Div", ["sp", "bc2"], "d"),
            node("CastLike", ["t", "s"], "tc"), node("Greater", ["s", "tc"], "c"), node("Where", ["c", "g", "d"], "y")]


@pytest.mark.parametrize("nodes, threshold, expect", [
    (softplus_threshold_nodes(), 20.0, ["Gemm"]),
    (softplus_threshold_nodes(), 10.0, SOFTPLUS_STAYS),  # (softplus(x) is not x beyond 10)
    (softplus_threshold_nodes(greater=("t", "g")), 20.0, SOFTPLUS_STAYS),
    ([node("Gemm", ["x", "w", "b"], "h")] + softplus_threshold_nodes(soft="h"), 20.0,
     ["Gemm", "Gemm", "Greater", "Where"]),  # (Softplus(h) fuses into its Gemm)
    (softplus_beta_nodes("one"), 20.0, ["Gemm"]),
    (softplus_beta_nodes("two"), 20.0, ["Gemm", "CastLike", "Mul", "Softplus", "CastLike", "Div", "CastLike",
                                         "Greater", "Where"])])
def test_torch_softplus_threshold_is_softplus_fused_into_the_gemm(nodes, threshold, expect):
    inits = {"w": f32(8, 4) * 10, "b": f32(4), "t": np.array(threshold, np.float32), "one": np.array(1, np.float32),
             "two": np.array(2, np.float32)}  # (|g| up to ~60)
    check(nodes, inits, (8,), expect)


def test_softplus_threshold_stays_when_its_condition_gives_a_type():
    """A CastLike reading the Greater's (bool) type: the pattern stays (a rewrite once gave that CastLike
    x's float type, so 0.5 cast like the bool became 0.5 instead of True)."""
    nodes = softplus_threshold_nodes() + [node("CastLike", ["half", "c"], "h"), node("Cast", ["h"], "hf", to=1),
                                          node("Add", ["y", "hf"], "z")]
    inits = {"w": f32(8, 4) * 10, "b": f32(4), "t": np.array(20.0, np.float32), "half": np.array(0.5, np.float32)}
    check(nodes, inits, (8,), SOFTPLUS_STAYS + ["CastLike", "Cast", "Add"], outputs=("z",))


def layer_norm_nodes(axes_input: bool) -> list:
    """Keras LayerNormalization over the last axis as tf2onnx decomposes it."""
    axes = {} if axes_input else {"axes": [-1]}
    mean_in = ["x", "axes"] if axes_input else ["x"]
    var_in = ["sq", "axes"] if axes_input else ["sq"]
    return [node("ReduceMean", mean_in, "mean", **axes), node("Neg", ["mean"], "neg"),
            node("Sub", ["x", "mean"], "sd"), node("Mul", ["sd", "sd"], "sq"), node("ReduceMean", var_in, "var", **axes),
            node("Add", ["var", "eps"], "ve"), node("Sqrt", ["ve"], "r"), node("Reciprocal", ["r"], "rr"),
            node("Mul", ["rr", "gamma"], "g"), node("Mul", ["x", "g"], "a"), node("Mul", ["neg", "g"], "b"),
            node("Add", ["b", "beta"], "c"), node("Add", ["a", "c"], "y")]


@pytest.mark.parametrize("x_shape", [(16,), (3, 16)])
@pytest.mark.parametrize("opset", [13, 18])
def test_decomposed_layer_norm_is_layer_normalization(x_shape, opset):
    inits = {"eps": np.array(1e-3, np.float32), "gamma": f32(1, 16), "beta": f32(16)}
    if opset >= 18:
        inits["axes"] = np.array([-1], np.int64)
    model = make_model(layer_norm_nodes(opset >= 18), {"x": (("N",) + x_shape, np.float32)}, ["y"], inits, opset=opset)
    session = edgekit.InferenceSession(model)
    assert [n.op_type for n in session.prepared.nodes] == ["LayerNormalization"]
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch,) + x_shape).astype(np.float32) * 3 + 1
        assert_matches_ort(model, {"x": x}, rtol=1e-5, atol=1e-5, session=session)


def test_layer_norm_with_an_intermediate_graph_output_or_another_axis_stays():
    inits = {"eps": np.array(1e-3, np.float32), "gamma": f32(1, 16), "beta": f32(16)}
    check(layer_norm_nodes(False), inits, (16,), [n.op_type for n in layer_norm_nodes(False)], outputs=("y", "var"))
    other_axis = layer_norm_nodes(False)
    for n in (other_axis[0], other_axis[4]):  # (the two ReduceMeans)
        del n.attribute[:]
        n.attribute.extend([helper.make_attribute("axes", [0])])
    inits.update(gamma=f32(16), beta=f32(16))
    check(other_axis, inits, (16,), [n.op_type for n in other_axis])


@pytest.mark.parametrize("opset", [13, 18])
def test_rank_after_a_reduce_without_keepdims_lets_matmul_become_gemm(opset):
    """(tf2onnx at opset 18 writes Keras global pooling as ReduceMean(axes input, keepdims=0).)"""
    inits = {"b": f32(C, 5), "c": f32(5)}
    axes = {}
    if opset >= 18:
        inits["axes"] = np.array([-1], np.int64)
    else:
        axes = {"axes": [-1]}
    mean = node("ReduceMean", ["x", "axes"] if opset >= 18 else ["x"], "p", keepdims=0, **axes)
    model = make_model([mean, node("MatMul", ["p", "b"], "mm"), node("Add", ["mm", "c"], "y")],
                       {"x": (("N", C, W), np.float32)}, ["y"], inits, opset=opset)
    session = edgekit.InferenceSession(model)
    assert [n.op_type for n in session.prepared.nodes] == ["ReduceMean", "Gemm"]
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, C, W)).astype(np.float32)
        assert_matches_ort(model, {"x": x}, rtol=1e-5, atol=1e-5, session=session)


KERAS = os.path.join(os.path.dirname(__file__), "..", "models", "keras")


def rewritten_ops(model) -> list[str]:
    """Op types after the rewrites (without building: a Loop left as written need not be runnable)."""
    graph = read_graph(model)
    return [n.op_type for n in rewrite(graph, list(graph.nodes))]


@pytest.mark.parametrize("name", ["gru_opset13", "gru_opset17", "gru_opset18", "rnn_forms_opset13",
                                  "rnn_forms_opset18"])
def test_keras_recurrent_loops_become_gru_and_rnn(name):
    """tf2onnx's Loops over Keras GRU (reset_after True and False, go_backwards) and SimpleRNN cells, with a
    constant trip count (gru: 20 steps) or one taken from Shape (rnn_forms: 9 steps here)."""
    model = onnx.load(os.path.join(KERAS, f"{name}.onnx"))
    session = edgekit.InferenceSession(model)
    ops = [n.op_type for n in session.prepared.nodes]
    assert "Loop" not in ops and "ReverseSequence" not in ops
    assert (ops.count("GRU"), ops.count("RNN")) == ((2, 0) if name.startswith("gru") else (2, 1))
    rng = np.random.default_rng(3)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 20 if name.startswith("gru") else 9, 8 if name.startswith("gru") else 5))
        assert_matches_ort(model, {"x": x.astype(np.float32)}, rtol=1e-5, atol=1e-5, session=session)


def keras_gru(**initializers) -> onnx.ModelProto:
    """The bundled Keras GRU model (two Loops) with some initializers replaced."""
    model = onnx.load(os.path.join(KERAS, "gru_opset17.onnx"))
    for t in model.graph.initializer:
        if t.name in initializers:
            t.CopyFrom(numpy_helper.from_array(initializers[t.name], t.name))
    return model


def test_a_constant_trip_count_below_the_time_dim_runs_that_many_steps():
    """(The GRU reads the first M steps of X, as the Loop does.)"""
    model = keras_gru(**{"functional_4_1/gru_1/Max:0": np.array(5, np.int64)})
    assert rewritten_ops(model).count("GRU") == 2
    x = np.random.default_rng(4).standard_normal((3, 20, 8)).astype(np.float32)
    assert_matches_ort(model, {"x": x}, rtol=1e-5, atol=1e-5)


def test_a_relu_candidate_is_the_gru_activation_list():
    model = keras_gru()
    next(n for n in first_body(model).node if n.op_type == "Tanh").op_type = "Relu"  # (Keras activation="relu")
    session = edgekit.InferenceSession(model)
    assert [n.attrs.get("activations") for n in session.prepared.nodes if n.op_type == "GRU"] == [
        ["Sigmoid", "Relu"], ["Sigmoid", "Tanh"]]
    x = np.random.default_rng(6).standard_normal((3, 20, 8)).astype(np.float32)
    assert_matches_ort(model, {"x": x}, rtol=1e-5, atol=1e-5, session=session)


def test_a_given_initial_state_is_the_initial_h_and_the_final_state_y_h():
    model = keras_gru()
    model.graph.input.append(helper.make_tensor_value_info("h0", onnx.TensorProto.FLOAT, ["N", 8]))
    model.graph.output.append(helper.make_tensor_value_info("functional_4_1/gru_1/while_loop:1", 1, ["N", 8]))
    next(n for n in model.graph.node if n.op_type == "Loop").input[3] = "h0"
    session = edgekit.InferenceSession(model)
    assert [n.op_type for n in session.prepared.nodes].count("GRU") == 2
    rng = np.random.default_rng(5)
    for batch in (1, 3):
        feeds = {"x": rng.standard_normal((batch, 20, 8)).astype(np.float32),
                 "h0": rng.standard_normal((batch, 8)).astype(np.float32)}
        assert_matches_ort(model, feeds, rtol=1e-5, atol=1e-5, session=session)


def first_body(model: onnx.ModelProto) -> onnx.GraphProto:
    return next(n for n in model.graph.node if n.op_type == "Loop").attribute[0].g


def _sin_candidate(model):
    next(n for n in first_body(model).node if n.op_type == "Tanh").op_type = "Sin"


def _hard_sigmoid_gate(model):
    next(n for n in first_body(model).node if n.op_type == "Sigmoid").op_type = "HardSigmoid"


def _early_exit(model):
    body = first_body(model)
    bound = next(t for t in body.initializer if t.name == "const_fold_opt__1450")
    bound.CopyFrom(numpy_helper.from_array(np.array(4, np.float32), bound.name))


def _counter_read(model):
    model.graph.output.append(helper.make_tensor_value_info("functional_4_1/gru_1/while_loop:0", 6, []))


def _state_feedback_not_the_scan(model):
    body = first_body(model)
    identity = next(n for n in body.node if n.op_type == "Identity")
    identity.input[0] = "functional_4_1/gru_1/while/gru_cell_1/mul_2:0"


def _time_from_one(model):
    model.graph.initializer.append(numpy_helper.from_array(np.array(1, np.int32), "one"))
    next(n for n in model.graph.node if n.op_type == "Loop").input[2] = "one"


def _trip_count_above_the_bounds(model):  # (both Loops read it)
    (m,) = [t for t in model.graph.initializer if t.name == "functional_4_1/gru_1/Max:0"]
    m.CopyFrom(numpy_helper.from_array(np.array(25, np.int64), m.name))


@pytest.mark.parametrize("change,grus", [
    (_sin_candidate, 1), (_hard_sigmoid_gate, 1), (_early_exit, 1), (_counter_read, 1),
    (_state_feedback_not_the_scan, 1), (_time_from_one, 1), (_trip_count_above_the_bounds, 0)])
def test_loops_that_are_not_the_keras_cell_stay_loops(change, grus):
    """Another activation, a condition that ends the loop early, a read loop counter, a state that is
    not the scan output, a time index starting at 1, a trip count above the condition's bounds."""
    model = keras_gru()
    change(model)
    ops = rewritten_ops(model)
    assert ops.count("Loop") == 2 - grus and ops.count("GRU") == grus


def reverse_sequence_model(time_axis: int, lens_axes: tuple[int, int]) -> onnx.ModelProto:
    """ReverseSequence with lengths Expand(Shape(x)[a], Shape(x)[b:b+1]), as tf2onnx writes ReverseV2."""
    t, b = lens_axes
    nodes = [node("Shape", ["x"], "s"), node("Gather", ["s", "t"], "tdim"), node("Gather", ["s", "b"], "bdim"),
             node("Expand", ["tdim", "bdim"], "lens"),
             node("ReverseSequence", ["x", "lens"], "y", time_axis=time_axis, batch_axis=1 - time_axis)]
    inits = {"t": np.array([t], np.int64), "b": np.array([b], np.int64)}
    return make_model(nodes, {"x": (("A", "B", 4), np.float32)}, ["y"], inits)


@pytest.mark.parametrize("time_axis", [0, 1])
def test_reverse_sequence_of_whole_sequences_is_a_reversing_slice(time_axis):
    model = reverse_sequence_model(time_axis, (time_axis, 1 - time_axis))
    session = edgekit.InferenceSession(model)
    assert [n.op_type for n in session.prepared.nodes] == ["Slice"]
    for batch in (1, 3):
        shape = (7, batch, 4) if time_axis == 0 else (batch, 7, 4)
        x = np.random.default_rng(batch).standard_normal(shape).astype(np.float32)
        assert_matches_ort(model, {"x": x}, rtol=0, atol=0, session=session)


def test_reverse_sequence_of_other_lengths_stays():
    assert "ReverseSequence" in rewritten_ops(reverse_sequence_model(0, (1, 0)))


def split_to_sequence_nodes(split: list[str], positions: tuple[int, int], **attrs) -> list:
    """SplitToSequence of x (N, 5, 3) on its axis of 5, then SequenceAt at two constant positions (y, z)."""
    return [node("SplitToSequence", ["x"] + split, "seq", **attrs),
            *(node("Constant", [], f"p{k}", value=numpy_helper.from_array(np.array(p, np.int64)))
              for k, p in enumerate(positions)),
            node("SequenceAt", ["seq", "p0"], "y"), node("SequenceAt", ["seq", "p1"], "z")]


@pytest.mark.parametrize("split, positions, attrs, op", [
    (np.array(2, np.int64), (0, 2), {"axis": 1}, "Slice"),  # chunks 2, 2, 1
    (np.array([1, 3, 1], np.int64), (-2, 0), {"axis": -2}, "Slice"),
    (None, (-1, 1), {"axis": 1, "keepdims": 0}, "Gather"),
    (None, (-1, 0), {"axis": 1}, "Slice")])
def test_sequence_at_of_split_to_sequence_is_slice_or_gather(split, positions, attrs, op):
    inits = {} if split is None else {"split": split}
    nodes = split_to_sequence_nodes([] if split is None else ["split"], positions, **attrs)
    check(nodes, inits, (5, 3), [op, op], outputs=("y", "z"))


def test_a_sequence_read_otherwise_or_at_a_negative_chunk_position_stays():
    negative = split_to_sequence_nodes(["split"], (0, -1), axis=1)  # (the chunk count needs the shape)
    counted = split_to_sequence_nodes(["split"], (0, 1), axis=1) + [node("SequenceLength", ["seq"], "n")]
    for nodes, outputs in ((negative, ["y", "z"]), (counted, {"y": 1, "z": 1, "n": onnx.TensorProto.INT64})):
        model = make_model(nodes, {"x": (("N", 5, 3), np.float32)}, outputs, {"split": np.array(2, np.int64)})
        with pytest.raises(edgekit.UnsupportedOpError, match="SplitToSequence"):
            edgekit.InferenceSession(model)


def expanded_bias_nodes(op: str, cast_like: bool, **attrs) -> list:
    """``op`` whose bias is Expand([CastLike](c, x), Expand(Shape(w)[0:1], [1])) (torch's missing bias), then
    BatchNormalization and Relu."""
    c = "cl" if cast_like else "c"
    return [node("Shape", ["w"], "ws", start=0 if op == "Conv" else 1, end=1 if op == "Conv" else 2),
            node("Expand", ["ws", "one"], "m"), *([node("CastLike", ["c", "x"], "cl")] if cast_like else []),
            node("Expand", [c, "m"], "bias"), node(op, ["x", "w", "bias"], "conv", **attrs),
            node("BatchNormalization", ["conv", "s", "t", "mu", "var"], "bn"), node("Relu", ["bn"], "y")]


@pytest.mark.parametrize("op, cast_like, c", [("Conv", True, 0.0), ("Conv", False, 0.5), ("ConvTranspose", True, 0.0)])
def test_an_expanded_constant_bias_is_a_constant_so_batchnorm_folds(op, cast_like, c):
    w = f32(C, K, 3, 3) if op == "Conv" else f32(K, C, 3, 3)
    inits = {"w": w, "one": np.array([1], np.int64), "c": np.array(c, np.float32), "s": f32(C), "t": f32(C),
             "mu": f32(C), "var": np.abs(f32(C))}
    check(expanded_bias_nodes(op, cast_like, pads=[1, 1, 1, 1]), inits, (K, H, W), [op])


def test_an_expanded_bias_of_a_vector_stays():
    inits = {"w": f32(C, K, 3, 3), "one": np.array([1], np.int64), "c": f32(C), "s": f32(C), "t": f32(C),
             "mu": f32(C), "var": np.abs(f32(C))}
    check(expanded_bias_nodes("Conv", False), inits, (K, H, W),
          ["Shape", "Expand", "Expand", "Conv", "BatchNormalization", "Relu"])


def pad_conv_model(pads: list[int], opset: int = 17, axes: list[int] | None = None, value: float = 0.0,
                   mode: str = "constant") -> onnx.ModelProto:
    """Pad(x (N, K, W)) then Conv (own pads 1, 1), as F.pad before a causal conv writes it."""
    inits = {"w": f32(C, K, 3), "pads": np.array(pads, np.int64), "v": np.array(value, np.float32)}
    ins = ["x", "pads", "v"] + (["axes"] if axes is not None else [])
    if axes is not None:
        inits["axes"] = np.array(axes, np.int64)
    pad = node("Pad", ins, "p", mode=mode) if opset >= 11 else node("Pad", ["x"], "p", mode=mode, pads=pads,
                                                                       value=value)
    return make_model([pad, node("Conv", ["p", "w"], "y", pads=[1, 1])], {"x": (("N", K, W), np.float32)}, ["y"],
                      inits, opset=opset)


@pytest.mark.parametrize("model, expect", [
    (pad_conv_model([0, 0, 4, 0, 0, 2]), ["Conv"]),
    (pad_conv_model([4, 0], opset=18, axes=[-1]), ["Conv"]),
    (pad_conv_model([0, 0, 4, 0, 0, 2], opset=10), ["Conv"]),
    (pad_conv_model([0, 0, 4, 0, 0, 0], value=1.0), ["Pad", "Conv"]),
    (pad_conv_model([1, 0, 4, 0, 0, 0]), ["Pad", "Conv"]),  # (a batch axis pad)
    (pad_conv_model([0, 0, 2, 0, 0, 0], mode="reflect"), ["Pad", "Conv"])])
def test_a_zero_pad_of_spatial_axes_before_a_conv_is_its_padding(model, expect):
    session = edgekit.InferenceSession(model)
    assert [n.op_type for n in session.prepared.nodes] == expect
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, K, W)).astype(np.float32)
        assert_matches_ort(model, {"x": x}, rtol=1e-5, atol=1e-5, session=session)
