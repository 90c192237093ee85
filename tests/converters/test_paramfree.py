"""Parameter-free layers converter: the block and network builders pass onnx.checker and run the
same on edgekit and onnxruntime; replace_depthwise turns exactly the depthwise convolutions into
pools with the same window geometry, reports parameters and MACs and warns about retraining, and
keeps (with the reason) what a pool cannot replace at the model's opset; convert_paramfree (the
CLI entry) writes the model, prints the warning as a line, and returns 0/1."""
import warnings

import numpy as np
import onnx
import pytest
from onnx import helper

from edgekit.converters import paramfree as pf
from oracle import assert_matches_ort, make_model, ort_session

RTOL, ATOL = 1e-4, 1e-4  # BatchNormalization folded into Conv weights changes float rounding


def _x(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


BLOCKS = [
    ("rmax", lambda: pf.bottleneck(64, 16, 14, 1, "max"), (1, 64, 14, 14)),
    ("rmax_stride2", lambda: pf.bottleneck(32, 16, 15, 2, "max"), (1, 64, 8, 8)),
    ("hybrid_stride1", lambda: pf.bottleneck(64, 16, 14, 1, "hybrid"), (1, 64, 14, 14)),
    ("hybrid_stride2", lambda: pf.bottleneck(32, 8, 14, 2, "hybrid"), (1, 32, 7, 7)),
    ("conv", lambda: pf.bottleneck(32, 8, 14, 2, "conv"), (1, 32, 7, 7)),
    ("ir_dw", lambda: pf.inverted_residual(16, 14, spatial="dw"), (1, 16, 14, 14)),
    ("ir_max", lambda: pf.inverted_residual(16, 14, spatial="max"), (1, 16, 14, 14)),
    ("ir_avg_stride2", lambda: pf.inverted_residual(16, (13, 10), cout=24, stride=2, spatial="avg"), (1, 24, 7, 5)),
    ("resnet_hybrid", lambda: pf.resnet("hybrid", width=8, size=48), (1, 10)),
    ("mobilenet_max", lambda: pf.mobilenet("max", size=48), (1, 10)),
]


@pytest.mark.parametrize("name,build,shape", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_builders_check_and_match_onnxruntime(name, build, shape):
    model = build()
    onnx.checker.check_model(model, full_check=True)
    (y,) = assert_matches_ort(model, _x(model), RTOL, ATOL)
    assert y.shape == shape and np.isfinite(y).all() and np.abs(y).max() > 0


def test_block_forms_follow_the_paper():
    assert _ops(pf.bottleneck(64, 16, 8, 1, "max")) == [
        "Conv", "BatchNormalization", "Relu", "MaxPool", "Conv", "BatchNormalization", "Add", "Relu"]
    hybrid = _ops(pf.bottleneck(64, 16, 8, 2, "hybrid"))
    assert hybrid[3:7] == ["AveragePool", "Conv", "BatchNormalization", "Relu"] and "MaxPool" not in hybrid
    assert "Conv" not in _ops(pf.inverted_residual(16, 8, spatial="max"))[3:6]
    assert sum(op == "Conv" for op in _ops(pf.inverted_residual(16, 8, spatial="max"))) == 2
    with pytest.raises(ValueError, match="spatial"):
        pf.bottleneck(64, 16, 8, spatial="dw")


def test_replace_depthwise_gives_the_parameter_free_block():
    dw = pf.inverted_residual(16, 14, spatial="dw")
    with pytest.warns(UserWarning, match="retraining"):
        result = pf.replace_depthwise(dw, "max")
    assert _ops(result.model) == _ops(pf.inverted_residual(16, 14, spatial="max"))
    assert len(result.replaced) == 1 and not result.skipped
    hidden = 16 * 6
    assert result.params_before - result.params_after == hidden * 9
    assert result.macs_before - result.macs_after == hidden * 9 * 14 * 14
    text = str(result)
    assert "replaced by MaxPool: 1" in text and "retrain" in text and "-" in text.splitlines()[1]
    names = {t.name for t in result.model.graph.initializer}
    assert not any(n.startswith(result.replaced[0] + ".") for n in names)  # the depthwise weights are gone
    assert_matches_ort(result.model, _x(result.model, 1), RTOL, ATOL)


def _conv_model(cin: int, cout: int, group: int, k: int, opset: int = 17, bias: bool = False, **attrs):
    w = np.random.default_rng(0).standard_normal((cout, cin // group, k, k)).astype(np.float32)
    inits = {"w": w} | ({"b": np.ones(cout, np.float32)} if bias else {})
    node = helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["y"], "dw", group=group,
                            kernel_shape=[k, k], **attrs)
    return make_model([node], {"x": ((1, cin, 11, 12), np.float32)}, ["y"], inits, opset=opset)


@pytest.mark.parametrize("op,attrs", [
    ("max", dict(pads=[1, 1, 1, 1])),
    ("max", dict(strides=[2, 2], pads=[0, 1, 1, 0], dilations=[2, 1])),
    ("avg", dict(strides=[2, 1], pads=[1, 1, 1, 1])),
    ("avg", dict(auto_pad="SAME_UPPER")),
    ("max", dict(auto_pad="SAME_LOWER", strides=[2, 2])),
])
def test_rewritten_pool_keeps_the_window_geometry(op, attrs):
    conv = _conv_model(8, 8, 8, 3, bias=True, **attrs)
    with pytest.warns(UserWarning):
        result = pf.replace_depthwise(conv, op)
    (node,) = result.model.graph.node
    assert node.op_type == pf.POOL_OPS[op] and list(node.input) == ["x"] and list(node.output) == ["y"]
    got = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert got["kernel_shape"] == [3, 3]
    for key, value in attrs.items():
        assert got[key] == (value.encode() if isinstance(value, str) else value)
    assert not result.model.graph.initializer and result.params_after == 0
    x = _x(result.model, 2)
    y = assert_matches_ort(result.model, x, 1e-6, 1e-6)[0]
    assert y.shape == ort_session(conv).run(None, x)[0].shape


@pytest.mark.parametrize("cin,cout,group,k,opset,attrs,reason", [
    (8, 16, 8, 3, 17, {}, "channel multiplier 2"),
    (8, 8, 4, 3, 17, {}, "grouped with 2 input channels"),
    (8, 8, 8, 1, 17, {}, "1x1 kernel"),
    (8, 8, 8, 3, 17, dict(dilations=[2, 2]), "opset 19"),
    (8, 8, 8, 2, 17, dict(pads=[1, 0, 2, 1]), "not below the kernel"),  # onnxruntime and edgekit refuse such a pool
])
def test_replace_depthwise_keeps_what_it_cannot_replace(cin, cout, group, k, opset, attrs, reason):
    model = _conv_model(cin, cout, group, k, opset, **attrs)
    result = pf.replace_depthwise(model, "avg")
    assert not result.replaced and reason in result.skipped["dw"]
    assert _ops(result.model) == ["Conv"] and result.params_after == result.params_before
    dense = pf.replace_depthwise(_conv_model(8, 8, 1, 3), "max")
    assert not dense.replaced and not dense.skipped
    assert "retrain" not in str(result) and "accuracy: unchanged (nothing was replaced" in str(result)


def test_replace_depthwise_keeps_a_dilated_conv_before_maxpool_takes_dilations():
    """MaxPool takes dilations from opset 10: at opset 9 the dilated depthwise conv stays, with its reason."""
    result = pf.replace_depthwise(_conv_model(8, 8, 8, 3, opset=9, dilations=[2, 2], pads=[2, 2, 2, 2]), "max")
    assert not result.replaced and "opset 10" in result.skipped["dw"]
    with pytest.warns(UserWarning):
        assert pf.replace_depthwise(_conv_model(8, 8, 8, 3, opset=10, dilations=[2, 2]), "max").replaced == ["dw"]


def test_replace_depthwise_dilated_avg_from_opset_19():
    with pytest.warns(UserWarning):
        result = pf.replace_depthwise(_conv_model(8, 8, 8, 3, opset=19, dilations=[2, 2], pads=[2, 2, 2, 2]), "avg")
    assert result.replaced == ["dw"]
    assert_matches_ort(result.model, _x(result.model), 1e-6, 1e-6)


def test_replace_depthwise_rejects_unknown_op():
    with pytest.raises(ValueError, match="'max' or 'avg'"):
        pf.replace_depthwise(_conv_model(8, 8, 8, 3), "min")


def test_convert_paramfree_writes_and_reports(tmp_path, capsys):
    src, out = tmp_path / "mb.onnx", tmp_path / "mb_max.onnx"
    onnx.save(pf.mobilenet("dw", size=32), src)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the retraining warning is a line of the CLI's output, not a Python warning
        assert pf.convert_paramfree(str(src), str(out), "max") == 0
    captured = capsys.readouterr()
    text = captured.out
    assert captured.err.startswith("warning: 9 depthwise convolution(s) became MaxPool") and "retraining" in captured.err
    assert "depthwise convolutions replaced by MaxPool: 9" in text and "parameters:" in text and "MACs:" in text
    model = onnx.load(out)
    onnx.checker.check_model(model)
    assert "MaxPool" in _ops(model) and sum(op == "Conv" for op in _ops(model)) == 18  # stem, 9 projections, 8 expansions


def test_convert_paramfree_failures_return_1(tmp_path, capsys):
    plain = tmp_path / "plain.onnx"
    onnx.save(pf.bottleneck(16, 4, 8, spatial="conv"), plain)
    assert pf.convert_paramfree(str(plain), str(tmp_path / "o.onnx"), "max") == 1
    assert pf.convert_paramfree(str(tmp_path / "missing.onnx"), str(tmp_path / "o.onnx"), "avg") == 1
    err = capsys.readouterr().err
    assert "no depthwise convolution" in err and "does not exist" in err
    assert not (tmp_path / "o.onnx").exists()
