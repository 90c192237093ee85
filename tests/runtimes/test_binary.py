"""BinaryConv / BinaryGemm (ai.edgekit) against a float64 NumPy reference on random +-1 data.

Covered: float and packed inputs; packed, sign and float outputs; zero padding (exact, per border
class, both tilings), strides, dilations, channel counts that are not multiples of 64; MST-coded
weights (default and explicit block order) giving bit-identical results; the thread option; the
hardware popcount in the compiled code (VPOPCNTQ where the target has AVX-512 VPOPCNTDQ, else POPCNT
or AVX2's nibble-table VPSHUFB count); the AMX tile path (dense, packed input of whole words,
stride 1) equal to the popcount path, the reference and onnxruntime's float Conv; a short tile of
border pixels; an empty batch; ModelError for malformed attributes. Sums are integers, so
thresholded outputs must match exactly; float outputs to rtol 1e-6.
"""
import numpy as np
import onnx
import pytest
from numba import njit
from onnx import TensorProto, helper, numpy_helper

import edgekit
from edgekit.converters.binarize import DOMAIN, pack_bits, unpack_bits
from edgekit.errors import ModelError
from edgekit.runtimes.kernels import binary as kb
from edgekit.runtimes.kernels.simd import TARGET_FEATURES
from edgekit.runtimes.ops import binary as _binary_ops  # noqa: F401  (registers the ops)

RTOL = 1e-6


def pm1(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int64)


