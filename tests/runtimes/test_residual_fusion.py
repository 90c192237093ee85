"""Residual fusion (runtimes/fusion.py, ops/conv.py, kernels/conv.py): ``Add(Conv(...), R)`` in either
order, with or without a BatchNormalization before the Add and Relu, Clip, LeakyRelu or nothing after
it, becomes one Conv whose epilogue is bias, + R, activation; checked against onnxruntime on random
inputs for every conv path: 1x1 direct product (column blocks), 3x3 wide product (compacted), strided
(one-phase and polyphase repack), grouped, depthwise 3x3 and generic, 1-D and single-row outputs
(the rows kernels' short, quad, narrow and dot tiles), batch 1 and 3; R a graph input, the block's
own input, or another Conv's output. Not fused, still correct: a Conv output read elsewhere or a
graph output, Conv -> Relu -> Add, a constant (bias-like) addend; a broadcasting R runs unfused in
the Conv's step; a BatchNormalization after the Add stays a node. The fused Conv's output never
shares memory with R (plan liveness), and the bundled resblock models fuse. Tolerance rtol 1e-4,
atol 1e-4 (float32 sums of up to a few hundred products accumulated in another order than
onnxruntime's; the Add itself rounds the same).
"""
import glob
from pathlib import Path

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
import pytest
from onnx import helper

import edgekit
from edgekit.converters import paramfree as pf
from edgekit.runtimes.kernels import conv as kc
from edgekit.runtimes.ops.registry import FUSED_ACTIVATION
from oracle import assert_matches_ort, make_model

RTOL, ATOL = 1e-4, 1e-4
MODELS = Path(__file__).parents[1] / "models"

