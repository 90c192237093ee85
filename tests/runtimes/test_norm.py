"""LayerNormalization, InstanceNormalization and GroupNormalization against onnxruntime on random
float32 inputs.

LayerNormalization: every axis of rank-2 to rank-4 inputs, epsilon, B present or not, the Mean and
InvStdDev outputs in every requested combination, Scale and B broadcast from every shape (constant)
or given at run time as a row of the normalized axes or with X's shape, opsets 17 and 23.
InstanceNormalization: ranks 3 to 5, opsets 6 and 22 (1 against NumPy), parameters constant or at
run time.
GroupNormalization: opset 21 (scale and bias per channel) and opset 18 (per group), one group to one
per channel, ranks 2 to 4. All: batch > 1, symbolic batch and length dims run at several shapes,
NaN inputs, large groups, data offset by 100 standard deviations (GroupNormalization's against a
float64 NumPy reference: onnxruntime's expansion loses 3e-3 there). Refused forms (stash_type other
than 1, float64 inputs, run-time Scale broadcast within X) raise UnsupportedOpError naming the node.
Tolerance rtol 1e-5, atol 1e-5 (float32 statistics over up to a few thousand values); 1e-4 for
groups of 32768 values and for offset data (whose float32 mean is only good to the input's ulp).
"""
import numpy as np
import onnx
import pytest
from onnx import helper

import edgekit
from edgekit.errors import UnsupportedOpError
from oracle import assert_matches_ort, make_model

RTOL, ATOL = 1e-5, 1e-5
F32 = np.float32


def _rand(rng, shape, offset=0.0):
    return (rng.standard_normal(shape) + offset).astype(F32)


def _model(op, x_shape, params, outputs, opset, consts=(), attrs=None, out_shapes=None):
    """One-node model: X then params (name -> array) as inputs, those named in ``consts`` as
    initializers; ``out_shapes`` gives output shapes where onnx cannot infer them (GroupNormalization)."""
    names = ["x", *params]
    node = helper.make_node(op, names, outputs, name="norm", **(attrs or {}))
    inputs = {"x": (x_shape, F32), **{k: (v.shape, F32) for k, v in params.items() if k not in consts}}
    outs = {o: (s, F32) for o, s in out_shapes.items()} if out_shapes else [o for o in outputs if o]
    return make_model([node], inputs, outs, {k: params[k] for k in consts}, opset)


def _feeds(x, params, consts=()):
    return {"x": x, **{k: v for k, v in params.items() if k not in consts}}


# ---- LayerNormalization -----------------------------------------------------------------

@pytest.mark.parametrize("shape,axis", [((3, 16), -1), ((3, 16), 0), ((2, 5, 12), -1), ((2, 5, 12), 1),
                                        ((2, 5, 12), -3), ((2, 3, 4, 6), 2), ((2, 3, 4, 6), -1)])
@pytest.mark.parametrize("opset", [17, 23])
def test_layer_norm_axes_and_outputs(shape, axis, opset):
    rng = np.random.default_rng(len(shape) + axis)
    x = _rand(rng, shape)
    params = {"s": _rand(rng, shape[axis:]), "b": _rand(rng, shape[axis:])}
    for outputs in (["y"], ["y", "mean"], ["y", "mean", "inv"], ["y", "", "inv"]):
        for consts in (("s", "b"), ()):
            model = _model("LayerNormalization", shape, params, outputs, opset, consts, {"axis": axis, "epsilon": 1e-3})
            assert_matches_ort(model, _feeds(x, params, consts), RTOL, ATOL)


def test_layer_norm_without_bias_default_epsilon():
    rng = np.random.default_rng(1)
    x, s = _rand(rng, (4, 7, 32)), _rand(rng, (32,))
    for consts in (("s",), ()):
        model = _model("LayerNormalization", x.shape, {"s": s}, ["y", "mean", "inv"], 17, consts)
        assert_matches_ort(model, _feeds(x, {"s": s}, consts), RTOL, ATOL)


@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("s_shape", [(1,), (12,), (1, 12), (5, 12), (5, 1), (2, 1, 12), (2, 5, 1), (2, 5, 12), (2, 1, 1)])
def test_layer_norm_constant_broadcast(s_shape, axis):
    """Constant Scale and B of every shape that broadcasts to X (2, 5, 12), also varying along the
    leading (not normalized) axes."""
    rng = np.random.default_rng(sum(s_shape))
    x = _rand(rng, (2, 5, 12))
    params = {"s": _rand(rng, s_shape), "b": _rand(rng, s_shape[1:] or s_shape)}
    model = _model("LayerNormalization", x.shape, params, ["y", "mean", "inv"], 17, ("s", "b"), {"axis": axis})
    assert_matches_ort(model, {"x": x}, RTOL, ATOL)


