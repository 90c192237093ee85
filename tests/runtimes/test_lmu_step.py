"""The fused LMUFormer step engine (edgekit.runtimes.lmu_stream, kernels/lmu_step.py).

Checked on random LMUFormers (spiking and not, causal and lookahead, hard and soft reset, a tau
whose reciprocal is inexact, widths that leave partial weight panels, batch 2): over 300 frames the
fused engine's logits and every next state match the same step model run by edgekit's plan and by
onnxruntime to 1e-5 of each tensor's scale (float32 rounding: summation orders and divisions may
differ); spike trains equal the plan's (hard reset: a neuron spiked iff its next v is 0). Also:
StreamingSession picks the fused engine for LMUFormers (1 and 2 threads give the same stream), a
non-finite weight switches zero-row skipping off, inputs that fade to subnormals are treated as
zeros without moving the output, bad thread counts raise, and a step model whose weights do not
fit its metadata, or whose metadata is malformed, raises ModelError.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import numpy_helper

import edgekit
from edgekit.converters.lmu import LMUFormerConfig, build_lmuformer, to_step
from edgekit.errors import ModelError
from edgekit.metadata import STEP_KEY
from edgekit.runtimes.lmu_stream import engine_factory, is_lmuformer_step, lmu_step_engine
from lmu_weights import random_weights
from oracle import ort_session

FRAMES = 300
RTOL, ATOL = 1e-5, 1e-6


def assert_close(got: np.ndarray, want: np.ndarray, err_msg: str = "") -> None:
    """Equal to float32 rounding: RTOL of each tensor's scale (max |want|), since a value summed from
    larger terms (a running sum near 0, a membrane potential after a reset) carries their rounding,
    and the plan's products need not sum in the fused kernel's order (a Gemm of few outputs may be
    dot products)."""
    finite = np.abs(want[np.isfinite(want)])
    scale = finite.max() if finite.size else 0.0
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL + RTOL * scale, err_msg=err_msg)


def lmuformer(spiking: bool, lookahead: bool, seed: int = 0, **kw):
    """A random LMUFormer whose LIF layers fire often; dim 40 and 4 * dim 160 leave partial panels."""
    c = LMUFormerConfig(**{"c_in": 5, "dim": 40, "order": 24, "theta": 30.0, "n_embed": 2, "classes": 7,
                           "spiking": spiking, "lookahead": lookahead, **kw})
    w = random_weights(c, np.random.default_rng(seed))
    return c, to_step(build_lmuformer(w, c))


def run_all(sm, x: np.ndarray) -> tuple[list, list, list, list]:
    """Frame by frame on the fused engine, the plan and onnxruntime: per engine, per frame, all outputs."""
    batch = x.shape[0]
    names = [o.name for o in sm.step_model.graph.output]
    shapes = {"x": (batch, sm.channels, 1), **{k: v.shape for k, v in sm.initial_states(batch).items()}}
    fused = lmu_step_engine(sm.step_model, shapes)
    plan = edgekit.InferenceSession(sm.step_model)
    ort = ort_session(sm.step_model)
    got = {"fused": [], "plan": [], "ort": []}
    states = {"plan": sm.initial_states(batch), "ort": sm.initial_states(batch)}
    for t in range(x.shape[2]):
        frame = x[:, :, t:t + 1]
        fused.inputs["x"][...] = frame
        fused.run()
        got["fused"].append({n: fused.outputs[n].copy() for n in names})
        for key, sess in (("plan", plan), ("ort", ort)):
            res = dict(zip(names, sess.run(None, {"x": frame, **states[key]})))
            states[key] = {s.input: res[s.output] for s in sm.states}
            got[key].append(res)
    return got["fused"], got["plan"], got["ort"], names


@pytest.mark.parametrize("spiking,lookahead,reset,tau", [(False, False, "hard", 2.0), (False, True, "hard", 2.0),
                                                         (True, False, "hard", 2.0), (True, True, "soft", 3.0)])
def test_fused_equals_plan_and_ort(spiking, lookahead, reset, tau):
    c, sm = lmuformer(spiking, lookahead, reset=reset, tau=tau)
    assert is_lmuformer_step(sm.step_model)
    x = np.random.default_rng(1).standard_normal((2, c.c_in, FRAMES)).astype(np.float32)
    fused, plan, ort, names = run_all(sm, x)
    for f, p, o in zip(fused, plan, ort):
        for n in names:
            assert_close(f[n], p[n], err_msg=n)
            assert_close(f[n], o[n], err_msg=n)
    if spiking and reset == "hard":
        for layer in [f"embed.{i}" for i in range(c.n_embed)] + ["lmu", "mixer"]:
            v = np.stack([f[f"{layer}.v.next"] for f in fused])
            assert 0.02 < np.mean(v == 0) < 0.98, layer  # the layer fires, and not always
            np.testing.assert_array_equal(v == 0, np.stack([p[f"{layer}.v.next"] for p in plan]) == 0)


def test_streaming_session_uses_fused_engine_with_threads():
    c, sm = lmuformer(True, True, seed=2)
    x = np.random.default_rng(3).standard_normal((1, c.c_in, 80)).astype(np.float32)
    one, two = edgekit.StreamingSession(sm), edgekit.StreamingSession(sm, threads=2)
    a = np.concatenate([o[0] for o in one.push(x)], axis=2)
    b = np.concatenate([o[0] for o in two.push(x[0, :, :33])] + [o[0] for o in two.push(x[0, :, 33:])], axis=2)
    np.testing.assert_array_equal(a, b)
    assert one._feedback == []  # states updated in place: nothing copied back per frame
    with pytest.raises(ValueError, match="threads"):
        edgekit.StreamingSession(sm, threads=0)
    with pytest.raises(ValueError, match="threads"):
        engine_factory(10_000)


def test_inconsistent_step_model_raises():
    c, sm = lmuformer(False, False, seed=8)
    head = next(t for t in sm.step_model.graph.initializer if t.name == "head.bias")
    head.CopyFrom(numpy_helper.from_array(np.zeros(c.classes + 1, np.float32), head.name))
    with pytest.raises(ModelError, match="head.bias"):
        edgekit.StreamingSession(sm).push(np.zeros((c.c_in, 1), np.float32))


@pytest.mark.parametrize("edit", [lambda d: d.pop("c_in"), lambda d: d.update(weights=None),
                                  lambda d: d.update(dim="x"), lambda d: d["weights"].update(head=["head.proj.w"]),
                                  lambda d: d.update(delay=-5), lambda d: d.update(spiking="no")],
                         ids=["missing key", "null weights", "text size", "listed name", "negative delay",
                              "text flag"])
def test_malformed_step_metadata_raises(edit):
    c, sm = lmuformer(False, False, seed=8)
    prop = next(p for p in sm.step_model.metadata_props if p.key == STEP_KEY)
    structure = json.loads(prop.value)
    edit(structure)
    prop.value = json.dumps(structure)
    with pytest.raises(ModelError, match="malformed"):
        edgekit.StreamingSession(sm).push(np.zeros((c.c_in, 1), np.float32))


def test_nonfinite_weight_disables_row_skipping():
    c, sm = lmuformer(False, False, seed=4)
    fc2 = next(t for t in sm.step_model.graph.initializer if t.name == "mixer.out.w")
    w = numpy_helper.to_array(fc2).copy()
    w[3, 5] = np.inf  # inf * 0 is NaN in the plan and onnxruntime: the fused engine must not skip row 3
    fc2.CopyFrom(numpy_helper.from_array(w, fc2.name))
    x = np.random.default_rng(5).standard_normal((1, c.c_in, 20)).astype(np.float32)
    fused, plan, _, names = run_all(sm, x)
    for f, p in zip(fused, plan):
        assert_close(f["logits"], p["logits"])  # NaN where the plan has NaN
    assert np.isnan(fused[-1]["logits"]).any()


def test_fading_input_to_subnormals():
    c, sm = lmuformer(False, False, seed=6, theta=4.0)
    x = np.zeros((1, c.c_in, 200), np.float32)
    x[:, :, :5] = np.random.default_rng(7).standard_normal((1, c.c_in, 5))
    x[:, :, 5:] = np.float32(1e-37) * np.random.default_rng(8).standard_normal((1, c.c_in, 195))  # near subnormal
    fused, plan, _, _ = run_all(sm, x)
    for f, p in zip(fused, plan):
        assert_close(f["logits"], p["logits"])
