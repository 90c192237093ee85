"""Pooling against onnxruntime: MaxPool and AveragePool (1D and 2D) over random kernel shapes, strides,
explicit pads, every auto_pad mode, dilations, ceil_mode and count_include_pad, at the opset where each
attribute appeared and at the latest; the stride-1 'same' fast path and the stride-2 paths on realistic
shapes (the 3x3 one, MAX3, on planes wide and narrow, and tensors holding NaN, alone or among infinities;
MAX3 itself, called directly, on inputs without NaN and its NaN check; the 3x3 stride-2 pools with head
pads 0 or 1, max and average (auto_pad SAME, explicit pads, ceil_mode), which run on MAX3 and AVG3 and
take the window centres, and the generic kernel where a window's centre leaves the plane); the flat 2x2
stride-2 max path and the vector 2x2 stride-2 average (AVG2_POOL: odd sizes, NaN and infinities as in a
sum, the generic kernel for windows past the plane) and 3x3 pads-1 average (AVG3) on planes of any size,
NaN and infinities included; the 1-D full-window path (no padding reached: kernel = stride and other
small windows, windows that tile the planes or leave a tail) is taken and matches; Global pools of 1D to
3D inputs. Max pooling must match exactly, on negative inputs (``_signed``: a max that starts at 0 or
pads with 0 would show); average pooling within rtol 1e-6 on positive inputs (global average rtol 1e-5:
onnxruntime sums thousands of float32 values). NaN handling of max pooling is checked against NumPy,
because onnxruntime's result depends on its code path.
"""
import numpy as np
import pytest
from onnx import helper

import edgekit
from edgekit.errors import ModelError, UnsupportedOpError
from edgekit.runtimes.kernels import pool as kp
from edgekit.runtimes.ops.pool import STRIDED3_WIDTH
from oracle import assert_matches_ort, make_model, ort_session


def _model(op, shape, opset, **attrs):
    return make_model([helper.make_node(op, ["x"], ["y"], **attrs)], {"x": (shape, np.float32)}, ["y"], opset=opset)


def _random_attrs(rng, op, rank):
    kernel = [int(k) for k in rng.integers(1, 5, rank)]
    attrs = {"kernel_shape": kernel, "strides": [int(s) for s in rng.integers(1, 4, rank)]}
    mode = rng.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])
    if mode == "NOTSET":
        attrs["pads"] = [int(rng.integers(0, k)) for k in kernel + kernel]
    else:
        attrs["auto_pad"] = str(mode)
    if rng.random() < 0.5:
        attrs["dilations"] = [int(d) for d in rng.integers(1, 3, rank)]
    if rng.random() < 0.5:
        attrs["ceil_mode"] = 1
    if op == "AveragePool":
        attrs["count_include_pad"] = int(rng.integers(0, 2))
    return attrs


def _signed(op: str, x: np.ndarray) -> np.ndarray:
    """Positive ``x`` for an average (float32 sums without cancellation), negated for a max: a max
    that starts at 0 or pads with 0 then gives wrong values."""
    return -x if op == "MaxPool" else x


@pytest.mark.parametrize("op,opset", [("MaxPool", 12), ("AveragePool", 19)])
@pytest.mark.parametrize("rank", [1, 2])
def test_random_pooling_configurations(op, opset, rank):
    rng = np.random.default_rng(rank)
    checked = 0
    for _ in range(120):
        shape = [int(rng.integers(1, 3)), int(rng.integers(1, 4))] + [int(n) for n in rng.integers(3, 12, rank)]
        attrs = _random_attrs(rng, op, rank)
        model = _model(op, shape, opset, **attrs)
        x = _signed(op, rng.uniform(0.5, 1.5, shape).astype(np.float32))
        try:
            ort_session(model).run(None, {"x": x})
        except Exception:  # a configuration onnxruntime rejects (e.g. negative SAME padding for MaxPool)
            continue
        exact = op == "MaxPool"
        assert_matches_ort(model, {"x": x}, 0 if exact else 1e-6, 0)
        checked += 1
    assert checked > 90


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("rank", [1, 2])
def test_random_integer_max_pooling_matches_onnxruntime_exactly(dtype, rank):
    """MaxPool on 8-bit integers (quantized CNNs keep it on uint8) over random configurations, limits
    of the type included, exact; a window of padding only is refused rather than given -inf."""
    rng = np.random.default_rng(10 + rank)
    info, checked = np.iinfo(dtype), 0
    for _ in range(60):
        shape = [int(rng.integers(1, 3)), int(rng.integers(1, 4))] + [int(n) for n in rng.integers(3, 12, rank)]
        node = helper.make_node("MaxPool", ["x"], ["y"], **_random_attrs(rng, "MaxPool", rank))
        model = make_model([node], {"x": (shape, dtype)}, {"y": helper.np_dtype_to_tensor_dtype(np.dtype(dtype))},
                           opset=12)
        x = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
        x.reshape(-1)[:2] = [info.min, info.max]
        try:
            ort_session(model).run(None, {"x": x})
        except Exception:  # a configuration onnxruntime rejects
            continue
        try:
            sess = edgekit.InferenceSession(model)
        except UnsupportedOpError as exc:
            assert "padding only" in str(exc)
            continue
        assert_matches_ort(model, {"x": x}, 0, 0, session=sess)
        checked += 1
    assert checked > 40


