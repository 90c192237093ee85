"""The ai.edgekit LIF op and its kernel.

Spikes and final potentials equal, bit for bit, a float32 NumPy reference written in the op's
order (a float64 reference would flip spikes whose potential rounds onto the threshold), for
hard and soft reset, nonzero v_reset and initial V0; a sequence run in two halves (V_last fed
back as V0) equals one pass; one step at a time in onnxruntime, as a standard-op graph, equals
the whole sequence in edgekit; clear errors for malformed nodes.
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgekit
from edgekit.errors import ModelError, UnsupportedOpError
from edgekit.runtimes.ops.lmu import DOMAIN
from oracle import make_model, ort_session

F32 = np.float32


def reference(x, tau=2.0, threshold=1.0, reset="hard", v_reset=0.0, v0=None):
    """SpikingJelly's LIF (decay_input) in float32, one step at a time: (spikes, v_last)."""
    tau, threshold, v_reset = F32(tau), F32(threshold), F32(v_reset)
    v = np.zeros(x.shape[:2], F32) if v0 is None else v0.copy()
    spikes = np.empty_like(x)
    for t in range(x.shape[2]):
        v = v + (x[:, :, t] - (v - v_reset)) / tau
        s = v >= threshold
        spikes[:, :, t] = s
        v = np.where(s, v - threshold if reset == "soft" else v_reset, v).astype(F32)
    return spikes, v


def lif_model(n, c, steps, with_v0=False, last=False, **attrs) -> onnx.ModelProto:
    ins = ["x"] + (["v0"] if with_v0 else [])
    outs = ["s"] + (["v_last"] if last else [])
    node = helper.make_node("LIF", ins, outs, name="lif", domain=DOMAIN, **attrs)
    inputs = {"x": ([n, c, steps], np.float32)}
    if with_v0:
        inputs["v0"] = ([n, c], np.float32)
    outputs = {"s": ([n, c, steps], np.float32)}
    if last:
        outputs["v_last"] = ([n, c], np.float32)
    return make_model([node], inputs, outputs, domains=(DOMAIN,))


def run(model, **feeds):
    return edgekit.InferenceSession(model).run(None, feeds)


@pytest.mark.parametrize("attrs", [
    {}, {"reset": "soft"}, {"tau": 3.0, "threshold": 0.5, "v_reset": -0.25},
    {"tau": 1.5, "threshold": 0.75, "reset": "soft", "v_reset": 0.1},
])
def test_lif_matches_float32_reference_bit_for_bit(attrs):
    rng = np.random.default_rng(len(attrs))
    x = (rng.standard_normal((2, 21, 200)) * 1.5 + 0.5).astype(F32)  # a partial channel block and time tile
    v0 = rng.standard_normal((2, 21)).astype(F32)
    for start in (None, v0):
        want_s, want_v = reference(x, **attrs, v0=start)
        feeds = {"x": x} | ({} if start is None else {"v0": start})
        s, v = run(lif_model(2, 21, 200, with_v0=start is not None, last=True, **attrs), **feeds)
        assert s.dtype == np.float32 and set(np.unique(s)) <= {0.0, 1.0}
        np.testing.assert_array_equal(s, want_s)
        np.testing.assert_array_equal(v, want_v)
        assert 0.05 < s.mean() < 0.95  # the case exercises both firing and silence


def test_exact_threshold_fires_and_hard_reset_sets_v_reset():
    # tau 1: v = x + v_reset exactly, so v == threshold at t = 0 must spike (>=); after each spike
    # the potential restarts from v_reset.
    x = np.array([[[1.5, 0.5, 2.5, 1.499]]], F32)
    s, v = run(lif_model(1, 1, 4, last=True, tau=1.0, v_reset=-0.5), x=x)
    np.testing.assert_array_equal(s, [[[1, 0, 1, 0]]])
    np.testing.assert_array_equal(v, reference(x, tau=1.0, v_reset=-0.5)[1])


