"""Elementwise ops against onnxruntime: binary arithmetic over every broadcasting pattern (same shape,
scalar, per-channel, row, two-sided, legacy opset-6 axis broadcasting), int64 arithmetic (kernel and
constant-folded), Pow (and its constant exponents 2, 3, 4, 0.5, -1, 1 on float and integer bases), PRelu, Mod (fmod 0 and 1, float and integer signs, by zero; opset 28's float
fmod=0 against NumPy), comparisons and Where, bool And/Or/Xor/Not, BitShift (unsigned; opset 28's
signed shifts against NumPy), variadic Max/Min/Sum/Mean with NaN propagation, unary
maps (trigonometric, Round half to even, IsNaN, IsInf; the float32 polynomial approximations over wide
ranges and at NaN and the infinities; Exp and Erf within their stated error of float64 and on every length,
Exp below the normal range), and inference BatchNormalization across
opsets. float32 tolerance rtol 1e-6 / atol 1e-6 unless a case states otherwise; integers and NaN placement must match exactly.
"""
import math

import numpy as np
import pytest
from onnx import TensorProto, helper

import edgekit
from edgekit.errors import InputError, ModelError, UnsupportedOpError
from edgekit.runtimes.kernels import elementwise as ke
from oracle import assert_matches_ort, make_model, ort_session

RTOL, ATOL = 1e-6, 1e-6


def _ort_run(op: str, x: np.ndarray) -> np.ndarray:
    """onnxruntime's result of unary ``op`` on float32 ``x``."""
    model = make_model([helper.make_node(op, ["x"], ["y"])], {"x": (x.shape, x.dtype)}, ["y"])
    return ort_session(model).run(None, {"x": x})[0]


def _check(op, feeds, attrs=None, inits=None, opset=17, out_type=TensorProto.FLOAT, rtol=RTOL, atol=ATOL, names=None):
    names = names or list(feeds) + list(inits or {})
    node = helper.make_node(op, names, ["y"], **(attrs or {}))
    model = make_model([node], {k: (v.shape, v.dtype) for k, v in feeds.items()}, {"y": out_type}, inits, opset)
    return assert_matches_ort(model, feeds, rtol, atol)


BROADCASTS = [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), ()), ((), (2, 3, 4, 5)), ((2, 3, 4, 5), (3, 1, 1)),
              ((2, 3, 4, 5), (5,)), ((2, 1, 4, 1), (1, 3, 1, 5)), ((1, 3, 1, 1), (2, 3, 4, 5)), ((4, 1), (3,))]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("sa,sb", BROADCASTS)
def test_arithmetic_broadcasting(op, sa, sb):
    rng = np.random.default_rng(0)
    a = np.asarray(rng.standard_normal(sa), np.float32)
    b = np.asarray(rng.uniform(0.5, 2.0, sb) * rng.choice([-1, 1], sb), np.float32)
    _check(op, {"a": a, "b": b})


def test_constant_operand():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    _check("Add", {"x": x}, inits={"bias": rng.standard_normal((3, 1, 1)).astype(np.float32)})


