"""Pool epilogue fusion: which BatchNormalization/activation nodes after a MaxPool/AveragePool are
folded into it (stride-1 'same' 2D pools only, single consumer, not a graph output, inference BN
with constant statistics, activations with constant parameters) and the per-channel affine it
computes; end to end against onnxruntime, the stride-1 'same' pool kernels (max exact, average
within 1e-6 relative) with and without the fused epilogue, including the 3x3 pools' MAX3 and AVG3
paths on planes of any size, and NaN through the whole block (np.max then np.clip semantics)."""
import numpy as np
import pytest
from onnx import helper

import edgekit
from edgekit.errors import ModelError
from edgekit.ir import Node
from edgekit.runtimes.kernels import activation as act
from edgekit.runtimes.ops.registry import FUSED_ACTIVATION
from edgekit.runtimes.ops.pool import POOL_AFFINE, pool_affine
from edgekit.runtimes.pool_fusion import fuse_pools, same_stride1
from oracle import assert_matches_ort, make_model, ort_session

C = 4


def _bn_constants(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"g": rng.uniform(-1.5, 1.5, C).astype(np.float32), "b": rng.normal(0, 1, C).astype(np.float32),
            "m": rng.normal(0, 1, C).astype(np.float32), "v": rng.uniform(0.1, 2, C).astype(np.float32)}


