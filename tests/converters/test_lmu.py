"""LMUFormer export (edgekit.converters.lmu): the full-sequence model and its step model.

A float64 NumPy forward written out below, from random weights, is the reference. Checked: the
full model on edgekit.InferenceSession == the reference (spiking and not, causal and lookahead);
the ONNX step model in onnxruntime == the same step model on edgekit's plan == the full model
frame by frame; the StreamingSession with random chunk sizes == the full model; the running mean
is a CumSum (a 20,000-frame sequence fits); a checkpoint resumed in a new session == the
uninterrupted stream, and so is the stream after reset(); bad chunks raise InputError and leave
the stream untouched; the config survives the .npz and the ONNX metadata and takes NumPy scalars.

Spiking models are compared through their logits, which a single flipped spike would move by far
more than the tolerance. Float32 engines round differently from the float64 reference, so a
membrane potential within rounding of the threshold could spike in one and not the other: the
reference records the smallest |v - threshold| over every neuron and frame, and each test asserts
it is above MARGIN (2e-5, some 20x the float32 error of v here), so no comparison sits on a tie.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import edgekit
from edgekit.converters.lmu import CONFIG_KEY, LMUFormerConfig, build_lmuformer, config_of, load_npz, to_step
from edgekit.errors import InputError, ModelError
from edgekit.legendre import discretize
from lmu_weights import random_weights

MARGIN = 2e-5
RTOL, ATOL = 1e-4, 1e-5
VARIANTS = [(s, la) for s in (False, True) for la in (False, True)]


def config(spiking: bool, lookahead: bool, **kw) -> LMUFormerConfig:
    return LMUFormerConfig(**{"c_in": 3, "dim": 8, "order": 6, "theta": 12.0, "n_embed": 2, "classes": 4,
                              "spiking": spiking, "lookahead": lookahead, **kw})


def reference(w: dict[str, np.ndarray], c: LMUFormerConfig, x: np.ndarray) -> tuple[np.ndarray, float, list[float]]:
    """Float64 LMUFormer forward: logits (N, classes, T), the smallest |v - threshold| of any LIF
    neuron at any frame (inf without LIF) and the spike rate of each LIF layer."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    x = x.astype(np.float64)
    n, _, t_len = x.shape
    margin, rates = [np.inf], []

    def act(y):
        if not c.spiking:
            return np.maximum(y, 0.0)
        v, s = np.zeros(y.shape[:2]), np.zeros_like(y)
        for t in range(t_len):
            v = v + (y[:, :, t] - v) / c.tau
            margin[0] = min(margin[0], float(np.abs(v - c.threshold).min()))
            fire = v >= c.threshold
            s[:, :, t] = fire
            v = np.where(fire, 0.0, v) if c.reset == "hard" else v - c.threshold * fire
        rates.append(float(s.mean()))
        return s

    def bn(y, p):
        scale = w[f"{p}.weight"] / np.sqrt(w[f"{p}.running_var"] + 1e-5)
        return (y - w[f"{p}.running_mean"][:, None]) * scale[:, None] + w[f"{p}.bias"][:, None]

    def pointwise(y, weight, bias=None):
        out = np.einsum("oc,nct->not", weight[:, :, 0], y)
        return out if bias is None else out + bias[:, None]

    z = x
    for i in range(c.n_embed):
        k = w[f"embed.{i}.conv.weight"]
        zp = np.pad(z, ((0, 0), (0, 0), (1, 1) if c.lookahead else (2, 0)))
        z = act(bn(sum(np.einsum("oc,nct->not", k[:, :, j], zp[:, :, j:j + t_len]) for j in range(3)),
                   f"embed.{i}.bn"))
    u = pointwise(z, w["lmu.u.weight"], w["lmu.u.bias"])[:, 0]
    abar, bbar = discretize(c.order, c.theta, c.discretization)
    m, mem = np.zeros((n, c.order)), np.zeros((n, c.order, t_len))
    for t in range(t_len):
        m = m @ abar.T + u[:, t:t + 1] * bbar
        mem[:, :, t] = m
    z = z + act(pointwise(np.concatenate([mem, z], 1), w["lmu.h.weight"], w["lmu.h.bias"]))
    a = act(bn(pointwise(z, w["mixer.fc1.weight"]), "mixer.bn1"))
    z = z + bn(pointwise(a, w["mixer.fc2.weight"]), "mixer.bn2")
    mean = np.cumsum(z, axis=2) / np.arange(1, t_len + 1)
    return np.einsum("kd,ndt->nkt", w["head.weight"], mean) + w["head.bias"][:, None], margin[0], rates


