"""ConvTranspose, Resize and Upsample against onnxruntime on random float32 inputs.

ConvTranspose (1-D and 2-D): strides, dilations, explicit pads, output_padding, output_shape (a
negative total padding included), auto_pad SAME_UPPER / SAME_LOWER (also where the full output is
shorter than L*s) / VALID, groups and depthwise, bias constant, absent or given at run time, weights
given at run time, X read in place (kernel == stride) and phases no tap reaches (kernel 1, stride
2), batch > 1, dynamic batch and length in one session, opsets 9-17, and an activation fused into
its epilogue. Resize: nearest with every coordinate mode and nearest_mode, by scales and by sizes,
leading axes mapped (5-D, batch and channel scales); linear (1-D and 2-D) with every coordinate
mode, up, down and mixed; dynamic batch and spatial dims; opsets 10, 11, 13, 18 (axes) and 19;
Upsample 7 and 9; an empty batch and an axis scaled to 0 (empty outputs); scales giving the
input's shape (a copy, as onnxruntime); NaN and infinities spread by linear as by onnxruntime. A
bias not of C_out values and a kernel_shape not W's raise ModelError. Every refused form (3-D
ConvTranspose; Resize cubic, tf_crop_and_resize, antialias, keep_aspect_ratio_policy, linear on a
leading axis, non-float32 input, scales at run time) raises UnsupportedOpError naming the node.
Tolerances: ConvTranspose rtol 1e-4, atol 1e-4 (float32 sums of up to a few hundred products in
another order); Resize 1e-5 (nearest copies exactly; linear is two float32 blends in another order
than onnxruntime's).
"""
import numpy as np
import pytest
from onnx import helper

import edgekit
from edgekit.errors import InputError, ModelError, UnsupportedOpError
from edgekit.ir import Node
from edgekit.runtimes.kernels import activation as ka
from edgekit.runtimes.ops.registry import FUSED_ACTIVATION, Tensor
from edgekit.runtimes.ops.upsample import build_conv_transpose
from oracle import assert_matches_ort, make_model, ort_session

RTOL, ATOL = 1e-4, 1e-4
RESIZE_TOL = 1e-5
COORDINATES = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
               "tf_half_pixel_for_nn"]
NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


def _conv_transpose_model(x_shape, w, b, attrs, opset=17, bias_input=False):
    inits = {"w": w}
    names = ["x", "w"]
    inputs = {"x": (x_shape, np.float32)}
    if b is not None:
        names.append("b")
        if bias_input:
            inputs["b"] = (b.shape, np.float32)
        else:
            inits["b"] = b
    node = helper.make_node("ConvTranspose", names, ["y"], name="up", **attrs)
    return make_model([node], inputs, ["y"], inits, opset=opset)