def reference_dot(a, w, strides, pads, dilations):
    """Integer sums of +-1 activations a (N, C, H, W) and weights w (M, C, KH, KW), zero padding."""
    pt, pl, pb, pr = pads
    a = np.pad(a, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    m, _, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    oh = (a.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (a.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((a.shape[0], m, oh, ow), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = a[:, :, i * dh:i * dh + sh * oh:sh, j * dw:j * dw + sw * ow:sw]
            out += np.einsum("nchw,mc->nmhw", patch, w[:, :, i, j])
    return out


def model(op, x_shape, x_type, inits, attrs, inputs=("x", "w", "t", "s", "b"), out_type=TensorProto.FLOAT):
    """A one-node model; the output's dims are left symbolic (rank 4 for a conv, 2 for a gemm)."""
    node = helper.make_node(op, list(inputs), ["y"], name="layer", domain=DOMAIN, **attrs)
    dims = [f"d{i}" for i in range(4 if op == "BinaryConv" else 2)]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", x_type, list(x_shape))],
                              [helper.make_tensor_value_info("y", out_type, dims)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                             ir_version=10)


def conv_case(rng, n, c, h, w, m, k, strides, pads, dilations):
    """A random +-1 conv (k: an int or (kh, kw)): float input, its signs, the sums, initializers, attributes."""
    kh, kw = (k, k) if isinstance(k, int) else k
    a = pm1(rng, (n, c, h, w))
    x = (a * rng.uniform(0.1, 2.0, a.shape)).astype(np.float32)
    wt = pm1(rng, (m, c, kh, kw))
    packed_w = pack_bits(wt.transpose(0, 2, 3, 1) < 0).reshape(m, -1)
    dot = reference_dot(a, wt, strides, pads, dilations)
    inits = {"w": packed_w, "t": rng.integers(-6, 7, m).astype(np.int64),
             "s": rng.standard_normal(m).astype(np.float32), "b": rng.standard_normal(m).astype(np.float32)}
    attrs = dict(channels=c, kernel_shape=[kh, kw], strides=list(strides), pads=list(pads), dilations=list(dilations))
    return x, a, dot, inits, attrs


def expected(mode, dot, inits):
    t = inits["t"].reshape(1, -1, 1, 1)
    if mode == "float":
        return inits["s"].reshape(1, -1, 1, 1) * dot.astype(np.float32) + inits["b"].reshape(1, -1, 1, 1)
    return np.where(dot >= t, 1.0, -1.0).astype(np.float32)


CONV_CASES = [  # n, c, h, w, m, k, strides, pads, dilations
    (2, 70, 9, 11, 37, 3, (1, 1), (1, 1, 1, 1), (1, 1)),      # small image: raster tiles, lane fix-ups
    (1, 130, 20, 21, 65, 3, (1, 1), (1, 1, 1, 1), (1, 1)),    # large image: tiles grouped by border class
    (1, 64, 8, 8, 64, 3, (2, 2), (1, 0, 2, 1), (1, 1)),       # stride 2, asymmetric padding
    (1, 5, 7, 6, 9, 3, (1, 2), (2, 2, 2, 2), (2, 1)),         # dilation, padding wider than the kernel reach
    (1, 3, 4, 4, 3, 1, (1, 1), (0, 0, 0, 0), (1, 1)),         # 1x1, no padding
]


def assert_conv_output(x, x_type, inits, attrs, mode, dot):
    """A BinaryConv on ``x`` (float or packed) gives the reference output of ``mode`` for these sums
    (packed bits unpacked to +-1; float outputs within 1e-5, the others exact)."""
    out_type = TensorProto.UINT64 if mode == "packed" else TensorProto.FLOAT
    sess = edgekit.InferenceSession(model("BinaryConv", x.shape, x_type, inits, dict(attrs, output=mode),
                                          out_type=out_type))
    got = sess.run(None, {"x": x})[0]
    want = expected(mode, dot, inits)
    if mode == "packed":
        got = np.where(unpack_bits(got, want.shape[1]).transpose(0, 3, 1, 2), -1.0, 1.0)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-5 if mode == "float" else 0)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("mode", ["float", "sign", "packed"])
def test_conv_matches_reference(case, mode):
    rng = np.random.default_rng(sum(case[:6]))
    x, a, dot, inits, attrs = conv_case(rng, *case)
    assert_conv_output(x, TensorProto.FLOAT, inits, attrs, mode, dot)


@pytest.mark.parametrize("packed_input", [False, True])
@pytest.mark.parametrize("mode", ["float", "sign", "packed"])
def test_short_tile_of_border_pixels_reads_its_own_pixels(mode, packed_input):
    """Border pixels (0, 0), (0, 1), (0, 7) form one short tile whose repeated last slot lies 7
    words past its first: the kernel must not take it for 8 adjacent pixels. Pixel (0, 7) lies
    wholly in the padding (dot 0); thresholds 0 and 1 catch any other sum there."""
    rng = np.random.default_rng(13)
    x, a, dot, inits, attrs = conv_case(rng, 1, 5, 3, 5, 4, (2, 1), (1, 1), (1, 2, 0, 1), (1, 1))
    if packed_input:
        x, x_type = pack_bits(a.transpose(0, 2, 3, 1) < 0), TensorProto.UINT64
    else:
        x_type = TensorProto.FLOAT
    for t in (0, 1):
        assert_conv_output(x, x_type, dict(inits, t=np.full(4, t, np.int64)), attrs, mode, dot)


@pytest.mark.parametrize("c,packed_input", [(70, False), (70, True), (64, True)])
def test_empty_batch_gives_an_empty_output(c, packed_input):
    """Batch 0 (as onnxruntime's Conv and Gemm allow) gives empty outputs, on the popcount and AMX paths."""
    rng = np.random.default_rng(15)
    x, a, _, inits, attrs = conv_case(rng, 1, c, 6, 6, 8, 3, (1, 1), (1, 1, 1, 1), (1, 1))
    x, x_type = (pack_bits(a.transpose(0, 2, 3, 1) < 0), TensorProto.UINT64) if packed_input else (x, TensorProto.FLOAT)
    conv = model("BinaryConv", ("n",) + x.shape[1:], x_type, inits, dict(attrs, output="sign"))
    assert edgekit.InferenceSession(conv).run(None, {"x": x[:0]})[0].shape == (0, 8, 6, 6)
    gemm_x = x[:, :, 0, 0] if not packed_input else x
    gemm_inits = dict(inits, w=pack_bits(pm1(rng, (8, 36 if packed_input else 1, c)) < 0).reshape(8, -1))
    gemm = model("BinaryGemm", ("n",) + gemm_x.shape[1:], x_type, gemm_inits, dict(channels=c, output="sign"))
    assert edgekit.InferenceSession(gemm).run(None, {"x": gemm_x[:0]})[0].shape == (0, 8)


@pytest.mark.parametrize("case", CONV_CASES[:3])
def test_packed_input_equals_float_input(case):
    rng = np.random.default_rng(7)
    x, a, dot, inits, attrs = conv_case(rng, *case)
    packed = pack_bits(x.transpose(0, 2, 3, 1) < 0)
    sess = edgekit.InferenceSession(model("BinaryConv", packed.shape, TensorProto.UINT64, inits,
                                          dict(attrs, output="sign")))
    np.testing.assert_array_equal(sess.run(None, {"x": packed})[0], expected("sign", dot, inits))


def mst_code(w, parents):
    """W with every child's row replaced by its difference mask to its parent."""
    coded = w.copy()
    for c, p in enumerate(parents):
        if p >= 0:
            coded[c] = w[c] ^ w[p]
    return coded


@pytest.mark.parametrize("explicit_order", [False, True])
def test_mst_coded_weights_give_identical_results(explicit_order):
    rng = np.random.default_rng(3)
    x, a, dot, inits, attrs = conv_case(rng, 1, 130, 10, 10, 21, 3, (1, 1), (1, 1, 1, 1), (1, 1))
    parents = [-1, 0, 0, 1, 1, 2, 5, 5, -1, 8, 8, 9, 9, 9, 3, 3, 14, 16, 16, 0, 8]
    attrs = dict(attrs, output="sign", mst_parents=parents)
    if explicit_order:  # blocks by hand, one of them short
        attrs["mst_order"] = [1, 2, 19, 9, 10, -1, -1, -1, 3, 4, 5, 11, 12, 13, 20, -1, 6, 7, 14, 15,
                              16, -1, -1, -1, 17, 18, -1, -1]
    coded = dict(inits, w=mst_code(inits["w"], parents))
    got = edgekit.InferenceSession(model("BinaryConv", x.shape, TensorProto.FLOAT, coded, attrs)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, expected("sign", dot, inits))


@pytest.mark.parametrize("packed_input", [False, True])
def test_gemm_matches_reference(packed_input):
    rng = np.random.default_rng(11)
    n, c, groups, m = 3, 75, 4 if packed_input else 1, 70
    a = pm1(rng, (n, groups, c))
    wt = pm1(rng, (m, groups, c))
    dot = np.einsum("ngc,mgc->nm", a, wt)
    inits = {"w": pack_bits(wt < 0).reshape(m, -1), "t": rng.integers(-5, 6, m).astype(np.int64),
             "s": rng.standard_normal(m).astype(np.float32), "b": rng.standard_normal(m).astype(np.float32)}
    if packed_input:
        x, x_type = pack_bits(a < 0).reshape(n, 2, 2, -1), TensorProto.UINT64
    else:
        x, x_type = (a.reshape(n, c) * 0.5).astype(np.float32), TensorProto.FLOAT
    for mode in ("float", "sign"):
        sess = edgekit.InferenceSession(model("BinaryGemm", x.shape, x_type, inits, dict(channels=c, output=mode)))
        want = inits["s"] * dot.astype(np.float32) + inits["b"] if mode == "float" else np.where(dot >= inits["t"], 1.0, -1.0)
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], want, rtol=RTOL, atol=1e-5)


def test_input_order_permutes_float_channels():
    rng = np.random.default_rng(5)
    x, a, dot, inits, attrs = conv_case(rng, 1, 70, 6, 6, 8, 3, (1, 1), (1, 1, 1, 1), (1, 1))
    order = rng.permutation(70)
    wt = np.where(unpack_bits(inits["w"].reshape(8, 3, 3, -1), 70), -1, 1)
    permuted = dict(inits, w=pack_bits(wt[..., order] < 0).reshape(8, -1))
    sess = edgekit.InferenceSession(model("BinaryConv", x.shape, TensorProto.FLOAT, permuted,
                                          dict(attrs, output="sign", input_order=[int(i) for i in order])))
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], expected("sign", dot, inits))


