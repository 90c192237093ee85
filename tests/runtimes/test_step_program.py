"""StepProgram (runtimes/step_program.py): a plan's steps moved into one arena and run as compiled
programs must give exactly the plan's results (bit for bit: the same kernels run on the same
values) and onnxruntime's within float32 tolerance, on random 1-D CNNs whose steps mix kernels the
interpreter knows (Concat, single-row Conv, 1-D window pools, GlobalAveragePool, Gemm) with ones
it does not (Add, Sigmoid), and whose buffers are shared by liveness."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgekit.runtimes.session import InferenceSession
from edgekit.runtimes.step_program import StepProgram
from oracle import make_model, ort_session

RTOL, ATOL = 1e-5, 1e-5


def _random_cnn(rng: np.random.Generator, residual: bool) -> tuple:
    """Concat(x, x) -> 2 x [Conv k, MaxPool or AveragePool] (-> Add/Sigmoid when ``residual``) ->
    GlobalAveragePool -> Flatten -> Gemm, on (1, c, width)."""
    c, width = int(rng.integers(1, 5)), int(rng.choice([32, 48, 64]))
    inits, nodes, prev, cin = {}, [helper.make_node("Concat", ["x", "x"], ["cat"], axis=2)], "cat", c
    for i in range(2):
        cout, k = int(rng.integers(4, 40)), int(rng.integers(1, 5))
        inits[f"w{i}"] = (rng.standard_normal((cout, cin, k)) / np.sqrt(cin * k)).astype(np.float32)
        inits[f"b{i}"] = rng.standard_normal(cout).astype(np.float32)
        pool = str(rng.choice(["MaxPool", "AveragePool"]))
        nodes += [helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"conv{i}"], kernel_shape=[k]),
                  helper.make_node(pool, [f"conv{i}"], [f"pool{i}"], kernel_shape=[2], strides=[2])]
        prev, cin = f"pool{i}", cout
        if residual:
            nodes += [helper.make_node("Sigmoid", [prev], [f"sig{i}"]),
                      helper.make_node("Add", [prev, f"sig{i}"], [f"res{i}"])]
            prev = f"res{i}"
    classes = int(rng.choice([3, 20]))  # fewer outputs than a vector: dot products; else the tiled Gemm
    inits["fc"] = rng.standard_normal((classes, cin)).astype(np.float32)
    inits["fcb"] = rng.standard_normal(classes).astype(np.float32)
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["gap"]),
              helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc", "fcb"], ["y"], transB=1)]
    model = make_model(nodes, {"x": ((1, c, width), np.float32)}, ["y", prev], inits)
    return model, (1, c, width)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_program_matches_plan_and_onnxruntime(seed: int, residual: bool) -> None:
    rng = np.random.default_rng(seed)
    model, shape = _random_cnn(rng, residual)
    plan = InferenceSession(model).plan((shape,))
    program = StepProgram(plan.steps, also=[*plan.input_buffers.values(), *plan.outputs.values()])
    x_plan, x_prog = plan.input_buffers["x"], program.view(plan.input_buffers["x"])
    outs = [program.view(plan.outputs[n]) for n in ("y", model.graph.output[1].name)]
    if residual:
        assert program.calls > program.programs >= 1  # Sigmoid and Add run between programs
    else:
        assert program.calls == program.programs == 1  # every step in one compiled call
    for _ in range(3):  # repeated runs: nothing stale is left in the arena between runs
        x = rng.standard_normal(shape).astype(np.float32)
        x_plan[...] = x
        x_prog[...] = x
        plan.execute()
        program.run()
        expected = ort_session(model).run(None, {"x": x})
        for got, want, oracle in zip(outs, (plan.outputs["y"], plan.outputs[model.graph.output[1].name]), expected):
            np.testing.assert_array_equal(got, want)
            np.testing.assert_allclose(got, oracle, rtol=RTOL, atol=ATOL)


def test_views_keep_shared_memory_and_alignment() -> None:
    base = np.arange(32, dtype=np.float32)
    a, b = base[:16], base[8:24].reshape(4, 4)
    program = StepProgram([], also=[a, b])
    va, vb = program.view(a), program.view(b)
    np.testing.assert_array_equal(va, a)
    np.testing.assert_array_equal(vb, b)
    va[8] = -1.0  # a and b overlap: a write through one view is seen through the other
    assert vb[0, 0] == -1.0 and base[8] == 8.0
    assert va.ctypes.data % 64 == a.ctypes.data % 64
