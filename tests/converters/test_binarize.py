"""binarize / to_float on random binary networks, with onnxruntime as the oracle.

Networks: Sign, Where(x >= 0, 1, -1), Where(x < 0, -1, 1) or QONNX BipolarQuant activations;
+-alpha weights (alpha per channel, powers of two so float sums are exact); zero padding; 70
and 37 channels (not multiples of 64); stride 2; BatchNormalization with negative gammas; a
per-channel Add; Flatten into a Gemm (packed bits through the flatten). Checked: the converted
model exported back to standard ops (to_float) gives in onnxruntime integer-exact pre-activation
sums and identical +-1 outputs after every threshold, and the float head to rtol 1e-5; the
converted model in edgekit.InferenceSession gives the float model's outputs; also one-pixel conv
outputs into a Gemm, float-output convs (scale and bias per channel), a scaled binarizer read by a
float op (+-s kept); bad input: weights that are not +-alpha, and a MatMul over other than 2-D
activations, stay float with a warning naming the layer (an unnamed one by its output), and Sign
ties warn.
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgekit
from edgekit.converters.binarize import BinarizeWarning, binarize, to_float
from edgekit.runtimes.ops import binary as _binary_ops  # noqa: F401  (registers the ops)
from oracle import ort_session

QONNX = "qonnx.custom_op.general"
RTOL = 1e-5


def act(kind: str, x: str, y: str) -> tuple[list, dict]:
    """Nodes (and constants) binarizing x into y."""
    if kind == "Sign":
        return [helper.make_node("Sign", [x], [y])], {}
    if kind == "Where":
        return [helper.make_node("GreaterOrEqual", [x, "zero"], [f"{y}_ge"]),
                helper.make_node("Where", [f"{y}_ge", "one", "minus_one"], [y])], {}
    if kind == "WhereLess":
        return [helper.make_node("Less", [x, "zero"], [f"{y}_lt"]),
                helper.make_node("Where", [f"{y}_lt", "minus_one", "one"], [y])], {}
    assert kind == "BipolarQuant"
    return [helper.make_node("BipolarQuant", [x, "bq_scale"], [y], domain=QONNX)], {}


def network(rng: np.random.Generator, kind: str, side_outputs: bool = False, hw: int = 9) -> onnx.ModelProto:
    """x (2, 3, hw, hw) -> act -> conv 3->70 pad 1 -> BN -> act -> conv 70->37 stride 2 pad 1 -> Add
    -> BN -> act -> Flatten -> Gemm 37*s*s -> 10 (+C). ``side_outputs``: the first +-1 tensor is
    also a graph output (the first conv then writes +-1 floats instead of packed bits)."""
    c0, c1, c2, m = 3, 70, 37, 10
    s = (hw + 1) // 2

    def pm(shape):
        alpha = 2.0 ** rng.integers(-3, 3, shape[0]).reshape((-1,) + (1,) * (len(shape) - 1))
        return (np.where(rng.random(shape) < 0.5, -1.0, 1.0) * alpha).astype(np.float32)

    def bn(name, n):
        gamma = rng.standard_normal(n) * np.where(rng.random(n) < 0.5, -1, 1)
        return {f"{name}_g": gamma.astype(np.float32), f"{name}_b": (rng.standard_normal(n) * 3).astype(np.float32),
                f"{name}_m": (rng.standard_normal(n) * 4).astype(np.float32),
                f"{name}_v": (rng.random(n) * 5 + 0.5).astype(np.float32)}

    inits = {"w1": pm((c1, c0, 3, 3)), "w2": pm((c2, c1, 3, 3)), "w3": pm((m, c2 * s * s)).T.copy(),
             "add2": rng.standard_normal((1, c2, 1, 1)).astype(np.float32),
             "c3": rng.standard_normal(m).astype(np.float32), "zero": np.float32(0), "one": np.float32(1),
             "minus_one": np.float32(-1), "bq_scale": np.float32(1)}
    inits.update(bn("bn1", c1))
    inits.update(bn("bn2", c2))
    nodes = []
    for part in (act(kind, "x", "a0"),
                 ([helper.make_node("Conv", ["a0", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
                   helper.make_node("BatchNormalization", ["c1", "bn1_g", "bn1_b", "bn1_m", "bn1_v"], ["b1"])], {}),
                 act(kind, "b1", "a1"),
                 ([helper.make_node("Conv", ["a1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"),
                   helper.make_node("Add", ["c2", "add2"], ["d2"]),
                   helper.make_node("BatchNormalization", ["d2", "bn2_g", "bn2_b", "bn2_m", "bn2_v"], ["b2"])], {}),
                 act(kind, "b2", "a2"),
                 ([helper.make_node("Flatten", ["a2"], ["f"]),
                   helper.make_node("Gemm", ["f", "w3", "c3"], ["y"], name="fc")], {})):
        nodes += part[0]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, m])]
    if side_outputs:
        outputs.append(helper.make_tensor_value_info("a1", TensorProto.FLOAT, [2, c1, hw, hw]))
    graph = helper.make_graph(nodes, "bnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c0, hw, hw])],
                              outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(QONNX, 1)] if kind == "BipolarQuant" else [])
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """The model with extra graph outputs (shapes from shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in inferred.graph.value_info}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.output.extend(known[n] for n in names)
    return out