@pytest.mark.parametrize("op,opset,attrs", [
    ("MaxPool", 8, {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1]}),
    ("MaxPool", 8, {"kernel_shape": [3], "auto_pad": "SAME_UPPER"}),
    ("MaxPool", 10, {"kernel_shape": [2, 3], "strides": [2, 2], "ceil_mode": 1, "dilations": [2, 1]}),
    ("AveragePool", 7, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    ("AveragePool", 7, {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ("AveragePool", 10, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ("AveragePool", 11, {"kernel_shape": [3], "strides": [3], "pads": [1, 1], "ceil_mode": 1, "count_include_pad": 1}),
])
def test_older_opsets(op, opset, attrs):
    rng = np.random.default_rng(3)
    shape = (2, 3, 9) if len(attrs["kernel_shape"]) == 1 else (2, 3, 9, 8)
    x = _signed(op, rng.uniform(0.5, 1.5, shape).astype(np.float32))
    assert_matches_ort(_model(op, shape, opset, **attrs), {"x": x}, 0 if op == "MaxPool" else 1e-6, 0)


@pytest.mark.parametrize("shape", [(1, 8, 56, 56), (2, 48, 14, 14), (1, 5, 7, 300)])
@pytest.mark.parametrize("k", [3, 5])
def test_stride_one_same_fast_path(shape, k):
    rng = np.random.default_rng(4)
    x = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    p = k // 2
    assert_matches_ort(_model("MaxPool", shape, 12, kernel_shape=[k, k], pads=[p] * 4), {"x": -x}, 0, 0)
    assert_matches_ort(_model("MaxPool", shape, 12, kernel_shape=[k, k], auto_pad="SAME_UPPER"), {"x": -x}, 0, 0)
    avg = _model("AveragePool", shape, 19, kernel_shape=[k, k], pads=[p] * 4, count_include_pad=int(k == 5))
    assert_matches_ort(avg, {"x": x}, 1e-6, 0)



@pytest.mark.parametrize("shape", [(1, 8, 56, 56), (2, 24, 14, 15), (1, 40, 7, 7), (1, 3, 5, 30), (1, 6, 31)])
@pytest.mark.parametrize("k,pad", [(3, 1), (2, 0)])
def test_strided_paths(shape, k, pad):
    """Stride 2 at edge shapes: the literal 3x3 sweep, the generic sweep, narrow planes pooled window by
    window, odd sizes with ceil_mode, and NCL."""
    rng = np.random.default_rng(6)
    x = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    rank = len(shape) - 2
    attrs = dict(kernel_shape=[k] * rank, strides=[2] * rank, pads=[pad] * 2 * rank, ceil_mode=int(shape[-1] % 2))
    assert_matches_ort(_model("MaxPool", shape, 12, **attrs), {"x": -x}, 0, 0)
    assert_matches_ort(_model("AveragePool", shape, 19, count_include_pad=int(k == 3), **attrs), {"x": x}, 1e-6, 0)


@pytest.mark.parametrize("shape", [(1, 128, 64), (1, 128, 16), (1, 128, 4), (2, 3, 17), (1, 5, 9)])
@pytest.mark.parametrize("k,stride", [(4, 4), (2, 2), (3, 3), (5, 5), (3, 2), (2, 3), (1, 2)])
def test_one_d_full_window_path(shape, k, stride):
    """Windows inside the input take the four-argument sweep kernel (WINDOW_POOL) and match exactly
    (max) or within rtol 1e-6 (average); a ceil_mode window that would leave the input does not."""
    if k > shape[-1]:
        pytest.skip("kernel longer than the input")
    rng = np.random.default_rng(k * 10 + stride)
    x = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    for op, opset, rtol in (("MaxPool", 12, 0), ("AveragePool", 19, 1e-6)):
        model = _model(op, shape, opset, kernel_shape=[k], strides=[stride])
        session = edgekit.InferenceSession(model)
        assert_matches_ort(model, {"x": _signed(op, x)}, rtol, 0, session=session)
        (fn, _), = next(iter(session._plans.values())).steps
        assert fn is kp.WINDOW_POOL[kp.MAX if op == "MaxPool" else kp.AVG]
    ceil = _model("MaxPool", (1, 2, 10), 12, kernel_shape=[4], strides=[4], ceil_mode=1)
    assert_matches_ort(ceil, {"x": -rng.uniform(0.5, 1.5, (1, 2, 10)).astype(np.float32)}, 0, 0)


def test_one_d_full_window_max_propagates_nan():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 3, 16)).astype(np.float32)
    x[0, 0, 1] = x[0, 2, 15] = np.nan
    got = edgekit.InferenceSession(_model("MaxPool", x.shape, 12, kernel_shape=[4], strides=[4])).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, x.reshape(1, 3, 4, 4).max(axis=3))


