"""runtimes/profile.py: every node gets a time >= 0, every kernel a measured one (> 0); BN and activation fused into a Conv cost 0 and
name the Conv, as does a residual Add fused into it in either input order (also Add(x, Conv(x)));
views, folded constants and dead nodes cost 0; tensor shapes and byte sizes equal
onnx shape inference's; the raw input size; codec round trips (zstd exact, fp16 within 1e-3
relative, int8 within half a quantisation step); JSON round trip; the fastest-of-repeats statistic; the model is compiled once."""
import numpy as np
import onnx
import pytest
from onnx import helper

from edgekit.errors import InputError
from edgekit.runtimes import session as session_module
from edgekit.runtimes.profile import HAVE_ZSTD, Profile, codec_round_trip, profile_model
from oracle import make_model


def small_cnn() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("BatchNormalization", ["c", "g", "beta", "m", "v"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Reshape", ["p", "shape"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "wf"], ["y"], transB=1, name="fc"),
        helper.make_node("Sigmoid", ["p"], ["unused"], name="dead"),
        helper.make_node("Mul", ["shape", "ones"], ["shape2"], name="const_add"),
        helper.make_node("Reshape", ["y", "shape2"], ["y2"], name="reshape2"),
    ]
    inits = {"w": f(4, 3, 3, 3), "b": f(4), "g": f(4), "beta": f(4), "m": f(4), "v": np.abs(f(4)) + 0.5,
             "shape": np.array([1, -1], np.int64), "ones": np.ones(2, np.int64), "wf": f(5, 4 * 8 * 8)}
    return make_model(nodes, {"x": ((1, 3, 16, 16), np.float32)}, ["y2"], inits)


@pytest.fixture(scope="module")
def profiled():
    return profile_model(small_cnn(), repeat=5)


def test_every_node_has_a_time_and_fusions_are_attributed(profiled):
    nodes = {n.name: n for n in profiled.nodes}
    assert [n.name for n in profiled.nodes] == [n.name for n in small_cnn().graph.node]
    assert all(n.time_s >= 0 for n in profiled.nodes)
    assert nodes["conv"].kind == "kernel"
    assert all(n.time_s > 0 for n in profiled.nodes if n.kind == "kernel")  # measured (no bound on the size)
    for name in ("bn", "relu"):
        assert (nodes[name].kind, nodes[name].fused_into, nodes[name].time_s) == ("fused", "conv", 0.0)
    assert nodes["pool"].kind == nodes["fc"].kind == "kernel"
    assert (nodes["reshape"].kind, nodes["reshape"].time_s) == ("free", 0.0)
    assert (nodes["const_add"].kind, nodes["const_add"].time_s) == ("free", 0.0)
    assert (nodes["dead"].kind, nodes["dead"].time_s) == ("dead", 0.0)
    assert profiled.plan_s > 0 and profiled.overhead_s >= 0


@pytest.mark.parametrize("order", [("r", "c"), ("c", "r"), ("x", "c")])
def test_a_fused_residual_add_names_the_conv(order):
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Add", list(order), ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="relu")]
    inputs = {"x": ((1, 4, 6, 6), np.float32), "r": ((1, 4, 6, 6), np.float32)}
    model = make_model(nodes, inputs, ["y"], {"w": rng.standard_normal((4, 4, 3, 3)).astype(np.float32)})
    nodes = {n.name: n for n in profile_model(model, repeat=2).nodes}
    assert nodes["conv"].kind == "kernel"
    for name in ("add", "relu"):
        assert (nodes[name].kind, nodes[name].fused_into) == ("fused", "conv")


def test_a_keras_conv1d_whose_squeeze_moved_is_attributed_and_sized():
    """tf2onnx's Conv1D (Conv2D -> Squeeze -> bias Add -> activation) is rewritten to one Conv and a Squeeze
    after it, under new tensor names: each original node still gets its step, and every original tensor
    a size (partition reads them)."""
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "models", "keras", "imu_opset17.onnx")
    model = onnx.load(path)
    profiled = profile_model(model, repeat=1)
    kinds = {n.name: n for n in profiled.nodes}
    conv = "functional_10_1/conv1d_5_1/convolution"
    assert kinds[conv].kind == "kernel"
    assert (kinds["functional_10_1/conv1d_5_1/BiasAdd"].kind, kinds["functional_10_1/conv1d_5_1/BiasAdd"].fused_into) \
        == ("fused", conv)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    sized = {v.name: v for v in inferred.value_info}
    for name in (f"{conv}:0", f"{conv}/Squeeze:0"):
        shape = [d.dim_value for d in sized[name].type.tensor_type.shape.dim]
        assert profiled.tensors[name].bytes == 4 * int(np.prod([d or 1 for d in shape])), name