def test_legacy_axis_broadcast_against_numpy():
    """onnxruntime has no opset-6 Mul/Sub, so the reference is NumPy with B aligned at ``axis``."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    for op, attrs, w, expect in [
        ("Mul", {"axis": 1}, rng.standard_normal((3, 4)).astype(np.float32), lambda w: x * w[:, :, None]),
        ("Sub", {}, rng.standard_normal((5,)).astype(np.float32), lambda w: x - w),
    ]:
        node = helper.make_node(op, ["x", "w"], ["y"], broadcast=1, **attrs)
        model = make_model([node], {"x": (x.shape, np.float32)}, ["y"], {"w": w}, opset=6)
        got = edgekit.InferenceSession(model).run(None, {"x": x})[0]
        np.testing.assert_allclose(got, expect(w), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_int64_arithmetic_truncates_like_onnxruntime(op):
    rng = np.random.default_rng(2)
    a = rng.integers(-50, 50, (3, 4)).astype(np.int64)
    b = rng.integers(1, 9, (4,)).astype(np.int64) * rng.choice([-1, 1], 4)
    _check(op, {"a": a, "b": b}, out_type=TensorProto.INT64, rtol=0, atol=0)
    _check(op, {"a": a}, inits={"b": b}, out_type=TensorProto.INT64, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16])
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Mod", "Max", "Min", "Equal", "Less", "GreaterOrEqual"])
def test_narrow_integer_ops_wrap_like_onnxruntime(op, dtype):
    """8- and 16-bit integer arithmetic (wrapping on overflow), Max/Min and comparisons, exact against
    onnxruntime on values that span the type, limits included (16-bit Max/Min, which onnxruntime does
    not implement, against numpy)."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    a = rng.integers(info.min, info.max, (3, 16), endpoint=True).astype(dtype)
    a[0, :4] = [info.min, info.max, 0, 1]
    b = rng.integers(1, min(info.max, 90), (16,), endpoint=True).astype(dtype)
    if info.min < 0:
        b *= rng.choice([-1, 1], 16).astype(dtype)
    out = TensorProto.BOOL if op in ("Equal", "Less", "GreaterOrEqual") else helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    attrs = {"fmod": 0} if op == "Mod" else None
    if op in ("Max", "Min") and info.bits == 16:
        model = make_model([helper.make_node(op, ["a", "b"], ["y"])], {"a": (a.shape, dtype), "b": (b.shape, dtype)},
                           {"y": out})
        got = edgekit.InferenceSession(model).run(None, {"a": a, "b": b})[0]
        np.testing.assert_array_equal(got, (np.maximum if op == "Max" else np.minimum)(a, b))
        return
    _check(op, {"a": a, "b": b}, attrs=attrs, out_type=out, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint8, np.uint16])
@pytest.mark.parametrize("op", ["Neg", "Abs", "Sign"])
def test_narrow_integer_unary_ops_like_onnxruntime(op, dtype):
    """Neg (signed types, as onnxruntime implements it), Abs and Sign on 8- and 16-bit integers, limits
    included (Neg and Abs of the minimum wrap to it), exact."""
    if op == "Neg" and np.iinfo(dtype).min == 0:
        pytest.skip("onnxruntime has no Neg on unsigned integers")
    info = np.iinfo(dtype)
    x = np.random.default_rng(4).integers(info.min, info.max, (4, 8), endpoint=True).astype(dtype)
    x[0, :3] = [info.min, info.max, 0]
    _check(op, {"x": x}, out_type=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_the_smallest_integer_divided_by_minus_one_wraps_as_numpy(dtype):
    """MIN / -1 overflows: onnxruntime stops with SIGFPE, numpy wraps to MIN; edgekit wraps, for int32
    and int64 alike (int64 gave 0), fed or constant divisor."""
    low = np.iinfo(dtype).min
    a = np.array([low, low + 1, -7, 0, 7], dtype)
    b = np.array([-1, -1, -1, -1, 2], dtype)
    node = helper.make_node("Div", ["a", "b"], ["y"])
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    want = np.array([low, -(low + 1), 7, 0, 3], dtype)
    got = edgekit.InferenceSession(make_model([node], {"a": (a.shape, dtype), "b": (b.shape, dtype)}, {"y": elem})
                                   ).run(None, {"a": a, "b": b})[0]
    np.testing.assert_array_equal(got, want)
    got = edgekit.InferenceSession(make_model([node], {"a": (a.shape, dtype)}, {"y": elem}, {"b": b})).run(None, {"a": a})[0]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_integer_division_by_zero_raises_like_onnxruntime(dtype):
    """onnxruntime refuses an integer Div by zero; edgekit raises InputError for a fed divisor and
    ModelError naming the node for a constant one (also when the node folds), never a silent 0."""
    rng = np.random.default_rng(12)
    a = rng.integers(-50, 50, (2, 3)).astype(dtype)
    b = rng.integers(1, 9, (3,)).astype(dtype)
    b[1] = 0
    node = helper.make_node("Div", ["a", "b"], ["y"], name="ratio")
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = make_model([node], {"a": (a.shape, dtype), "b": (b.shape, dtype)}, {"y": elem})
    with pytest.raises(InputError, match="'ratio' \\(Div\\).*Div by zero"):
        edgekit.InferenceSession(model).run(None, {"a": a, "b": b})
    model = make_model([node], {"a": (a.shape, dtype)}, {"y": elem}, {"b": b})
    with pytest.raises(ModelError, match="'ratio'.*by zero"):
        edgekit.InferenceSession(model)
    folded = make_model([node, helper.make_node("Neg", ["y"], ["z"])], {"u": ((1,), dtype)}, {"z": elem}, {"a": a, "b": b})
    with pytest.raises(ModelError, match="'ratio'.*by zero"):
        edgekit.InferenceSession(folded)


def test_int64_constant_arithmetic_folds():
    a, b = np.array([7, -7, 9], np.int64), np.array([2, 2, -4], np.int64)
    nodes = [helper.make_node("Div", ["a", "b"], ["q"]), helper.make_node("Mul", ["q", "b"], ["m"]),
             helper.make_node("Sub", ["x", "m"], ["y"])]
    x = np.array([1, 2, 3], np.int64)
    model = make_model(nodes, {"x": (x.shape, np.int64)}, {"y": TensorProto.INT64}, {"a": a, "b": b})
    assert_matches_ort(model, {"x": x}, 0, 0)


def test_pow_float_and_integer_exponents():
    rng = np.random.default_rng(3)
    x = rng.uniform(0.1, 3.0, (2, 3, 7)).astype(np.float32)
    _check("Pow", {"x": x, "e": rng.uniform(-2, 2, (3, 1)).astype(np.float32)}, rtol=2e-6)
    for e in (2.0, 0.5, -1.5):
        _check("Pow", {"x": x}, inits={"e": np.float32(e)}, rtol=2e-6)
    _check("Pow", {"x": x}, inits={"e": np.int64(3)}, rtol=2e-6)


POW_EDGES = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, -1.0, 1.0, -2.5, 1e-30, 3e19], np.float32)