def test_threads_give_identical_results():
    rng = np.random.default_rng(9)
    x, a, dot, inits, attrs = conv_case(rng, 1, 70, 12, 12, 37, 3, (1, 1), (1, 1, 1, 1), (1, 1))
    try:
        kb.set_threads(2)
        sess = edgekit.InferenceSession(model("BinaryConv", x.shape, TensorProto.FLOAT, inits, dict(attrs, output="sign")))
    finally:
        kb.set_threads(1)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], expected("sign", dot, inits))


def test_popcount_compiles_to_hardware_popcount():
    scalar = njit(lambda a, b: kb.popcount(a ^ b))
    scalar(np.uint64(3), np.uint64(5))
    assert "popcnt" in scalar.inspect_asm(scalar.signatures[0])
    tiles = njit(fastmath=kb.FASTMATH)(kb._tiles.py_func)  # a fresh compile: cached code cannot be inspected
    u4 = np.zeros((1, 1, 1, 1), np.uint64)
    tiles(0, 0, u4, np.zeros(kb.HEADER, np.int64), np.zeros(1, np.uint64), np.zeros(2, np.float32), u4)
    asm = tiles.inspect_asm(tiles.signatures[0])
    if "avx512vpopcntdq" in TARGET_FEATURES:
        assert "vpopcntq" in asm
    else:  # e.g. an AVX2 build: LLVM counts 4 words per ymm by nibble-table lookups
        assert "popcnt" in asm or "vpshufb" in asm