@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_two_halves_with_v_last_as_v0_equal_one_pass(reset):
    x = (np.random.default_rng(7).standard_normal((3, 8, 300)) + 0.6).astype(F32)
    whole, whole_v = run(lif_model(3, 8, 300, last=True, reset=reset), x=x)
    first, first_v = run(lif_model(3, 8, 150, last=True, reset=reset), x=x[:, :, :150])
    second, second_v = run(lif_model(3, 8, 150, with_v0=True, last=True, reset=reset), x=x[:, :, 150:], v0=first_v)
    np.testing.assert_array_equal(np.concatenate([first, second], axis=2), whole)
    np.testing.assert_array_equal(second_v, whole_v)


def step_model(n, c, tau, threshold, v_reset) -> onnx.ModelProto:
    """One LIF step (hard reset) in standard ops: (x_t, v) -> (s_t, v')."""
    consts = {"tau": tau, "th": threshold, "vr": v_reset}
    nodes = [helper.make_node("Constant", [], [k], value=helper.make_tensor(k, TensorProto.FLOAT, [], [v]))
             for k, v in consts.items()]
    nodes += [
        helper.make_node("Sub", ["v", "vr"], ["dv"]),
        helper.make_node("Sub", ["x", "dv"], ["drive"]),
        helper.make_node("Div", ["drive", "tau"], ["inc"]),
        helper.make_node("Add", ["v", "inc"], ["h"]),
        helper.make_node("GreaterOrEqual", ["h", "th"], ["fire"]),
        helper.make_node("Cast", ["fire"], ["s"], to=TensorProto.FLOAT),
        helper.make_node("Where", ["fire", "vr", "h"], ["v_next"]),
    ]
    vi = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, c]) for k in ("x", "v")]
    outs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, c]) for k in ("s", "v_next")]
    model = helper.make_model(helper.make_graph(nodes, "lif_step", vi, outs),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    return model


def test_step_by_step_in_onnxruntime_equals_whole_sequence():
    tau, threshold, v_reset = 2.0, 1.0, 0.0
    x = (np.random.default_rng(11).standard_normal((2, 32, 120)) * 2 + 0.7).astype(F32)
    whole, whole_v = run(lif_model(2, 32, 120, last=True, tau=tau, threshold=threshold), x=x)
    step = ort_session(step_model(2, 32, tau, threshold, v_reset))
    v = np.zeros((2, 32), F32)
    spikes = []
    for t in range(x.shape[2]):
        s, v = step.run(None, {"x": np.ascontiguousarray(x[:, :, t]), "v": v})
        spikes.append(s)
    np.testing.assert_array_equal(np.stack(spikes, axis=2), whole)
    np.testing.assert_array_equal(v, whole_v)


@pytest.mark.parametrize("attrs,match", [
    ({"tau": 0.0}, "'tau' must be a positive finite number"),
    ({"threshold": float("nan")}, "'threshold' must be a finite number"),
    ({"reset": "medium"}, "'reset' must be one of"),
    ({"v_reset": "zero"}, "'v_reset' must be a finite number"),
])
def test_bad_attributes_raise_model_error(attrs, match):
    node = helper.make_node("LIF", ["x"], ["s"], name="bad", domain=DOMAIN, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3])],
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                              ir_version=10)
    with pytest.raises(ModelError, match=match) as err:
        edgekit.InferenceSession(model).run(None, {"x": np.zeros((1, 2, 3), F32)})
    assert "'bad'" in str(err.value)


def test_bad_shapes_and_dtypes():
    bad = lif_model(1, 2, 3, with_v0=True)
    bad.graph.input[1].type.tensor_type.shape.dim[1].dim_value = 5
    with pytest.raises(ModelError, match=r"V0\) must be float32 \[1, 2\]"):
        edgekit.InferenceSession(bad).run(None, {"x": np.zeros((1, 2, 3), F32), "v0": np.zeros((1, 5), F32)})
    bad = lif_model(1, 2, 3)
    del bad.graph.input[0].type.tensor_type.shape.dim[2]
    with pytest.raises(ModelError, match=r"must be 3-D \(N, C, T\)"):
        edgekit.InferenceSession(bad).run(None, {"x": np.zeros((1, 2), F32)})
    bad = lif_model(1, 2, 3)
    bad.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    with pytest.raises(UnsupportedOpError, match="edgekit computes float32"):
        edgekit.InferenceSession(bad).run(None, {"x": np.zeros((1, 2, 3), np.float64)})
