"""StreamiNNC conversion (converters/stream.py), checked in onnxruntime only.

- Valid-padded random conv stacks (kernels, dilations, strides, max/avg pools, BN, activations,
  residual Add with crops, channel Concat of branches, four kinds of head): the step model run
  hop by hop for >= 500 hops equals window inference on the last L samples (rtol 1e-5).
- Zero-padded random stacks ('same' and causal convs, padded pools, Pad+Conv, residual Add around
  'same' convs): streamed feature maps equal the network run on the whole stream ("signal
  padding"), and the reported delay is the 'same' look-ahead.
- A Flatten + Gemm head over a FIFO becomes a Conv covering the FIFO (alpha, beta, transB folded).
- The step model passes onnx.checker; report() gives 0 error for valid nets and the bound plus a
  nonzero NRMSE for zero-padded ones; models that cannot stream raise ModelError naming the layer.
- report() repeats one signal (synthetic or (C, T)) to a model's fixed batch.
- Nodes without a name are named by their first output (errors, state names, layer rows); named
  models keep their state names (the bundled PPG model's are pinned).
- The output delay follows the rule docs/streaming.md states (right padding each layer's last
  column reads); the docs' first example imports what it uses.
"""
from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from edgekit.converters.stream import report, to_streaming
from edgekit.errors import InputError, ModelError
from oracle import make_model, ort_session

RTOL = 1e-5