CONV_TRANSPOSE_CASES = [  # (x shape, w shape, attributes)
    ((2, 3, 9), (3, 4, 3), {}),
    ((2, 3, 9), (3, 4, 4), {"strides": [2], "pads": [1, 1]}),
    ((1, 4, 7), (4, 3, 4), {"strides": [3], "pads": [1, 2], "dilations": [2], "output_padding": [1]}),
    ((2, 2, 5), (2, 3, 3), {"strides": [2], "output_shape": [10]}),
    ((1, 2, 5), (2, 3, 3), {"strides": [2], "output_shape": [12]}),  # total padding -1: one more column
    ((1, 2, 5), (2, 3, 3), {"strides": [2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 5), (2, 3, 3), {"strides": [2], "auto_pad": "SAME_LOWER", "output_padding": [1]}),
    ((1, 2, 5), (2, 3, 3), {"strides": [2], "auto_pad": "VALID"}),
    ((2, 9, 5), (9, 3, 1), {"strides": [3], "group": 3, "auto_pad": "SAME_LOWER"}),  # full output < L*s
    ((2, 6, 3, 4), (6, 2, 1, 2), {"strides": [3, 2], "group": 2, "output_padding": [1, 1], "auto_pad": "SAME_UPPER"}),
    ((2, 6, 8), (6, 1, 4), {"strides": [2], "pads": [1, 1], "group": 6}),  # depthwise
    ((2, 8, 16), (8, 4, 2), {"strides": [2]}),  # kernel == stride: X read in place
    ((2, 3, 6, 5), (3, 4, 2, 2), {"strides": [2, 2]}),  # the U-Net up-convolution, in place
    ((2, 3, 6, 5), (3, 2, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    ((1, 4, 6, 5), (4, 2, 3, 3), {"strides": [2, 1], "pads": [0, 1, 2, 1], "dilations": [2, 1], "group": 2}),
    ((2, 4, 6, 5), (4, 1, 4, 4), {"strides": [2, 2], "pads": [1, 1, 1, 1], "group": 4}),  # depthwise
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [3, 2], "output_shape": [10, 8]}),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((1, 3, 4, 4), (3, 2, 1, 1), {"strides": [2, 2]}),  # phases no tap reaches: bias only
    ((1, 16, 12, 12), (16, 8, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
]


@pytest.mark.parametrize("x_shape, w_shape, attrs", CONV_TRANSPOSE_CASES)
def test_conv_transpose_matches_onnxruntime(x_shape, w_shape, attrs):
    rng = np.random.default_rng(len(CONV_TRANSPOSE_CASES) + sum(x_shape) + sum(w_shape))
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[1] * attrs.get("group", 1)).astype(np.float32)
    x = rng.standard_normal(x_shape).astype(np.float32)
    assert_matches_ort(_conv_transpose_model(x_shape, w, b, attrs), {"x": x}, RTOL, ATOL)


@pytest.mark.parametrize("opset", [9, 11, 17])
def test_conv_transpose_without_bias_or_with_bias_at_run_time(opset):
    rng = np.random.default_rng(opset)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    attrs = {"strides": [2, 2], "pads": [1, 0, 0, 1]}
    assert_matches_ort(_conv_transpose_model(x.shape, w, None, attrs, opset), {"x": x}, RTOL, ATOL)
    b = rng.standard_normal(3).astype(np.float32)
    model = _conv_transpose_model(x.shape, w, b, attrs, opset, bias_input=True)
    assert_matches_ort(model, {"x": x, "b": b}, RTOL, ATOL)


def test_conv_transpose_dynamic_batch_and_length():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 2, 4)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    model = _conv_transpose_model(("n", 4, "t"), w, b, {"strides": [2], "pads": [1, 1]})
    session = edgekit.InferenceSession(model)
    for n, t in [(1, 8), (3, 13), (1, 8)]:
        x = rng.standard_normal((n, 4, t)).astype(np.float32)
        assert_matches_ort(model, {"x": x}, RTOL, ATOL, session=session)


def test_conv_transpose_applies_a_fused_activation():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1]}
    want = ort_session(_conv_transpose_model(x.shape, w, b, attrs)).run(None, {"x": x})[0]
    node = Node("up", "ConvTranspose", "", ["x", "w", "b"], ["y"],
                dict(attrs, **{FUSED_ACTIVATION: (ka.CLIP, -0.5, 0.5)}))
    kernel = build_conv_transpose(node, [Tensor(x.shape, np.dtype(np.float32)), Tensor(w.shape, w.dtype, w),
                                         Tensor(b.shape, b.dtype, b)], 17)
    y = np.empty(kernel.outputs[0][0], np.float32)
    kernel.fn(x, *kernel.args[1:3], y, *kernel.args[4:])
    np.testing.assert_allclose(y, np.clip(want, -0.5, 0.5), rtol=RTOL, atol=ATOL)


def test_conv_transpose_unsupported_forms_name_the_node():
    w3 = np.ones((2, 2, 2, 2, 2), np.float32)
    with pytest.raises(UnsupportedOpError, match="'up'.*3-D ConvTranspose"):
        edgekit.InferenceSession(_conv_transpose_model((1, 2, 3, 3, 3), w3, None, {})).run(
            None, {"x": np.ones((1, 2, 3, 3, 3), np.float32)})


@pytest.mark.parametrize("bias_input", [False, True])
def test_conv_transpose_refuses_a_bias_not_of_c_out_values(bias_input):
    """A bias shorter than C_out was read past its end (onnxruntime refuses it)."""
    w, b = np.ones((2, 4, 3), np.float32), np.ones(1, np.float32)
    model = _conv_transpose_model((1, 2, 5), w, b, {}, bias_input=bias_input)
    feeds = {"x": np.ones((1, 2, 5), np.float32), **({"b": b} if bias_input else {})}
    with pytest.raises(ModelError, match="'up'.*bias of shape"):
        edgekit.InferenceSession(model).run(None, feeds)


