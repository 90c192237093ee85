"""StreamingSession (runtimes/stream.py) on edgekit's runtime (every model here runs on edgekit kernels).

- Random valid-padded conv stacks fed >= 500 hops in random chunk sizes (0 to several hops) equal
  window inference on the last L samples in onnxruntime (rtol 1e-5), from the first full window.
- Heads the random stacks lack (Flatten + MatMul, ReduceMean over time, a head reading the samples
  and a pooled tensor) equal window inference at batch 2 in random chunk sizes.
- The step model run in onnxruntime equals the session (zero-padded stacks too: masks, delays).
- state_dict()/load_state_dict() in a fresh session mid-hop resumes bit-exactly; reset() restarts.
- Bad chunks (channels, dtype, rank, batch, NaN, Inf) raise InputError and leave the state untouched,
  also as whole hops, which take the one-call path (Engine.feed) in every memory layout; read-only
  hops are refused by that call once, then guarded;
  0-sample pushes return []; (C, n) chunks for batch 1; no buffer is reallocated by pushes;
  a model that cannot stream raises ModelError naming the layer.
- Next states are copied from the shift buffers they are cut from (no Slice runs for them).
- The paper's EEG and PPG networks (BN, causal Pad+Conv, pools) equal the step model in onnxruntime,
  the EEG one also with 64 filters at hop 64, where the last convs take the narrow conv method.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

import edgekit
from edgekit.converters.stream import to_streaming
from edgekit.errors import InputError, ModelError
from edgekit.runtimes.kernels.program import NOT_A_HOP
from edgekit import StreamingSession
from oracle import make_model

# The random network generator and onnxruntime helpers live with the converter's tests.
_spec = importlib.util.spec_from_file_location(
    "stream_converter_tests", Path(__file__).parents[1] / "converters" / "test_stream.py")
conv_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conv_tests)
stream_in_ort, window_outputs = conv_tests.stream_in_ort, conv_tests.window_outputs
assert_close = conv_tests.assert_close  # relative 1e-5 (atol scaled by the output range)


def random_model(seed: int, padded: bool = False, head: str | None = None):
    """A random conv stack of the converter's tests, made of ops edgekit runs."""
    return conv_tests.random_model(seed, padded, head, basic=True)


def channels_of(model) -> int:
    return model.graph.input[0].type.tensor_type.shape.dim[1].dim_value


def push_in_chunks(sess: StreamingSession, x: np.ndarray, rng: np.random.Generator, max_chunk: int):
    """All outputs of pushing ``x`` (N, C, T) in random chunk sizes, 0-sample chunks included."""
    outs, pos = [], 0
    while pos < x.shape[-1]:
        n = int(rng.integers(0, max_chunk + 1))
        outs += sess.push(x[:, :, pos:pos + n])
        pos += n
    return outs


@pytest.mark.parametrize("seed", range(6))
def test_random_chunks_equal_window_inference(seed):
    model, hop, _ = random_model(seed)
    sess = StreamingSession(model, hop)
    assert sess.delay == 0 and (sess.warmup_hops + 1) * hop == sess.window
    rng = np.random.default_rng(seed)
    total = (sess.warmup_hops + 500) * hop
    x = rng.standard_normal((1, channels_of(model), total)).astype(np.float32)
    outs = push_in_chunks(sess, x, rng, 3 * hop)
    assert len(outs) == 500 and sess.hops == sess.warmup_hops + 500
    hops = list(range(sess.warmup_hops, sess.warmup_hops + 500))
    for got, want in zip(outs, window_outputs(model, x, hop, sess.window, hops)):
        assert len(got) == 1
        assert_close(got[0], want)


@pytest.mark.parametrize("seed,padded", [(7, False), (1000, True), (1001, True), (1003, True), (1007, True)])
def test_step_model_in_onnxruntime_equals_session(seed, padded):
    model, hop, _ = random_model(seed, padded=padded)
    sm = to_streaming(model, hop)
    x = np.random.default_rng(seed).standard_normal((2, channels_of(model), (sm.warmup_hops + 60) * hop))
    x = x.astype(np.float32)
    want = stream_in_ort(sm, x)[sm.warmup_hops:]
    got = StreamingSession(sm).push(x)
    assert len(got) == len(want) == 60
    for g, w in zip(got, want):
        assert_close(g[0], w[0])