AMX_CASES = [  # n, c, h, w, m, k, strides, pads, dilations: packed input of whole words, stride 1
    (2, 64, 9, 11, 37, 3, (1, 1), (1, 1, 1, 1), (1, 1)),      # M not a multiple of 16, batch 2
    (1, 128, 7, 13, 80, 3, (1, 1), (2, 0, 1, 2), (2, 1)),     # asymmetric padding, dilation
    (1, 64, 5, 4, 130, 1, (1, 1), (0, 0, 0, 0), (1, 1)),      # 1x1, two output words
]


def _amx_session(onnx_model, on):
    try:
        kb.set_amx(on)
        return edgekit.InferenceSession(onnx_model)
    finally:
        kb.set_amx(True)


@pytest.mark.skipif(not kb.amx_available(), reason="no AMX tile unit")
@pytest.mark.parametrize("case", AMX_CASES)
@pytest.mark.parametrize("mode", ["float", "sign", "packed"])
def test_amx_path_matches_popcount_path_and_reference(case, mode):
    rng = np.random.default_rng(sum(case[:6]) + 1)
    x, a, dot, inits, attrs = conv_case(rng, *case)
    packed = pack_bits(x.transpose(0, 2, 3, 1) < 0)
    out_type = TensorProto.UINT64 if mode == "packed" else TensorProto.FLOAT
    onnx_model = model("BinaryConv", packed.shape, TensorProto.UINT64, inits, dict(attrs, output=mode),
                       out_type=out_type)
    amx, popcount = _amx_session(onnx_model, True), _amx_session(onnx_model, False)
    assert amx.plan((packed.shape,)).steps[0][0] is kb.binary_conv_amx
    assert popcount.plan((packed.shape,)).steps[0][0] is kb.binary_conv
    got = amx.run(None, {"x": packed})[0]
    np.testing.assert_array_equal(got, popcount.run(None, {"x": packed})[0])
    want = expected(mode, dot, inits)
    if mode == "packed":
        got = np.where(unpack_bits(got, want.shape[1]).transpose(0, 3, 1, 2), -1.0, 1.0)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-5 if mode == "float" else 0)


@pytest.mark.skipif(not kb.amx_available(), reason="no AMX tile unit")
@pytest.mark.parametrize("case", AMX_CASES[:2])
def test_amx_path_with_several_row_blocks_per_weight_sweep(case, monkeypatch):
    """Large-weight plans sweep the weights once for many 32-row blocks: forced here on small layers."""
    monkeypatch.setattr(_binary_ops, "L2_WEIGHTS", 0)
    rng = np.random.default_rng(sum(case[:6]) + 2)
    x, a, dot, inits, attrs = conv_case(rng, *case)
    packed = pack_bits(x.transpose(0, 2, 3, 1) < 0)
    sess = _amx_session(model("BinaryConv", packed.shape, TensorProto.UINT64, inits, dict(attrs, output="sign")), True)
    fn, args = sess.plan((packed.shape,)).steps[0]
    assert fn is kb.binary_conv_amx and args[2][kb.A_QB] > 32
    np.testing.assert_array_equal(sess.run(None, {"x": packed})[0], expected("sign", dot, inits))