class Net:
    """Builds a random 1-D CNN from a spec that does not depend on the window length."""

    def __init__(self, rng: np.random.Generator, channels: int):
        self.rng, self.channels = rng, channels
        self.nodes: list = []
        self.inits: dict = {}

    def _name(self, prefix: str) -> str:
        return f"{prefix}{len(self.nodes)}"

    def _w(self, *shape) -> str:
        name = f"w{len(self.inits)}"
        self.inits[name] = (self.rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]) or 1)).astype(np.float32)
        return name

    def add(self, op, inputs, **attrs) -> str:
        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x, c, length, k, d, s, cout, pads=(0, 0), group=1):
        y = self.add("Conv", [x, self._w(cout, c // group, k), self._w(cout)], kernel_shape=[k], dilations=[d],
                     strides=[s], pads=list(pads), group=group)
        return y, cout, (length + pads[0] + pads[1] - (k - 1) * d - 1) // s + 1

    def crop(self, x, start, stop_from_end):
        starts = self._const(np.array([start], np.int64))
        ends = self._const(np.array([-stop_from_end if stop_from_end else 2 ** 62], np.int64))
        return self.add("Slice", [x, starts, ends, self._const(np.array([2], np.int64))])

    def _const(self, value) -> str:
        name = f"k{len(self.inits)}"
        self.inits[name] = value
        return name


def random_spec(rng: np.random.Generator, padded: bool, basic: bool = False) -> list[tuple]:
    spec, stride = [], 1
    for _ in range(rng.integers(2, 6)):
        kind = rng.choice(["conv", "conv", "pool", "res", "cat", "act"])
        k = int(rng.choice([1, 2, 3, 5]))
        d = int(rng.choice([1, 2, 3])) if k > 1 else 1
        s = 2 if stride < 8 and rng.random() < 0.3 else 1
        if kind == "pool":
            pk = int(rng.choice([2, 3, 4]))
            ps = pk if stride * pk <= 16 and rng.random() < 0.7 else 1
            spec.append(("pool", str(rng.choice(["MaxPool", "AveragePool"])), pk, ps, bool(padded and rng.random() < .6)))
            stride *= ps
        elif kind == "conv":
            pad = str(rng.choice(["same", "causal", "pad-op"])) if padded else "valid"
            spec.append(("conv", k, d, s, int(rng.integers(2, 6)), pad, bool(rng.random() < 0.5),
                         str(rng.choice(["Relu", "LeakyRelu", "Tanh", "Sigmoid"]))))
            stride *= s
        elif kind == "act":
            spec.append(("act", str(rng.choice(["Relu", "Sigmoid"] if basic else ["Relu", "Elu", "Sigmoid"]))))
        else:
            spec.append((kind, max(k, 2), d, int(rng.integers(0, (max(k, 2) - 1) * d + 1)), padded))
    return spec, stride


def build(spec, rng_seed: int, channels: int, length: int, head: str):
    """The model of ``spec`` for windows of ``length`` (batch dynamic); None when the window is too short."""
    net = Net(np.random.default_rng(rng_seed), channels)
    x, c, w = "x", channels, length
    for item in spec:
        if item[0] == "conv":
            _, k, d, s, cout, pad, bn, act = item
            span = (k - 1) * d + 1
            pads = {"valid": (0, 0), "same": ((span - 1) // 2, span - 1 - (span - 1) // 2),
                    "causal": (span - 1, 0), "pad-op": (0, 0)}[pad]
            if pad == "pad-op":
                pvec = net._const(np.array([0, 0, span - 1, 0, 0, 0], np.int64))
                x = net.add("Pad", [x, pvec])
                w += span - 1
            x, c, w = net.conv(x, c, w, k, d, s, cout, pads)
            if bn:
                x = net.add("BatchNormalization", [x, net._w(c), net._w(c), net._w(c),
                                                   net._const(np.abs(net.rng.standard_normal(c)).astype(np.float32) + .5)])
            x = net.add(act, [x])
        elif item[0] == "pool":
            _, op, k, s, pad = item
            pads = [(k - 1) // 2, k - 1 - (k - 1) // 2] if pad else [0, 0]
            extra = {"count_include_pad": 1} if op == "AveragePool" and pad else {}
            x = net.add(op, [x], kernel_shape=[k], strides=[s], pads=pads, **extra)
            w = (w + sum(pads) - k) // s + 1
        elif item[0] == "act":
            x = net.add(item[1], [x])
        elif item[0] == "res":  # x + conv(x): a crop aligns the skip in valid nets, 'same' padding otherwise
            _, k, d, start, padded = item
            span = (k - 1) * d + 1
            pads = ((span - 1) // 2, span - 1 - (span - 1) // 2) if padded else (0, 0)
            y, _, wy = net.conv(x, c, w, k, d, 1, c, pads, group=c if net.rng.random() < .5 else 1)
            skip = x if padded else net.crop(x, start, span - 1 - start)
            x, w = net.add("Add", [y, skip]), wy
        else:  # channel Concat of a k-conv and a 1x1 conv (cropped alike in valid nets)
            _, k, d, start, padded = item
            span = (k - 1) * d + 1
            pads = ((span - 1) // 2, span - 1 - (span - 1) // 2) if padded else (0, 0)
            a, ca, wa = net.conv(x, c, w, k, d, 1, 3, pads)
            b, cb, _ = net.conv(x, c, w, 1, 1, 1, 2)
            b = b if padded else net.crop(b, start, span - 1 - start)
            x, c, w = net.add("Concat", [a, b], axis=1), ca + cb, wa
        if w < 1:
            return None
    if head == "gap":
        f = net.add("Flatten", [net.add("GlobalAveragePool", [x])])
        out = net.add("Gemm", [f, net._w(3, c), net._w(3)], transB=1)
    elif head == "flatten":
        out = net.add("Gemm", [net.add("Flatten", [x]), net._w(2, c * w), net._w(2)], transB=1)
    elif head == "reduce":
        out = net.add("Softmax", [net.add("ReduceMax", [x], axes=[2], keepdims=0)], axis=1)
    else:
        out = x
    return make_model(net.nodes, {"x": (["N", channels, length], np.float32)}, [out], net.inits)


def random_model(seed: int, padded: bool = False, head: str | None = None, basic: bool = False):
    """(model, hop, builder) for a random stack whose window holds 2..6 hops; ``basic`` leaves out Elu."""
    rng = np.random.default_rng(seed)
    channels = int(rng.integers(1, 4))
    spec, stride = random_spec(rng, padded, basic)
    head = head or str(rng.choice(["gap", "flatten", "reduce", "none"]))
    hop = stride * int(rng.integers(1, 4))
    for hops in range(2, 40):
        model = build(spec, seed, channels, hop * hops, head)
        if model is not None:
            break
    extra = int(rng.integers(0, 3))
    model = build(spec, seed, channels, hop * (hops + extra), head)
    return model, hop, lambda length: build(spec, seed, channels, length, head)


def stream_in_ort(sm, x: np.ndarray) -> list[list[np.ndarray]]:
    """Outputs of every hop of ``x`` (N, C, T) through the step model in onnxruntime, warm-up included."""
    sess = ort_session(sm.step_model)
    states = sm.initial_states(x.shape[0])
    names = sm.outputs + [s.output for s in sm.states]
    outs = []
    for h in range(x.shape[-1] // sm.hop):
        res = sess.run(names, {sm.input: x[:, :, h * sm.hop:(h + 1) * sm.hop], **states})
        states = {s.input: v for s, v in zip(sm.states, res[len(sm.outputs):])}
        outs.append(res[:len(sm.outputs)])
    return outs


def window_outputs(model, x: np.ndarray, hop: int, length: int, hops: list[int], delay: int = 0) -> list[np.ndarray]:
    """Window inference (onnxruntime, one batched call) for the windows ending at (h+1)*hop - delay."""
    ends = [(h + 1) * hop - delay for h in hops]
    batch = np.concatenate([x[:, :, e - length:e] for e in ends])
    out = ort_session(model).run(None, {"x": batch})[0]
    return np.split(out, len(ends))


def assert_close(got, want):
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * scale)


@pytest.mark.parametrize("seed", range(12))
def test_valid_stack_equals_window_inference_every_hop(seed):
    model, hop, _ = random_model(seed)
    sm = to_streaming(model, hop)
    length = sm.window
    assert sm.delay == 0 and (sm.warmup_hops + 1) * hop == length
    total = (sm.warmup_hops + 500) * hop
    x = np.random.default_rng(100 + seed).standard_normal((1, model.graph.input[0].type.tensor_type.shape.dim[1]
                                                           .dim_value, total)).astype(np.float32)
    outs = stream_in_ort(sm, x)
    hops = list(range(sm.warmup_hops, len(outs)))
    for h, want in zip(hops, window_outputs(model, x, hop, length, hops)):
        assert_close(outs[h][0], want)


@pytest.mark.parametrize("seed", range(8))
def test_padded_stack_streams_the_whole_stream_features(seed):
    model, hop, builder = random_model(1000 + seed, padded=True, head="none")
    sm = to_streaming(model, hop)
    channels = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    total = (sm.warmup_hops + 40) * hop
    x = np.random.default_rng(seed).standard_normal((2, channels, total)).astype(np.float32)
    whole = ort_session(builder(total)).run(None, {"x": x})[0]
    outs = stream_in_ort(sm, x)
    head = sm.head_inputs[sm.outputs[0]]
    stride, width = head.stride, head.width
    for h in range(sm.warmup_hops, len(outs) - 1):
        first = ((h + 1) * hop - sm.delay - sm.window) // stride
        assert_close(outs[h][0], whole[:, :, first:first + width])


def same_conv_net(k: int, length: int = 32):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k], pads=[(k - 1) // 2, k // 2],
                              name="same")]
    inits = {"w": rng.standard_normal((2, 1, k)).astype(np.float32), "b": np.ones(2, np.float32)}
    return make_model(nodes, {"x": ([1, 1, length], np.float32)}, ["y"], inits)


def test_same_padding_delay_is_its_look_ahead():
    assert to_streaming(same_conv_net(5), 8).delay == 2
    assert to_streaming(same_conv_net(4), 8).delay == 2
    causal = make_model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3], pads=[2, 0])],
                        {"x": ([1, 1, 32], np.float32)}, ["y"], {"w": np.ones((1, 1, 3), np.float32)})
    assert to_streaming(causal, 8).delay == 0