@pytest.mark.parametrize("net", ["random", "eeg"])
def test_checkpoint_restore_mid_hop_is_bit_exact(net):
    """Also on the paper's EEG net at batch 2, whose histories live in the shift buffers (strided views)."""
    model, hop, _ = random_model(9) if net == "random" else (conv_tests.paper_net("eeg"), 64, None)
    batch = 1 if net == "random" else 2
    x = np.random.default_rng(1).standard_normal((batch, channels_of(model), 40 * hop + 3)).astype(np.float32)
    whole = StreamingSession(model, hop).push(x)
    first = StreamingSession(model, hop)
    cut = 17 * hop + hop // 2 + 1
    before = first.push(x[:, :, :cut])
    saved = first.state_dict()
    first.push(np.ones_like(x[:, :, :hop]))  # the saved copy must not change with the session
    resumed = StreamingSession(model, hop)
    resumed.load_state_dict(saved)
    after = resumed.push(x[:, :, cut:])
    assert len(before) + len(after) == len(whole)
    for a, b in zip(before + after, whole):
        np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(InputError):
        resumed.load_state_dict({**saved, "hop": hop + 1})
    with pytest.raises(InputError):
        resumed.load_state_dict({k: v for k, v in saved.items() if not k.startswith("state/")})
    kept = resumed.state_dict()
    with pytest.raises(InputError, match="state/extra"):  # another model's checkpoint with the same sizes
        resumed.load_state_dict({**first.state_dict(), "state/extra": np.zeros(1, np.float32)})
    for bad in ({"hops": saved["hops"] + 0.7}, {"pending": np.float64(1.5)}, {"batch": True}):
        with pytest.raises(InputError, match="whole numbers"):  # (int() would truncate them)
            resumed.load_state_dict({**saved, **bad})
    for k, v in resumed.state_dict().items():  # refused: nothing loaded
        np.testing.assert_array_equal(v, kept[k])


def test_bad_chunks_raise_and_leave_state_untouched():
    model, hop, _ = random_model(2)
    c = channels_of(model)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, c, 30 * hop)).astype(np.float32)
    want = StreamingSession(model, hop).push(x)
    sess = StreamingSession(model, hop)
    nan = x[:, :, :5].copy()
    nan[0, 0, 2] = np.nan
    inf = x[:, :, :5].copy()
    inf[0, -1, 4] = -np.inf
    long_inf = x[:, :, :2 * hop + 3].copy()  # spans hops: checked before its first hop runs
    long_inf[0, 0, -1] = np.inf
    bad = [np.zeros((1, c + 1, 5), np.float32), x[:, :, :5].astype(np.float64), np.zeros(5, np.float32),
           np.zeros((1, 1, c, 5), np.float32), np.zeros((2, c, 5), np.float32), nan, inf, long_inf]
    got, pos = [], 0
    for i, chunk in enumerate(bad * 3):
        n = int(rng.integers(1, 2 * hop))
        got += sess.push(x[:, :, pos:pos + n])
        pos += n
        with pytest.raises(InputError):
            sess.push(chunk)
    got += sess.push(x[:, :, pos:])
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("seed", [2, 4, 5])  # one program; a first step run outside programs; programs and others
def test_whole_hop_pushes_take_one_call_and_check_like_the_rest(seed):
    """Chunks of exactly one hop pushed with nothing pending go through ``Engine.feed`` (checked, copied
    in and run by the first program): (N, C, S) and (C, S), C-ordered, strided and Fortran-ordered (a
    read-only or float64 one is refused by the compiled call's type check and takes the general path), between rejected one-hop chunks (NaN, Inf, float64, wrong channels), equal pushing everything at once."""
    model, hop, _ = random_model(seed)
    c = channels_of(model)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, c, 40 * hop)).astype(np.float32)
    want = StreamingSession(model, hop).push(x)
    sess = StreamingSession(model, hop)
    got = sess.push(x[:, :, :1])  # binds the batch: the one-call path is set up
    got += sess.push(x[:, :, 1:hop])
    feed, fed = sess._feed, []
    assert feed is not None
    sess._feed = lambda chunk, out: (feed(chunk, out), fed.append(chunk.size))[0]  # counts the chunks it takes (no TypeError)
    nan, inf = x[:, :, :hop].copy(), x[0, :, :hop].copy()
    nan[0, -1, hop - 1], inf[0, 0] = np.nan, np.inf
    bad = [nan, inf, x[:, :, :hop].astype(np.float64), np.zeros((1, c + 1, hop), np.float32)]
    wide = np.repeat(x, 2, axis=2)  # wide[..., 2*i] == x[..., i]
    for k in range(1, 40):
        chunk = x[:, :, k * hop:(k + 1) * hop]
        form = k % 4
        if form == 1:
            chunk = chunk[0]
        elif form == 2:
            chunk = wide[:, :, 2 * k * hop:2 * (k + 1) * hop:2]
        elif form == 3:
            chunk = np.asfortranarray(chunk)
        if k == 38:  # read-only (np.frombuffer): the general path, not a second compile of the call
            chunk = chunk.copy()
            chunk.flags.writeable = False
        got += sess.push(chunk)
        with pytest.raises(InputError):
            sess.push(bad[k % len(bad)])
    # every writeable good hop and the NaN / Inf ones (k % 4 in (0, 1)), but the first strided one (k = 2),
    # which the call's type check refuses (from then on the guard copies such chunks to C order first)
    assert fed == [c * hop] * (38 + 19 - 1)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a[0], b[0])