@pytest.mark.parametrize("e", [2.0, 3.0, 4.0, 0.5, -1.0, 1.0])
def test_pow_by_special_constants(e):
    """Pow by 2, 3, 4, 0.5, -1 runs as multiplies, sqrt or 1 / x, and by 1 as no step: within rtol 2e-6 of
    onnxruntime on random values of both signs, NaN and the infinities placed exactly (0.5 of a negative is
    NaN, of -inf inf; -1 of 0 is inf; overflow to inf and underflow to 0), an exponent tensor of one repeated
    value (int64 too) takes the same path; output shape and dtype as onnxruntime's."""
    rng = np.random.default_rng(23)
    x = np.concatenate([rng.uniform(-3, 3, 40), POW_EDGES]).astype(np.float32).reshape(2, 5, 5)
    with np.errstate(all="ignore"):
        _check("Pow", {"x": x}, inits={"e": np.float32(e)}, rtol=2e-6, atol=0)
        _check("Pow", {"x": x}, inits={"e": np.full((5, 5), e, np.float32)}, rtol=2e-6, atol=0)
    if e == int(e) and e > 0:
        _check("Pow", {"x": x}, inits={"e": np.int64(e)}, rtol=2e-6, atol=0)
    zeros = np.array([-0.0, 0.0], np.float32)  # signs of zero results, which the comparison does not see
    model = make_model([helper.make_node("Pow", ["x", "e"], ["y"])], {"x": ((2,), np.float32)}, ["y"],
                       {"e": np.float32(e)})
    with np.errstate(all="ignore"):
        want = ort_session(model).run(None, {"x": zeros})[0]
    np.testing.assert_array_equal(np.signbit(edgekit.InferenceSession(model).run(None, {"x": zeros})[0]),
                                  np.signbit(want))


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_pow_of_integers_by_small_constants_is_exact(dtype):
    """Integer bases by the constants 1 to 4 are multiplies, exact like onnxruntime; other exponents of an
    integer base stay unsupported, and an exponent tensor that broadcasts past the base takes the general path."""
    x = np.random.default_rng(29).integers(-60, 60, (3, 7)).astype(dtype)
    t = TensorProto.INT32 if dtype == np.int32 else TensorProto.INT64
    for e in (1, 2, 3, 4):
        _check("Pow", {"x": x}, inits={"e": dtype(e)}, out_type=t, rtol=0, atol=0)
    with pytest.raises(UnsupportedOpError, match="constant 1, 2, 3 or 4"):
        _check("Pow", {"x": x}, inits={"e": dtype(5)}, out_type=t)
    f = np.random.default_rng(31).uniform(-2, 2, (3, 1)).astype(np.float32)
    _check("Pow", {"x": f}, inits={"e": np.full((3, 4), 2.0, np.float32)}, rtol=2e-6, atol=0)