def _chain(op: str = "MaxPool", act_op: str = "Relu", bn_attrs: dict | None = None) -> list[Node]:
    nodes = [Node("pool", op, "", ["x"], ["p"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
             Node("bn", "BatchNormalization", "", ["p", "g", "b", "m", "v"], ["n"], bn_attrs or {"epsilon": 1e-3})]
    if act_op == "Clip":
        nodes.append(Node("act", "Clip", "", ["n", "lo", "hi"], ["y"]))
    elif act_op:
        nodes.append(Node("act", act_op, "", ["n"], ["y"]))
    return nodes


def test_pool_bn_relu_becomes_one_node():
    rng = np.random.default_rng(0)
    consts = _bn_constants(rng)
    (node,) = fuse_pools(_chain(), consts, 17, {"y"})
    assert node.outputs == ["y"] and node.name == "pool+bn+act" and node.inputs == ["x"]
    assert node.attrs[FUSED_ACTIVATION] == (act.RELU, 0.0, 0.0)
    scale, shift = pool_affine(node)
    want = consts["g"].astype(np.float64) / np.sqrt(consts["v"].astype(np.float64) + 1e-3)
    np.testing.assert_allclose(scale, want, rtol=1e-6)
    np.testing.assert_allclose(shift, consts["b"] - consts["m"] * want, rtol=1e-6, atol=1e-6)
    assert scale.dtype == shift.dtype == np.float32


def test_clip_with_constant_bounds_and_average_pool():
    consts = _bn_constants(np.random.default_rng(1)) | {"lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}
    (node,) = fuse_pools(_chain("AveragePool", "Clip"), consts, 17, {"y"})
    assert node.attrs[FUSED_ACTIVATION] == (act.CLIP, 0.0, 6.0) and POOL_AFFINE in node.attrs


def test_activation_alone_and_bn_alone():
    pool = Node("pool", "MaxPool", "", ["x"], ["p"], {"kernel_shape": [5, 4], "pads": [2, 1, 2, 2]})
    (node,) = fuse_pools([pool, Node("r", "Relu", "", ["p"], ["y"])], {}, 17, {"y"})
    assert node.outputs == ["y"] and POOL_AFFINE not in node.attrs and FUSED_ACTIVATION in node.attrs
    (node,) = fuse_pools(_chain(act_op=None), _bn_constants(np.random.default_rng(2)), 17, {"n"})
    assert node.outputs == ["n"] and POOL_AFFINE in node.attrs and FUSED_ACTIVATION not in node.attrs


@pytest.mark.parametrize("attrs,same", [
    ({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, True),
    ({"kernel_shape": [2, 4], "pads": [0, 2, 1, 1]}, True),
    ({"kernel_shape": [3, 3], "auto_pad": "SAME_LOWER", "strides": [1, 1]}, True),
    ({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}, False),
    ({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "dilations": [1, 2]}, False),
    ({"kernel_shape": [3, 3], "pads": [1, 1, 0, 1]}, False),
    ({"kernel_shape": [3, 3], "auto_pad": "VALID"}, False),
    ({"kernel_shape": [3], "pads": [1, 1]}, False),
])
def test_only_stride1_same_pools_fuse(attrs, same):
    assert same_stride1(Node("pool", "MaxPool", "", ["x"], ["p"], attrs)) is same
    fused = fuse_pools([Node("pool", "MaxPool", "", ["x"], ["p"], attrs), Node("r", "Relu", "", ["p"], ["y"])], {}, 17, {"y"})
    assert len(fused) == (1 if same else 2)


@pytest.mark.parametrize("case", ["pool_output_is_graph_output", "two_consumers", "training_bn", "dynamic_bn",
                                  "dynamic_clip", "conv"])
def test_no_fusion_when_it_would_change_the_graph(case):
    consts = _bn_constants(np.random.default_rng(3)) | {"lo": np.array(0.0, np.float32)}
    nodes, outputs = _chain(), {"y"}
    if case == "pool_output_is_graph_output":
        outputs = {"y", "p"}
    elif case == "two_consumers":
        nodes.append(Node("other", "Relu", "", ["p"], ["z"]))
    elif case == "training_bn":
        nodes = _chain(bn_attrs={"training_mode": 1})
    elif case == "dynamic_bn":
        del consts["v"]
    elif case == "dynamic_clip":
        nodes = _chain(act_op="Clip")
        fused = fuse_pools(nodes, consts, 17, outputs)
        assert [n.op_type for n in fused] == ["MaxPool", "Clip"]  # BN folds, the Clip with a dynamic bound stays
        return
    elif case == "conv":
        nodes[0].op_type = "Conv"
    fused = fuse_pools(nodes, consts, 17, outputs)
    assert len(fused) == len(nodes) and POOL_AFFINE not in fused[0].attrs


def test_fusing_twice_changes_nothing():
    consts = _bn_constants(np.random.default_rng(4))
    nodes = _chain() + [Node("bn2", "BatchNormalization", "", ["y", "g", "b", "m", "v"], ["z"])]
    once = fuse_pools(nodes, consts, 17, {"z"})
    assert [n.op_type for n in once] == ["MaxPool", "BatchNormalization"]
    assert [n.op_type for n in fuse_pools(once, consts, 17, {"z"})] == ["MaxPool", "BatchNormalization"]


# End to end: the stride-1 'same' pool path, with and without a fused epilogue, against onnxruntime.

def _pool_model(op: str, shape: tuple, kernel: list, epilogue: str, seed: int, **attrs):
    rng = np.random.default_rng(seed)
    c = shape[1]
    nodes, inits, y = [helper.make_node(op, ["x"], ["p"], kernel_shape=kernel, **attrs)], {}, "p"
    if "bn" in epilogue:
        inits = {"g": rng.uniform(-1.5, 1.5, c), "b": rng.normal(0, 1, c), "m": rng.normal(0, 1, c),
                 "v": rng.uniform(0.1, 2, c)}
        inits = {k: v.astype(np.float32) for k, v in inits.items()}
        nodes.append(helper.make_node("BatchNormalization", ["p", "g", "b", "m", "v"], ["n"], epsilon=1e-3))
        y = "n"
    if "relu6" in epilogue:
        inits |= {"lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}
        nodes.append(helper.make_node("Clip", [y, "lo", "hi"], ["y"]))
    elif "leaky" in epilogue:
        nodes.append(helper.make_node("LeakyRelu", [y], ["y"], alpha=0.1))
    elif "hardswish" in epilogue:
        nodes.append(helper.make_node("HardSwish", [y], ["y"]))
    elif "relu" in epilogue:
        nodes.append(helper.make_node("Relu", [y], ["y"]))
    else:
        nodes[-1].output[0] = "y"
    return make_model(nodes, {"x": (shape, np.float32)}, ["y"], inits)


SAME_CASES = [  # (shape, kernel, attrs)
    ((1, 32, 7, 7), [3, 3], dict(pads=[1, 1, 1, 1])),
    ((2, 5, 14, 9), [3, 3], dict(pads=[1, 1, 1, 1])),
    ((1, 3, 2, 5), [3, 3], dict(pads=[1, 1, 1, 1])),       # fewer rows than the window
    ((1, 4, 1, 1), [3, 3], dict(pads=[1, 1, 1, 1])),
    ((1, 6, 11, 8), [5, 5], dict(pads=[2, 2, 2, 2])),
    ((1, 3, 9, 10), [3, 2], dict(pads=[1, 0, 1, 1])),      # asymmetric 'same' padding
    ((1, 2, 6, 7), [4, 4], dict(auto_pad="SAME_UPPER")),
    ((1, 2, 6, 7), [2, 3], dict(auto_pad="SAME_LOWER")),
    ((1, 7, 30), [3], dict(pads=[1, 1])),                  # NCL
    ((1, 3, 3, 3), [7, 7], dict(pads=[3, 3, 3, 3])),       # window larger than the plane
]


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("shape,kernel,attrs", SAME_CASES)
def test_same_pool_matches_onnxruntime(op, shape, kernel, attrs):
    extra = {"count_include_pad": 1} if op == "AveragePool" and shape[1] % 2 else {}
    model = _pool_model(op, shape, kernel, "", 0, **attrs, **extra)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    tol = (0, 0) if op == "MaxPool" else (1e-6, 1e-7)  # max exact, average within 1e-6 relative
    assert_matches_ort(model, {"x": x}, *tol)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("epilogue", ["bn", "relu", "bn+relu", "bn+relu6"])
@pytest.mark.parametrize("shape,kernel,pads", [((1, 24, 14, 14), [3, 3], [1, 1, 1, 1]),
                                               ((2, 6, 20, 17), [3, 3], [1, 1, 1, 1]),  # the fused column pass
                                               ((1, 3, 3, 16), [3, 3], [1, 1, 1, 1]),
                                               ((2, 5, 6, 9), [5, 3], [2, 1, 2, 1])])
def test_fused_epilogue_matches_onnxruntime(op, epilogue, shape, kernel, pads):
    model = _pool_model(op, shape, kernel, epilogue, 2, pads=pads)
    session = edgekit.InferenceSession(model)
    assert len(session.plan((shape,)).steps) == 1  # pool, BN and activation run as one kernel call
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    assert_matches_ort(model, {"x": x}, 1e-5, 1e-6, session=session)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("epilogue", ["bn+hardswish", "leaky"])
def test_fused_rare_activation_matches_onnxruntime(op, epilogue):
    """An activation other than Relu and Clip after the generic 'same' pool (not 3x3): the affine in
    the pass over each plane, the activation by a pass of its own (the kernel compiled for it)."""
    shape = (2, 5, 6, 9)
    model = _pool_model(op, shape, [5, 3], epilogue, 2, pads=[2, 1, 2, 1])
    session = edgekit.InferenceSession(model)
    assert len(session.plan((shape,)).steps) == 1
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    assert_matches_ort(model, {"x": x}, 1e-5, 1e-6, session=session)


def _nan_windows(x: np.ndarray) -> np.ndarray:
    """True where a 3x3 pads-1 window of x holds a NaN."""
    h, w = x.shape[2:]
    padded = np.pad(np.isnan(x), ((0, 0), (0, 0), (1, 1), (1, 1)))
    nan = np.zeros(x.shape, bool)
    for a in range(3):
        for b in range(3):
            nan |= padded[:, :, a:a + h, b:b + w]
    return nan


@pytest.mark.parametrize("shape", [(1, 4, 9, 20), (1, 4, 3, 3), (1, 4, 2, 2)])
def test_fused_max_pool_propagates_nan(shape):
    """A NaN in a window makes its output NaN through the fused BN store (np.maximum semantics; wide
    planes take the fused column pass, narrow ones the separate epilogue pass); elsewhere, infinities
    included, the block matches onnxruntime."""
    model = _pool_model("MaxPool", shape, [3, 3], "bn", 2, pads=[1, 1, 1, 1])
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    x[0, 0, 0, 0], x[0, 1, -1, -1], x[0, 2, shape[2] // 2, 1], x[0, 3, 0, -1] = np.nan, np.inf, np.nan, -np.inf
    got = edgekit.InferenceSession(model).run(None, {"x": x})[0]
    want = ort_session(model).run(None, {"x": x})[0]
    nan = _nan_windows(x)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_allclose(got[~nan], want[~nan], 1e-5, 1e-6)


MAX3_SHAPES = [(1, 6, 9, 40),    # planes of 360 values: 22.5 vectors of 16 lanes, the last one masked
               (1, 30, 12, 12),  # 144 values: whole vectors, each spanning rows
               (2, 100, 7, 7),   # 49 values: most vectors hold taps outside the plane
               (1, 5, 1, 9),     # one row: no tap above or below
               (1, 5, 8, 1),     # one column: no tap left or right
               (1, 3, 2, 3)]     # a plane smaller than a vector


@pytest.mark.parametrize("epilogue", ["", "relu", "bn", "bn+relu6", "leaky", "bn+hardswish"])
@pytest.mark.parametrize("shape", MAX3_SHAPES)
def test_max3_block_matches_onnxruntime(shape, epilogue):
    """The 3x3 max pool of inputs without NaN (MAX3: plain max instructions, the BN and a Relu/Clip on the
    store, other activations as a pass of their own), infinities included: exact alone and with Relu,
    within float32 rounding of the BN affine and the activation otherwise."""
    model = _pool_model("MaxPool", shape, [3, 3], epilogue, 10, pads=[1, 1, 1, 1])
    x = (np.random.default_rng(11).standard_normal(shape) * 3).astype(np.float32)
    x[0, 0, 0, 0], x[-1, -1, -1, -1] = np.inf, -np.inf
    assert_matches_ort(model, {"x": x}, *((0, 0) if epilogue in ("", "relu") else (1e-5, 1e-6)))


@pytest.mark.parametrize("epilogue", ["", "relu", "bn", "bn+relu6", "leaky", "bn+hardswish"])
@pytest.mark.parametrize("shape", MAX3_SHAPES)
def test_avg3_block_matches_onnxruntime(shape, epilogue):
    """The 3x3 pads-1 average pool (AVG3: MAX3's pass with float32 sums, the BN and a Relu/Clip on the store,
    other activations as a pass of their own), count_include_pad 0 and 1, on the MAX3 shapes: within
    float32 rounding of the sums, the BN affine and the activation."""
    model = _pool_model("AveragePool", shape, [3, 3], epilogue, 10, pads=[1, 1, 1, 1], count_include_pad=shape[1] % 2)
    session = edgekit.InferenceSession(model)
    assert len(session.plan((shape,)).steps) == 1
    x = (np.random.default_rng(11).standard_normal(shape) * 3).astype(np.float32)
    assert_matches_ort(model, {"x": x}, 1e-5, 1e-6, session=session)


@pytest.mark.parametrize("shape", MAX3_SHAPES[:3])
def test_block_propagates_nan_through_bn_and_relu6(shape):
    """edgekit's rule for NaN in the parameter-free block (MaxPool + BN + Clip): every output whose window
    holds a NaN is NaN, as np.max then np.clip give (and as onnxruntime's own Max and Clip ops do). Not
    checked against onnxruntime's MaxPool, which keeps a NaN in only some of those windows: MLAS's vector
    max returns its second operand when either is NaN, its scalar std::max its first, so the result
    depends on tap order and code path (the ONNX spec leaves NaN in MaxPool unspecified). A tensor holding
    NaN is pooled again by the NaN-propagating path after MAX3 finds it; values off the NaN windows,
    infinities included, match onnxruntime."""
    model = _pool_model("MaxPool", shape, [3, 3], "bn+relu6", 12, pads=[1, 1, 1, 1])
    x = np.random.default_rng(13).standard_normal(shape).astype(np.float32)
    c = shape[1]
    x[0, 1, 0, 0] = x[0, c - 1, -1, -1] = x[-1, c // 2, 3, 1] = np.nan
    x[0, c // 3, 2, 2], x[-1, 2 * c // 3, -1, 0] = np.inf, -np.inf
    got = edgekit.InferenceSession(model).run(None, {"x": x})[0]
    want = ort_session(model).run(None, {"x": x})[0]
    nan = _nan_windows(x)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_allclose(got[~nan], want[~nan], 1e-5, 1e-6)


def test_plan_fuses_pools_after_the_conv_fusions():
    """fusion.fuse (the plan's pass) folds Conv + BN + Relu6, then MaxPool + BN + Relu6, into two nodes."""
    from edgekit.runtimes.fusion import fuse

    rng = np.random.default_rng(5)
    consts = _bn_constants(rng) | {"w": rng.standard_normal((C, C, 1, 1)).astype(np.float32),
                                   "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}
    nodes = [Node("conv", "Conv", "", ["x", "w"], ["c"]),
             Node("bn0", "BatchNormalization", "", ["c", "g", "b", "m", "v"], ["cn"]),
             Node("act0", "Clip", "", ["cn", "lo", "hi"], ["ca"])]
    nodes += [Node(n.name, n.op_type, "", [("ca" if i == "x" else i) for i in n.inputs], n.outputs, n.attrs)
              for n in _chain(act_op="Clip")]
    conv, pool = fuse(nodes, consts, 17, {"y"})
    assert (conv.name, conv.outputs, conv.attrs[FUSED_ACTIVATION]) == ("conv+bn0+act0", ["ca"], (act.CLIP, 0.0, 6.0))
    assert (pool.name, pool.inputs, pool.outputs) == ("pool+bn+act", ["ca"], ["y"])
    assert pool.attrs[FUSED_ACTIVATION] == (act.CLIP, 0.0, 6.0) and POOL_AFFINE in pool.attrs


def _block_model(pool_attrs: dict, seed: int):
    """Conv 1x1 + BN + Relu, then a pool + BN + Relu, then Conv 1x1: the parameter-free block's pattern."""
    rng = np.random.default_rng(seed)
    c = 8
    inits = {"w1": rng.standard_normal((c, 3, 1, 1)) / 2, "w2": rng.standard_normal((c, c, 1, 1)) / 3}
    for k in ("1", "2"):
        inits |= {"g" + k: rng.uniform(-1.5, 1.5, c), "b" + k: rng.normal(0, 1, c), "m" + k: rng.normal(0, 1, c),
                  "v" + k: rng.uniform(0.1, 2, c)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"]),
             helper.make_node("BatchNormalization", ["c", "g1", "b1", "m1", "v1"], ["cn"]),
             helper.make_node("Relu", ["cn"], ["ca"]),
             helper.make_node("MaxPool", ["ca"], ["p"], **pool_attrs),
             helper.make_node("BatchNormalization", ["p", "g2", "b2", "m2", "v2"], ["pn"]),
             helper.make_node("Relu", ["pn"], ["pa"]),
             helper.make_node("Conv", ["pa", "w2"], ["y"])]
    inits = {k: v.astype(np.float32) for k, v in inits.items()}
    return make_model(nodes, {"x": ((2, 3, 13, 11), np.float32)}, ["y"], inits)


@pytest.mark.parametrize("pool_attrs,steps", [
    (dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 3),                  # pool + BN + Relu fused: conv, pool, conv
    (dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]), 5),  # strided: BN and Relu stay separate
])
def test_block_through_the_session_matches_onnxruntime(pool_attrs, steps):
    model = _block_model(pool_attrs, 6)
    session = edgekit.InferenceSession(model)
    assert len(session.plan(((2, 3, 13, 11),)).steps) == steps
    x = np.random.default_rng(7).standard_normal((2, 3, 13, 11)).astype(np.float32)
    assert_matches_ort(model, {"x": x}, 1e-4, 1e-5, session=session)  # float32 convs with folded BN: 1e-4 relative


def test_constant_node_bounds_fuse_like_initializers():
    """Exporters write Clip bounds as Constant nodes: Conv + Clip and MaxPool + BN + Clip still fuse."""
    rng = np.random.default_rng(8)
    c = 6
    inits = {"w": rng.standard_normal((c, 3, 3, 3)).astype(np.float32) / 3,
             "g": rng.uniform(0.5, 1.5, c).astype(np.float32), "b": rng.normal(0, 1, c).astype(np.float32),
             "m": rng.normal(0, 1, c).astype(np.float32), "v": rng.uniform(0.1, 2, c).astype(np.float32)}
    nodes = [helper.make_node("Constant", [], ["lo"], value_float=0.0),
             helper.make_node("Constant", [], ["hi"], value=helper.make_tensor("hi", 1, [], [6.0])),
             helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["ca"]),
             helper.make_node("MaxPool", ["ca"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["p", "g", "b", "m", "v"], ["pn"]),
             helper.make_node("Clip", ["pn", "lo", "hi"], ["y"])]
    model = make_model(nodes, {"x": ((1, 3, 12, 12), np.float32)}, ["y"], inits)
    session = edgekit.InferenceSession(model)
    assert len(session.plan(((1, 3, 12, 12),)).steps) == 2  # Conv+Clip, MaxPool+BN+Clip
    x = np.random.default_rng(9).standard_normal((1, 3, 12, 12)).astype(np.float32) * 4
    assert_matches_ort(model, {"x": x}, 1e-5, 1e-5, session=session)  # float32 conv and BN affine


def test_pads_of_the_wrong_length_raise_model_error_naming_the_node():
    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool7", kernel_shape=[2, 3], pads=[1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("y", 1, [])])
    with pytest.raises(ModelError, match="'pool7'.*pads"):
        edgekit.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]))