def test_output_arrays_are_reused_only_once_the_caller_has_let_go():
    """One-hop pushes hand over the output in arrays of the session's that no one else refers to: an
    array (or a view of it) the caller keeps is never written again, one it dropped is reused; every
    hop's values equal pushing everything at once."""
    model, hop, _ = random_model(2)
    c = channels_of(model)
    x = np.random.default_rng(4).standard_normal((c, 30 * hop)).astype(np.float32)
    want = [o[0] for o in StreamingSession(model, hop).push(x)]
    sess = StreamingSession(model, hop)
    first = sess.push(x[:, :8 * hop])  # (the general path: fresh copies)
    got, ids, kept = [o[0] for o in first], [], []
    for k in range(8, 30):
        (out,), = sess.push(x[:, k * hop:(k + 1) * hop])
        ids.append(id(out))
        got.append(out.copy())
        if k % 5 == 0:
            kept.append((out[0], out[0].copy()))  # a view keeps its array from being reused
        del out
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    for view, values in kept:
        np.testing.assert_array_equal(view, values)
    assert len(set(ids)) <= 2 + len(kept)  # no new array per hop once they are let go


@pytest.mark.parametrize("seed", [0, 19])  # a program with steps after it; one program
@pytest.mark.parametrize("change", ["read-only", "reshaped", "retyped"])
def test_results_changed_in_place_then_let_go_are_replaced(seed, change):
    """A caller may freeze, reshape or retype a result in place and drop it: the session does not
    reuse that array (nor fail, nor lose a hop); every hop equals pushing everything at once."""
    model, hop, _ = random_model(seed)
    c = channels_of(model)
    x = np.random.default_rng(6).standard_normal((c, 24 * hop)).astype(np.float32)
    want = [o[0] for o in StreamingSession(model, hop).push(x)]
    sess = StreamingSession(model, hop)
    got = [o[0] for o in sess.push(x[:, :8 * hop])]
    for k in range(8, 24):
        for outputs in sess.push(x[:, k * hop:(k + 1) * hop]):
            out = outputs.pop()
            got.append(out.copy())
            if change == "read-only":
                out.flags.writeable = False
            elif change == "reshaped":
                out.shape = out.shape[::-1]
            else:
                out.dtype = np.int32
            del out
    assert sess.hops == 24
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_engine_feed_refuses_chunks_and_outputs_of_another_size():
    """Engine.feed (one compiled call) checks the shapes it copies before anything runs: a chunk of
    other rows or columns is not a hop (NOT_A_HOP), an ``out`` of another shape a TypeError."""
    model, hop, _ = random_model(19)
    c = channels_of(model)
    sess = StreamingSession(model, hop)
    x = np.random.default_rng(7).standard_normal((c, 10 * hop)).astype(np.float32)
    sess.push(x[:, :8 * hop])
    before = sess.state_dict()
    eng = sess._engine
    out = np.empty(eng.result_shape, np.float32)
    for chunk in (x[:1, :1], x[:, :hop + 1], x[:, :hop - 1], x.reshape(-1, hop)[:c + 1]):
        assert eng.feed(np.ascontiguousarray(chunk), out) == NOT_A_HOP
    with pytest.raises(TypeError):
        eng.feed(np.ascontiguousarray(x[:, 8 * hop:9 * hop]), np.empty((1, 64), np.float32))
    after = sess.state_dict()
    for key in before:
        np.testing.assert_array_equal(np.asarray(before[key]), np.asarray(after[key]))