def test_step_model_is_standard_onnx_with_declared_states():
    model, hop, _ = random_model(3)
    sm = to_streaming(model, hop)
    onnx.checker.check_model(sm.step_model, full_check=True)
    names = {i.name for i in sm.step_model.graph.input}
    assert {s.input for s in sm.states} | {sm.input} == names
    assert {s.output for s in sm.states} <= {o.name for o in sm.step_model.graph.output}
    assert all(n.domain in ("", "ai.onnx") for n in sm.step_model.graph.node)
    for s in sm.states:
        assert s.initial(2).shape[0] == (2 if s.batched else 1)


def test_report_exact_for_valid_and_bounded_for_zero_padded():
    model, hop, _ = random_model(5)
    rep = report(to_streaming(model, hop), hops=16)
    assert rep.exact and rep.nrmse_percent < 1e-3
    assert all(left + right == 0 for left, right, _ in rep.edge_columns.values())
    padded = to_streaming(same_conv_net(5), 8)
    rep = report(padded, hops=16)
    assert not rep.exact and 0 < rep.nrmse_percent < 100
    assert rep.edge_columns["y"] == (2, 2, 32)
    data = np.random.default_rng(0).standard_normal((1, 200)).astype(np.float32)
    assert report(padded, data=data).hops_compared == 200 // 8 - padded.warmup_hops
    assert "NRMSE" in str(rep)