@pytest.mark.parametrize("s_shape,axis", [((12,), -1), ((1, 12), -1), ((1, 1, 12), -1), ((2, 5, 12), -1),
                                          ((5, 12), 1), ((2, 5, 12), 1)])
def test_layer_norm_runtime_parameters(s_shape, axis):
    """Scale and B given at run time as a row of the normalized axes or with X's shape."""
    rng = np.random.default_rng(len(s_shape))
    x = _rand(rng, (2, 5, 12))
    params = {"s": _rand(rng, s_shape), "b": _rand(rng, s_shape)}
    model = _model("LayerNormalization", x.shape, params, ["y", "mean", "inv"], 17, (), {"axis": axis})
    assert_matches_ort(model, _feeds(x, params), RTOL, ATOL)


def test_layer_norm_symbolic_dims():
    """One model with symbolic batch and sequence dims run at several shapes, an empty batch too."""
    rng = np.random.default_rng(2)
    params = {"s": _rand(rng, (64,)), "b": _rand(rng, (64,))}
    model = _model("LayerNormalization", ("N", "T", 64), params, ["y", "mean", "inv"], 17, ("s", "b"))
    session = edgekit.InferenceSession(model)
    for shape in ((1, 1, 64), (3, 10, 64), (2, 33, 64), (0, 4, 64)):
        assert_matches_ort(model, {"x": _rand(rng, shape)}, RTOL, ATOL, session=session)


def test_layer_norm_offset_and_nan():
    """Rows far from zero (mean 100 standard deviations away) and a row holding a NaN."""
    rng = np.random.default_rng(3)
    x = _rand(rng, (4, 768), offset=100.0)
    x[2, 5] = np.nan
    params = {"s": _rand(rng, (768,)), "b": _rand(rng, (768,))}
    model = _model("LayerNormalization", x.shape, params, ["y", "mean", "inv"], 17, ("s", "b"))
    got = assert_matches_ort(model, {"x": x}, 1e-4, 1e-4)
    assert np.isnan(got[0][2]).all() and not np.isnan(got[0][[0, 1, 3]]).any()


# ---- InstanceNormalization and GroupNormalization ------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 17), (3, 4, 5, 6), (2, 2, 3, 4, 5)])
@pytest.mark.parametrize("opset", [6, 22])
def test_instance_norm(shape, opset):
    rng = np.random.default_rng(len(shape))
    x = _rand(rng, shape)
    params = {"s": _rand(rng, shape[1:2]), "b": _rand(rng, shape[1:2])}
    for consts, attrs in ((("s", "b"), {}), ((), {"epsilon": 0.1})):
        model = _model("InstanceNormalization", shape, params, ["y"], opset, consts, attrs)
        assert_matches_ort(model, _feeds(x, params, consts), RTOL, ATOL)


def test_instance_norm_opset1_against_numpy():
    """Opset 1 (its legacy consumed_inputs ignored): onnxruntime has no kernel for it, so NumPy is the reference."""
    rng = np.random.default_rng(1)
    x, s, b = _rand(rng, (2, 3, 7)), _rand(rng, (3,)), _rand(rng, (3,))
    node = helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], consumed_inputs=[0, 0, 0])
    model = make_model([node], {"x": (x.shape, F32)}, {"y": (x.shape, F32)}, {"s": s, "b": b}, opset=1)
    got = edgekit.InferenceSession(model).run(None, {"x": x})[0]
    want = (x - x.mean(2, keepdims=True)) / np.sqrt(x.var(2, keepdims=True) + 1e-5) * s[:, None] + b[:, None]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("shape", [(3, 8), (2, 8, 13), (2, 8, 5, 6)])
@pytest.mark.parametrize("groups", [1, 2, 8])
def test_group_norm_per_channel(shape, groups):
    """Opset 21 semantics: scale and bias of shape (C,)."""
    rng = np.random.default_rng(groups + len(shape))
    x = _rand(rng, shape)
    params = {"s": _rand(rng, (8,)), "b": _rand(rng, (8,))}
    for consts, opset in ((("s", "b"), 21), (("b",), 21), ((), 23)):
        model = _model("GroupNormalization", shape, params, ["y"], opset, consts,
                       {"num_groups": groups, "epsilon": 1e-3}, {"y": shape})
        assert_matches_ort(model, _feeds(x, params, consts), RTOL, ATOL)