@pytest.mark.parametrize("slope_shape", [(3, 1, 1), (1,), (2, 3, 4, 5), (5,)])
def test_prelu_slope_broadcast(slope_shape):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    _check("PRelu", {"x": x}, inits={"s": rng.uniform(0, 0.5, slope_shape).astype(np.float32)}, opset=16)
    _check("PRelu", {"x": x}, inits={"s": rng.uniform(0, 0.5, slope_shape).astype(np.float32)}, opset=9)


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
def test_comparisons(op):
    rng = np.random.default_rng(5)
    a = rng.integers(-2, 3, (2, 3, 4)).astype(np.float32)
    b = rng.integers(-2, 3, (3, 1)).astype(np.float32)
    _check(op, {"a": a, "b": b}, out_type=TensorProto.BOOL, rtol=0, atol=0)
    _check(op, {"a": a.astype(np.int64), "b": b.astype(np.int64)}, out_type=TensorProto.BOOL, rtol=0, atol=0)


def test_where_broadcasts_three_ways():
    rng = np.random.default_rng(6)
    c = rng.random((2, 1, 4)) < 0.5
    a = rng.standard_normal((3, 1)).astype(np.float32)
    b = rng.standard_normal((2, 3, 4)).astype(np.float32)
    _check("Where", {"c": c, "a": a, "b": b}, rtol=0, atol=0)
    _check("Where", {"c": c, "a": a.astype(np.int64), "b": b.astype(np.int64)}, out_type=TensorProto.INT64, rtol=0, atol=0)


@pytest.mark.parametrize("opset", [10, 13])
def test_float_fmod_keeps_the_dividends_sign(opset):
    rng = np.random.default_rng(13)
    a = (rng.standard_normal((2, 3, 5)) * 5).astype(np.float32)
    b = rng.uniform(0.5, 3, (3, 1)).astype(np.float32) * np.array([[-1], [1], [-1]], np.float32)
    _check("Mod", {"a": a, "b": b}, {"fmod": 1}, opset=opset)
    edge = np.array([np.nan, np.inf, -np.inf, 5.0, -5.0, 0.0, 3.0], np.float32)
    divisor = np.array([1, 2, 2, np.inf, 0, 3, np.nan], np.float32)
    _check("Mod", {"a": edge, "b": divisor}, {"fmod": 1}, opset=opset, rtol=0, atol=0)


@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_mod_signs(fmod, dtype):
    rng = np.random.default_rng(14)
    a = rng.integers(-40, 40, (2, 3, 4)).astype(dtype)
    b = (rng.integers(1, 7, (3, 1)) * rng.choice([-1, 1], (3, 1))).astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    _check("Mod", {"a": a, "b": b}, {"fmod": fmod}, out_type=elem, rtol=0, atol=0)
    _check("Mod", {"a": a}, {"fmod": fmod}, inits={"b": b}, out_type=elem, rtol=0, atol=0)
    nodes = [helper.make_node("Mod", ["a", "b"], ["m"], fmod=fmod), helper.make_node("Add", ["x", "m"], ["y"])]
    folded = make_model(nodes, {"x": (a.shape, dtype)}, {"y": elem}, {"a": a, "b": b})
    assert_matches_ort(folded, {"x": a}, 0, 0)