def test_auto_split_and_explicit_split():
    model, hop, _ = random_model(2, head="gap")
    sm = to_streaming(model, hop)
    gap = next(n for n in model.graph.node if n.op_type == "GlobalAveragePool")
    assert sm.split == [gap.input[0]]
    earlier = next(n for n in model.graph.node if n.op_type in ("Relu", "LeakyRelu", "Tanh", "Sigmoid", "Elu"))
    sm2 = to_streaming(model, hop, split=earlier.output[0])
    assert sm2.split == [earlier.output[0]]
    x = np.random.default_rng(0).standard_normal((1, model.graph.input[0].type.tensor_type.shape.dim[1].dim_value,
                                                  sm.window + 4 * hop)).astype(np.float32)
    a, b = stream_in_ort(sm, x), stream_in_ort(sm2, x)
    for h in range(sm.warmup_hops, len(a)):
        assert_close(a[h][0], b[h][0])


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_a_pool_over_the_whole_window_starts_the_head(op):
    """A pool whose one output column covers its whole input (PyTorch's adaptive_max_pool1d(x, 1), an
    AvgPool1d of the feature length) is global pooling: the automatic split puts it in the head, where
    its stride does not constrain the hop; streaming equals window inference (rtol 1e-5)."""
    net = Net(np.random.default_rng(13), 2)
    x, c, w = net.conv("x", 2, 32, 3, 2, 1, 4)  # 28 columns
    pooled = net.add(op, [x], kernel_shape=[w], strides=[w])
    out = net.add("Gemm", [net.add("Flatten", [pooled]), net._w(3, c), net._w(3)], transB=1)
    model = make_model(net.nodes, {"x": (["N", 2, 32], np.float32)}, [out], net.inits)
    sm = to_streaming(model, 8)
    assert sm.split == [x] and sm.delay == 0
    data = np.random.default_rng(14).standard_normal((2, 2, 8 * 20)).astype(np.float32)
    outs = stream_in_ort(sm, data)
    hops = list(range(sm.warmup_hops, len(outs)))
    for h, want in zip(hops, window_outputs(model, data, 8, sm.window, hops)):
        assert_close(outs[h][0], want)


def test_dynamic_window_length_needs_window_argument():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3]),
             helper.make_node("GlobalMaxPool", ["c"], ["y"])]
    model = make_model(nodes, {"x": ([1, 2, "L"], np.float32)}, ["y"], {"w": np.ones((2, 2, 3), np.float32)})
    with pytest.raises(ModelError, match="window=L"):
        to_streaming(model, 8)
    sm = to_streaming(model, 8, window=32)
    assert (sm.window, sm.warmup_hops, sm.split) == (32, 3, ["c"])


def _chain(*nodes, length=32, channels=2, inits=None, opset=17):
    return make_model(list(nodes), {"x": ([1, channels, length], np.float32)}, [nodes[-1].output[0]],
                      inits or {}, opset=opset)


W = {"w": np.ones((2, 2, 3), np.float32)}


def _conv(x="x", y="c", name="c1", **kw):
    return helper.make_node("Conv", [x, "w"], [y], kernel_shape=[3], name=name, **kw)


NOT_STREAMABLE = {  # name -> (model builder, hop, expected message)
    "window-not-multiple-of-hop": (lambda: _chain(_conv(y="y"), inits=W), 5, "not a multiple of the hop"),
    "conv-stride": (lambda: _chain(_conv(y="y", strides=[4]), inits=W), 2, "'c1'.*cumulative stride 4"),
    "pool-stride": (lambda: _chain(_conv(), helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2], strides=[2],
                                                             name="p1"), inits=W), 1, "'p1'.*stride 2"),
    "head-at-input": (lambda: _chain(helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1], name="tr"),
                                     helper.make_node("Relu", ["t"], ["y"])), 8, "nothing to stream.*'tr'"),
    "unknown-op": (lambda: _chain(_conv(), helper.make_node("ConvTranspose", ["c", "w"], ["y"], name="up"), inits=W),
                   8, "'up' \\(ConvTranspose\\) cannot stream"),
    "avgpool-pads": (lambda: _chain(helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3], pads=[1, 1],
                                                     name="ap")), 8, "'ap'.*count_include_pad"),
    "time-varying-constant": (lambda: _chain(helper.make_node("Add", ["x", "pos"], ["y"], name="posenc"),
                                             inits={"pos": np.ones((1, 32), np.float32)}), 8,
                              "'posenc'.*varies along time"),
    "pad-too-large": (lambda: _chain(_conv(y="y", pads=[3, 0]), inits=W), 8, "'c1'.*left padding 3"),
    "maxpool-indices": (lambda: _with_output(_chain(helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2],
                                                                     strides=[2], name="mp")), "idx"), 8,
                        "'mp'.*Indices"),
    "window-too-short": (lambda: _chain(_conv(y="y", dilations=[2]), inits=W, length=4), 2,
                         "'c1'.*'y' has 0 columns in the window.*too short"),
    "ceil-window-in-padding": (lambda: _chain(helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2], strides=[2],
                                                               pads=[0, 1], ceil_mode=1, name="cp"), length=8), 2,
                               "'cp'.*ceil_mode.*right padding"),
    "mask-before-opset-9": (lambda: _chain(_conv(name="c0"), _conv("c", "y", pads=[1, 1]), inits=W, opset=8), 8,
                            "'c1'.*opset 9"),
    "pad-not-foldable": (lambda: _chain(helper.make_node("Pad", ["x", "pp"], ["y"], name="pad"),
                                        inits={"pp": np.array([0, 0, 2, 0, 0, 0], np.int64)}), 8, "'pad' \\(Pad\\)"),
}


