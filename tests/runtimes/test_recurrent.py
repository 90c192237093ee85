"""LSTM, GRU and RNN against onnxruntime on random float32 inputs.

Every op in every direction and both layouts (opset 14; onnxruntime runs layout 0 only, so layout 1
is compared with its layout-0 twin), at opsets 7, 14 and 22; B, initial states (fed or constant)
and LSTM peepholes given or omitted; infinite and huge inputs; sequence_lens shorter than the
sequence and zero (constant and fed at run time); clip (one of 0 or below refused); LSTM
input_forget; GRU linear_before_reset 0 and 1; activation lists with alphas and betas (the default
lists take the fused cells, the others the stage-by-stage path, both within one bidirectional node);
hidden sizes past a vector with a remainder, at batch 1 and 8; weights fed at run time; any subset
of the outputs; one session over several sequence lengths and batch sizes; the forms edgekit refuses. Tolerance rtol 1e-4, atol 2e-5: float32 sums over a few tens of products
per step, through up to 7 steps, with onnxruntime's sigmoid/tanh approximations.
"""
import itertools

import numpy as np
import pytest
from onnx import helper, numpy_helper

import edgekit
from edgekit.errors import ModelError, UnsupportedOpError
from oracle import assert_matches_ort, make_model, ort_session

RTOL, ATOL = 1e-4, 2e-5
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
OPS = list(GATES)
DIRECTIONS = ["forward", "reverse", "bidirectional"]


def _case(op, direction="forward", seq=5, batch=3, inp=4, hid=6, layout=0, opset=14, bias=True, lens=None,
          lens_fed=False, h0=True, c0=True, peep=True, outputs=None, weights_fed=False, seed=0, **attrs):
    """(model, feeds, twin): a one-node model (X fed; W, R, B, P constants unless ``weights_fed``),
    and for layout 1 its layout-0 twin (model, feeds) for onnxruntime, which runs layout 0 only."""
    rng = np.random.default_rng(seed)
    dirs, g = (2 if direction == "bidirectional" else 1), GATES[op]
    tensors = {
        "x": ((seq, batch, inp), "fed"),
        "w": ((dirs, g * hid, inp), "weight"),
        "r": ((dirs, g * hid, hid), "weight"),
        "b": ((dirs, 2 * g * hid), "weight" if bias else None),
        "lens": ((batch,), ("fed" if lens_fed else "const") if lens is not None else None),
        "h0": ((dirs, batch, hid), "fed" if h0 else None),
    }
    if op == "LSTM":
        tensors.update(c0=((dirs, batch, hid), "fed" if c0 else None), p=((dirs, 3 * hid), "weight" if peep else None))
    feeds, inits, names = {}, {}, []
    for name, (shape, kind) in tensors.items():
        names.append(name if kind else "")
        if kind is None:
            continue
        if name == "lens":
            value = np.asarray(lens, np.int32)
        else:
            value = (rng.standard_normal(shape) * (0.5 if name in "wrp" else 1.0)).astype(np.float32)
        fed = kind == "fed" or (kind == "weight" and weights_fed)
        (feeds if fed else inits)[name] = value
    while not names[-1]:
        names.pop()
    outs = outputs if outputs is not None else (["y", "yh", "yc"] if op == "LSTM" else ["y", "yh"])

    def build(layout, feeds):
        extra = {"layout": layout} if opset >= 14 else {}
        node = helper.make_node(op, names, outs, name="rnn0", hidden_size=hid, direction=direction, **attrs, **extra)
        inputs = {n: (v.shape, v.dtype) for n, v in feeds.items()}
        return make_model([node], inputs, [o for o in outs if o], inits, opset=opset)

    if not layout:
        return build(0, feeds), feeds, None
    batchwise = {n: v.swapaxes(0, 1) if n in ("x", "h0", "c0") else v for n, v in feeds.items()}
    return build(1, batchwise), batchwise, (build(0, feeds), feeds)


def _check(case, rtol=RTOL, atol=ATOL, session=None):
    """Compare with onnxruntime (through the layout-0 twin for layout 1: outputs transposed back)."""
    model, feeds, twin = case
    if twin is None:
        return assert_matches_ort(model, feeds, rtol, atol, session=session)
    names = [o.name for o in model.graph.output]
    got = (session or edgekit.InferenceSession(model)).run(None, feeds)
    expected = ort_session(twin[0]).run(None, twin[1])
    for name, g, e in zip(names, got, expected):
        e = e.transpose(2, 0, 1, 3) if name == "y" else e.swapaxes(0, 1)
        assert g.shape == e.shape and g.dtype == e.dtype, (name, g.shape, e.shape)
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("op", OPS)
def test_directions_and_layouts(op, direction, layout):
    _check(_case(op, direction, layout=layout, seed=len(op) + layout))