def test_read_only_hops_reach_the_compiled_call_once():
    """Read-only one-hop chunks (np.frombuffer, as from a socket) are refused by the compiled call's
    type check once (a TypeError, which costs tens of us), then guarded in Python so later ones go
    straight to the general path; the outputs equal writeable pushes of the same samples."""
    model, hop, _ = random_model(3)
    c = channels_of(model)
    x = np.random.default_rng(1).standard_normal((c, 12 * hop)).astype(np.float32)
    want = StreamingSession(model, hop).push(x)
    sess = StreamingSession(model, hop)
    got = sess.push(x[:, :hop])  # binds the batch: the one-call path is set up
    feed, calls = sess._feed, []
    sess._feed = lambda chunk, out: (calls.append(chunk.flags.writeable), feed(chunk, out))[1]
    for k in range(1, 12):
        got += sess.push(np.frombuffer(x[:, k * hop:(k + 1) * hop].tobytes(), np.float32).reshape(c, hop))
    assert calls == [False]
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix, on purpose
def test_matrix_and_unaligned_hops_are_guarded_once():
    """np.matrix hops and unaligned float32 views stream like plain arrays; the session wraps its
    call in one guard however many are pushed."""
    model, hop, _ = random_model(3)
    c = channels_of(model)
    x = np.random.default_rng(2).standard_normal((c, 40 * hop)).astype(np.float32)
    want = StreamingSession(model, hop).push(x)
    sess = StreamingSession(model, hop)
    got = sess.push(x[:, :hop])
    raw = sess._feed
    for k in range(1, 40):
        chunk = x[:, k * hop:(k + 1) * hop]
        if k % 2:
            chunk = np.asmatrix(chunk)
        else:
            chunk = np.frombuffer(bytearray(b"\0" + chunk.tobytes()), np.float32, offset=1).reshape(c, hop)
        got += sess.push(chunk)
    assert sess._feed is raw or sess._feed.guards is raw  # at most one guard
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a[0]), b[0])


@pytest.mark.parametrize("size", ["part", "hop", "hops"])
def test_masked_chunks_are_refused_with_the_state_kept(size):
    """A masked array with masked entries is refused whatever its length (a one-hop chunk would take
    the one-call path), and the stream goes on as if it had not been pushed; one without masked
    entries streams like its data."""
    model, hop, _ = random_model(4)
    c = channels_of(model)
    x = np.random.default_rng(3).standard_normal((c, 20 * hop)).astype(np.float32)
    want = StreamingSession(model, hop).push(x)
    sess = StreamingSession(model, hop)
    got = sess.push(x[:, :8 * hop])
    n = {"part": hop // 2 or 1, "hop": hop, "hops": 3 * hop}[size]
    with pytest.raises(InputError, match="masked array"):
        sess.push(np.ma.masked_greater(np.ones((c, n), np.float32), 0.5))
    got += sess.push(np.ma.masked_array(x[:, 8 * hop:9 * hop]))
    got += sess.push(x[:, 9 * hop:])
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a[0], b[0])