def test_integer_mod_by_zero_raises_and_float_mod_needs_fmod():
    a, b = np.array([3, 4, 5], np.int64), np.array([2, 0, 1], np.int64)
    node = helper.make_node("Mod", ["a", "b"], ["y"], name="rem")
    model = make_model([node], {"a": (a.shape, np.int64), "b": (b.shape, np.int64)}, {"y": TensorProto.INT64})
    with pytest.raises(InputError, match="'rem' \\(Mod\\).*Mod by zero"):
        edgekit.InferenceSession(model).run(None, {"a": a, "b": b})
    with pytest.raises(ModelError, match="'rem'.*by zero"):
        edgekit.InferenceSession(make_model([node], {"a": (a.shape, np.int64)}, {"y": TensorProto.INT64}, {"b": b}))
    x = np.ones(3, np.float32)
    model = make_model([node], {"a": (x.shape, np.float32), "b": (x.shape, np.float32)}, ["y"])
    with pytest.raises(UnsupportedOpError, match="'rem'.*fmod=1"):
        edgekit.InferenceSession(model).run(None, {"a": x, "b": x})


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_bool_logic_broadcasts(op):
    rng = np.random.default_rng(15)
    a, b = rng.random((2, 3, 4)) < 0.5, rng.random((3, 1)) < 0.5
    _check(op, {"a": a, "b": b}, out_type=TensorProto.BOOL, rtol=0, atol=0)
    _check(op, {"a": a}, inits={"b": b}, out_type=TensorProto.BOOL, rtol=0, atol=0)
    _check("Not", {"a": a}, out_type=TensorProto.BOOL, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.uint64])
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bitshift_unsigned(dtype, direction):
    rng = np.random.default_rng(16)
    a = rng.integers(0, 200, (2, 3, 4)).astype(dtype)
    b = rng.integers(0, 8, (4,)).astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    _check("BitShift", {"a": a, "b": b}, {"direction": direction}, out_type=elem, rtol=0, atol=0)


def _run(op, feeds, attrs, opset, out_type):
    node = helper.make_node(op, list(feeds), ["y"], **attrs)
    model = make_model([node], {k: (v.shape, v.dtype) for k, v in feeds.items()}, {"y": out_type}, opset=opset)
    return edgekit.InferenceSession(model).run(None, feeds)[0]


def test_opset28_float_mod_with_the_divisors_sign_against_numpy():
    """Opset 28 allows fmod=0 on floats (x - floor(x / y) y, NumPy's mod); onnxruntime has no opset 28."""
    rng = np.random.default_rng(17)
    a = np.concatenate([rng.standard_normal(40) * 5, [np.nan, np.inf, -np.inf, 5, -5, 0, 3, -3, 2]]).astype(np.float32)
    b = np.concatenate([rng.uniform(0.5, 3, 40) * rng.choice([-1, 1], 40), [1, 2, 2, 0, 1, 3, np.inf, np.inf, np.nan]])
    b = b.astype(np.float32)
    got = _run("Mod", {"a": a, "b": b}, {"fmod": 0}, 28, TensorProto.FLOAT)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(got, np.mod(a, b), rtol=1e-6, atol=1e-6)
    with pytest.raises(UnsupportedOpError, match="fmod=1"):
        _run("Mod", {"a": a, "b": b}, {"fmod": 0}, 13, TensorProto.FLOAT)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_opset28_signed_bitshift_against_numpy(dtype):
    """Opset 28 shifts signed integers: right is arithmetic, a negative or too-wide count gives the
    sign fill (onnxruntime has no opset 28)."""
    rng = np.random.default_rng(18)
    bits = np.iinfo(dtype).bits
    x = rng.integers(-1000, 1000, (3, 40)).astype(dtype)
    y = rng.integers(-3, bits + 5, (40,)).astype(dtype)
    wide = (y < 0) | (y >= bits)
    safe = np.where(wide, 0, y)
    left = np.where(wide, 0, np.left_shift(x, safe))
    right = np.where(wide, np.where(x < 0, -1, 0), np.right_shift(x, safe))
    for direction, want in (("LEFT", left), ("RIGHT", right)):
        np.testing.assert_array_equal(_run("BitShift", {"a": x, "b": y}, {"direction": direction}, 28, (x.shape, dtype)), want)


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
def test_variadic_broadcasting(op):
    rng = np.random.default_rng(7)
    feeds = {"a": rng.standard_normal((2, 3, 4, 5)).astype(np.float32),
             "b": rng.standard_normal((3, 1, 1)).astype(np.float32),
             "c": rng.standard_normal((5,)).astype(np.float32)}
    _check(op, feeds)
    _check(op, {"a": feeds["a"]})
    _check(op, {"c": feeds["c"], "a": feeds["a"]}, opset=13)


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_propagate_nan(op):
    a = np.array([1, np.nan, 3, np.nan, -np.inf], np.float32)
    b = np.array([np.nan, 2, 1, np.nan, 0], np.float32)
    _check(op, {"a": a, "b": b}, rtol=0, atol=0)