def case(spiking: bool, lookahead: bool, seed: int = 0, batch: int = 2, length: int = 40, **kw):
    """(config, weights, model, input, reference logits), with the tie margin and spike rates checked."""
    rng = np.random.default_rng(seed)
    c = config(spiking, lookahead, **kw)
    w = random_weights(c, rng)
    x = rng.standard_normal((batch, c.c_in, length)).astype(np.float32)
    ref, margin, rates = reference(w, c, x)
    assert margin > MARGIN, f"seed {seed}: a membrane potential lies within {margin:.1e} of the threshold"
    assert all(0.05 < r < 0.95 for r in rates), f"spike rates {rates}: pick weights that make every layer fire"
    return c, w, build_lmuformer(w, c), x, ref


def run_step(sess, sm, x: np.ndarray) -> np.ndarray:
    """Run a step model frame by frame from the initial states; logits of the frames that came out."""
    states, out = sm.initial_states(x.shape[0]), []
    for t in range(x.shape[2]):
        res = sess.run(None, {sm.input: x[:, :, t:t + 1], **states})
        states = {s.input: v for s, v in zip(sm.states, res[len(sm.outputs):])}
        out.append(res[0])
    return np.concatenate(out[sm.warmup_hops:], axis=2)


@pytest.mark.parametrize("spiking,lookahead", VARIANTS)
def test_full_model_matches_reference(spiking, lookahead):
    c, w, model, x, ref = case(spiking, lookahead)
    onnx.checker.check_model(model)
    assert {i.name for i in model.graph.initializer} >= set(w)
    got = edgekit.InferenceSession(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


def test_running_mean_is_a_cumsum_long_sequence():
    """No (T, T) matrix: a 20,000-frame sequence runs in O(T) memory and matches the reference."""
    c, w, model, x, ref = case(False, False, seed=7, batch=1, length=20_000)
    ops = {n.op_type for n in model.graph.node}
    assert "CumSum" in ops and not ops & {"Range", "LessOrEqual"}
    got = edgekit.InferenceSession(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("spiking,lookahead,reset", [(*v, "hard") for v in VARIANTS] + [(True, False, "soft")])
def test_step_model_ort_edgekit_full(spiking, lookahead, reset):
    c, w, model, x, ref = case(spiking, lookahead, seed=1, reset=reset)
    sm = to_step(model)
    assert all(n.domain in ("", "ai.onnx") for n in sm.step_model.graph.node)
    assert sm.delay == sm.warmup_hops == (c.n_embed if lookahead else 0)
    full = edgekit.InferenceSession(model).run(None, {"x": x})[0][:, :, :x.shape[2] - sm.delay]
    on_ort = run_step(ort.InferenceSession(sm.step_model.SerializeToString(), providers=["CPUExecutionProvider"]),
                      sm, x)
    on_edgekit = run_step(edgekit.InferenceSession(sm.step_model), sm, x)
    np.testing.assert_allclose(on_ort, ref[:, :, :on_ort.shape[2]], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(on_edgekit, on_ort, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(on_edgekit, full, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("spiking,lookahead", VARIANTS)
def test_streaming_session_random_chunks(spiking, lookahead):
    c, w, model, x, ref = case(spiking, lookahead, seed=2, batch=1, length=60)
    full = edgekit.InferenceSession(model).run(None, {"x": x})[0]
    sess = edgekit.StreamingSession(model)
    assert (sess.hop, sess.delay, sess.warmup_hops) == (1, sess.delay, c.n_embed if lookahead else 0)
    rng = np.random.default_rng(3)
    got, pos = [], 0
    while pos < x.shape[2]:
        n = int(rng.integers(0, 9))
        chunk = x[0, :, pos:pos + n]
        got += [out[0] for out in sess.push(chunk)]
        pos += n
    got = np.concatenate(got, axis=2)
    assert got.shape == (1, c.classes, x.shape[2] - sess.delay)
    np.testing.assert_allclose(got, full[:, :, :got.shape[2]], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("spiking,lookahead", [(True, True), (False, False)])
def test_checkpoint_resume(spiking, lookahead):
    c, w, model, x, _ = case(spiking, lookahead, seed=4, batch=2, length=30)
    whole = edgekit.StreamingSession(model)
    expected = [o[0] for o in whole.push(x)]
    first = edgekit.StreamingSession(model)
    head = [o[0] for o in first.push(x[:, :, :13])]
    state = first.state_dict()
    first.push(x[:, :, 13:20])  # the checkpoint is a copy: later pushes do not change it
    resumed = edgekit.StreamingSession(to_step(model))
    resumed.load_state_dict(state)
    tail = [o[0] for o in resumed.push(x[:, :, 13:])]
    assert len(head) + len(tail) == len(expected)
    for a, b in zip(head + tail, expected):
        np.testing.assert_array_equal(a, b)
    first.reset()  # a new stream from the initial states: the same outputs again
    again = [o[0] for o in first.push(x)]
    assert len(again) == len(expected)
    for a, b in zip(again, expected):
        np.testing.assert_array_equal(a, b)


def test_bad_chunks_leave_state_untouched():
    c, w, model, x, _ = case(True, True, seed=5, batch=1, length=24)
    sess = edgekit.StreamingSession(model)
    sess.push(x[0, :, :10])
    before = sess.state_dict()
    nan = x[0, :, 10:12].copy()
    nan[1, 1] = np.nan
    for bad in (x[0, :, 10:12].astype(np.float64), x[:, :2, 10:12], x[0, 0, 10:12], nan,
                np.concatenate([x, x])[:, :, 10:12]):
        with pytest.raises(InputError):
            sess.push(bad)
    after = sess.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    rest = np.concatenate([o[0] for o in sess.push(x[0, :, 10:])], axis=2)
    ref = np.concatenate([o[0] for o in edgekit.StreamingSession(model).push(x)], axis=2)
    np.testing.assert_array_equal(rest, ref[:, :, -rest.shape[2]:])


def test_config_roundtrip_and_errors(tmp_path):
    c, w, model, _, _ = case(False, False)
    assert config_of(model) == c
    assert json.loads({p.key: p.value for p in model.metadata_props}[CONFIG_KEY])["order"] == c.order
    path = tmp_path / "lmu.npz"
    np.savez(path, config=np.array(c.to_json()), **w)
    weights, loaded = load_npz(path)
    assert loaded == c and set(weights) == set(w)
    assert build_lmuformer(weights, loaded).graph == model.graph
    with pytest.raises(ModelError, match="lmu.h.weight"):
        build_lmuformer({k: v for k, v in w.items() if k != "lmu.h.weight"}, c)
    with pytest.raises(ModelError, match="head.weight"):
        build_lmuformer({**w, "head.weight": w["head.weight"].T}, c)
    for bad in ({"reset": "never"}, {"spiking": "no"}, {"lookahead": 1}, {"theta": "12"}, {"tau": None}):
        with pytest.raises(ModelError, match=next(iter(bad))):
            LMUFormerConfig.from_json(json.dumps({**json.loads(c.to_json()), **bad}))
    with pytest.raises(ModelError, match="not an LMUFormer"):
        to_step(to_step(model).step_model)


@pytest.mark.parametrize("text", ["5", "null", "[1, 2]", '"abc"'])
def test_config_that_is_not_a_json_object(tmp_path, text):
    with pytest.raises(ModelError, match="JSON object"):
        LMUFormerConfig.from_json(text)
    path = tmp_path / "lmu.npz"
    np.savez(path, config=np.array(text))
    with pytest.raises(ModelError, match="JSON object"):
        load_npz(path)


def test_config_takes_numpy_scalars():
    # NumPy ints, floats and bools pass the config's checks, so they must build as Python ones do.
    plain = config(True, False, tau=3.0)
    c = LMUFormerConfig(c_in=np.int64(3), dim=np.int32(8), order=np.int64(6), theta=np.float32(12.0),
                        n_embed=np.int64(2), classes=np.int16(4), spiking=np.bool_(True), lookahead=np.bool_(False),
                        tau=np.float64(3.0), threshold=np.int64(1))
    assert c == plain and type(c.c_in) is int and type(c.theta) is float and type(c.spiking) is bool
    assert LMUFormerConfig.from_json(c.to_json()) == plain
    w = random_weights(plain, np.random.default_rng(0))
    assert build_lmuformer(w, c).graph == build_lmuformer(w, plain).graph


def test_euler_and_the_forms_streaming_session_takes(tmp_path):
    c, w, model, x, ref = case(False, True, seed=6, batch=1, length=16, discretization="euler", theta=40.0)
    np.testing.assert_allclose(edgekit.InferenceSession(model).run(None, {"x": x})[0], ref, rtol=RTOL, atol=ATOL)
    sm = to_step(model)
    path = tmp_path / "step.onnx"
    onnx.save(sm.step_model, path)
    outs = [np.concatenate([o[0] for o in edgekit.StreamingSession(m).push(x)], axis=2) for m in (model, sm, str(path))]
    np.testing.assert_allclose(outs[0], ref[:, :, :x.shape[2] - c.n_embed], rtol=RTOL, atol=ATOL)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    with pytest.raises(ModelError, match="advances 1"):
        edgekit.StreamingSession(model, hop=2)
