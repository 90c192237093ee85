"""Test helpers: build small ONNX models in code and compare edgekit against onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

import edgekit


def make_model(nodes: list[onnx.NodeProto], inputs: dict[str, tuple], outputs: list[str] | dict[str, int | tuple],
               initializers: dict[str, np.ndarray] | None = None, opset: int = 17,
               domains: tuple[str, ...] = ()) -> onnx.ModelProto:
    """A checked model. ``inputs`` maps name -> (shape, numpy dtype); ``outputs`` are names (float32)
    or name -> TensorProto type or (shape, numpy dtype), a shape being needed where inference cannot
    give one (custom ops); ``domains`` are custom op domains imported at version 1."""
    ins = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), list(shape))
           for n, (shape, dt) in inputs.items()]
    if not isinstance(outputs, dict):
        outputs = {n: onnx.TensorProto.FLOAT for n in outputs}
    outs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(t[1])), list(t[0]))
            if isinstance(t, tuple) else helper.make_tensor_value_info(n, t, None) for n, t in outputs.items()]
    inits = [numpy_helper.from_array(np.asarray(v), name=k) for k, v in (initializers or {}).items()]
    graph = helper.make_graph(nodes, "test", ins, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]
                              + [helper.make_opsetid(d, 1) for d in domains])
    model.ir_version = min(model.ir_version, 10)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    known = {v.name: v for v in list(inferred.value_info) + list(inferred.output)}
    for out in model.graph.output:
        if out.name in known and known[out.name].type.tensor_type.HasField("shape"):
            out.CopyFrom(known[out.name])
    onnx.checker.check_model(model)
    return model


def ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """onnxruntime on one thread, with graph optimisations off so it evaluates the graph as written."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def assert_matches_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float, atol: float,
                       session: "edgekit.InferenceSession | None" = None) -> list[np.ndarray]:
    """Run both engines on ``feeds`` and assert every output agrees within (rtol, atol)."""
    expected = ort_session(model).run(None, feeds)
    got = (session or edgekit.InferenceSession(model)).run(None, feeds)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape, (g.shape, e.shape)
        assert g.dtype == e.dtype, (g.dtype, e.dtype)
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)
    return got
