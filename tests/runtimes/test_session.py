"""InferenceSession behaviour beyond single kernels: model sources, onnxruntime's constructor and run
arguments, onnxruntime-compatible metadata, dynamic dims, dead-node removal, buffer reuse and result ownership (float32, rtol/atol 1e-6).

Zero-copy binding (Plan.run): on random graphs of elementwise ops and views (inputs read by several
nodes, Reshape/Flatten/Identity views of inputs and of outputs, inputs that are outputs) results equal
the copy-in/execute/copy-out path bit for bit, for contiguous, non-contiguous, read-only and
misaligned feeds; the caller's arrays are never written; outputs are fresh arrays sharing memory
with no input and no other output; a step that writes into its input turns zero-copy off.
"""
import dataclasses
import threading

import numpy as np
import onnx
import pytest
from onnx import helper

import edgekit
from edgekit.model import model_metadata
from oracle import assert_matches_ort, make_model, ort_session

RTOL = ATOL = 1e-6


def chain_model(length: int = 6, dims=("N", 8)) -> onnx.ModelProto:
    ops = ["Relu", "Sigmoid", "Tanh"]
    names = ["x"] + [f"t{i}" for i in range(length - 1)] + ["y"]
    nodes = [helper.make_node(ops[i % 3], [names[i]], [names[i + 1]]) for i in range(length)]
    return make_model(nodes, {"x": (dims, np.float32)}, ["y"])


@pytest.mark.parametrize("source", ["proto", "bytes", "path"])
def test_loads_from_proto_bytes_and_path(source, tmp_path):
    model = chain_model()
    if source == "bytes":
        arg = model.SerializeToString()
    elif source == "path":
        arg = tmp_path / "m.onnx"
        onnx.save(model, arg)
        arg = str(arg)
    else:
        arg = model
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    assert_matches_ort(model, {"x": x}, RTOL, ATOL, session=edgekit.InferenceSession(arg))


def test_local_functions_run_inlined():
    """A model whose nodes call local functions (as torch.onnx.export(export_modules_as_functions=True)
    writes them, one nested in another) runs their bodies, as onnxruntime does."""
    inner = helper.make_function("local", "ScaledRelu", ["a", "s"], ["b"],
                                 [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Mul", ["r", "s"], ["b"])],
                                 [helper.make_opsetid("", 17)])
    outer = helper.make_function("local", "Block", ["a", "s"], ["b"],
                                 [helper.make_node("ScaledRelu", ["a", "s"], ["h"], domain="local"),
                                  helper.make_node("Tanh", ["h"], ["b"])],
                                 [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    graph = helper.make_graph([helper.make_node("Block", ["x", "s"], ["y"], domain="local")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 5])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 5])],
                              [helper.make_tensor("s", onnx.TensorProto.FLOAT, [5], np.linspace(-1, 2, 5))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                              functions=[inner, outer])
    assert_matches_ort(model, {"x": np.random.default_rng(8).standard_normal((2, 5)).astype(np.float32)}, 1e-6, 1e-7)


def test_onnxruntime_call_forms_are_accepted(tmp_path):
    """The drop-in swap: onnxruntime's constructor arguments (SessionOptions positionally, providers,
    provider_options) and run_options are accepted, and the results still match onnxruntime's."""
    import onnxruntime as ort

    model = chain_model()
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    sess = edgekit.InferenceSession(path, ort.SessionOptions(), providers=["CPUExecutionProvider"],
                                    provider_options=[{}])
    assert sess.get_providers() and isinstance(sess.get_providers()[0], str)
    x = np.random.default_rng(9).standard_normal((3, 8)).astype(np.float32)
    (got,) = sess.run(None, {"x": x}, run_options=ort.RunOptions())
    np.testing.assert_allclose(got, ort_session(model).run(None, {"x": x})[0], rtol=RTOL, atol=ATOL)


def test_metadata_matches_onnxruntime():
    model = chain_model()
    ours, theirs = edgekit.InferenceSession(model), ort_session(model)
    for a, b in zip(ours.get_inputs() + ours.get_outputs(), theirs.get_inputs() + theirs.get_outputs()):
        assert (a.name, a.shape, a.type) == (b.name, b.shape, b.type)


@pytest.mark.parametrize("props", [{}, {"producer_name": "p", "domain": "d", "model_version": 7, "doc_string": "m"}])
def test_model_metadata_has_onnxruntime_fields(props):
    """The session's get_modelmeta() (edgekit.model.model_metadata) gives what onnxruntime's gives."""
    model = chain_model()
    for key, value in props.items():
        setattr(model, key, value)
    model.graph.doc_string = "g" if props else ""
    helper.set_model_props(model, {"k": "v"} if props else {})
    ours, theirs = edgekit.InferenceSession(model).get_modelmeta(), ort_session(model).get_modelmeta()
    assert ours == model_metadata(model)
    for field in dataclasses.fields(ours):
        assert getattr(ours, field.name) == getattr(theirs, field.name), field.name