def where_form(model: onnx.ModelProto) -> onnx.ModelProto:
    """A BipolarQuant network rewritten with Where(x >= 0, s, -s), which onnxruntime runs."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for n in model.graph.node:
        if n.op_type == "BipolarQuant":
            nodes += act("Where", n.input[0], n.output[0])[0]
        else:
            nodes.append(n)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    keep = [o for o in out.opset_import if o.domain != QONNX]
    del out.opset_import[:]
    out.opset_import.extend(keep)
    return out


def gammas(model, name):
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


@pytest.mark.parametrize("kind", ["Sign", "Where", "WhereLess"])
@pytest.mark.parametrize("seed", [0, 1])
def test_converted_network_is_exact_in_onnxruntime(kind, seed):
    rng = np.random.default_rng(seed)
    model = network(rng, kind)
    converted = binarize(model)
    assert [n.op_type for n in converted.graph.node] == ["BinaryConv", "BinaryConv", "BinaryGemm"]
    modes = [helper.get_attribute_value(next(a for a in n.attribute if a.name == "output")) for n in converted.graph.node]
    assert modes == [b"packed", b"packed", b"float"]
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    original = ort_session(with_outputs(model, ["c1", "c2", "a1", "a2"])).run(None, {"x": x})
    back = ort_session(with_outputs(to_float(converted), ["conv1::dot", "conv2::dot", "a1::pm1", "a2::pm1"]))
    y, dot1, dot2, a1, a2 = back.run(None, {"x": x})
    alpha1 = np.abs(gammas(model, "w1")).reshape(70, -1)[:, 0].reshape(1, -1, 1, 1)
    alpha2 = np.abs(gammas(model, "w2")).reshape(37, -1)[:, 0].reshape(1, -1, 1, 1)
    flip1 = np.sign(gammas(model, "bn1_g")).reshape(1, -1, 1, 1)
    flip2 = np.sign(gammas(model, "bn2_g")).reshape(1, -1, 1, 1)
    np.testing.assert_array_equal(dot1, flip1 * original[1] / alpha1)  # integer-exact sums
    np.testing.assert_array_equal(dot2, flip2 * original[2] / alpha2)
    np.testing.assert_array_equal(a1, original[3])                     # identical after thresholds
    np.testing.assert_array_equal(a2, original[4])
    np.testing.assert_allclose(y, original[0], rtol=RTOL, atol=1e-5)


@pytest.mark.parametrize("side_outputs", [False, True])
def test_edgekit_session_gives_the_float_models_outputs(side_outputs):
    rng = np.random.default_rng(4)
    model = network(rng, "Sign", side_outputs=side_outputs, hw=16)
    converted = binarize(model)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    expected = ort_session(model).run(None, {"x": x})
    got = edgekit.InferenceSession(converted).run(None, {"x": x})
    np.testing.assert_allclose(got[0], expected[0], rtol=RTOL, atol=1e-5)
    if side_outputs:  # the shared +-1 tensor comes out of a 'sign' BinaryConv, exactly
        np.testing.assert_array_equal(got[1], expected[1])


def test_packed_one_pixel_conv_output_into_a_gemm():
    """A 1x1 input keeps every conv output at one pixel: the Flatten before the Gemm is still needed
    in the float export (packed (N, 1, 1, words) -> +-1 (N, C, 1, 1) -> (N, C))."""
    rng = np.random.default_rng(12)
    model = network(rng, "Sign", hw=1)
    converted = binarize(model)
    x = rng.standard_normal((2, 3, 1, 1)).astype(np.float32)
    expected = ort_session(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(ort_session(to_float(converted)).run(None, {"x": x})[0], expected, rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(edgekit.InferenceSession(converted).run(None, {"x": x})[0], expected, rtol=RTOL,
                               atol=1e-5)


@pytest.mark.parametrize("hw", [5, 6])
def test_float_output_conv_in_the_float_export(hw):
    """A binary conv with no binarizer after it writes scale * dot + bias per channel (axis 1): the
    float export broadcasts them over NCHW (hw = 6 = M would hide a broadcast over the width)."""
    rng = np.random.default_rng(16)
    w = (np.where(rng.random((6, 7, 3, 3)) < 0.5, -1.0, 1.0) * 0.25).astype(np.float32)
    bn = [rng.standard_normal(6).astype(np.float32), rng.standard_normal(6).astype(np.float32),
          rng.standard_normal(6).astype(np.float32), (rng.random(6) + 0.5).astype(np.float32)]
    nodes = [helper.make_node("Sign", ["x"], ["s"]), helper.make_node("Conv", ["s", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"])]
    graph = helper.make_graph(nodes, "float_out", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 7, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6, hw, hw])],
                              [numpy_helper.from_array(v, k) for k, v in zip("wgbmv", [w] + bn)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    converted = binarize(model)
    assert [n.op_type for n in converted.graph.node] == ["BinaryConv"]
    x = rng.standard_normal((2, 7, hw, hw)).astype(np.float32)
    expected = ort_session(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(ort_session(to_float(converted)).run(None, {"x": x})[0], expected, rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(edgekit.InferenceSession(converted).run(None, {"x": x})[0], expected, rtol=RTOL,
                               atol=1e-5)


def test_a_scaled_binarizer_read_by_a_float_op_keeps_its_scale():
    """Where(x >= 0, 0.5, -0.5) after conv1 is a graph output and conv2's activation: the output
    stays +-0.5 (conv1 then writes its float sums and the binarizer stays), conv2 still binary."""
    rng = np.random.default_rng(20)
    inits = {"w1": np.where(rng.random((6, 4, 3, 3)) < 0.5, -1.0, 1.0).astype(np.float32),
             "w2": np.where(rng.random((5, 6, 3, 3)) < 0.5, -0.5, 0.5).astype(np.float32),
             "zero": np.float32(0), "hi": np.float32(0.5), "lo": np.float32(-0.5), "b2": np.full(5, 0.1, np.float32)}
    nodes = [helper.make_node("Sign", ["x"], ["s"]), helper.make_node("Conv", ["s", "w1"], ["c1"], pads=[1] * 4, name="conv1"),
             helper.make_node("GreaterOrEqual", ["c1", "zero"], ["ge"]), helper.make_node("Where", ["ge", "hi", "lo"], ["a1"]),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], pads=[1] * 4, name="conv2"),
             helper.make_node("Sign", ["c2"], ["y"])]  # the bias 0.1 keeps c2 (a multiple of 0.25) off 0
    graph = helper.make_graph(nodes, "scaled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 5, 5]),
                               helper.make_tensor_value_info("a1", TensorProto.FLOAT, [2, 6, 5, 5])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    converted = binarize(model)
    assert [n.op_type for n in converted.graph.node].count("BinaryConv") == 2
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    expected = ort_session(model).run(None, {"x": x})
    for got in (edgekit.InferenceSession(converted).run(None, {"x": x}), ort_session(to_float(converted)).run(None, {"x": x})):
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])


def test_bipolarquant_network_matches_its_where_form():
    rng = np.random.default_rng(2)
    model = network(rng, "BipolarQuant")
    for t in model.graph.initializer:
        if t.name == "bq_scale":
            t.CopyFrom(numpy_helper.from_array(np.float32(0.5), "bq_scale"))
    converted = binarize(model)
    assert sum(n.domain == QONNX for n in converted.graph.node) == 0
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    reference = where_form(model)
    for t in reference.graph.initializer:  # Where(x >= 0, 0.5, -0.5): BipolarQuant's scale
        if t.name in ("one", "minus_one"):
            t.CopyFrom(numpy_helper.from_array(np.float32(0.5 if t.name == "one" else -0.5), t.name))
    expected = ort_session(reference).run(None, {"x": x})[0]
    np.testing.assert_allclose(ort_session(to_float(converted)).run(None, {"x": x})[0], expected, rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(edgekit.InferenceSession(converted).run(None, {"x": x})[0], expected, rtol=RTOL,
                               atol=1e-5)


@pytest.mark.parametrize("op", ["MatMul", "GemmTransB"])
def test_matmul_and_gemm_heads(op):
    rng = np.random.default_rng(6)
    k, m = 100, 7
    signs = np.where(rng.random((k, m)) < 0.5, -1.0, 1.0)
    w = (signs * 0.25).astype(np.float32)
    inits = {"b": rng.standard_normal(m).astype(np.float32), "w": w if op == "MatMul" else w.T.copy()}
    nodes = [helper.make_node("Sign", ["x"], ["s"])]
    if op == "MatMul":
        nodes += [helper.make_node("MatMul", ["s", "w"], ["p"], name="head"), helper.make_node("Add", ["p", "b"], ["y"])]
    else:
        nodes += [helper.make_node("Gemm", ["s", "w", "b"], ["y"], name="head", transB=1, alpha=0.5, beta=2.0)]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, m])],
                              [numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    converted = binarize(model)
    assert [n.op_type for n in converted.graph.node] == ["BinaryGemm"]
    x = rng.standard_normal((3, k)).astype(np.float32)
    expected = ort_session(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(edgekit.InferenceSession(converted).run(None, {"x": x})[0], expected, rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(ort_session(to_float(converted)).run(None, {"x": x})[0], expected, rtol=RTOL, atol=1e-5)


@pytest.mark.parametrize("x_shape", [[2, 4, 70], [70]])
def test_matmul_of_other_than_2d_activations_stays_float_with_a_warning(x_shape):
    """BinaryGemm takes [N, K]: a MatMul over a batch of sequences or a single vector stays a float MatMul."""
    rng = np.random.default_rng(14)
    w = (np.where(rng.random((70, 5)) < 0.5, -1.0, 1.0) * 0.5).astype(np.float32)
    nodes = [helper.make_node("Sign", ["x"], ["s"]), helper.make_node("MatMul", ["s", "w"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, x_shape[:-1] + [5])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    with pytest.warns(BinarizeWarning, match="'mm'.*only 2-D products"):
        converted = binarize(model)
    assert [n.op_type for n in converted.graph.node] == ["Sign", "MatMul"]
    x = rng.standard_normal(x_shape).astype(np.float32)
    np.testing.assert_array_equal(edgekit.InferenceSession(converted).run(None, {"x": x})[0],
                                  ort_session(model).run(None, {"x": x})[0])


def test_weights_not_plus_minus_alpha_stay_float_with_a_warning():
    rng = np.random.default_rng(8)
    model = network(rng, "Sign")
    for t in model.graph.initializer:
        if t.name == "w2":
            w = numpy_helper.to_array(t).copy()
            w[5, 3, 1, 1] *= 1.5  # channel 5 is no longer +-alpha
            t.CopyFrom(numpy_helper.from_array(w, "w2"))
    with pytest.warns(BinarizeWarning, match="'conv2'.*not \\+-alpha"):
        converted = binarize(model)
    ops = [n.op_type for n in converted.graph.node]
    assert "Conv" in ops and ops.count("BinaryConv") == 1 and "BinaryGemm" in ops
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(ort_session(to_float(converted)).run(None, {"x": x})[0],
                               ort_session(model).run(None, {"x": x})[0], rtol=RTOL, atol=1e-5)


def test_a_warning_names_an_unnamed_layer_by_its_output():
    rng = np.random.default_rng(18)
    model = network(rng, "Sign")
    for n in model.graph.node:
        n.name = ""
    w = next(t for t in model.graph.initializer if t.name == "w2")  # conv2 (output c2) no longer +-alpha
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * np.linspace(1, 2, 9, dtype=np.float32).reshape(3, 3), "w2"))
    with pytest.warns(BinarizeWarning, match="node 'c2' \\(Conv\\) looks binary"):
        binarize(model)


def test_sign_tie_is_reported():
    rng = np.random.default_rng(10)
    w = np.where(rng.random((4, 2, 1, 1)) < 0.5, -1.0, 1.0).astype(np.float32)  # fan-in 2: sums hit 0
    nodes = [helper.make_node("Sign", ["x"], ["s"]), helper.make_node("Conv", ["s", "w"], ["c"], name="tied"),
             helper.make_node("Sign", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "tie", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])],
                              [numpy_helper.from_array(w, "w")])
    with pytest.warns(BinarizeWarning, match="'tied'.*exactly 0"):
        binarize(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10))