def _with_output(model, name):
    model.graph.output.extend([helper.make_tensor_value_info(name, onnx.TensorProto.INT64, [1, 2, 16])])
    return model


@pytest.mark.parametrize("case", sorted(NOT_STREAMABLE))
def test_non_streamable_models_name_the_layer(case):
    build_model, hop, match = NOT_STREAMABLE[case]
    with pytest.raises(ModelError, match=match):
        to_streaming(build_model(), hop)


@pytest.mark.parametrize("hop", [0, -8, 8.0, True, "8"])
def test_a_hop_that_is_not_a_positive_int_is_refused(hop):
    model, _, _ = random_model(1)
    with pytest.raises(ModelError, match="hop must be a positive whole number of samples"):
        to_streaming(model, hop)


def test_bad_split_name():
    model, hop, _ = random_model(1)
    with pytest.raises(ModelError, match="nope"):
        to_streaming(model, hop, split="nope")


def paper_net(kind: str, filters: int = 8):
    """The paper's EEG net (3 x [Conv k3, BN, ReLU, MaxPool 4], L = 1024) or its PPG net (3 x [3 causal
    Conv k5 dil 2 + AvgPool 4/2/2], L = 256), causal padding as PyTorch exports F.pad: a Pad whose pads
    come out of a small constant subgraph."""
    net = Net(np.random.default_rng(7), 4 if kind == "eeg" else 1)
    x, c = "x", net.channels
    if kind == "eeg":
        for _ in range(3):
            x, c, _w = net.conv(x, c, 0, 3, 1, 1, filters)
            x = net.add("BatchNormalization", [x, net._w(c), net._w(c), net._w(c), net._const(np.ones(c, np.float32))])
            x = net.add("MaxPool", [net.add("Relu", [x])], kernel_shape=[4], strides=[4])
        length = 1024
    else:
        for pool in (4, 2, 2):
            for _ in range(3):
                pads = net.add("Cast", [net._const(np.array([0, 0, 8, 0, 0, 0], np.int32))], to=onnx.TensorProto.INT64)
                x, c, _w = net.conv(net.add("Pad", [x, pads]), c, 0, 5, 2, 1, filters)
                x = net.add("Relu", [x])
            x = net.add("AveragePool", [x], kernel_shape=[pool], strides=[pool])
        length = 256
    f = net.add("Flatten", [net.add("GlobalAveragePool", [x])])
    out = net.add("Gemm", [f, net._w(1, c), net._w(1)], transB=1)
    return make_model(net.nodes, {"x": (["N", net.channels, length], np.float32)}, [out], net.inits)


def test_paper_networks():
    eeg = to_streaming(paper_net("eeg"), 256)
    assert (eeg.delay, eeg.warmup_hops) == (0, 3)
    assert report(eeg, hops=8).exact
    ppg = to_streaming(paper_net("ppg"), 64)
    assert ppg.delay == 0 and [layer.stride for layer in ppg.layers if layer.op == "AveragePool"] == [4, 8, 16]
    assert all(layer.pads == (8, 0) for layer in ppg.layers if layer.op == "Conv")
    rep = report(ppg, hops=8)
    assert rep.edge_columns[ppg.split[0]] == (16, 0, 16)  # causal padding reaches every column of the window
    assert np.isfinite(rep.nrmse_percent) and rep.nrmse_percent > 0 and not rep.exact