def _numpy_max_pool(x, k, stride, pad):
    """Reference 2D max pool with -inf padding, NaN-propagating like np.max."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    oh = (xp.shape[2] - k) // stride + 1
    ow = (xp.shape[3] - k) // stride + 1
    windows = [xp[:, :, a:a + stride * oh:stride, b:b + stride * ow:stride] for a in range(k) for b in range(k)]
    return np.max(np.stack(windows), axis=0)


@pytest.mark.parametrize("stride", [1, 2])
def test_max_pool_propagates_nan(stride):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 9, 10)).astype(np.float32)
    x[0, 0, 0, 0] = x[0, 0, 4, 9] = x[0, 1, 8, 3] = x[0, 1, 5, 5] = np.nan
    model = _model("MaxPool", x.shape, 12, kernel_shape=[3, 3], strides=[stride, stride], pads=[1, 1, 1, 1])
    got = edgekit.InferenceSession(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, _numpy_max_pool(x, 3, stride, 1))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", [(1, 64, 10, 40), (1, 200, 7, 7), (2, 30, 12, 13)])
def test_max3_with_nan_or_infinity(shape, stride):
    """The 3x3 pads-1 pool (stride 1, and stride 2 through it) runs with plain max instructions (MAX3),
    which drop NaN, and pools a tensor again with NaN propagation when MAX3 finds a NaN in it: NaN and
    infinities in a few planes give NumPy's NaN-propagating max everywhere."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape).astype(np.float32)
    c = shape[1]
    x[0, 3, 0, 0] = x[0, c - 1, -1, -1] = x[-1, c // 2, 5, 1] = np.nan
    x[0, c // 3, 2, 2], x[-1, 2 * c // 3, -1, 0] = np.inf, -np.inf
    model = _model("MaxPool", shape, 12, kernel_shape=[3, 3], strides=[stride] * 2, pads=[1, 1, 1, 1])
    got = edgekit.InferenceSession(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, _numpy_max_pool(x, 3, stride, 1))


@pytest.mark.parametrize("where", [(0, 0, 0, 0), (1, 4, 6, 8), (1, 2, 6, 8), (0, 3, 0, 8), (1, 0, 3, 0), (0, 2, 5, 4)])
def test_max3_finds_a_single_nan_anywhere(where):
    """One NaN, wherever it lies (first or last value of the tensor or of a plane, in a plane's last,
    partial vector, inside), sends the 3x3 pads-1 pool to NaN propagation: NaN exactly in its window."""
    x = np.random.default_rng(12).standard_normal((2, 5, 7, 9)).astype(np.float32)
    x[where] = np.nan
    model = _model("MaxPool", x.shape, 12, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    got = edgekit.InferenceSession(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, _numpy_max_pool(x, 3, 1, 1))


@pytest.mark.parametrize("clamp", [False, True])
@pytest.mark.parametrize("shape", [(1, 3, 2, 3), (2, 5, 7, 9), (1, 4, 1, 40), (1, 3, 40, 1), (1, 2, 30, 41), (1, 2, 1, 300)])
def test_max3_itself_serves_inputs_without_nan(shape, clamp):
    """MAX3 itself, not the NaN-propagating path behind it, pools an input without NaN (infinities
    included) and says so: exact on planes smaller than a vector, one row, one column, planes of a few
    vectors and of many (its edge/inside/edge loops, the inside one empty on a single long row); any one
    NaN makes it say no. Through a session a wrong answer here would only cost speed, so the kernel is
    called directly, with the argument types SAME_POOL gives it."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal(shape).astype(np.float32)
    x.flat[rng.integers(0, x.size, 2)] = np.inf, -np.inf
    planes, (h, w), empty = shape[0] * shape[1], shape[2:], np.empty(0, np.float32)
    args = (planes, h * w, w, kp.max3_masks(h, w), shape[1], empty, empty, np.float32(0.0), np.float32(np.inf), clamp)
    out = np.empty(x.size, np.float32)
    assert kp._max3(x.reshape(-1), out, *args)
    want = _numpy_max_pool(x, 3, 1, 1)
    np.testing.assert_array_equal(out.reshape(shape), np.maximum(want, 0) if clamp else want)
    for k in (0, x.size // 2, x.size - 1):
        y = x.copy()
        y.flat[k] = np.nan
        assert not kp._max3(y.reshape(-1), out, *args)


@pytest.mark.parametrize("shape", [(1, 64, 14, 14), (2, 30, 7, 9), (1, 8, 56, 56)])
def test_two_by_two_stride_two_window_path(shape):
    """2x2 stride-2 pools with every window inside the planes (odd sizes drop the last row or column) take
    the flat WINDOW2_MAX loop (max) or the vector AVG2_POOL (average) and match onnxruntime; the max
    propagates NaN like np.max."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal(shape).astype(np.float32)
    attrs = dict(kernel_shape=[2, 2], strides=[2, 2])
    for op, opset, rtol in (("MaxPool", 12, 0), ("AveragePool", 19, 1e-6)):
        session = edgekit.InferenceSession(_model(op, shape, opset, **attrs))
        assert_matches_ort(_model(op, shape, opset, **attrs), {"x": x}, rtol, 1e-7, session=session)
        (fn, _), = next(iter(session._plans.values())).steps
        assert fn is (kp.WINDOW2_MAX if op == "MaxPool" else kp.AVG2_POOL)
    x[0, 1, 0, 0] = x[-1, -1, 5, 6] = np.nan
    got = edgekit.InferenceSession(_model("MaxPool", shape, 12, **attrs)).run(None, {"x": x})[0]
    h, w = shape[2] // 2 * 2, shape[3] // 2 * 2
    want = x[:, :, :h, :w].reshape(shape[0], shape[1], h // 2, 2, w // 2, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(got, want)


def _numpy_avg2(x):
    h, w = x.shape[2] // 2 * 2, x.shape[3] // 2 * 2
    return x[:, :, :h, :w].reshape(x.shape[0], x.shape[1], h // 2, 2, w // 2, 2).mean(axis=(3, 5), dtype=np.float64)


@pytest.mark.parametrize("shape", [(2, 3, 9, 7), (1, 5, 40, 3), (1, 4, 2, 70), (2, 6, 64, 64), (1, 3, 33, 65), (1, 2, 3, 2)])
def test_average_two_by_two_vector_path(shape):
    """AveragePool 2x2 stride 2 without padding runs on AVG2_POOL at every width (odd sizes drop the last row
    or column; 1-wide and 1-high outputs; whole and partial vectors; batch 2), also with ceil_mode when the
    sizes are even, and matches onnxruntime within rtol 1e-6 on positive inputs (float32 sums of four)."""
    rng = np.random.default_rng(11)
    x = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    ceil = [0, 1] if shape[2] % 2 == shape[3] % 2 == 0 else [0]
    for ceil_mode in ceil:
        model = _model("AveragePool", shape, 19, kernel_shape=[2, 2], strides=[2, 2], ceil_mode=ceil_mode)
        session = edgekit.InferenceSession(model)
        assert_matches_ort(model, {"x": x}, 1e-6, 0, session=session)
        (fn, _), = next(iter(session._plans.values())).steps
        assert fn is kp.AVG2_POOL


@pytest.mark.parametrize("attrs", [dict(ceil_mode=1), dict(pads=[0, 0, 1, 1]), dict(pads=[1, 1, 0, 0], count_include_pad=1)])
def test_average_two_by_two_with_windows_past_the_plane_takes_the_generic_kernel(attrs):
    """ceil_mode on odd sizes and padding give windows past the plane: the generic kernel pools them."""
    rng = np.random.default_rng(13)
    shape = (2, 3, 9, 11)
    x = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    model = _model("AveragePool", shape, 19, kernel_shape=[2, 2], strides=[2, 2], **attrs)
    session = edgekit.InferenceSession(model)
    assert_matches_ort(model, {"x": x}, 1e-6, 0, session=session)
    (fn, _), = next(iter(session._plans.values())).steps
    assert fn is kp.POOL[kp.AVG]


@pytest.mark.parametrize("shape", [(2, 3, 10, 36), (1, 2, 7, 5)])
def test_average_two_by_two_vector_path_propagates_nan_and_infinity(shape):
    """NaN and infinities pass through AVG2_POOL as through a sum: NaN in a window gives NaN, an infinity
    gives it, +inf and -inf together give NaN; other windows keep their mean."""
    x = np.random.default_rng(15).standard_normal(shape).astype(np.float32)
    x[0, 0, 0, 0] = x[-1, -1, 5, 3] = np.nan
    x[0, 1, 2, 2] = x[-1, 0, 4, 4] = np.inf
    x[0, 1, 2, 3] = x[-1, 0, 3, 1] = -np.inf
    got = edgekit.InferenceSession(_model("AveragePool", shape, 19, kernel_shape=[2, 2], strides=[2, 2])).run(None, {"x": x})[0]
    with np.errstate(invalid="ignore"):
        want = _numpy_avg2(x)
    assert np.isnan(want).sum() >= 2 and np.isinf(want).any()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 3, 2, 3), (2, 5, 7, 9), (1, 4, 1, 40), (1, 3, 40, 1), (1, 2, 30, 41), (1, 2, 1, 300)])
@pytest.mark.parametrize("include_pad", [0, 1])
def test_average_three_by_three_vector_path(shape, include_pad):
    """The 3x3 pads-1 average pool (AVG3: float32 sums of the taps inside the plane times a per-position
    1 / tap count) matches onnxruntime within rtol 1e-6 on positive inputs, with and without
    count_include_pad, on planes smaller than a vector, one row, one column, planes of a few vectors and of
    many, batch 2; NaN and infinities propagate as in a sum and match onnxruntime's NaN and infinity
    positions."""
    rng = np.random.default_rng(16)
    x = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    model = _model("AveragePool", shape, 19, kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=include_pad)
    session = edgekit.InferenceSession(model)
    assert_matches_ort(model, {"x": x}, 1e-6, 0, session=session)
    (fn, args), = session.plan((shape,)).steps
    assert fn is kp.SAME_POOL[kp.AVG] and args[-1].shape[1] > 0  # lane masks given: the pool runs as AVG3
    x.flat[rng.choice(x.size, 3, replace=False)] = np.nan, np.inf, -np.inf
    got = assert_matches_ort(model, {"x": x}, 1e-6, 0, session=session)[0]
    assert np.isnan(got).any()


STRIDED3_ATTRS = [dict(auto_pad="SAME_UPPER"), dict(auto_pad="SAME_LOWER"), dict(pads=[0, 0, 1, 1]), dict(pads=[1, 1, 1, 1]),
                  dict(pads=[1, 0, 1, 0]), dict(pads=[0, 1, 0, 2]), dict(ceil_mode=1)]


@pytest.mark.parametrize("shape", [(1, 16, 56, 56), (2, 5, 14, 14), (1, 3, 8, 7), (1, 4, 7, 10), (1, 2, 2, 2), (1, 3, 1, 5)])
@pytest.mark.parametrize("attrs", STRIDED3_ATTRS)
def test_three_by_three_stride_two_path(shape, attrs):
    """3x3 stride-2 pools with head pads 0 or 1 (auto_pad SAME of Keras models on even and odd sizes, explicit
    pads, ceil_mode) run as the stride-1 pool of every position, then the window centres (STRIDED3), unless a
    window's centre lies past the plane (a 1-high plane with tail padding: the generic kernel): max
    exact, average within rtol 1e-6 with and without count_include_pad, against onnxruntime; the max with
    NaN among infinities pools again with NaN propagation (NumPy's np.max over the padded windows)."""
    rng = np.random.default_rng(33)
    x = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    base = dict(kernel_shape=[3, 3], strides=[2, 2], **attrs)
    if "auto_pad" in attrs:  # SAME: (ceil(n / 2) - 1) * 2 + 3 - n padded, the odd one at the tail (UPPER) or head
        head = [((-(-n // 2) - 1) * 2 + 3 - n + (attrs["auto_pad"] == "SAME_LOWER")) // 2 for n in shape[2:]]
    else:
        head = attrs.get("pads", [0, 0])[:2]
    for op, opset, extra, rtol in (("MaxPool", 12, {}, 0), ("AveragePool", 19, dict(count_include_pad=0), 1e-6),
                                   ("AveragePool", 19, dict(count_include_pad=1), 1e-6)):
        model = _model(op, shape, opset, **base, **extra)
        session = edgekit.InferenceSession(model)
        assert_matches_ort(model, {"x": _signed(op, x)}, rtol, 0, session=session)
        (fn, _), = session.plan((shape,)).steps
        out = session.run(None, {"x": x})[0].shape[2:]
        centred = all(0 < o and 2 * (o - 1) + 1 - h < n for o, h, n in zip(out, head, shape[2:]))  # else the generic kernel
        assert (fn is kp.STRIDED3[kp.MAX if op == "MaxPool" else kp.AVG]) == centred
    x.flat[rng.choice(x.size, 3, replace=False)] = np.nan, np.inf, -np.inf
    got = edgekit.InferenceSession(_model("MaxPool", shape, 12, **base)).run(None, {"x": x})[0]
    oh, ow = got.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (head[0], 3), (head[1], 3)), constant_values=-np.inf)
    want = np.max(np.stack([xp[:, :, a:a + 2 * oh:2, b:b + 2 * ow:2] for a in range(3) for b in range(3)]), axis=0)
    np.testing.assert_array_equal(got, want)


def test_three_by_three_stride_two_with_windows_past_the_plane_takes_the_generic_kernel():
    """A 3x3 stride-2 pool with a window centred past the plane (its last window starts at the last row: tail pads 2) or a
    plane at least STRIDED3_WIDTH wide runs on the generic kernel and still matches onnxruntime."""
    wide = (1, 3, 9, STRIDED3_WIDTH)
    x = np.random.default_rng(34).uniform(0.5, 1.5, wide).astype(np.float32)
    for shape, attrs in (((1, 3, 9, 9), dict(pads=[0, 0, 2, 2])), (wide, dict(auto_pad="SAME_UPPER"))):
        model = _model("AveragePool", shape, 19, kernel_shape=[3, 3], strides=[2, 2], **attrs)
        session = edgekit.InferenceSession(model)
        assert_matches_ort(model, {"x": x[..., :shape[2], :shape[3]].copy()}, 1e-6, 0, session=session)
        (fn, _), = session.plan((shape,)).steps
        assert fn is kp.POOL[kp.AVG]


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("attrs,match", [
    ({"pads": [2, 0, 0, 0]}, "pads"), ({"pads": [0, 0, 0, 3]}, "pads"), ({"pads": [-1, 0, 0, 0]}, "pads"),
    ({"dilations": [0, 1]}, "dilations"), ({"strides": [0, 1]}, "strides"),
])
def test_attributes_onnxruntime_refuses_raise_model_error_naming_the_node(op, attrs, match):
    """Pads not below the kernel, negative or of the wrong length, dilations or strides below 1:
    onnxruntime refuses these, and edgekit raises ModelError naming the node instead of pooling."""
    node = helper.make_node(op, ["x"], ["y"], name="pool7", kernel_shape=[2, 3], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("y", 1, [])])
    with pytest.raises(ModelError, match=f"'pool7'.*{match}"):
        edgekit.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]))


def test_max_pool_indices_output_is_unsupported():
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2])
    model = make_model([node], {"x": ((1, 1, 4, 4), np.float32)}, {"y": 1, "i": 7}, opset=12)
    with pytest.raises(UnsupportedOpError, match="Indices"):
        edgekit.InferenceSession(model).run(None, {"x": np.zeros((1, 1, 4, 4), np.float32)})


@pytest.mark.parametrize("shape", [(2, 3, 17), (2, 5, 9, 11), (1, 2, 3, 4, 5), (1, 64, 56, 56)])
def test_global_pools(shape):
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape).astype(np.float32)
    assert_matches_ort(_model("GlobalMaxPool", shape, 17), {"x": x}, 0, 0)
    assert_matches_ort(_model("GlobalAveragePool", shape, 17), {"x": x}, 1e-5, 1e-6)


def test_global_max_pool_propagates_nan():
    x = np.array([[[1.0, np.nan, 3.0], [2.0, 1.0, 0.0]]], np.float32)
    got = edgekit.InferenceSession(_model("GlobalMaxPool", x.shape, 17)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, np.max(x, axis=2, keepdims=True))