UNARY = [("Neg", (-3, 3)), ("Abs", (-3, 3)), ("Sign", (-3, 3)), ("Exp", (-10, 10)), ("Log", (0.01, 100)),
         ("Sqrt", (0, 100)), ("Reciprocal", (0.1, 10)), ("Erf", (-3, 3)), ("Floor", (-5, 5)), ("Ceil", (-5, 5)),
         ("Sin", (-7, 7)), ("Cos", (-7, 7)), ("Tan", (-1.5, 1.5)), ("Asin", (-1, 1)), ("Acos", (-1, 1)),
         ("Atan", (-9, 9)), ("Sinh", (-5, 5)), ("Cosh", (-5, 5)), ("Round", (-5, 5))]


@pytest.mark.parametrize("op,lohi", UNARY)
def test_unary(op, lohi):
    rng = np.random.default_rng(8)
    x = rng.uniform(*lohi, (2, 3, 33)).astype(np.float32)
    x[0, 0, :3] = [0.0, -0.0, lohi[0]]
    _check(op, {"x": x}, rtol=2e-6)


APPROXIMATED = ("Exp", "Log", "Erf", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh")
"""Unary ops edgekit computes by float32 polynomials (within 2 ulp of exact, as onnxruntime's own
vectorised ones are): compared at rtol 2e-6, with NaN and infinity placement exact."""


def test_unary_edge_values_and_integers():
    x = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, -1.0], np.float32)
    for op in ("Neg", "Abs", "Sign", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round"):
        _check(op, {"x": x}, rtol=0, atol=0)
    for op in APPROXIMATED:
        (got,) = _check(op, {"x": x}, rtol=2e-6, atol=0)
        zeros = got == 0
        assert np.array_equal(np.signbit(got[zeros]), np.signbit(_ort_run(op, x)[zeros])), op  # -0 stays -0
    halves = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 3.5, 1.49999], np.float32)
    _check("Round", {"x": halves}, rtol=0, atol=0)
    _check("Asin", {"x": np.array([2.0, -1.5], np.float32)}, rtol=0, atol=0)
    i = np.array([-3, 0, 5], np.int64)
    for op in ("Neg", "Abs", "Sign"):
        _check(op, {"x": i}, out_type=TensorProto.INT64, rtol=0, atol=0)


WIDE = {"Exp": (-104, 90), "Log": (-45, 38.5), "Erf": (-5, 5), "Sin": (-3e4, 3e4), "Cos": (-3e4, 3e4),
        "Tan": (-3e4, 3e4), "Asin": (-1.1, 1.1), "Acos": (-1.1, 1.1), "Atan": (-7, 7), "Sinh": (-95, 95),
        "Cosh": (-95, 95)}
"""Ranges past the approximations' branches: Exp and Sinh/Cosh into overflow and underflow, Log over
the decades from subnormals to 3e38 (the exponents of 10 drawn), Atan over +-1e7 (also exponents),
Sin/Cos/Tan past 8192 where edgekit hands over to libm, Asin/Acos past +-1."""


@pytest.mark.parametrize("op", APPROXIMATED)
def test_approximations_over_wide_ranges(op):
    """rtol 2e-6 and atol 1e-6: near the zeros of Sin, Cos and Tan at |x| in the thousands, float32's
    reduction of x by pi/2 leaves absolute errors of a few 1e-7 in both engines."""
    rng = np.random.default_rng(19)
    lo, hi = WIDE[op]
    x = rng.uniform(lo, hi, 20000)
    if op in ("Log", "Atan"):
        x = rng.choice([-1, 1], x.size) * 10.0 ** x if op == "Atan" else 10.0 ** x
    x = np.concatenate([x, [0.0, -0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 8192.0, -8193.0, 1e-40, 3.4e38]])
    with np.errstate(over="ignore"):
        _check(op, {"x": x.astype(np.float32)}, rtol=2e-6, atol=1e-6)


def test_exp_and_erf_within_their_stated_error_of_float64():
    """The Exp and Erf kernels against float64 math on 200000 random values: Exp relative error below 1.5e-7
    over the normal range; Erf relative below 1e-7 up to |x| = 0.921875 and absolute below 1e-7 beyond (the
    bounds their docstrings state; onnxruntime comparisons above allow 2e-6)."""
    rng = np.random.default_rng(37)
    x = rng.uniform(-87.3, 88.7, 100000).astype(np.float32)
    got = np.empty_like(x)
    ke.UNARY[ke.EXP](x, got)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 1.5e-7
    x = np.concatenate([rng.uniform(-0.921875, 0.921875, 50000), rng.uniform(-5, 5, 50000)]).astype(np.float32)
    ke.UNARY[ke.ERF](x, got)
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    small = np.abs(x) <= 0.921875
    assert np.max(np.abs(got - want)[small] / np.maximum(np.abs(want[small]), 1e-30)) < 1e-7
    assert np.max(np.abs(got - want)[~small]) < 1e-7