@pytest.mark.parametrize("opset", [7, 14, 22])
@pytest.mark.parametrize("op", OPS)
def test_opsets(op, opset):
    _check(_case(op, "bidirectional", opset=opset, seed=opset))


@pytest.mark.parametrize("op", OPS)
def test_optional_inputs_omitted(op):
    """No B, no initial states, no peepholes: zeros."""
    for direction, layout in itertools.product(["forward", "bidirectional"], [0, 1]):
        _check(_case(op, direction, layout=layout, bias=False, h0=False, c0=False, peep=False))


@pytest.mark.parametrize("op", OPS)
def test_constant_initial_states(op):
    """initial_h and initial_c as initializers (torch exports them computed from X's shape, folded)."""
    model, feeds, _ = _case(op, "bidirectional", seed=10)
    for name in ("h0", "c0"):
        if name in feeds:
            model.graph.initializer.append(numpy_helper.from_array(feeds.pop(name), name))
            model.graph.input.remove(next(i for i in model.graph.input if i.name == name))
    assert_matches_ort(model, feeds, RTOL, ATOL)


@pytest.mark.parametrize("op", OPS)
def test_saturating_inputs(op):
    """Infinite and huge inputs: gates saturate to 0 or 1 (the exponential is clamped, not overflowed)."""
    model, feeds, _ = _case(op, "bidirectional", seed=11)
    feeds["x"][1, 0, 2], feeds["x"][2, 1, 0], feeds["x"][3, 2, 1] = np.inf, -1e30, 1e4
    assert_matches_ort(model, feeds, RTOL, ATOL)


@pytest.mark.parametrize("lens_fed", [False, True])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("op", OPS)
def test_sequence_lens(op, direction, lens_fed):
    """Rows shorter than the sequence (zeros in Y past their end, final states at their end; reverse
    directions start at their last step) and a row of length 0 (zero final states)."""
    for layout, lens in ((0, [5, 2, 0, 5]), (1, [3, 5, 1, 4])):
        _check(_case(op, direction, batch=4, layout=layout, lens=lens, lens_fed=lens_fed, seed=sum(lens)))


def test_sequence_lens_out_of_range_fails_at_run_time():
    model, feeds, _ = _case("GRU", lens=[5, 6, 1], lens_fed=True)
    with pytest.raises(ValueError, match="sequence_lens"):
        edgekit.InferenceSession(model).run(None, feeds)


@pytest.mark.parametrize("clip", [0.0, -1.0])
@pytest.mark.parametrize("op", OPS)
def test_clip_not_positive_is_refused(op, clip):
    """A clip of 0 or below bounds nothing (it ran, clipping every pre-activation to a constant or
    swapping the bounds); onnxruntime refuses it for LSTM and GRU (and runs RNN's, to a constant)."""
    model, feeds, _ = _case(op, clip=clip)
    with pytest.raises(ModelError, match="'rnn0'.*clip"):
        edgekit.InferenceSession(model).run(None, feeds)


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("op", OPS)
def test_clip(op, direction):
    """Pre-activations clipped: weights scaled up so that many exceed the bound."""
    case = _case(op, direction, clip=0.7, seed=3)
    for init in case[0].graph.initializer:
        init.raw_data = (np.frombuffer(init.raw_data, np.float32) * 4).tobytes()
    _check(case)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_lstm_input_forget(direction):
    _check(_case("LSTM", direction, input_forget=1, seed=4))


@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_gru_linear_before_reset(direction, lbr):
    for bias in (True, False):
        _check(_case("GRU", direction, linear_before_reset=lbr, bias=bias, seed=5 + lbr))


ACTIVATION_CASES = [
    ("LSTM", "forward", ["Relu", "Tanh", "Sigmoid"], [], []),
    ("LSTM", "bidirectional", ["HardSigmoid", "LeakyRelu", "Tanh", "Sigmoid", "Tanh", "Tanh"], [0.3, 0.05], [0.4]),
    ("LSTM", "bidirectional", ["sigmoid", "tanh", "relu", "Sigmoid", "Relu", "ScaledTanh"], [1.5], [0.7]),
    ("GRU", "forward", ["Sigmoid", "Relu"], [], []),
    ("GRU", "bidirectional", ["HardSigmoid", "Affine", "Sigmoid", "Softsign"], [0.25, 0.8], [0.45, 0.1]),
    ("GRU", "reverse", ["Sigmoid", "Elu"], [], []),
    ("RNN", "forward", ["Relu"], [], []),
    ("RNN", "bidirectional", ["Softplus", "ThresholdedRelu"], [0.2], []),
    ("RNN", "reverse", ["LeakyRelu"], [], []),
    ("LSTM", "bidirectional", ["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Tanh", "Relu"], [], []),
    ("GRU", "bidirectional", ["Sigmoid", "Tanh", "Sigmoid", "Relu"], [], []),
    ("RNN", "bidirectional", ["Tanh", "Relu"], [], []),
]


