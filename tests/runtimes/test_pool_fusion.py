"""Pool epilogue fusion: which BatchNormalization/activation nodes after a MaxPool/AveragePool are
folded into it (stride-1 'same' 2D pools only, single consumer, not a graph output, inference BN with constant statistics,
activations with constant parameters), and the per-channel affine it computes."""
import numpy as np
import pytest

from edgekit.ir import Node
from edgekit.runtimes.kernels import activation as act
from edgekit.runtimes.ops.registry import FUSED_ACTIVATION
from edgekit.runtimes.pool_fusion import POOL_AFFINE, fuse_pools, pool_affine, same_stride1

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
    ({"kernel_shape": [3, 3], "auto_pad": b"SAME_LOWER", "strides": [1, 1]}, True),
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