@pytest.mark.parametrize("code", [ke.EXP, ke.ERF])
def test_exp_and_erf_of_every_length(code):
    """The Exp and Erf kernels (explicit vectors on AVX-512, the last one masked) on arrays of 1 to 40 values
    give what they give for the same values in one long array, nothing written past the end; NaN and the
    infinities inside whole vectors map as in onnxruntime."""
    x = np.random.default_rng(41).uniform(-5, 5, 40).astype(np.float32)
    x[[3, 17, 20, 33]] = np.nan, np.inf, -np.inf, -0.0
    whole = np.empty_like(x)
    ke.UNARY[code](x, whole)
    np.testing.assert_array_equal(whole[[3, 17, 20, 33]], [np.nan, np.inf, 0.0, 1.0] if code == ke.EXP else [np.nan, 1, -1, 0])
    for n in range(1, 41):
        got = np.full(n + 1, -7.0, np.float32)
        ke.UNARY[code](x[:n], got[:n])
        np.testing.assert_array_equal(got[:n], whole[:n])
        assert got[n] == -7.0


def test_exp_below_the_normal_range():
    """From -103.9 to -87.4, where exp is subnormal, Exp is within 1.5e-45 of float64: subnormal where it
    runs on explicit AVX-512 vectors (whole vectors), else subnormal or 0 (flushed)."""
    rng = np.random.default_rng(43)
    tiny = rng.uniform(-103.9, -87.4, 1000).astype(np.float32)
    got = np.empty_like(tiny)
    ke.UNARY[ke.EXP](tiny, got)
    want = np.exp(tiny.astype(np.float64))
    close = np.abs(got - want) <= 1.5e-45
    vectors = tiny.size - tiny.size % ke.LANES if ke.EXP in ke.VECTOR_CODES else 0
    assert close[:vectors].all() and np.all(close[vectors:] | (got[vectors:] == 0))


@pytest.mark.parametrize("opset", [13, 20])
def test_isnan_isinf(opset):
    x = np.array([[np.nan, -np.inf, np.inf, 0.0], [1.0, -2.0, np.nan, np.inf]], np.float32)
    _check("IsNaN", {"x": x}, opset=opset, out_type=TensorProto.BOOL, rtol=0, atol=0)
    for pos, neg in [(1, 1), (1, 0), (0, 1), (0, 0)]:
        attrs = {"detect_positive": pos, "detect_negative": neg}
        _check("IsInf", {"x": x}, attrs, opset=opset, out_type=TensorProto.BOOL, rtol=0, atol=0)


@pytest.mark.parametrize("opset,shape", [(9, (2, 3, 4, 5)), (15, (2, 3, 4, 5)), (15, (4, 3)), (7, (1, 3, 10))])
def test_batch_norm_inference(opset, shape):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape).astype(np.float32)
    c = shape[1]
    params = {"s": rng.uniform(0.5, 2, c), "b": rng.standard_normal(c), "m": rng.standard_normal(c), "v": rng.uniform(0.1, 2, c)}
    params = {k: v.astype(np.float32) for k, v in params.items()}
    _check("BatchNormalization", {"x": x}, {"epsilon": 1e-3}, params, opset=opset)
    _check("BatchNormalization", {"x": x, **params}, {}, opset=opset)


def test_batch_norm_training_mode_is_unsupported():
    x = np.zeros((1, 2, 3), np.float32)
    params = {k: np.ones(2, np.float32) for k in "sbmv"}
    node = helper.make_node("BatchNormalization", ["x", *params], ["y", "rm", "rv"], training_mode=1)
    model = make_model([node], {"x": (x.shape, np.float32)}, ["y", "rm", "rv"], params, opset=15)
    with pytest.raises(UnsupportedOpError, match="training"):
        edgekit.InferenceSession(model).run(None, {"x": x})
