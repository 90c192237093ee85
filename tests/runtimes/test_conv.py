"""Conv against onnxruntime on random float32 inputs: 1-D and 2-D, kernel sizes, strides, dilations,
explicit (asymmetric) pads and auto_pad, grouped and depthwise (with and without a channel
multiplier), <= 128 columns (quad and duo tiles first), narrow outputs (the channel-vectorised
method, 4- and 2-vector tiles, written transposed; rows of exactly a tile's columns as whole
vectors), rows of at most two vectors (short tiles), single columns over contiguous taps (dot
products), with and without bias, batch 1 and 3; one kernel per path (a rows kernel with the tiles of several
computes as each); weights known only at run time; fused activations
(Relu applied in the narrow and short tiles' registers: NaN and Inf propagate); the Conv ->
BatchNormalization -> Relu fusion run through InferenceSession; the PPG demo net streamed
(StreamingSession, batch 1 and 2) against its step model in onnxruntime.
Tolerance rtol 1e-4, atol 1e-4: float32 sums of up to a few hundred products of values of order 1,
accumulated in a different order than onnxruntime's.
"""
import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from numba import njit
from onnx.reference import ReferenceEvaluator

import edgekit
from edgekit.converters.stream import to_streaming
from edgekit.demos.ppg import MODEL as PPG_MODEL
from edgekit.runtimes.kernels import conv as kc
from edgekit.runtimes.ops.conv import NARROW_WIDTH, PAIR_WIDTH, ROWS_WIDTH
from edgekit.errors import ModelError, UnsupportedOpError
from oracle import assert_matches_ort, make_model

RTOL, ATOL = 1e-4, 1e-4
_spec = importlib.util.spec_from_file_location(  # the step model run hop by hop in onnxruntime
    "stream_converter_tests", Path(__file__).parents[1] / "converters" / "test_stream.py")
_stream_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_stream_tests)
stream_in_ort = _stream_tests.stream_in_ort