def test_conv_transpose_refuses_kernel_shape_not_w_s():
    model = _conv_transpose_model((1, 2, 5), np.ones((2, 4, 3), np.float32), None, {"kernel_shape": [2]})
    with pytest.raises(ModelError, match="'up'.*kernel_shape"):
        edgekit.InferenceSession(model).run(None, {"x": np.ones((1, 2, 5), np.float32)})


@pytest.mark.parametrize("x_shape, w_shape, attrs", [((2, 2, 5), (2, 3, 3), {"strides": [2], "pads": [1, 0]}),
                                                     ((1, 4, 4, 5), (4, 1, 3, 3), {"strides": [2, 2], "group": 2})])
def test_conv_transpose_weights_given_at_run_time(x_shape, w_shape, attrs):
    rng = np.random.default_rng(5)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], **attrs)
    model = make_model([node], {"x": (x_shape, np.float32), "w": (w_shape, np.float32)}, ["y"])
    session = edgekit.InferenceSession(model)
    for _ in range(2):  # new weights each call
        feeds = {"x": rng.standard_normal(x_shape).astype(np.float32),
                 "w": rng.standard_normal(w_shape).astype(np.float32)}
        assert_matches_ort(model, feeds, RTOL, ATOL, session=session)


def _resize_model(x_shape, scales=None, sizes=None, opset=19, **attrs):
    """Resize with constant scales or sizes (roi and unused inputs empty, as exporters write them)."""
    inits = {}
    if opset < 11:
        names = ["x", "s"]
        inits["s"] = np.array(scales, np.float32)
    else:
        names = ["x", "roi", "s"]
        inits["roi"] = np.zeros(0, np.float32)
        inits["s"] = np.array([] if scales is None else scales, np.float32)
        if sizes is not None:
            names.append("z")
            inits["z"] = np.array(sizes, np.int64)
    node = helper.make_node("Resize", names, ["y"], name="rs", **attrs)
    return make_model([node], {"x": (x_shape, np.float32)}, ["y"], inits, opset=opset)


def _check_resize(model, x_shape, seed):
    x = np.random.default_rng(seed).standard_normal(x_shape).astype(np.float32)
    assert_matches_ort(model, {"x": x}, RESIZE_TOL, RESIZE_TOL)


@pytest.mark.parametrize("coordinates", COORDINATES)
@pytest.mark.parametrize("rule", NEAREST_MODES)
def test_resize_nearest_every_coordinate_and_rounding_mode(coordinates, rule):
    attrs = {"mode": "nearest", "coordinate_transformation_mode": coordinates, "nearest_mode": rule}
    for i, scales in enumerate(([1, 1, 2, 2], [1, 1, 0.6, 1.7], [1, 1, 3, 0.5])):
        _check_resize(_resize_model((2, 3, 5, 7), scales, **attrs), (2, 3, 5, 7), i)
    _check_resize(_resize_model((2, 3, 5, 7), sizes=[1, 3, 9, 4], **attrs), (2, 3, 5, 7), 3)  # ties at 7 -> 4


@pytest.mark.parametrize("coordinates", COORDINATES)
def test_resize_linear_every_coordinate_mode(coordinates):
    attrs = {"mode": "linear", "coordinate_transformation_mode": coordinates}
    for i, scales in enumerate(([1, 1, 2, 2], [1, 1, 0.6, 1.7], [1, 1, 3, 0.5], [1, 1, 1, 2.5])):
        _check_resize(_resize_model((2, 3, 5, 7), scales, **attrs), (2, 3, 5, 7), i)
    _check_resize(_resize_model((2, 3, 5, 7), sizes=[2, 3, 1, 4], **attrs), (2, 3, 5, 7), 4)
    _check_resize(_resize_model((2, 3, 7), [1, 1, 2.5], **attrs), (2, 3, 7), 5)  # 1-D, NCL
    _check_resize(_resize_model((5, 7), [2, 3], **attrs), (5, 7), 6)  # a bare 2-D input