def test_zero_samples_two_dim_chunks_nan_option_and_reset():
    model, hop, _ = random_model(5)
    c = channels_of(model)
    sess = StreamingSession(model, hop)
    assert sess.push(np.zeros((c, 0), np.float32)) == [] and sess.push(np.zeros((1, c, 0), np.float32)) == []
    x = np.random.default_rng(0).standard_normal((c, 12 * hop)).astype(np.float32)
    first = sess.push(x)
    sess.reset()
    assert sess.hops == 0 and sess.pending == 0
    again = sess.push(x[None])
    assert len(again) == len(first) == 12 - sess.warmup_hops
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a[0], b[0])
    huge = np.full((c, hop), 1e30, np.float32)  # finite, though its squares overflow float32
    assert len(sess.push(huge)) == 1
    x[0, 3] = np.nan
    tolerant = StreamingSession(model, hop, allow_nan=True)
    assert len(tolerant.push(x)) == len(first)


def test_pushes_reuse_the_same_buffers():
    model, hop, _ = random_model(6)
    sess = StreamingSession(model, hop)
    x = np.random.default_rng(0).standard_normal((1, channels_of(model), 3 * hop + 1)).astype(np.float32)
    sess.push(x)
    engine = sess._engine
    addresses = {k: v.ctypes.data for k, v in engine.inputs.items()}
    for _ in range(5):
        sess.push(x)
    assert sess._engine is engine
    assert addresses == {k: v.ctypes.data for k, v in engine.inputs.items()}


def test_model_that_cannot_stream_names_the_layer():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3], name="conv"),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[4], strides=[4], name="pool"),
             helper.make_node("GlobalAveragePool", ["p"], ["y"], name="gap")]
    model = make_model(nodes, {"x": ([1, 2, 64], np.float32)}, ["y"], {"w": np.ones((3, 2, 3), np.float32)})
    with pytest.raises(ModelError, match="'pool'.*cumulative stride 4"):
        StreamingSession(model, 2)
    with pytest.raises(ModelError, match="not a multiple of the hop"):
        StreamingSession(model, 12)
    assert StreamingSession(model, 16).warmup_hops == 3


def test_saved_step_model_and_public_name():
    model, hop, _ = random_model(8)
    sm = to_streaming(model, hop)
    x = np.random.default_rng(0).standard_normal((1, channels_of(model), 10 * hop)).astype(np.float32)
    a = StreamingSession(sm.step_model.SerializeToString()).push(x)
    b = StreamingSession(model, hop).push(x)
    assert len(a) == len(b) == 10 - sm.warmup_hops
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u[0], v[0])
    with pytest.raises(ModelError, match="advances"):
        StreamingSession(sm, hop * 2)
    assert getattr(edgekit, "StreamingSession", StreamingSession) is StreamingSession