def test_tensor_sizes_match_shape_inference(profiled):
    inferred = onnx.shape_inference.infer_shapes(small_cnn()).graph
    types = {v.name: v.type.tensor_type for v in list(inferred.value_info) + list(inferred.output) + list(inferred.input)}
    for name in ["x", "c", "bn", "r", "p", "flat", "y"]:
        t = profiled.tensors[name]
        shape = [d.dim_value for d in types[name].shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(types[name].elem_type)
        assert t.shape == shape, name
        assert (t.dtype, t.bytes) == (dtype.name, int(np.prod(shape)) * dtype.itemsize), name
        assert set(t.codec_s) == {"fp16", "int8"} | ({"zstd"} if HAVE_ZSTD else set())
        assert (t.zstd_bytes > 0) if HAVE_ZSTD else t.zstd_bytes is None
        assert all(s >= 0 for pair in t.codec_s.values() for s in pair)
    assert (profiled.tensors["y2"].shape, profiled.tensors["y2"].bytes) == ([1, 5], 20)  # a computed shape
    assert profiled.input_bytes == 3 * 16 * 16 * 4
    assert "unused" not in profiled.tensors


def test_codec_round_trips():
    a = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    if HAVE_ZSTD:
        np.testing.assert_array_equal(codec_round_trip(a, "zstd"), a)
    np.testing.assert_array_equal(codec_round_trip(a, "none"), a)
    np.testing.assert_allclose(codec_round_trip(a, "fp16"), a, rtol=1e-3, atol=1e-4)
    step = np.abs(a).max() / 127
    assert np.abs(codec_round_trip(a, "int8") - a).max() <= step / 2 + 1e-7
    ints = np.arange(10, dtype=np.int64)
    np.testing.assert_array_equal(codec_round_trip(ints, "int8"), ints)


def test_json_round_trip(profiled, tmp_path):
    path = tmp_path / "p.json"
    profiled.save(path)
    assert Profile.load(path) == profiled
    assert Profile.from_dict(profiled.to_dict()).to_dict() == profiled.to_dict()
    bad = profiled.to_dict() | {"format": "other"}
    with pytest.raises(InputError):
        Profile.from_dict(bad)
    with pytest.raises(InputError):
        Profile.load(tmp_path / "missing.json")


def test_fastest_of_the_repeats():
    fastest = profile_model(small_cnn(), repeat=5, statistic="min")
    assert fastest.statistic == "min" and fastest.plan_s > 0
    assert [n.kind for n in fastest.nodes] == [n.kind for n in profile_model(small_cnn(), repeat=3).nodes]
    with pytest.raises(InputError):
        profile_model(small_cnn(), statistic="mean")


def test_the_model_is_compiled_once(monkeypatch):
    """Profiling times the plan the InferenceSession runs: one specialisation, not one per use."""
    calls = []
    specialize = session_module.specialize
    monkeypatch.setattr(session_module, "specialize", lambda *a, **k: calls.append(1) or specialize(*a, **k))
    profile_model(small_cnn(), repeat=2)
    assert len(calls) == 1