@pytest.mark.parametrize("coordinates", ["asymmetric", "align_corners", "half_pixel"])
def test_resize_linear_spreads_nan_and_infinities_as_onnxruntime(coordinates):
    """onnxruntime blends every output from its two (four) neighbours, a weight of 0 included, and
    weighs an edge sample clamped onto itself 0.5 + 0.5: a NaN or an infinity reaches the positions
    next to it (0 * inf is NaN) and an infinity at an edge stays one. Edgekit copied rows of weight
    0 and weighed the edge 1 + 0 (NaN there)."""
    attrs = {"mode": "linear", "coordinate_transformation_mode": coordinates}
    x = np.random.default_rng(9).standard_normal((1, 2, 4, 5)).astype(np.float32)
    x[0, 0, 1, 2], x[0, 0, 3, 4], x[0, 1, 2, 0], x[0, 1, 0, 3] = np.inf, -np.inf, np.nan, np.inf
    for scales in ([1, 1, 2, 2], [1, 1, 1, 3], [1, 1, 3, 1], [1, 1, 0.5, 0.5], [1, 1, 2.5, 1.5]):
        assert_matches_ort(_resize_model(x.shape, scales, opset=13, **attrs), {"x": x}, RESIZE_TOL, RESIZE_TOL)


@pytest.mark.parametrize("mode,coordinates,rule", [("nearest", "tf_half_pixel_for_nn", "ceil"),
                                                    ("linear", "asymmetric", "floor"),
                                                    ("linear", "half_pixel", "floor")])
def test_resize_to_the_input_shape_is_a_copy(mode, coordinates, rule):
    """Scales whose output floors back to the input's shape (W = 2 at 1.25), or all 1: onnxruntime
    copies the input (the scales are not applied); edgekit sampled at the scale (W: [1, 1] for [0, 1])
    and blended NaN into the neighbours of a NaN."""
    attrs = {"mode": mode, "coordinate_transformation_mode": coordinates, "nearest_mode": rule}
    x = np.random.default_rng(10).standard_normal((2, 3, 4, 2)).astype(np.float32)
    x[0, 1, 2, 1] = np.nan
    for opset, scales in ((13, [1, 1, 1, 1.25]), (13, [1, 1, 1, 1]), (10, [1, 1, 1.2, 1.4])):
        model = _resize_model(x.shape, scales, opset=opset, **(attrs if opset > 10 else {"mode": mode}))
        np.testing.assert_array_equal(assert_matches_ort(model, {"x": x}, 0, 0)[0], x)


@pytest.mark.parametrize("opset", [10, 11, 13, 18])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_default_attributes_of_each_opset(opset, mode):
    for i, scales in enumerate(([1, 1, 2, 2], [1, 1, 0.6, 1.7], [1, 1, 1, 3])):
        _check_resize(_resize_model((2, 3, 5, 7), scales, opset=opset, mode=mode), (2, 3, 5, 7), i)


def test_resize_axes_and_leading_axes():
    _check_resize(_resize_model((2, 3, 5, 7), [2, 0.5], mode="linear", axes=[2, 3]), (2, 3, 5, 7), 0)
    _check_resize(_resize_model((2, 3, 5, 7), sizes=[8, 9], mode="nearest", axes=[-1, 1]), (2, 3, 5, 7), 1)
    _check_resize(_resize_model((2, 3, 4, 5, 7), [1, 1, 2, 2, 2], mode="nearest"), (2, 3, 4, 5, 7), 2)
    _check_resize(_resize_model((2, 3, 4, 5), [2, 0.5, 1, 1.5], mode="nearest"), (2, 3, 4, 5), 3)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_dynamic_dims(mode):
    model = _resize_model(("n", 3, "h", "w"), [1, 1, 2, 1.5], mode=mode)
    session = edgekit.InferenceSession(model)
    for shape in [(1, 3, 4, 6), (2, 3, 5, 7), (1, 3, 4, 6)]:
        x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
        assert_matches_ort(model, {"x": x}, RESIZE_TOL, RESIZE_TOL, session=session)


@pytest.mark.parametrize("opset", [7, 9])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_upsample(opset, mode):
    scales = np.array([1, 1, 2, 3], np.float32)
    if opset < 9:
        node, inits = helper.make_node("Upsample", ["x"], ["y"], mode=mode, scales=scales.tolist()), {}
    else:
        node, inits = helper.make_node("Upsample", ["x", "s"], ["y"], mode=mode), {"s": scales}
    _check_resize(make_model([node], {"x": ((2, 3, 4, 5), np.float32)}, ["y"], inits, opset=opset), (2, 3, 4, 5), 0)