def test_dynamic_batch_and_length_get_their_own_plans():
    model = chain_model(dims=("N", "L"))
    sess = edgekit.InferenceSession(model)
    rng = np.random.default_rng(1)
    for shape in [(1, 5), (3, 5), (3, 40), (1, 5)]:
        x = rng.standard_normal(shape).astype(np.float32)
        assert_matches_ort(model, {"x": x}, RTOL, ATOL, session=sess)
    assert len(sess._plans) == 3


def test_results_are_not_overwritten_by_the_next_run():
    sess = edgekit.InferenceSession(chain_model())
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 8)).astype(np.float32)
    first = sess.run(None, {"x": a})[0]
    kept = first.copy()
    sess.run(None, {"x": -a})
    np.testing.assert_array_equal(first, kept)


def test_buffers_are_reused_along_a_chain():
    sess = edgekit.InferenceSession(chain_model(length=10, dims=(4, 1000)))
    plan = next(iter(sess._plans.values()))
    one_tensor = 4 * 1000 * 4
    assert len(plan.steps) == 10
    # input + output are pinned; the 9 intermediates need only two arenas between them
    assert plan.arena_bytes <= 4 * one_tensor + 4 * 64


def test_inputs_and_outputs_own_their_memory():
    """No intermediate tensor reuses an input's or an output's buffer, so they hold their values for
    the whole run (a streaming step keeps its history in an output buffer between runs)."""
    sess = edgekit.InferenceSession(chain_model(length=10, dims=(4, 1000)))
    plan = next(iter(sess._plans.values()))
    owned = [*plan.input_buffers.values(), *plan.outputs.values()]
    others = [t for name, t in plan.tensors.items() if name not in plan.input_buffers and name not in plan.outputs]
    assert len(others) == 9
    assert not any(np.shares_memory(a, t) for a in owned for t in others)


def test_dead_nodes_are_removed_even_if_unsupported():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("NoSuchOp", ["x"], ["z"], domain="custom")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)])
    sess = edgekit.InferenceSession(model)
    assert len(next(iter(sess._plans.values())).steps) == 1


def test_output_names_select_and_order_outputs():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["x"], ["b"])]
    model = make_model(nodes, {"x": ((3,), np.float32)}, ["a", "b"])
    x = np.array([-1, 0, 2], np.float32)
    b, a = edgekit.InferenceSession(model).run(["b", "a"], {"x": x})
    np.testing.assert_allclose(a, np.maximum(x, 0))
    np.testing.assert_allclose(b, 1 / (1 + np.exp(-x)), rtol=RTOL)
    everything = [o.shape for o in ort_session(model).run([], {"x": x})]  # an empty list: all, as onnxruntime
    assert [o.shape for o in edgekit.InferenceSession(model).run([], {"x": x})] == everything == [(3,), (3,)]


def random_model(seed: int) -> tuple[onnx.ModelProto, list[str]]:
    """Elementwise ops and views over inputs x, y of shape (2, 3, 4); a few tensors are outputs."""
    rng = np.random.default_rng(seed)
    shapes = {"x": (2, 3, 4), "y": (2, 3, 4)}
    nodes, inits = [], {"shape46": np.array([4, 6], np.int64), "shape234": np.array([2, 3, 4], np.int64)}
    for i in range(int(rng.integers(3, 9))):
        name, pick = f"t{i}", str(rng.choice(sorted(shapes)))
        kind, shape = int(rng.integers(5)), shapes[pick]
        if kind == 0:
            nodes.append(helper.make_node(str(rng.choice(["Relu", "Tanh", "Neg", "Abs"])), [pick], [name]))
        elif kind == 1:
            other = str(rng.choice([n for n, s in shapes.items() if s == shape]))
            nodes.append(helper.make_node(str(rng.choice(["Add", "Mul", "Sub"])), [pick, other], [name]))
        elif kind == 2:
            shape = (4, 6) if shape != (4, 6) else (2, 3, 4)
            nodes.append(helper.make_node("Reshape", [pick, "shape46" if shape == (4, 6) else "shape234"], [name]))
        elif kind == 3:
            nodes.append(helper.make_node("Identity", [pick], [name]))
        else:
            shape = (1, 24)
            nodes.append(helper.make_node("Flatten", [pick], [name], axis=0))
        shapes[name] = shape
    outputs = {str(n) for n in rng.choice(sorted(shapes)[:-2], size=int(rng.integers(1, 4)))}
    if seed % 3 == 0:  # an input that is also an output
        nodes.append(helper.make_node("Identity", ["x"], ["x_out"]))
        outputs.add("x_out")
    inputs = {"x": ((2, 3, 4), np.float32), "y": ((2, 3, 4), np.float32)}
    return make_model(nodes, inputs, sorted(outputs), inits), sorted(outputs)


