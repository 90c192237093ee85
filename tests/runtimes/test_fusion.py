"""runtimes/fusion.py on ConvTranspose decoders: BatchNormalization folds into the ConvTranspose
weights (output channels on axis 1, per group) and a following activation fuses into its epilogue;
the fused session matches onnxruntime (rtol/atol 1e-5: folding rounds the weights once) for 1-D
and 2-D, groups 1 and 2, with and without a bias; a bias of the wrong size is refused, folded or not;
a BN whose folded weights would overflow stays a node."""
import numpy as np
import onnx
import pytest
from onnx import helper

import edgekit
from edgekit.errors import ModelError
from oracle import assert_matches_ort, make_model


def decoder(nd: int, groups: int, bias: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    cin, cout_g, k = 4, 3, 3
    cout = cout_g * groups
    size = (5,) * nd
    inits = {"w": rng.standard_normal((cin, cout_g) + (k,) * nd).astype(np.float32),
             "g": rng.uniform(0.5, 2, cout).astype(np.float32), "be": rng.standard_normal(cout).astype(np.float32),
             "m": rng.standard_normal(cout).astype(np.float32), "v": rng.uniform(0.5, 2, cout).astype(np.float32)}
    if bias:
        inits["b"] = rng.standard_normal(cout).astype(np.float32)
    nodes = [helper.make_node("ConvTranspose", ["x", "w"] + (["b"] if bias else []), ["t"], strides=[2] * nd,
                              pads=[1] * 2 * nd, group=groups, name="up"),
             helper.make_node("BatchNormalization", ["t", "g", "be", "m", "v"], ["n"], epsilon=1e-3, name="bn"),
             helper.make_node("LeakyRelu", ["n"], ["y"], alpha=0.2, name="act")]
    model = make_model(nodes, {"x": ((2, cin) + size, np.float32)}, ["y"], inits)
    return model, rng.standard_normal((2, cin) + size).astype(np.float32)


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("bias", [False, True])
def test_convtranspose_bn_activation_fold_into_one_node(nd, groups, bias):
    model, x = decoder(nd, groups, bias)
    session = edgekit.InferenceSession(model)
    assert [n.op_type for n in session.prepared.nodes] == ["ConvTranspose"]
    assert_matches_ort(model, {"x": x}, rtol=1e-5, atol=1e-5, session=session)


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_a_bias_of_the_wrong_size_is_refused_with_or_without_a_batchnorm_after(op):
    """The fold must not broadcast a 1-value bias over the channels (onnxruntime refuses the model)."""
    model, _ = decoder(2, 1, True)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    inits["b"] = np.ones(1, np.float32)
    if op == "Conv":  # W (Cout, Cin, k, k) for the same 3 output channels
        inits["w"] = inits["w"].transpose(1, 0, 2, 3).copy()
    model.graph.ClearField("initializer")
    model.graph.initializer.extend(onnx.numpy_helper.from_array(v, k) for k, v in inits.items())
    model.graph.node[0].op_type = op
    with pytest.raises(ModelError, match="'up'.*bias"):
        edgekit.InferenceSession(model)


def test_a_batchnorm_whose_folded_weights_overflow_stays_a_node():
    """A BN scale of 1e38 times a weight of 5 overflows float32: folded, the conv would sum inf - inf
    where the unfolded graph scales finite sums; it stays a BatchNormalization and matches onnxruntime."""
    rng = np.random.default_rng(3)
    c = 3
    w = rng.standard_normal((c, 2, 3)).astype(np.float32)
    w[0, 0, 0] = 5.0
    inits = {"w": w, "g": np.array([1e38, 1, 1], np.float32), "b": np.zeros(c, np.float32),
             "m": np.zeros(c, np.float32), "v": np.ones(c, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["y0"]),
             helper.make_node("BatchNormalization", ["y0", "g", "b", "m", "v"], ["y"], epsilon=0.0)]
    model = make_model(nodes, {"x": ((1, 2, 8), np.float32)}, ["y"], inits)
    assert [n.op_type for n in edgekit.InferenceSession(model).prepared.nodes] == ["Conv", "BatchNormalization"]
    assert_matches_ort(model, {"x": rng.standard_normal((1, 2, 8)).astype(np.float32)}, 1e-5, 1e-5)