CASES = {  # name: (input shape without batch, weight shape, attributes)
    "1d_k7_pad": ((1, 64), (4, 1, 7), dict(pads=[3, 3])),
    "1d_stride2_asym": ((4, 50), (6, 4, 5), dict(strides=[2], pads=[2, 1])),
    "1d_stride3_valid": ((3, 41), (5, 3, 4), dict(strides=[3], auto_pad="VALID")),
    "1d_group_dilation": ((4, 40), (6, 2, 3), dict(group=2, dilations=[2], pads=[0, 3])),
    "1d_depthwise_same": ((8, 33), (8, 1, 5), dict(group=8, auto_pad="SAME_UPPER")),
    "1d_depthwise_x2_stride3": ((8, 33), (16, 1, 3), dict(group=8, strides=[3], auto_pad="SAME_LOWER")),
    "1d_pointwise": ((5, 20), (3, 5, 1), {}),
    "1d_valid_dilated": ((5, 20), (3, 5, 4), dict(dilations=[3])),
    "2d_3x3_pad": ((3, 17, 15), (8, 3, 3, 3), dict(pads=[1, 1, 1, 1])),
    "2d_3x3_stride2": ((3, 17, 16), (10, 3, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    "2d_2x3_asym_strides": ((4, 13, 11), (5, 4, 2, 3), dict(strides=[2, 1], pads=[0, 2, 1, 0])),
    "2d_5x5_dilated": ((2, 19, 18), (9, 2, 5, 5), dict(dilations=[2, 3], pads=[3, 2, 4, 1])),
    "2d_same_lower_stride": ((4, 13, 11), (16, 4, 2, 3), dict(auto_pad="SAME_LOWER", strides=[1, 2])),
    "2d_same_upper_stride3": ((4, 14, 10), (7, 4, 3, 3), dict(auto_pad="SAME_UPPER", strides=[3, 3])),
    "2d_valid": ((6, 9, 12), (4, 6, 3, 2), dict(auto_pad="VALID")),
    "2d_pointwise": ((24, 7, 9), (40, 24, 1, 1), {}),
    "2d_pointwise_stride2": ((8, 7, 9), (12, 8, 1, 1), dict(strides=[2, 2])),
    "2d_pointwise_stride23_padded": ((8, 11, 13), (12, 8, 1, 1), dict(strides=[2, 3], pads=[1, 0, 2, 1])),  # one phase
    "2d_dilated_by_the_stride": ((5, 15, 14), (6, 5, 3, 3), dict(strides=[2, 2], dilations=[2, 4], pads=[2, 4, 2, 4])),
    "2d_grouped": ((12, 10, 9), (18, 4, 3, 3), dict(group=3, pads=[1, 0, 1, 2])),
    "2d_depthwise": ((16, 15, 14), (16, 1, 3, 3), dict(group=16, pads=[1, 1, 1, 1])),
    "2d_depthwise_stride2": ((8, 28, 27), (8, 1, 3, 3), dict(group=8, strides=[2, 2], pads=[1, 1, 1, 1])),
    "2d_depthwise_same_stride2": ((6, 16, 34), (6, 1, 3, 3), dict(group=6, strides=[2, 2], auto_pad="SAME_UPPER")),
    "2d_depthwise_large_pads": ((3, 7, 9), (3, 1, 3, 3), dict(group=3, pads=[3, 0, 1, 4])),
    "2d_depthwise_stride2_large_pads": ((3, 8, 9), (3, 1, 3, 3), dict(group=3, strides=[2, 2], pads=[4, 3, 2, 0])),
    "2d_depthwise_large_rows": ((4, 50, 60), (4, 1, 3, 3), dict(group=4, pads=[1, 1, 1, 1])),
    "2d_depthwise_unpadded": ((5, 9, 40), (5, 1, 3, 3), dict(group=5)),
    "2d_depthwise_mid_rows": ((4, 9, 24), (4, 1, 3, 3), dict(group=4, pads=[1, 1, 1, 1])),
    "2d_depthwise_wide_rows": ((3, 6, 70), (3, 1, 3, 5), dict(group=3, pads=[1, 2, 1, 2])),
    "2d_depthwise_x2": ((4, 9, 8), (8, 1, 3, 3), dict(group=4, pads=[1, 1, 1, 1])),
    "2d_kernel_is_input": ((3, 5, 4), (2, 3, 5, 4), {}),
    # <= 128 output columns: whole 4- and 2-vector blocks by quads and duos, the rest by the product's tiles
    "1d_quads_and_rest": ((5, 100), (13, 5, 3), dict(pads=[2, 0])),
    "1d_quad_duo_rest": ((9, 120), (20, 9, 3), dict(pads=[2, 0])),
    "1d_duo": ((8, 34), (11, 8, 3), {}),
    "2d_pointwise_quads": ((6, 8, 16), (7, 6, 1, 1), {}),
    # narrow outputs (<= 8 columns, >= 32 output channels per group; <= 16 for exactly 32 or multiples of 64):
    # channel-vectorised tiles
    "1d_narrow_causal": ((40, 4), (128, 40, 3), dict(pads=[2, 0])),
    "1d_narrow_8_columns": ((40, 8), (64, 40, 3), dict(pads=[2, 0])),
    "1d_narrow_one_column": ((24, 5), (64, 24, 3), dict(dilations=[2])),
    "1d_narrow_groups_edge": ((20, 9), (160, 10, 3), dict(group=2, strides=[2], dilations=[2], pads=[1, 1])),
    "2d_narrow_one_row": ((4, 3, 4), (72, 4, 3, 3), dict(pads=[0, 1, 0, 1])),
    # 32 to 63 output channels per group: tiles of two channel vectors (8, 4 or 2 columns, masked last block)
    "1d_narrow_pair_8_columns": ((16, 16), (32, 16, 5), dict(dilations=[2])),
    "1d_narrow_pair_two_columns": ((32, 11), (32, 32, 4), dict(dilations=[3])),
    "1d_narrow_pair_edge": ((12, 7), (48, 12, 3), dict(pads=[2, 0])),
    "1d_narrow_pair_edge_short": ((12, 3), (40, 12, 3), dict(pads=[2, 0])),
    "1d_narrow_pair_groups": ((20, 6), (64, 10, 3), dict(group=2)),
    "1d_narrow_pair_odd_taps": ((3, 4), (32, 3, 3), {}),  # two columns over two sums, a last odd tap
    "1d_narrow_pair_one_column": ((5, 1), (32, 5, 3), dict(pads=[2, 0])),
    "1d_narrow_pair_16_columns": ((16, 24), (32, 16, 5), dict(dilations=[2])),  # exactly two vectors: up to 16
    "1d_narrow_pair_12_columns": ((32, 14), (32, 32, 3), {}),
    "1d_narrow_pair_edge_12_columns": ((16, 14), (48, 16, 3), {}),  # a masked block: not narrow past 8
    "1d_narrow_64_channels_16_columns": ((16, 18), (64, 16, 3), {}),  # whole 4-vector blocks: up to 16
    "1d_narrow_128_channels_12_columns": ((8, 16), (128, 8, 3), dict(pads=[2, 0])),
    "1d_narrow_96_channels_16_columns": ((8, 18), (96, 8, 3), {}),  # a masked block: not narrow past 8
    # rows of exactly a tile's columns (4, 2; a masked last block of channels): whole transposed vectors
    "1d_narrow_pair_edge_4_columns": ((12, 4), (48, 12, 3), dict(pads=[2, 0])),
    "1d_narrow_edge_4_columns": ((10, 6), (80, 10, 3), {}),
    "1d_narrow_pair_2_columns_groups": ((8, 6), (64, 4, 5), dict(group=2)),
    # other rows of at most two vectors: short tiles (one or two vectors, whole or masked, edge rows)
    "1d_short_one_vector": ((3, 20), (20, 3, 5), {}),
    "1d_short_masked": ((4, 13), (10, 4, 3), dict(pads=[1, 1])),
    "1d_short_stride2": ((5, 40), (12, 5, 4), dict(strides=[2], pads=[1, 2])),
    "1d_short_groups": ((6, 30), (9, 2, 3), dict(group=3)),
    # one output column from a kernel covering the whole input (a Flatten + Gemm head as Conv): dots
    "1d_dot_head": ((128, 16), (2, 128, 16), {}),
    "1d_dot_groups": ((8, 7), (6, 4, 7), dict(group=2)),
}
NARROW = [case for case in CASES if "narrow" in case]
DOT = [case for case in CASES if "dot" in case] + ["2d_kernel_is_input"]


def _conv_model(x_shape, w, attrs, bias, extra=(), extra_inits=None):
    names = ["x", "w"] + (["b"] if bias is not None else [])
    nodes = [helper.make_node("Conv", names, ["y"], **attrs), *extra]
    inits = {"w": w} | ({"b": bias} if bias is not None else {}) | (extra_inits or {})
    out = extra[-1].output[0] if extra else "y"
    return make_model(nodes, {"x": (x_shape, np.float32)}, [out], inits)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_conv_matches_onnxruntime(case, with_bias, batch):
    shape, w_shape, attrs = CASES[case]
    rng = np.random.default_rng(len(case) + 7 * batch + with_bias)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if with_bias else None
    assert_matches_ort(_conv_model(x.shape, w, attrs, b), {"x": x}, RTOL, ATOL)


@pytest.mark.parametrize("case", NARROW)
def test_narrow_cases_take_the_narrow_method(case):
    shape, w_shape, attrs = CASES[case]
    w = np.ones(w_shape, np.float32)
    session = edgekit.InferenceSession(_conv_model((1, *shape), w, attrs, None))
    (y,) = session.run(None, {"x": np.ones((1, *shape), np.float32)})
    (fn, args), = next(iter(session._plans.values())).steps
    cout_g = w_shape[0] // attrs.get("group", 1)  # 8 (16) columns with AVX-512, 4 (8) with 8-lane vectors
    whole = cout_g == 2 * kc.LANES or cout_g % (kc.NARROW_VECS * kc.LANES) == 0  # no masked block of channels
    narrow = y.shape[-1] <= NARROW_WIDTH or (y.shape[-1] <= PAIR_WIDTH and whole)
    assert (args[5][kc.FIELDS.index("method")] == kc.GEMM_NARROW) == narrow


@pytest.mark.parametrize("case", DOT)
def test_single_column_over_contiguous_taps_takes_dot_products(case):
    shape, w_shape, attrs = CASES[case]
    session = edgekit.InferenceSession(_conv_model((1, *shape), np.ones(w_shape, np.float32), attrs, None))
    session.run(None, {"x": np.ones((1, *shape), np.float32)})
    (fn, args), = next(iter(session._plans.values())).steps
    assert args[5][kc.FIELDS.index("method")] == kc.DOT


@pytest.mark.parametrize("width", [1, 9, ROWS_WIDTH, ROWS_WIDTH + 1])
def test_single_row_outputs_take_the_rows_kernel(width):
    """Single-row outputs up to ROWS_WIDTH columns run on a rows kernel of their plan's path, which the
    streaming step interpreter runs (``kc.rows_call``), with or without AVX-512 (8-lane vectors have no
    quads, and took conv_kernel: every streaming conv then ran outside the compiled program); wider ones
    on the kernel of their plan's path (``conv_kernel(plan)``). Both match onnxruntime, with a fused Relu."""
    rng = np.random.default_rng(width)
    x = rng.standard_normal((2, 3, width + 2)).astype(np.float32)
    inits = {"w": rng.standard_normal((5, 3, 3)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3]), helper.make_node("Relu", ["c"], ["y"])]
    model = make_model(nodes, {"x": (x.shape, np.float32)}, ["y"], inits)
    assert_matches_ort(model, {"x": x}, RTOL, ATOL)
    session = edgekit.InferenceSession(model)
    session.run(None, {"x": x})
    (fn, args), = next(iter(session._plans.values())).steps
    assert fn is kc.conv_kernel(args[5], width <= ROWS_WIDTH)
    rows = width <= ROWS_WIDTH
    assert (kc.rows_flags(fn) is not None) == rows == (kc.rows_flags(kc.conv_kernel(args[5], rows)) is not None)


def test_each_path_has_a_kernel_of_its_own():
    """Convolutions of one path share a kernel; another path (depthwise, wide, repacked) gets another,
    so a model compiles only the paths it uses (planning compiles nothing)."""
    def kernel(x_shape, w_shape, **attrs):
        model = _conv_model(x_shape, np.ones(w_shape, np.float32), attrs, None)
        (fn, _), = edgekit.InferenceSession(model).plan((x_shape,)).steps
        return fn
    pointwise = kernel((1, 8, 20, 20), (16, 8, 1, 1))
    assert kernel((2, 4, 9, 30), (6, 4, 1, 1)) is pointwise
    others = [kernel((1, 8, 20, 20), (8, 1, 3, 3), group=8, pads=[1, 1, 1, 1]),
              kernel((1, 8, 20, 20), (8, 1, 5, 5), group=8), kernel((1, 8, 20, 20), (16, 8, 3, 3), pads=[1, 1, 1, 1]),
              kernel((1, 8, 20, 20), (16, 8, 1, 1), strides=[2, 2])]
    assert len({id(f) for f in [pointwise, *others]}) == 5


def test_same_padding_with_dilation_matches_reference_evaluator():
    """onnxruntime refuses auto_pad SAME with dilations, so onnx's reference evaluator is the oracle."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 12, 11)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    for auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        model = _conv_model(x.shape, w, dict(auto_pad=auto_pad, dilations=[2, 3], strides=[2, 1]), None)
        expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
        got = edgekit.InferenceSession(model).run(None, {"x": x})[0]
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", ["1d_stride2_asym", "2d_grouped", "2d_depthwise"])
def test_weights_and_bias_known_only_at_run_time(case):
    shape, w_shape, attrs = CASES[case]
    rng = np.random.default_rng(4)
    feeds = {"x": rng.standard_normal((2, *shape)).astype(np.float32),
             "w": rng.standard_normal(w_shape).astype(np.float32),
             "b": rng.standard_normal(w_shape[0]).astype(np.float32)}
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    model = make_model([node], {k: (v.shape, np.float32) for k, v in feeds.items()}, ["y"])
    session = edgekit.InferenceSession(model)
    assert_matches_ort(model, feeds, RTOL, ATOL, session=session)
    feeds["w"] = feeds["w"][::-1].copy()  # the weights are re-packed on every run
    assert_matches_ort(model, feeds, RTOL, ATOL, session=session)


@pytest.mark.parametrize("activation", [
    helper.make_node("Relu", ["y"], ["z"]),
    helper.make_node("LeakyRelu", ["y"], ["z"], alpha=0.2),
    helper.make_node("HardSigmoid", ["y"], ["z"], alpha=0.3, beta=0.6),
    helper.make_node("Sigmoid", ["y"], ["z"]),
    helper.make_node("Clip", ["y", "lo", "hi"], ["z"]),
], ids=lambda n: n.op_type)
@pytest.mark.parametrize("case", ["1d_k7_pad", "2d_3x3_stride2", "2d_depthwise", "2d_depthwise_large_rows",
                                  "2d_depthwise_wide_rows", "2d_pointwise", "1d_narrow_groups_edge", "1d_dot_groups",
                                  "1d_quad_duo_rest", "1d_narrow_causal", "1d_narrow_pair_two_columns",
                                  "1d_narrow_pair_edge_4_columns", "1d_short_one_vector", "1d_duo"])
def test_fused_activation(case, activation):
    shape, w_shape, attrs = CASES[case]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    bounds = {"lo": np.float32(-0.5), "hi": np.float32(1.5)} if activation.op_type == "Clip" else None
    model = _conv_model(x.shape, w, attrs, rng.standard_normal(w_shape[0]).astype(np.float32), [activation], bounds)
    session = edgekit.InferenceSession(model)
    assert len(next(iter(session._plans.values())).steps) == 1
    assert_matches_ort(model, {"x": x}, RTOL, ATOL, session=session)


def test_conv_batchnorm_relu_fuse_into_one_step():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 20, 18)).astype(np.float32)
    c = 8
    bn = {"gamma": rng.uniform(0.5, 2, c), "beta": rng.standard_normal(c), "mean": rng.standard_normal(c),
          "var": rng.uniform(0.5, 2, c)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["y", "gamma", "beta", "mean", "var"], ["n"], epsilon=1e-3),
             helper.make_node("Relu", ["n"], ["z"])]
    inits = {"w": rng.standard_normal((c, 4, 3, 3)), "b": rng.standard_normal(c), **bn}
    inits = {name: np.asarray(v, np.float32) for name, v in inits.items()}
    model = make_model(nodes, {"x": (x.shape, np.float32)}, ["z"], inits)
    session = edgekit.InferenceSession(model)
    steps = next(iter(session._plans.values())).steps
    assert len(steps) < len(nodes)
    assert_matches_ort(model, {"x": x}, RTOL, ATOL, session=session)


def test_nan_propagates():
    x = np.zeros((1, 2, 9), np.float32)
    x[0, 1, 4] = np.nan
    w = np.ones((3, 2, 3), np.float32)
    assert_matches_ort(_conv_model(x.shape, w, dict(pads=[1, 1]), None), {"x": x}, RTOL, ATOL)


@pytest.mark.parametrize("case", ["1d_narrow_causal", "1d_narrow_pair_two_columns", "1d_narrow_pair_8_columns",
                                  "1d_narrow_edge_4_columns", "1d_short_one_vector", "1d_short_masked", "1d_duo"])
def test_nan_and_inf_propagate_through_fused_relu(case):
    """The narrow and short tiles apply Relu in registers: NaN stays NaN, +-Inf spread as in onnxruntime."""
    shape, w_shape, attrs = CASES[case]
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    x[0, 0, 1], x[1, -1, -2], x[1, 0, 0] = np.nan, np.inf, -np.inf
    w = rng.standard_normal(w_shape).astype(np.float32)
    model = _conv_model(x.shape, w, attrs, rng.standard_normal(w_shape[0]).astype(np.float32),
                        [helper.make_node("Relu", ["y"], ["z"])])
    assert_matches_ort(model, {"x": x}, RTOL, ATOL)


@pytest.mark.parametrize("hop,batch", [(16, 1), (32, 2), (64, 1)])
def test_streaming_ppg_demo_matches_step_model_in_onnxruntime(hop, batch):
    """The PPG demo net streamed (its convs at 16, 4 and 2 columns per hop of 16, narrow and short
    tiles inside the compiled step program) equals its step model hop by hop in onnxruntime."""
    model = onnx.load(PPG_MODEL)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 256
    sm = to_streaming(model, hop)
    x = np.random.default_rng(hop).standard_normal((batch, 1, (sm.warmup_hops + 12) * hop)).astype(np.float32)
    got = edgekit.StreamingSession(model, hop).push(x)
    want = stream_in_ort(sm, x)[sm.warmup_hops:]
    assert len(got) == len(want) == 12
    for g, w in zip(got, want):
        np.testing.assert_allclose(g[0], w[0], rtol=RTOL, atol=ATOL)


def test_3d_conv_is_unsupported():
    w = np.ones((2, 1, 2, 2, 2), np.float32)
    with pytest.raises(UnsupportedOpError, match="3-D Conv"):
        edgekit.InferenceSession(_conv_model((1, 1, 4, 4, 4), w, {}, None))


@pytest.mark.parametrize("attrs,bias,match", [
    ({"kernel_shape": [2, 2]}, None, "kernel_shape"), ({"dilations": [0, 1]}, None, "dilations"),
    ({"strides": [1, 0]}, None, "strides"), ({"strides": [1]}, None, "strides"), ({}, 5, "bias"),
])
def test_inconsistent_attributes_raise_model_error_naming_the_node(attrs, bias, match):
    """Forms onnxruntime refuses (kernel_shape not W's, dilations or strides below 1 or of the wrong
    length, a bias not of C_out values) are ModelErrors naming the node, not silently run."""
    rng = np.random.default_rng(21)
    inits = {"w": rng.standard_normal((2, 3, 3, 3)).astype(np.float32)}
    if bias:
        inits["b"] = rng.standard_normal(bias).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["y"], name="conv7", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", 1, [])],
                              [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    with pytest.raises(ModelError, match=f"'conv7'.*{match}"):
        edgekit.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _rows_call(mask):
    """A compiled call of ``kc.rows_call`` for the constant ``mask``, as the step interpreter makes it."""
    @njit
    def call(x, w, bias, y, scratch, plan, params):
        kc.rows_call(mask, x, w, bias, y, scratch, plan, params)
    return call


def test_a_rows_kernel_with_more_tiles_computes_as_each_plans_own():
    """The streaming step interpreter runs all of a program's single-row convolutions on one rows kernel,
    with the union of their tiles (``kc.rows_call``): each computes there exactly what its plan's own
    kernel (its tiles only) computes. Pair tiles of every kind, short tiles, grouped and batched."""
    cases = ["1d_narrow_pair_edge", "1d_narrow_pair_two_columns", "1d_narrow_pair_edge_short",
             "1d_narrow_pair_groups", "1d_short_masked", "1d_short_groups"]
    rng = np.random.default_rng(5)
    steps = []
    for case in cases:
        shape, w_shape, attrs = CASES[case]
        w, b = rng.standard_normal(w_shape).astype(np.float32), rng.standard_normal(w_shape[0]).astype(np.float32)
        plan = edgekit.InferenceSession(_conv_model((2, *shape), w, attrs, b)).plan(((2, *shape),))
        (fn, args), = plan.steps
        plan.input_buffers["x"][...] = rng.standard_normal((2, *shape)).astype(np.float32)
        steps.append((kc.rows_flags(fn), fn, args))
    union = tuple(map(any, zip(*(flags for flags, _, _ in steps))))
    call = _rows_call(kc.rows_mask(union))
    for flags, fn, args in steps:
        assert flags != union
        fn(*args)
        own = args[3].copy()
        args[3][...] = np.nan
        call(*args)
        np.testing.assert_array_equal(args[3], own)