PATHS = {  # name: (input shape without batch, weight shape, attributes)
    "1x1": ((16, 9, 11), (24, 16, 1, 1), {}),
    "3x3_pad": ((6, 10, 9), (8, 6, 3, 3), dict(pads=[1, 1, 1, 1])),
    "1x1_stride2": ((8, 9, 10), (12, 8, 1, 1), dict(strides=[2, 2])),
    "3x3_stride2": ((6, 11, 10), (10, 6, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    "3x3_grouped": ((8, 9, 9), (12, 4, 3, 3), dict(group=2, pads=[1, 1, 1, 1])),
    "depthwise_3x3": ((8, 12, 11), (8, 1, 3, 3), dict(group=8, pads=[1, 1, 1, 1])),
    "depthwise_3x3_stride2": ((8, 12, 11), (8, 1, 3, 3), dict(group=8, strides=[2, 2], pads=[1, 1, 1, 1])),
    "depthwise_5x5": ((6, 11, 10), (6, 1, 5, 5), dict(group=6, pads=[2, 2, 2, 2])),
    "one_row_wide": ((4, 1, 200), (6, 4, 1, 3), {}),
    "1d_short": ((8, 20), (16, 8, 3), dict(pads=[1, 1])),
    "1d_quads": ((6, 100), (8, 6, 3), dict(pads=[1, 1])),
    "1d_narrow": ((16, 4), (64, 16, 3), dict(pads=[1, 1])),
    "1d_dot": ((4, 10), (20, 4, 10), {}),
    "1d_grouped_stride2": ((6, 31), (8, 3, 3), dict(group=2, strides=[2], pads=[1, 1])),
}


def _activation(act: str | None, x: str, y: str) -> tuple[list, dict]:
    """The activation node(s) from x to y and their initializers (Clip bounds are inputs)."""
    if act is None:
        return [helper.make_node("Identity", [x], [y])], {}
    if act == "Clip":
        return [helper.make_node("Clip", [x, "lo", "hi"], [y])], {"lo": np.float32(0), "hi": np.float32(6)}
    return [helper.make_node(act, [x], [y], **({"alpha": 0.1} if act == "LeakyRelu" else {}))], {}


def residual_block(path: str, batch: int, conv_first: bool, bn: bool, act: str | None, seed: int = 0):
    """x -> Conv (path) [-> BN] -> Add with the graph input r (in the given order) -> act -> y."""
    rng = np.random.default_rng(seed)
    x_shape, w_shape, attrs = PATHS[path]
    cout = w_shape[0]
    inits = {"w": (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32),
             "b": rng.standard_normal(cout).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs)]
    if bn:
        inits |= {"g": rng.uniform(0.5, 2, cout).astype(np.float32), "be": rng.standard_normal(cout).astype(np.float32),
                  "m": rng.standard_normal(cout).astype(np.float32), "v": rng.uniform(0.5, 2, cout).astype(np.float32)}
        nodes.append(helper.make_node("BatchNormalization", ["c", "g", "be", "m", "v"], ["n"]))
    h = "n" if bn else "c"
    nodes.append(helper.make_node("Add", [h, "r"] if conv_first else ["r", h], ["s"]))
    act_nodes, act_inits = _activation(act, "s", "y")
    x = rng.standard_normal((batch, *x_shape)).astype(np.float32)
    y_shape = ReferenceEvaluator(  # (the output shape, to make r)
        make_model(nodes[:1], {"x": (x.shape, np.float32)}, ["c"], inits)).run(None, {"x": x})[0].shape
    model = make_model(nodes + act_nodes, {"x": (x.shape, np.float32), "r": (y_shape, np.float32)}, ["y"],
                       inits | act_inits)
    return model, {"x": x, "r": rng.standard_normal(y_shape).astype(np.float32)}


def _fused_steps(session: edgekit.InferenceSession) -> list:
    plan = next(iter(session._plans.values()))
    return [(fn, args) for fn, args in plan.steps  # a conv kernel for its plan, with the residual argument
            if len(args) == 8 and fn in (kc.conv_kernel(args[5], rows, residual=True) for rows in (False, True))]


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("conv_first", [True, False])
def test_every_conv_path_fuses_the_residual_and_relu(path, batch, conv_first):
    model, feeds = residual_block(path, batch, conv_first, bn=True, act="Relu")
    session = edgekit.InferenceSession(model)
    assert [n.op_type for n in session.prepared.nodes] == ["Conv"]
    assert_matches_ort(model, feeds, RTOL, ATOL, session=session)
    assert len(_fused_steps(session)) == 1


@pytest.mark.parametrize("path", ["1x1", "3x3_pad", "depthwise_3x3", "depthwise_5x5", "1d_short", "1d_narrow"])
@pytest.mark.parametrize("act", [None, "Clip", "LeakyRelu"])
@pytest.mark.parametrize("bn", [False, True])
def test_other_activations_and_no_batchnorm(path, act, bn):
    model, feeds = residual_block(path, 2, True, bn, act, seed=1)
    assert_matches_ort(model, feeds, RTOL, ATOL)


def test_a_resnet_bottleneck_is_three_convs_the_last_with_the_residual_and_relu():
    """Shortcut = the block's input (x, a pinned graph input); Conv+BN -> Add -> Relu is one node."""
    model = pf.bottleneck(32, 8, 14, 1, "conv", seed=3)
    session = edgekit.InferenceSession(model)
    nodes = session.prepared.nodes
    assert [n.op_type for n in nodes] == ["Conv"] * 3
    assert nodes[-1].inputs[3] == "x" and nodes[-1].attrs[FUSED_ACTIVATION][0] == kc.RELU
    x = np.random.default_rng(3).standard_normal((1, 32, 14, 14)).astype(np.float32)
    assert_matches_ort(model, {"x": x}, RTOL, ATOL, session=session)


def test_a_downsampling_block_fuses_one_of_two_convs_added():
    """Add(Conv, Conv shortcut): one Conv is the residual of the other, run after it."""
    model = pf.bottleneck(16, 8, 14, 2, "conv", seed=4)
    session = edgekit.InferenceSession(model)
    assert [n.op_type for n in session.prepared.nodes] == ["Conv"] * 4
    x = np.random.default_rng(4).standard_normal((1, 16, 14, 14)).astype(np.float32)
    assert_matches_ort(model, {"x": x}, RTOL, ATOL, session=session)


def test_the_fused_output_never_shares_memory_with_the_residual():
    """s is read by the next Conv and, last, by the fused one: the liveness-reused buffers (three
    dead tensors of the output's size are in the pool by then) must not give the output s's memory."""
    rng = np.random.default_rng(5)
    c = 8
    inits = {f"w{i}": (rng.standard_normal((c, c, 3, 3)) / 8).astype(np.float32) for i in range(4)}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1] * 4),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w1"], ["s"], pads=[1] * 4),
             helper.make_node("Conv", ["s", "w2"], ["t"], pads=[1] * 4),
             helper.make_node("Relu", ["t"], ["u"]),
             helper.make_node("Conv", ["u", "w3"], ["h"], pads=[1] * 4),
             helper.make_node("Add", ["s", "h"], ["z"]),
             helper.make_node("Relu", ["z"], ["y"])]
    model = make_model(nodes, {"x": ((1, c, 9, 9), np.float32)}, ["y"], inits)
    session = edgekit.InferenceSession(model)
    assert_matches_ort(model, {"x": rng.standard_normal((1, c, 9, 9)).astype(np.float32)}, RTOL, ATOL,
                       session=session)
    (_, args), = _fused_steps(session)
    assert not np.may_share_memory(args[3], args[7])


