"""The ai.edgekit LMU op and its kernels.

Recurrent == parallel (FFT) over 10,000 steps within 1e-5 relative (orders 256 and 16, theta 128
and 1000); every form (recurrent, direct convolution, FFT) against a plain float64 NumPy
recurrence, with and without the initial memory M0; the optional M_last output; a sequence run
in two halves (M_last fed back as M0) equals one pass; the form "auto" picks; a checked ONNX
model through edgekit.InferenceSession; clear errors naming the node for malformed nodes
(attributes, arity, shapes, dtypes); an unstable (Euler, short theta) LMU's parallel form equals the
recurrence frame by frame (no FFT); the benchmark's LMU-forms row, and its refusal of a
repeat count below 1. Throughput of the forms: python -m benchmarks.lmu.
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgekit
from edgekit.errors import ModelError, UnsupportedOpError
from edgekit.legendre import discretize, impulse_response
from edgekit.runtimes.kernels import lmu as kl
from edgekit.runtimes.ops.lmu import DOMAIN, choose_form, is_bounded
from oracle import make_model

RTOL = 1e-5  # forms against each other and against float64: float32 storage dominates (~6e-8 seen)


def reference(u: np.ndarray, order: int, theta: float, method: str = "zoh", m0=None) -> np.ndarray:
    """m_t = Abar m_(t-1) + Bbar u_t in float64, (N, order, T)."""
    abar, bbar = discretize(order, theta, method)
    n, _, steps = u.shape
    m = np.zeros((n, order)) if m0 is None else m0.astype(np.float64)
    out = np.empty((n, order, steps))
    for t in range(steps):
        m = m @ abar.T + u[:, 0, t:t + 1].astype(np.float64) * bbar
        out[:, :, t] = m
    return out


def lmu_model(n, steps, order, theta, with_m0=False, last=False, **attrs) -> onnx.ModelProto:
    """U (and M0) -> LMU -> M (and M_last), then a standard Relu on M to mix domains."""
    ins = ["u"] + (["m0"] if with_m0 else [])
    outs = ["m"] + (["m_last"] if last else [])
    nodes = [helper.make_node("LMU", ins, outs, name="lmu", domain=DOMAIN, order=order, theta=theta, **attrs),
             helper.make_node("Relu", ["m"], ["m_relu"])]
    inputs = {"u": ([n, 1, steps], np.float32)}
    if with_m0:
        inputs["m0"] = ([n, order], np.float32)
    outputs = {"m": ([n, order, steps], np.float32), "m_relu": ([n, order, steps], np.float32)}
    if last:
        outputs["m_last"] = ([n, order], np.float32)
    return make_model(nodes, inputs, outputs, domains=(DOMAIN,))


def run(model, **feeds):
    return edgekit.InferenceSession(model).run(None, feeds)


def assert_rel(got, want, rtol=RTOL):
    """Elementwise relative agreement; the absolute floor is float32 resolution (2 ulp) at the
    signal's scale, for values that cancel to near zero after rounding (the M0 term is added to a
    stored float32 convolution)."""
    np.testing.assert_allclose(got, want, rtol=rtol, atol=2.4e-7 * np.abs(want).max())


@pytest.mark.parametrize("order,theta", [(256, 128.0), (256, 1000.0), (16, 128.0)])
def test_recurrent_equals_parallel_over_10000_steps(order, theta):
    u = np.random.default_rng(order).standard_normal((1, 1, 10_000)).astype(np.float32)
    assert choose_form("parallel", order, 10_000, False) == "fft"
    rec = run(lmu_model(1, 10_000, order, theta, mode="recurrent"), u=u)[0]
    par = run(lmu_model(1, 10_000, order, theta, mode="parallel"), u=u)[0]
    assert_rel(par, rec)
    assert_rel(rec, reference(u, order, theta))


@pytest.mark.parametrize("method,order,theta", [("zoh", 48, 40.0), ("euler", 24, 200.0)])  # Euler: stable theta
def test_every_form_matches_float64_with_and_without_m0(method, order, theta):
    rng = np.random.default_rng(3)
    steps = 300
    u = rng.standard_normal((2, 1, steps)).astype(np.float32)
    m0 = rng.standard_normal((2, order)).astype(np.float32)
    abar, bbar = discretize(order, theta, method)
    h = impulse_response(abar, bbar, steps)
    out, last = np.empty((2, order, steps), np.float32), np.empty((2, order), np.float32)
    for start in (None, m0):
        want = reference(u, order, theta, method, start)
        state = np.zeros((2, order), np.float32) if start is None else start
        kl.lmu_recurrent(u, state, abar, bbar, out, last)
        assert_rel(out, want)
        assert_rel(last, want[:, :, -1])
        out[:], last[:] = np.nan, np.nan
        kl.lmu_convolve(u, state, h, abar, start is not None, np.empty_like(h), out, last)
        assert_rel(out, want)
        assert_rel(last, want[:, :, -1])
        for steps_, form in ((24, "direct"), (steps, "fft")):  # through the op: both parallel forms
            assert choose_form("parallel", order, steps_, start is not None) == form
            model = lmu_model(2, steps_, order, theta, with_m0=start is not None, last=True,
                              mode="parallel", discretization=method)
            feeds = {"u": u[:, :, :steps_]} | ({} if start is None else {"m0": start})
            got, relu, got_last = run(model, **feeds)
            assert_rel(got, want[:, :, :steps_])
            assert_rel(got_last, want[:, :, steps_ - 1])
            np.testing.assert_array_equal(relu, np.maximum(got, 0))


@pytest.mark.parametrize("mode", ["recurrent", "parallel", "auto"])
def test_two_halves_with_m_last_as_m0_equal_one_pass(mode):
    order, theta, half = 64, 100.0, 400
    u = np.random.default_rng(5).standard_normal((2, 1, 2 * half)).astype(np.float32)
    whole, _, whole_last = run(lmu_model(2, 2 * half, order, theta, last=True, mode=mode), u=u)
    first, _, first_last = run(lmu_model(2, half, order, theta, last=True, mode=mode), u=u[:, :, :half])
    second, _, second_last = run(lmu_model(2, half, order, theta, with_m0=True, last=True, mode=mode),
                                 u=u[:, :, half:], m0=first_last)
    assert_rel(np.concatenate([first, second], axis=2), whole)
    assert_rel(second_last, whole_last)


@pytest.mark.parametrize("mode", ["recurrent", "parallel"])
def test_unit_impulse_gives_the_impulse_response(mode):
    # theta 8 decays into float64 subnormals within ~1,000 steps: the recurrence flushes them to 0
    # (the FFT leaves rounding noise ~1e-16 of the peak there instead).
    u = np.zeros((1, 1, 3000), np.float32)
    u[0, 0, 0] = 1.0
    m = run(lmu_model(1, 3000, 32, 8.0, mode=mode), u=u)[0]
    h = impulse_response(*discretize(32, 8.0), 3000)
    assert_rel(m[0].T, h)
    tail = np.abs(m[0, :, -100:]).max()
    assert tail == 0 if mode == "recurrent" else tail < 1e-15 * np.abs(h).max()


@pytest.mark.parametrize("steps", [24, 300])  # parallel: direct, FFT
def test_nan_and_inf_stay_causal_in_every_form(steps):
    u = np.random.default_rng(9).standard_normal((2, 1, steps)).astype(np.float32)
    u[0, 0, 10], u[1, 0, 12] = np.nan, np.inf
    for mode in ("recurrent", "parallel"):
        m = run(lmu_model(2, steps, 16, 20.0, mode=mode), u=u)[0]
        assert np.isfinite(m[0, :, :10]).all() and np.isnan(m[0, :, 10:]).all()
        assert np.isfinite(m[1, :, :12]).all() and not np.isfinite(m[1, :, 12]).any()


@pytest.mark.parametrize("order,theta,steps", [(64, 500.0, 3000), (24, 2.0, 300)])
def test_unstable_euler_parallel_equals_recurrent_frame_by_frame(order, theta, steps):
    # Euler with a theta short for the order is unstable (|eigenvalue| of Abar 1.006 and 21): the
    # response grows, so an FFT's error (relative to the largest output) swamps the early frames, and
    # an impulse response past float64's range spreads NaN over every frame. Each frame must match
    # the recurrence relative to its own scale, and be finite wherever the recurrence is.
    u = np.random.default_rng(13).standard_normal((1, 1, steps)).astype(np.float32)
    rec = run(lmu_model(1, steps, order, theta, mode="recurrent", discretization="euler"), u=u)[0]
    par = run(lmu_model(1, steps, order, theta, mode="parallel", discretization="euler"), u=u)[0]
    finite = np.isfinite(rec).all(axis=1)[0]
    assert finite[:10].all()
    np.testing.assert_array_equal(np.isfinite(par).all(axis=1)[0], finite)
    scale = np.abs(rec[:, :, finite]).max(axis=1, keepdims=True)
    np.testing.assert_allclose(par[:, :, finite] / scale, rec[:, :, finite] / scale, rtol=0, atol=RTOL)
    assert choose_form("parallel", order, steps, False, stable=False) == "direct"
    assert not is_bounded(impulse_response(*discretize(order, theta, "euler"), steps))
    assert is_bounded(impulse_response(*discretize(256, 128.0), 10_000))  # stable: the FFT stays
    assert is_bounded(impulse_response(*discretize(24, 200.0, "euler"), steps))


def test_auto_picks_by_cost():
    assert choose_form("auto", 256, 10_000, False) == "fft"
    assert choose_form("auto", 16, 10_000, False) == "recurrent"
    assert choose_form("auto", 64, 8, False) == "direct"
    assert choose_form("auto", 256, 10_000, True) == "recurrent"  # M0 costs the parallel forms a recurrence
    assert choose_form("recurrent", 256, 8, False) == "recurrent"


def test_zero_length_sequence_keeps_m0():
    m0 = np.arange(8, dtype=np.float32)[None]
    m, _, last = run(lmu_model(1, 0, 8, 4.0, with_m0=True, last=True), u=np.zeros((1, 1, 0), np.float32), m0=m0)
    assert m.shape == (1, 8, 0)
    np.testing.assert_array_equal(last, m0)


@pytest.mark.parametrize("attrs,match", [
    ({"order": 0, "theta": 4.0}, "'order' must be an int >= 1"),
    ({"order": 4.5, "theta": 4.0}, "'order' must be an int >= 1"),
    ({"order": 4, "theta": -1.0}, "'theta' must be a positive finite number"),
    ({"order": 4}, "'theta' is required"),
    ({"order": 4, "theta": 4.0, "discretization": "bilinear"}, "'discretization' must be one of"),
    ({"order": 4, "theta": 4.0, "mode": "fast"}, "'mode' must be one of"),
])
def test_bad_attributes_raise_model_error(attrs, match):
    node = helper.make_node("LMU", ["u"], ["m"], name="bad", domain=DOMAIN, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("u", TensorProto.FLOAT, [1, 1, 5])],
                              [helper.make_tensor_value_info("m", TensorProto.FLOAT, ["n", "d", "t"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                              ir_version=10)
    with pytest.raises(ModelError, match=match) as err:
        edgekit.InferenceSession(model).run(None, {"u": np.zeros((1, 1, 5), np.float32)})
    assert "'bad'" in str(err.value)


@pytest.mark.parametrize("ins,outs,match", [
    (["u", "m0", "u"], ["m"], "takes 1 to 2 inputs, got 3"),
    ([""], ["m"], "input 0 is required"),
    (["u"], ["m", "m_last", "extra"], "has 1 or 2 outputs"),
])
def test_bad_arity_raises_model_error_naming_the_node(ins, outs, match):
    node = helper.make_node("LMU", ins, outs, name="bad", domain=DOMAIN, order=4, theta=4.0)
    vi = [helper.make_tensor_value_info("u", TensorProto.FLOAT, [1, 1, 5]),
          helper.make_tensor_value_info("m0", TensorProto.FLOAT, [1, 4])]
    graph = helper.make_graph([node], "g", vi, [helper.make_tensor_value_info("m", TensorProto.FLOAT, ["n", "d", "t"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                              ir_version=10)
    with pytest.raises(ModelError, match=match) as err:
        edgekit.InferenceSession(model).run(None, {"u": np.zeros((1, 1, 5), np.float32),
                                                   "m0": np.zeros((1, 4), np.float32)})
    assert "'bad' (LMU)" in str(err.value)


def test_bad_shapes_and_dtypes():
    model = lmu_model(1, 5, 4, 4.0, with_m0=True)
    with pytest.raises(ModelError, match=r"M0\) must be float32 \[1, 4\]"):
        bad = lmu_model(1, 5, 4, 4.0, with_m0=True)
        bad.graph.input[1].type.tensor_type.shape.dim[1].dim_value = 3
        edgekit.InferenceSession(bad).run(None, {"u": np.zeros((1, 1, 5), np.float32),
                                                 "m0": np.zeros((1, 3), np.float32)})
    with pytest.raises(ModelError, match=r"must be \(N, 1, T\)"):
        bad = lmu_model(1, 5, 4, 4.0)
        bad.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 2
        edgekit.InferenceSession(bad).run(None, {"u": np.zeros((1, 2, 5), np.float32)})
    with pytest.raises(UnsupportedOpError, match="edgekit computes float32"):
        bad = lmu_model(1, 5, 4, 4.0)
        bad.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
        edgekit.InferenceSession(bad).run(None, {"u": np.zeros((1, 1, 5), np.float64)})
    assert run(model, u=np.ones((1, 1, 5), np.float32), m0=np.zeros((1, 4), np.float32))[0].shape == (1, 4, 5)


def test_benchmark_forms_row_and_repeat_check():
    from edgekit.benchmarks import lmu as bench

    row = bench.lmu_forms(16, 50, 3)
    assert row["diff"] < RTOL and row["recurrent"] > 0 and row["parallel"] > 0
    assert row["parallel_form"] == choose_form("parallel", 16, 50, False)
    for bad in ("0", "-3", "x"):
        with pytest.raises(SystemExit) as exc:
            bench.main(["--repeat", bad])
        assert exc.value.code == 2