def test_group_norm_opset18_per_group(monkeypatch):
    """Opset 18 semantics: scale and bias of shape (num_groups,), each for every channel of its group.
    onnx.checker refuses the deprecated opset-18 op, so edgekit's load check is bypassed here."""
    monkeypatch.setattr("edgekit.model.check_model", lambda proto: None)
    monkeypatch.setattr(onnx.checker, "check_model", lambda *a, **k: None)  # make_model's check
    rng = np.random.default_rng(18)
    x = _rand(rng, (2, 6, 7, 5))
    for groups in (1, 3, 6):
        params = {"s": _rand(rng, (groups,)), "b": _rand(rng, (groups,))}
        for consts in (("s", "b"), ("s",), ()):
            model = _model("GroupNormalization", x.shape, params, ["y"], 18, consts, {"num_groups": groups},
                           {"y": x.shape})
            assert_matches_ort(model, _feeds(x, params, consts), RTOL, ATOL)


def test_group_and_instance_norm_symbolic_dims_and_large_groups():
    rng = np.random.default_rng(4)
    params = {"s": _rand(rng, (32,)), "b": _rand(rng, (32,))}
    gn = _model("GroupNormalization", ("N", 32, "H", "W"), params, ["y"], 21, ("s", "b"), {"num_groups": 4},
                {"y": ("N", 32, "H", "W")})
    inorm = _model("InstanceNormalization", ("N", 32, "L"), params, ["y"], 17, ("s", "b"))
    for model, shapes in ((gn, [(1, 32, 3, 5), (2, 32, 64, 64)]), (inorm, [(1, 32, 7), (3, 32, 4096)])):
        session = edgekit.InferenceSession(model)
        for shape in shapes:
            assert_matches_ort(model, {"x": _rand(rng, shape)}, 1e-4, 1e-4, session=session)
    assert_matches_ort(inorm, {"x": _rand(rng, (2, 32, 300), offset=100.0)}, 1e-4, 1e-4)


def test_group_norm_offset_against_float64():
    """Data 100 standard deviations from zero. onnxruntime expands GroupNormalization into ops that
    compute the variance as E[x^2] - E[x]^2 in float32 (errors of 3e-3 here), so the reference is
    NumPy in float64; edgekit's two-pass statistics stay within 1e-4."""
    rng = np.random.default_rng(7)
    x = _rand(rng, (2, 32, 6, 5), offset=100.0)
    s, b = _rand(rng, (32,)), _rand(rng, (32,))
    model = _model("GroupNormalization", x.shape, {"s": s, "b": b}, ["y"], 21, ("s", "b"), {"num_groups": 4},
                   {"y": x.shape})
    g = x.astype(np.float64).reshape(2, 4, -1)
    ref = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-5)).reshape(x.shape)
    ref = ref * s[:, None, None] + b[:, None, None]
    got = edgekit.InferenceSession(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_group_norm_nan_stays_in_its_group():
    rng = np.random.default_rng(5)
    x = _rand(rng, (1, 4, 6))
    x[0, 1, 2] = np.nan
    params = {"s": _rand(rng, (4,)), "b": _rand(rng, (4,))}
    model = _model("GroupNormalization", x.shape, params, ["y"], 21, ("s", "b"), {"num_groups": 2}, {"y": x.shape})
    y = assert_matches_ort(model, {"x": x}, RTOL, ATOL)[0]
    assert np.isnan(y[0, :2]).all() and not np.isnan(y[0, 2:]).any()


# ---- refused forms --------------------------------------------------------------------------

def _refused(model, match):
    with pytest.raises(UnsupportedOpError, match=match) as info:
        edgekit.InferenceSession(model)
    assert "'norm'" in str(info.value)


def test_refused_forms():
    rng = np.random.default_rng(6)
    s = _rand(rng, (12,))
    _refused(_model("LayerNormalization", (2, 12), {"s": s}, ["y"], 17, ("s",), {"stash_type": 16}), "stash_type 16")
    _refused(_model("GroupNormalization", (2, 12, 3), {"s": s, "b": s}, ["y"], 21, ("s", "b"),
                    {"num_groups": 3, "stash_type": 11}, {"y": (2, 12, 3)}), "stash_type 11")
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y"], name="norm")
    model = make_model([node], {"x": ((2, 12), np.float64)}, {"y": onnx.TensorProto.DOUBLE}, {"s": s.astype(np.float64)})
    _refused(model, "float64")
    _refused(_model("LayerNormalization", (2, 5, 12), {"s": _rand(rng, (5, 1))}, ["y"], 17), "run-time Scale")