def test_a_batchnorm_after_the_add_is_not_folded_into_the_conv():
    """Pre-activation form Conv -> Add -> BN -> Relu: the residual fuses, the BN (of conv + R) stays."""
    rng = np.random.default_rng(9)
    inits = {"w": (rng.standard_normal((8, 8, 3, 3)) / 8).astype(np.float32), "g": rng.uniform(0.5, 2, 8),
             "be": rng.standard_normal(8), "m": rng.standard_normal(8), "v": rng.uniform(0.5, 2, 8)}
    inits = {k: v.astype(np.float32) for k, v in inits.items()}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4), helper.make_node("Add", ["c", "x"], ["s"]),
             helper.make_node("BatchNormalization", ["s", "g", "be", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["y"])]
    model = make_model(nodes, {"x": ((2, 8, 7, 6), np.float32)}, ["y"], inits)
    session = edgekit.InferenceSession(model)
    assert [n.op_type for n in session.prepared.nodes] == ["Conv", "BatchNormalization", "Relu"]
    assert_matches_ort(model, {"x": rng.standard_normal((2, 8, 7, 6)).astype(np.float32)}, RTOL, ATOL,
                       session=session)


@pytest.mark.parametrize("case", ["graph_output", "read_elsewhere", "relu_before_add", "constant_addend"])
def test_forms_that_do_not_fuse_stay_correct(case):
    rng = np.random.default_rng(6)
    inits = {"w": (rng.standard_normal((8, 8, 1, 1)) / 3).astype(np.float32), "b": np.ones(8, np.float32)}
    outputs = ["y"]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"])]
    if case == "relu_before_add":
        nodes.append(helper.make_node("Relu", ["c"], ["c2"]))
    h = "c2" if case == "relu_before_add" else "c"
    r = "k" if case == "constant_addend" else "x"
    if case == "constant_addend":
        inits["k"] = rng.standard_normal((1, 8, 6, 7)).astype(np.float32)
    nodes += [helper.make_node("Add", [h, r], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    if case == "graph_output":
        outputs.append("c")
    if case == "read_elsewhere":
        nodes.append(helper.make_node("Sigmoid", ["c"], ["z"]))
        outputs.append("z")
    model = make_model(nodes, {"x": ((1, 8, 6, 7), np.float32)}, outputs, inits)
    session = edgekit.InferenceSession(model)
    assert "Add" in [n.op_type for n in session.prepared.nodes]
    assert_matches_ort(model, {"x": rng.standard_normal((1, 8, 6, 7)).astype(np.float32)}, RTOL, ATOL,
                       session=session)


@pytest.mark.parametrize("r_shape", [(1, 8, 1, 1), (3, 8, 6, 7), (8, 1, 7)])
def test_a_broadcasting_residual_runs_unfused_in_the_conv_step(r_shape):
    """R of another shape than the Conv output (known only when the plan is specialised): the Conv
    step runs the convolution, the broadcasting Add and the Relu one after the other; the output
    takes the broadcast shape (3, 8, 6, 7 is larger than the Conv's batch of 1)."""
    rng = np.random.default_rng(7)
    inits = {"w": (rng.standard_normal((8, 4, 3, 3)) / 6).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4), helper.make_node("Add", ["r", "c"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    model = make_model(nodes, {"x": ((1, 4, 6, 7), np.float32), "r": (r_shape, np.float32)}, ["y"], inits)
    session = edgekit.InferenceSession(model)
    assert [n.op_type for n in session.prepared.nodes] == ["Conv"]
    feeds = {"x": rng.standard_normal((1, 4, 6, 7)).astype(np.float32),
             "r": rng.standard_normal(r_shape).astype(np.float32)}
    assert_matches_ort(model, feeds, RTOL, ATOL, session=session)
    assert not _fused_steps(session)


@pytest.mark.parametrize("path", sorted(glob.glob(str(MODELS / "resblock_opset*.onnx"))), ids=lambda p: Path(p).stem)
@pytest.mark.parametrize("batch", [1, 3])
def test_bundled_resblocks_fuse_the_residual(path, batch):
    model = onnx.load(path)
    session = edgekit.InferenceSession(model)
    assert "Add" not in [n.op_type for n in session.prepared.nodes]
    x = np.random.default_rng(8).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    assert_matches_ort(model, {"x": x}, RTOL, ATOL, session=session)
    assert len(_fused_steps(session)) == 1