def copy_path(sess: edgekit.InferenceSession, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The plan run as the StreamingSession drives it: copy in, execute, copy out."""
    plan = sess.plan(tuple(feeds[n].shape for n in sess._input_names))
    for name, buf in plan.input_buffers.items():
        buf[...] = feeds[name]
    plan.execute()
    return [a.copy() for a in plan.output_list]


def feeds_in_layouts(rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """Contiguous, strided, Fortran-order, read-only and misaligned feeds of shape (2, 3, 4)."""
    def fresh():
        return rng.standard_normal((2, 3, 4)).astype(np.float32)
    readonly = fresh()
    readonly.flags.writeable = False
    misaligned = np.ndarray((2, 3, 4), np.float32, buffer=np.empty(24 * 4 + 1, np.uint8).data, offset=1)
    misaligned[...] = fresh()
    strided = rng.standard_normal((2, 3, 8)).astype(np.float32)[:, :, ::2]
    return [{"x": fresh(), "y": fresh()}, {"x": strided, "y": fresh()}, {"x": np.asfortranarray(fresh()), "y": readonly},
            {"x": misaligned, "y": fresh()}, {"x": fresh(), "y": fresh()}]


@pytest.mark.parametrize("seed", range(24))
def test_zero_copy_equals_copy_path_on_random_graphs(seed):
    model, outputs = random_model(seed)
    sess, ref = edgekit.InferenceSession(model), edgekit.InferenceSession(model)
    rng = np.random.default_rng(seed)
    for feeds in feeds_in_layouts(rng):
        kept = {k: v.copy() for k, v in feeds.items()}
        got = sess.run(None, feeds)
        for k in feeds:
            np.testing.assert_array_equal(feeds[k], kept[k])  # the caller's arrays are never written
        expected = copy_path(ref, kept)
        for g, e in zip(got, expected):
            assert g.shape == e.shape
            assert g.tobytes() == e.tobytes()
        for i, g in enumerate(got):
            assert g.flags.writeable and g.flags.owndata or g.base is not None
            assert not any(np.shares_memory(g, a) for a in feeds.values())
            assert not any(np.shares_memory(g, h) for h in got[i + 1:])
        snapshot = [g.copy() for g in got]
        for a in feeds.values():
            if a.flags.writeable:
                a[...] = 7.0  # mutating the caller's arrays after run leaves the results alone
        for g, s in zip(got, snapshot):
            np.testing.assert_array_equal(g, s)
    assert_matches_ort(model, {k: v for k, v in feeds_in_layouts(rng)[0].items()}, RTOL, ATOL, session=sess)


def test_contiguous_inputs_are_read_in_place_and_others_copied():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Add", ["x", "a"], ["b"]),
             helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Tanh", ["f"], ["y"]),
             helper.make_node("Identity", ["x"], ["same"])]
    model = make_model(nodes, {"x": ((2, 8), np.float32)}, ["b", "y", "same"])
    sess = edgekit.InferenceSession(model)
    plan = next(iter(sess._plans.values()))
    rng = np.random.default_rng(3)
    sess.run(None, {"x": rng.standard_normal((2, 8)).astype(np.float32)})  # first run checks the steps
    buf = plan.input_buffers["x"]
    buf.fill(np.nan)
    x = rng.standard_normal((2, 8)).astype(np.float32)
    b, y, same = sess.run(None, {"x": x})
    assert np.isnan(buf).all()  # read from the caller's array, not the buffer
    np.testing.assert_array_equal(b, x + np.maximum(x, 0))
    np.testing.assert_allclose(y, np.tanh(x).reshape(2, 8), rtol=RTOL)
    np.testing.assert_array_equal(same, x)
    assert not np.shares_memory(same, x)
    strided = rng.standard_normal((2, 16)).astype(np.float32)[:, ::2]
    b, _, _ = sess.run(None, {"x": strided})
    np.testing.assert_array_equal(buf, strided)  # copied in
    np.testing.assert_array_equal(b, strided + np.maximum(strided, 0))


def test_a_step_that_writes_its_input_turns_zero_copy_off():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": ((4,), np.float32)}, ["y"])
    sess = edgekit.InferenceSession(model)
    plan = next(iter(sess._plans.values()))
    (fn, args), = plan.steps
    slot = next(i for i, a in enumerate(args) if a is plan.input_buffers["x"])

    def scribbles(*a):
        fn(*a)
        a[slot][...] = -1.0

    key, = sess._plans
    sess._plans[key] = dataclasses.replace(plan, steps=[(scribbles, args)])  # a plan built with that step
    for _ in range(3):
        x = np.array([1, -2, 3, -4], np.float32)
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], [1, 0, 3, 0])
        np.testing.assert_array_equal(x, [1, -2, 3, -4])


def test_threads_share_a_session():
    sess = edgekit.InferenceSession(chain_model(dims=(4, 64)))
    ref = edgekit.InferenceSession(chain_model(dims=(4, 64)))
    xs = [np.random.default_rng(i).standard_normal((4, 64)).astype(np.float32) for i in range(8)]
    expected = [copy_path(ref, {"x": x})[0] for x in xs]
    results: dict[int, list] = {}

    def work(k: int) -> None:
        results[k] = [sess.run(None, {"x": xs[(k + j) % 8]})[0] for j in range(50)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, got in results.items():
        for j, g in enumerate(got):
            np.testing.assert_array_equal(g, expected[(k + j) % 8])