@pytest.mark.parametrize("kind,hop,filters", [("eeg", 128, 8), ("eeg", 64, 64), ("ppg", 64, 8)])
def test_paper_networks_on_edgekit(kind, hop, filters):
    model = conv_tests.paper_net(kind, filters)  # 64 filters at hop 64: narrow convs (4 columns and fewer)
    sm = to_streaming(model, hop)
    x = np.random.default_rng(0).standard_normal((1, channels_of(model), (sm.warmup_hops + 20) * hop))
    x = x.astype(np.float32)
    got = StreamingSession(model, hop).push(x)
    want = stream_in_ort(sm, x)[sm.warmup_hops:]
    assert len(got) == len(want) == 20
    for g, w in zip(got, want):
        assert_close(g[0], w[0])
    if kind == "eeg":  # valid padding: also equal to window inference
        for g, w in zip(got, window_outputs(model, x, hop, sm.window, list(range(sm.warmup_hops, len(x[0, 0]) // hop)))):
            assert_close(g[0], w)


def test_next_states_are_read_from_the_shift_buffers():
    """The session's plan skips the Slices that cut next states out of shift buffers."""
    from edgekit.runtimes.stream_engine import cut_states as _cut_states

    sm = to_streaming(conv_tests.paper_net("eeg"), 128)
    stripped, cuts = _cut_states(sm.step_model, {s.output for s in sm.states})
    assert set(cuts) == {s.output for s in sm.states}
    assert not any(o in cuts for n in stripped.graph.node for o in n.output)


def test_shift_buffers_are_written_in_place():
    """The pushed samples land in the first layer's shift buffer and each pool writes into the next
    layer's, so the engine's history inputs are views of those buffers (no Concat copies per hop)."""
    sm = to_streaming(conv_tests.paper_net("eeg"), 128)
    session = StreamingSession(sm)
    channels = session.channels
    session.push(np.zeros((channels, 128), np.float32))
    engine = session._engine
    first = [engine.inputs[s.input] for s in sm.states if engine.inputs[s.input].shape[1] == channels]
    x = engine.inputs[sm.input]
    assert len(first) == 1 and x.strides == first[0].strides  # columns [h, h + hop) of the same rows
    assert x.ctypes.data == first[0].ctypes.data + first[0].shape[2] * x.itemsize
    histories = [s for s in sm.states if not engine.inputs[s.input].flags.c_contiguous]
    assert len(histories) >= 3  # one per conv layer at least
    assert all(engine.outputs[s.output] is engine.inputs[s.input] for s in sm.states)  # updated in the run


def _delay_line(channels: int, hop: int, history: int):
    """A hand-made step model: B = Concat(state, x), next state = B[:, :, hop:hop + history], and the
    output y = B[:, :, :hop] also cut from B (so B cannot hold the history in place)."""
    import json

    from onnx import helper, numpy_helper, TensorProto
    from edgekit.metadata import STREAM_KEY

    consts = {"s0": [hop], "e0": [hop + history], "ax": [2], "s1": [0], "e1": [hop]}
    nodes = [helper.make_node("Concat", ["state", "x"], ["B"], axis=2),
             helper.make_node("Slice", ["B", "s0", "e0", "ax"], ["state.next"]),
             helper.make_node("Slice", ["B", "s1", "e1", "ax"], ["y"])]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "delay", [helper.make_tensor_value_info("x", f, ["N", channels, hop]),
                         helper.make_tensor_value_info("state", f, ["N", channels, history])],
        [helper.make_tensor_value_info("y", f, ["N", channels, hop]),
         helper.make_tensor_value_info("state.next", f, ["N", channels, history])],
        [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in consts.items()],
        value_info=[helper.make_tensor_value_info("B", f, ["N", channels, history + hop])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = {"input": "x", "outputs": ["y"], "hop": hop, "window": history + hop, "delay": 0, "warmup_hops": 0,
            "channels": channels, "states": [{"input": "state", "output": "state.next", "shape": ["N", channels, history],
                                              "dtype": "float32", "fill": 0.0, "layer": "l", "kind": "shift",
                                              "batched": True}]}
    helper.set_model_props(model, {STREAM_KEY: json.dumps(meta)})
    return model


@pytest.mark.parametrize("hop, history", [(3, 2), (3, 5)])
def test_an_output_cut_from_a_shift_buffer_keeps_its_values(hop, history):
    """y = B[:, :, :hop] is the signal delayed by ``history`` samples; B is left as a buffer of its own."""
    x = np.random.default_rng(0).standard_normal((2, 2, 8 * hop)).astype(np.float32)
    got = StreamingSession(_delay_line(2, hop, history)).push(x)
    delayed = np.concatenate([np.zeros((2, 2, history), np.float32), x], axis=2)
    assert len(got) == 8
    for k, out in enumerate(got):
        np.testing.assert_array_equal(out[0], delayed[:, :, k * hop:(k + 1) * hop])


@pytest.mark.parametrize("view", ["Identity", "Reshape"])
def test_samples_also_read_through_a_view_stay_in_place(view):
    """y = Conv(x) + x[2:] with x reaching the Add through a view: the pushed samples are read by two
    nodes, so they keep their own buffer; streaming equals window inference."""
    from onnx import helper

    rng = np.random.default_rng(0)
    c, window, hop = 2, 32, 8
    inits = {"w": rng.standard_normal((c, c, 3)).astype(np.float32), "b": np.zeros(c, np.float32),
             "st": np.array([2], np.int64), "en": np.array([window], np.int64), "ax": np.array([2], np.int64),
             "shape": np.array([0, c, -1], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["conv"], kernel_shape=[3]),
             helper.make_node("Identity", ["x"], ["xv"]) if view == "Identity"
             else helper.make_node("Reshape", ["x", "shape"], ["xv"]),
             helper.make_node("Slice", ["xv", "st", "en", "ax"], ["skip"]),
             helper.make_node("Add", ["conv", "skip"], ["y"])]
    model = make_model(nodes, {"x": (["N", c, window], np.float32)}, ["y"], inits)
    sm = to_streaming(model, hop)
    x = rng.standard_normal((1, c, 20 * hop)).astype(np.float32)
    got = StreamingSession(sm).push(x)
    want = window_outputs(model, x, hop, sm.window, list(range(sm.warmup_hops, 20)))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_close(g[0], w)


def test_a_rejected_first_chunk_does_not_bind_the_batch():
    model, hop, _ = random_model(2)
    c = channels_of(model)
    session = StreamingSession(model, hop)
    bad = np.zeros((2, c, hop), np.float32)
    bad[1, 0, 0] = np.nan
    with pytest.raises(InputError):
        session.push(bad)
    assert session.state_dict()["batch"] == 0
    session.push(np.zeros((1, c, 3 * hop), np.float32))  # batch 1 is still free to choose
    assert session.state_dict()["batch"] == 1


@pytest.mark.parametrize("head", ["matmul", "reducemean", "gmp-and-input"])
def test_other_heads_equal_window_inference(head):
    """Heads the random stacks do not build: Flatten + MatMul, ReduceMean over time (opset 18, axes as an
    input), and a head reading two tensors of different strides (GlobalMaxPool of the samples and of
    a pooled conv); batch 2 in random chunk sizes (0 to 3 hops); rtol 1e-5 against window inference."""
    rng = np.random.default_rng(12)
    f32 = np.float32
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2], strides=[2], name="pool1"),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], kernel_shape=[3], dilations=[2], name="conv2")]
    inits = {"w1": rng.standard_normal((4, 2, 3)).astype(f32), "b1": rng.standard_normal(4).astype(f32),
             "w2": rng.standard_normal((3, 4, 3)).astype(f32)}
    if head == "matmul":
        nodes += [helper.make_node("Flatten", ["c2"], ["fl"]), helper.make_node("MatMul", ["fl", "mw"], ["y"])]
        inits["mw"] = rng.standard_normal((3 * 11, 5)).astype(f32)
    elif head == "reducemean":
        nodes.append(helper.make_node("ReduceMean", ["c2", "axes"], ["y"], keepdims=0))
        inits["axes"] = np.array([2], np.int64)
    else:
        nodes += [helper.make_node("GlobalMaxPool", ["x"], ["g0"]), helper.make_node("GlobalMaxPool", ["c2"], ["g2"]),
                  helper.make_node("Concat", ["g0", "g2"], ["y"], axis=1)]
    model = make_model(nodes, {"x": (["N", 2, 32], np.float32)}, ["y"], inits, opset=18)
    sess = StreamingSession(model, 8)
    assert sess.delay == 0 and (sess.warmup_hops + 1) * 8 == sess.window
    x = rng.standard_normal((2, 2, (sess.warmup_hops + 40) * 8)).astype(np.float32)
    got = push_in_chunks(sess, x, rng, 24)
    hops = list(range(sess.warmup_hops, sess.warmup_hops + 40))
    assert len(got) == 40
    for g, w in zip(got, window_outputs(model, x, 8, sess.window, hops)):
        assert_close(g[0], w)