@pytest.mark.parametrize("op,direction,acts,alphas,betas", ACTIVATION_CASES)
def test_activations(op, direction, acts, alphas, betas):
    attrs = {"activations": acts}
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    for lbr in ([0, 1] if op == "GRU" else [0]):
        extra = {"linear_before_reset": lbr} if op == "GRU" else {}
        _check(_case(op, direction, seed=len(acts), **attrs, **extra))


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("op", OPS)
def test_weights_fed_at_run_time(op, direction):
    """W, R, B and P fed: packed at each call, the same results on a second call with new weights."""
    model, feeds, _ = _case(op, direction, weights_fed=True, seed=6)
    session = edgekit.InferenceSession(model)
    assert_matches_ort(model, feeds, RTOL, ATOL, session=session)
    rng = np.random.default_rng(7)
    feeds = {n: rng.standard_normal(v.shape).astype(np.float32) * 0.5 for n, v in feeds.items()}
    assert_matches_ort(model, feeds, RTOL, ATOL, session=session)


@pytest.mark.parametrize("op", OPS)
def test_output_subsets(op):
    names = ["y", "yh", "yc"][:3 if op == "LSTM" else 2]
    for k in range(1, len(names) + 1):
        for chosen in itertools.combinations(names, k):
            outs = [n if n in chosen else "" for n in names]
            while not outs[-1]:
                outs.pop()
            _check(_case(op, "bidirectional", batch=2, lens=[5, 3], outputs=outs, seed=k))


@pytest.mark.parametrize("op", OPS)
def test_dynamic_sequence_and_batch(op):
    """One session with symbolic sequence and batch dims, run on several shapes (a plan each)."""
    model, _, _ = _case(op, "bidirectional", h0=False, c0=False)
    for d, name in zip(model.graph.input[0].type.tensor_type.shape.dim, ["seq", "batch"]):
        d.dim_param = name
    session = edgekit.InferenceSession(model)
    rng = np.random.default_rng(8)
    for seq, batch in ((1, 1), (7, 2), (3, 5)):
        x = rng.standard_normal((seq, batch, 4)).astype(np.float32)
        assert_matches_ort(model, {"x": x}, RTOL, ATOL, session=session)


def test_larger_lstm_matches():
    """Edge-sized shapes: hidden 64, input 40, 20 steps, batch 2 (tiles of the gemm kernel)."""
    _check(_case("LSTM", "bidirectional", seq=20, batch=2, inp=40, hid=64, seed=9), 2e-4, 5e-5)


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("op", OPS)
def test_edge_sized_shapes(op, batch):
    """Hidden 37 (vector loops of the fused cells plus their remainder), input 20, batch 1 and 8, with
    and without clip; GRU both ways of linear_before_reset; a row shorter than the sequence."""
    lens = [12] * batch
    lens[-1] = 7
    for clip, lbr in itertools.product([None, 0.8], [0, 1] if op == "GRU" else [0]):
        attrs = ({"clip": clip} if clip else {}) | ({"linear_before_reset": lbr} if op == "GRU" else {})
        _check(_case(op, "bidirectional", seq=12, batch=batch, inp=20, hid=37, lens=lens, seed=batch + lbr, **attrs),
               2e-4, 5e-5)


@pytest.mark.parametrize("attrs,match", [
    ({"activations": ["Sigmoid", "Gelu"]}, "activation 'Gelu'"),
    ({"opset": 6}, "before opset 7"),
])
def test_unsupported_forms_name_the_node(attrs, match):
    attrs = dict(attrs)
    opset = attrs.pop("opset", 14)
    model, _, _ = _case("GRU", opset=max(opset, 7), **attrs)
    model.opset_import[0].version = opset  # GRU-3 (onnx's shape inference gives no shapes before 7)
    with pytest.raises(UnsupportedOpError, match=match) as err:
        edgekit.InferenceSession(model).run(None, {"x": np.zeros((5, 3, 4), np.float32)})
    assert "rnn0" in str(err.value)


def test_float64_is_unsupported():
    model, _, _ = _case("RNN", h0=False)
    model.graph.input[0].type.tensor_type.elem_type = 11
    for init in model.graph.initializer:
        init.CopyFrom(helper.make_tensor(init.name, 11, init.dims, np.frombuffer(init.raw_data, np.float32)))
    with pytest.raises(UnsupportedOpError, match="float32") as err:
        edgekit.InferenceSession(model).run(None, {"x": np.zeros((5, 3, 4))})
    assert "rnn0" in str(err.value)