def test_channel_local_ops_stream_exactly():
    """Split/Concat/Softmax/Reduce along channels, per-channel constants, Clip, Where: exact, no extra state."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3], name="conv"),
        helper.make_node("Split", ["c", "sp"], ["a", "b"], axis=1, name="split"),
        helper.make_node("Softmax", ["a"], ["sa"], axis=1, name="softmax"),
        helper.make_node("ReduceMean", ["b"], ["mb"], axes=[1], keepdims=1, name="mean"),
        helper.make_node("Mul", ["mb", "scale"], ["smb"], name="scale"),
        helper.make_node("Clip", ["smb", "lo", "hi"], ["cb"], name="clip"),
        helper.make_node("Greater", ["cb", "zero"], ["pos"], name="gt"),
        helper.make_node("Where", ["pos", "cb", "sa"], ["wh"], name="where"),
        helper.make_node("Concat", ["wh", "b"], ["cat"], axis=1, name="concat"),
        helper.make_node("Conv", ["cat", "w2"], ["y"], kernel_shape=[2], dilations=[3], name="conv2"),
    ]
    inits = {"w": rng.standard_normal((5, 2, 3)).astype(f32), "sp": np.array([3, 2], np.int64),
             "scale": np.array([[2.0]], f32), "lo": f32(-1), "hi": f32(1), "zero": np.zeros((1, 1, 1), f32),
             "w2": rng.standard_normal((2, 5, 2)).astype(f32)}
    model = make_model(nodes, {"x": ([1, 2, 40], np.float32)}, ["y"], inits, opset=13)
    sm = to_streaming(model, 8)
    assert [s.kind for s in sm.states] == ["shift", "shift", "fifo"]
    assert report(sm, hops=12).exact


def test_flatten_gemm_head_becomes_a_conv_over_the_fifo():
    """alpha, beta, transB = 0 and a (1, O) bias fold into the Conv; outputs still equal window inference."""
    net = Net(np.random.default_rng(11), 2)
    x, c, w = net.conv("x", 2, 24, 3, 1, 1, 4)
    gemm_w = net._const(net.rng.standard_normal((c * w, 3)).astype(np.float32))
    bias = net._const(net.rng.standard_normal((1, 3)).astype(np.float32))
    out = net.add("Gemm", [net.add("Flatten", [x]), gemm_w, bias], alpha=0.5, beta=2.0)
    model = make_model(net.nodes, {"x": (["N", 2, 24], np.float32)}, [out], net.inits)
    sm = to_streaming(model, 8)
    ops = [n.op_type for n in sm.step_model.graph.node]
    assert "Gemm" not in ops and ops[-2:] == ["Conv", "Flatten"]
    x = np.random.default_rng(12).standard_normal((2, 2, 8 * 12)).astype(np.float32)
    outs = stream_in_ort(sm, x)
    hops = list(range(sm.warmup_hops, len(outs)))
    for h, want in zip(hops, window_outputs(model, x, 8, sm.window, hops)):
        assert_close(outs[h][0], want)


class _BatchSeen:
    """An onnxruntime session recording the batch of the signal ``x`` in every run."""

    def __init__(self, model, seen: set):
        self.sess, self.seen = ort_session(model), seen

    def run(self, names, feeds):
        self.seen.add(feeds["x"].shape[0])
        return self.sess.run(names, feeds)


@pytest.mark.parametrize("batch", [2, "N"])
def test_report_repeats_one_signal_to_a_fixed_batch(batch):
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["y"], name="gap")]
    model = make_model(nodes, {"x": ([batch, 2, 32], np.float32)}, ["y"],
                       {"w": rng.standard_normal((3, 2, 3)).astype(np.float32)})
    sm = to_streaming(model, 8)
    want = 2 if batch == 2 else 1
    for data in (None, rng.standard_normal((2, 80)).astype(np.float32)):
        seen: set = set()
        rep = report(sm, data, hops=4, session=lambda m: _BatchSeen(m, seen))
        assert rep.exact and seen == {want}
    if batch == 2:
        with pytest.raises(InputError, match="batch 2, data has 3"):
            report(sm, rng.standard_normal((3, 2, 80)).astype(np.float32))


def test_report_refuses_masked_data():
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["y"], name="gap")]
    model = make_model(nodes, {"x": ([1, 2, 32], np.float32)}, ["y"],
                       {"w": rng.standard_normal((3, 2, 3)).astype(np.float32)})
    sm = to_streaming(model, 8)
    data = rng.standard_normal((2, 80)).astype(np.float32)
    with pytest.raises(InputError, match="data is a masked array"):
        report(sm, np.ma.masked_greater(data, 1.0))
    assert report(sm, np.ma.masked_array(data), hops=4).exact  # nothing masked: its data


def _unnamed(model: onnx.ModelProto) -> onnx.ModelProto:
    for n in model.graph.node:
        n.ClearField("name")
    return model


@pytest.mark.parametrize("case", sorted(NOT_STREAMABLE))
def test_unnamed_layers_are_named_by_their_first_output_in_errors(case):
    build_model, hop, match = NOT_STREAMABLE[case]
    model = build_model()
    for n in model.graph.node:
        match = match.replace(f"'{n.name}'", f"'{n.output[0]}'") if n.name else match
    with pytest.raises(ModelError, match=match) as err:
        to_streaming(_unnamed(model), hop)
    assert "layer ''" not in str(err.value)


def _described(sm) -> tuple:
    return ([(s.input, s.output, s.layer, s.kind) for s in sm.states], [(la.name, la.op) for la in sm.layers],
            sm.delay, sm.warmup_hops)


@pytest.mark.parametrize("seed", [0, 4, 1001, 1002, 1005])
def test_unnamed_layers_get_the_state_names_of_layers_named_as_their_outputs(seed):
    """The random stacks name every node as its output: without names they convert the same (Pad
    folding, shift buffers, masks and delay lines included) and stream the same outputs."""
    model, hop, _ = random_model(seed, padded=seed >= 1000)
    named, unnamed = to_streaming(model, hop), to_streaming(_unnamed(model), hop)
    assert _described(unnamed) == _described(named)
    onnx.checker.check_model(unnamed.step_model, full_check=True)
    x = np.random.default_rng(seed).standard_normal((1, named.channels, (named.warmup_hops + 6) * hop))
    for a, b in zip(stream_in_ort(named, x.astype(np.float32)), stream_in_ort(unnamed, x.astype(np.float32))):
        np.testing.assert_array_equal(a[0], b[0])


def test_unnamed_pads_fold_into_their_own_conv():
    """PyTorch's F.pad + Conv without node names: each Pad's padding goes to the Conv it feeds."""
    named, unnamed = to_streaming(paper_net("ppg"), 64), to_streaming(_unnamed(paper_net("ppg")), 64)
    assert _described(unnamed) == _described(named)
    assert [la.pads for la in unnamed.layers] == [la.pads for la in named.layers]


def test_state_names_stay_unique_when_a_node_name_equals_an_unnamed_nodes_output():
    w = {"w": np.ones((2, 2, 3), np.float32)}
    model = _chain(helper.make_node("Conv", ["x", "w"], ["b"], kernel_shape=[3], name="a"),
                   helper.make_node("Conv", ["b", "w"], ["a"], kernel_shape=[3]), inits=w)
    sm = to_streaming(model, 8)
    names = [s.input for s in sm.states] + [s.output for s in sm.states]
    assert [s.layer for s in sm.states] == ["a", "a", "a"] and len(set(names)) == len(names)
    onnx.checker.check_model(sm.step_model, full_check=True)


def test_bundled_ppg_model_keeps_its_state_names():
    """Saved state_dicts of the demo model depend on these names."""
    sm = to_streaming(Path(__file__).parents[2] / "demos" / "models" / "ppg_cnn.onnx", 64)
    assert [s.input for s in sm.states] == ["state.conv0.shift", "state.conv1.shift", "state.conv2.shift",
                                            "state.pool2.fifo"]
    assert [s.output for s in sm.states] == [s.input + ".next" for s in sm.states]


def documented_delay(model: onnx.ModelProto, length: int, head_inputs: list[str]) -> int:
    """The delay by the rule of docs/streaming.md ("Output delay"): the reach e of the window's last
    column past the window's end grows by P_in * (r - (W_in + p + r - span) mod s) per layer, a crop
    subtracts P * (columns cut at the end), branches take the larger reach; the delay is e rounded up
    to whole head-input columns, at least 0. Tensors: name -> (stride P, width W, reach e)."""
    consts = {i.name for i in model.graph.initializer}
    t = {"x": (1, length, 0)}
    for n in model.graph.node:
        a = {at.name: helper.get_attribute_value(at) for at in n.attribute}
        if n.input[0] not in t:
            continue
        P, W, e = t[n.input[0]]
        if n.op_type in ("Conv", "MaxPool", "AveragePool", "Pad"):
            if n.op_type == "Pad":
                pads = next(i for i in model.graph.initializer if i.name == n.input[1])
                p, r = onnx.numpy_helper.to_array(pads)[[2, 5]]
                k, d, s = 1, 1, 1
            else:
                p, r = a.get("pads", [0, 0])
                k = a["kernel_shape"][0]
                d, s = a.get("dilations", [1])[0], a.get("strides", [1])[0]
            span = (k - 1) * d + 1
            if a.get("ceil_mode"):  # the columns ceil_mode adds read right padding of their own
                r += -(W + p + r - span) % s
            t[n.output[0]] = (P * s, (W + p + r - span) // s + 1, e + P * (r - (W + p + r - span) % s))
        elif n.op_type == "Slice":
            start, end = (int(onnx.numpy_helper.to_array(next(i for i in model.graph.initializer
                                                               if i.name == n.input[j]))[0]) for j in (1, 2))
            start, stop, _ = slice(start, end).indices(W)
            t[n.output[0]] = (P, stop - start, e - P * (W - stop))
        else:  # per-column ops and branch merges
            ins = [t[i] for i in n.input if i in t and i not in consts]
            t[n.output[0]] = (P, W, max(reach for _, _, reach in ins))
    return max(0, *(-(-t[h][2] // t[h][0]) * t[h][0] for h in head_inputs))


def strided_same_net(length: int, layers: list[tuple[int, int, tuple[int, int]]]):
    """A chain of Convs (kernel, stride, pads) on (1, 2, length)."""
    nodes, x = [], "x"
    for i, (k, s, pads) in enumerate(layers):
        nodes.append(helper.make_node("Conv", [x, f"w{k}"], [f"c{i}"], kernel_shape=[k], strides=[s], pads=list(pads),
                                      name=f"s{i}"))
        x = f"c{i}"
    inits = {f"w{k}": np.ones((2, 2, k), np.float32) for k, _, _ in layers}
    return make_model(nodes, {"x": ([1, 2, length], np.float32)}, [x], inits)


def test_delay_is_the_right_padding_the_last_window_column_reads():
    audit = strided_same_net(64, [(3, 2, (1, 1)), (3, 2, (1, 1))])
    assert to_streaming(audit, 8).delay == 0 == documented_delay(audit, 64, ["c1"])
    reads = strided_same_net(64, [(4, 2, (1, 2)), (5, 1, (2, 2))])  # reach 1*1 + 2*2 = 5, rounded up to 6
    assert to_streaming(reads, 8).delay == 6 == documented_delay(reads, 64, ["c1"])
    rounded = strided_same_net(64, [(5, 1, (2, 2)), (4, 4, (0, 0))])  # reach 2, rounded up to a column of 4
    assert to_streaming(rounded, 8).delay == 4 == documented_delay(rounded, 64, ["c1"])
    for op in ("MaxPool", "AveragePool"):  # ceil_mode: (62 - 3) mod 2 = 1, a last column reaching 1 sample on
        ceil = make_model([helper.make_node("Conv", ["x", "w"], ["c0"], kernel_shape=[3]),
                           helper.make_node(op, ["c0"], ["p"], kernel_shape=[3], strides=[2], ceil_mode=1)],
                          {"x": ([1, 2, 64], np.float32)}, ["p"], {"w": np.ones((2, 2, 3), np.float32)})
        sm = to_streaming(ceil, 8)
        assert sm.delay == 2 == documented_delay(ceil, 64, ["p"]) and sm.head_inputs["p"].edges == (0, 1)
    for seed in range(40):
        model, hop, _ = random_model(2000 + seed, padded=True)
        sm = to_streaming(model, hop)
        assert sm.delay == documented_delay(model, sm.window, sm.split), seed


def test_docs_first_example_imports_what_it_uses():
    text = (Path(__file__).parents[2] / "docs" / "streaming.md").read_text(encoding="utf-8")
    tree = ast.parse(re.findall(r"```python\n(.*?)```", text, re.S)[0])
    bound = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
             for a in n.names}
    names = [n for n in ast.walk(tree) if isinstance(n, ast.Name)]
    bound |= {n.id for n in names if isinstance(n.ctx, ast.Store)}
    assert {n.id for n in names if isinstance(n.ctx, ast.Load)} - bound - set(dir(builtins)) == {"source"}