@pytest.mark.parametrize("attrs, reason", [
    ({"mode": "cubic"}, "mode 'cubic'"),
    ({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"}, "tf_crop_and_resize"),
    ({"mode": "linear", "antialias": 1}, "antialias"),
    ({"keep_aspect_ratio_policy": "not_larger"}, "keep_aspect_ratio_policy 'not_larger'"),
])
def test_resize_unsupported_forms_name_the_node(attrs, reason):
    model = _resize_model((1, 2, 4, 4), sizes=[1, 2, 8, 6], **attrs)
    with pytest.raises(UnsupportedOpError, match=f"'rs'.*{reason}"):
        edgekit.InferenceSession(model).run(None, {"x": np.ones((1, 2, 4, 4), np.float32)})


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_and_upsample_of_an_empty_batch_or_to_an_empty_axis(mode):
    """An empty batch (a dynamic batch of 0), and scales flooring an axis to 0, give an empty output
    as in onnxruntime (they were refused as an empty output)."""
    empty = np.zeros((0, 2, 4, 4), np.float32)
    model = _resize_model(("n", 2, 4, 4), [1, 1, 2, 2], opset=13, mode=mode)
    assert assert_matches_ort(model, {"x": empty}, RESIZE_TOL, RESIZE_TOL)[0].shape == (0, 2, 8, 8)
    _check_resize(_resize_model((1, 2, 4, 1), [1, 1, 1.5, 0.6], opset=13, mode=mode), (1, 2, 4, 1), 21)
    node = helper.make_node("Upsample", ["x", "s"], ["y"], mode=mode)
    model = make_model([node], {"x": (("n", 2, 4, 4), np.float32)}, ["y"], {"s": np.array([1, 1, 2, 2], np.float32)},
                       opset=9)
    assert_matches_ort(model, {"x": empty}, RESIZE_TOL, RESIZE_TOL)


def test_resize_refuses_linear_on_leading_axes_other_dtypes_and_scales_at_run_time():
    model = _resize_model((2, 3, 4, 4), [1, 2, 2, 2], mode="linear")
    with pytest.raises(UnsupportedOpError, match="'rs'.*linear Resize of axis 1"):
        edgekit.InferenceSession(model).run(None, {"x": np.ones((2, 3, 4, 4), np.float32)})
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], name="rs")
    uint8 = helper.np_dtype_to_tensor_dtype(np.dtype(np.uint8))
    model = make_model([node], {"x": ((1, 2, 4, 4), np.uint8)}, {"y": uint8}, {"s": np.array([1, 1, 2, 2], np.float32)},
                       opset=13)
    with pytest.raises(UnsupportedOpError, match="'rs'.*uint8"):
        edgekit.InferenceSession(model).run(None, {"x": np.ones((1, 2, 4, 4), np.uint8)})
    model = make_model([node], {"x": ((1, 2, 4, 4), np.float32), "s": ((4,), np.float32)}, ["y"], opset=13)
    with pytest.raises(UnsupportedOpError, match="'rs'.*scales"):
        edgekit.InferenceSession(model).run(None, {"x": np.ones((1, 2, 4, 4), np.float32),
                                                   "s": np.array([1, 1, 2, 2], np.float32)})


def test_outputs_beyond_the_plan_cap_are_refused_before_building_tables():
    """A scale of 1e9 (or a huge output_shape) would need tables of the output's size: InputError
    at load time, not an exhausted machine."""
    resize = make_model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest", name="rs")],
                        {"x": ((1, 1, 4, 4), np.float32)}, ["y"], {"scales": np.array([1, 1, 1e9, 1e9], np.float32)},
                        opset=13)
    with pytest.raises(InputError, match="'rs' \\(Resize\\).*GiB"):
        edgekit.InferenceSession(resize)
    w = np.ones((1, 1, 2, 2), np.float32)
    up = make_model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], output_shape=[10**6, 10**6],
                                      name="up")],
                    {"x": ((1, 1, 4, 4), np.float32)}, {"y": ((1, 1, 10**6, 10**6), np.float32)}, {"w": w})
    with pytest.raises(InputError, match="'up' \\(ConvTranspose\\).*GiB"):
        edgekit.InferenceSession(up)