@pytest.mark.skipif(not kb.amx_available(), reason="no AMX tile unit")
def test_amx_path_equals_onnxruntime_float_conv():
    """The benchmark's layer form: packed in and out, thresholds on onnxruntime's float sums."""
    from oracle import ort_session
    rng = np.random.default_rng(13)
    c, m, hw = 64, 64, 10
    wt = pm1(rng, (m, c, 3, 3))
    a = pm1(rng, (1, c, hw, hw))
    t = rng.integers(-8, 9, m).astype(np.int64)
    conv = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])], "c",
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, hw, hw])],
                             [numpy_helper.from_array(wt.astype(np.float32), "w")])
    float_model = helper.make_model(conv, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    sums = ort_session(float_model).run(None, {"x": a.astype(np.float32)})[0]
    inits = {"w": pack_bits(wt.transpose(0, 2, 3, 1) < 0).reshape(m, -1), "t": t}
    packed = pack_bits(a.transpose(0, 2, 3, 1) < 0)
    binary = model("BinaryConv", packed.shape, TensorProto.UINT64, inits,
                   dict(channels=c, kernel_shape=[3, 3], pads=[1, 1, 1, 1], output="packed"), inputs=("x", "w", "t"),
                   out_type=TensorProto.UINT64)
    got = unpack_bits(_amx_session(binary, True).run(None, {"x": packed})[0], m).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(got, sums < t[None, :, None, None])


def _bad(attrs=None, inits=None, x_shape=(1, 70, 5, 5), x_type=TensorProto.FLOAT, op="BinaryConv", inputs=None):
    rng = np.random.default_rng(0)
    _, _, _, base_inits, base_attrs = conv_case(rng, 1, 70, 5, 5, 6, 3, (1, 1), (1, 1, 1, 1), (1, 1))
    a = dict(base_attrs, output="sign")
    a.update(attrs or {})
    a = {k: v for k, v in a.items() if v is not None}
    i = dict(base_inits)
    i.update(inits or {})
    return model(op, x_shape, x_type, i, a, inputs=inputs or ("x", "w", "t", "s", "b"))


@pytest.mark.parametrize("kwargs,message", [
    (dict(attrs={"channels": None}), "channels"),
    (dict(attrs={"channels": 71}), "channels"),
    (dict(attrs={"kernel_shape": [3]}), "kernel_shape"),
    (dict(attrs={"strides": [0, 1]}), "strides"),
    (dict(attrs={"pads": [1, 1, -1, 1]}), "pads"),
    (dict(attrs={"output": "bits"}), "output"),
    (dict(attrs={"mst_parents": [1, 0, -1, -1, -1, -1]}), "cycle"),
    (dict(attrs={"mst_parents": [-1, 0, 0, 9, -1, -1]}), "mst_parents"),
    (dict(attrs={"mst_parents": [-1, 0, 1, -1, -1, -1], "mst_order": [1, 2, -1, -1]}), "before its parent"),
    (dict(attrs={"mst_parents": [-1, 0, 0, -1, -1, -1], "mst_order": [1, -1, -1]}), "mst_order"),
    (dict(attrs={"mst_order": [0, -1, -1, -1]}), "needs 'mst_parents'"),
    (dict(attrs={"input_order": [0] * 70}), "permutation"),
    (dict(inits={"w": np.zeros((6, 5), np.uint64)}), "packed weights"),
    (dict(inits={"w": np.zeros((6, 18), np.int64)}), "packed weights"),
    (dict(inits={"w": np.full((6, 18), np.uint64(1) << np.uint64(63))}), "past channel"),
    (dict(inits={"t": np.zeros(5, np.int64)}), "thresholds"),
    (dict(inputs=("x", "w")), "thresholds"),
    (dict(attrs={"output": "float"}, inputs=("x", "w", "t")), "scale"),
    (dict(x_shape=(1, 5, 5, 3), x_type=TensorProto.UINT64), "words per pixel"),
])
def test_malformed_attributes_raise_model_error(kwargs, message):
    with pytest.raises(ModelError, match=message):
        edgekit.InferenceSession(_bad(**kwargs))


def test_gemm_malformed_raises_model_error():
    rng = np.random.default_rng(0)
    inits = {"w": pack_bits(pm1(rng, (4, 10)) < 0), "t": np.zeros(4, np.int64)}
    node_model = model("BinaryGemm", (2, 11), TensorProto.FLOAT, inits, dict(channels=10, output="sign"),
                       inputs=("x", "w", "t"))
    with pytest.raises(ModelError, match=r"\[N, 10\]"):
        edgekit.InferenceSession(node_model)
    onnx.checker.check_model(node_model)
