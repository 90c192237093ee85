"""onnx's own backend node tests (built in memory by the onnx wheel) on edgekit.

Runs every node test whose ops are all registered in edgekit (the selection grows with the
registry), with the reference outputs and tolerances of each onnx test case; the cases edgekit
fails on purpose are excluded from ONE list with reasons, ``edgekit.backend.EXPECTED_FAILURES``.
Also checks the adapter itself: run_node, dict/list inputs, CPU-only device support.
"""
import re

import numpy as np
import onnx.backend.test
from onnx import helper

from edgekit.backend import (EXPECTED_FAILURES, EdgekitBackend, expected_failure, near_miss, node_test_cases,
                             node_test_names, run_node_test, selection_pattern)

_cases = node_test_cases()
_selected = selection_pattern(node_test_names(_cases))  # cases generated once, quietly
_suite = onnx.backend.test.BackendTest(EdgekitBackend, __name__).include(_selected)
for _pattern in EXPECTED_FAILURES:
    _suite.exclude(_pattern)
OnnxBackendNodeModelTest = _suite.test_cases["OnnxBackendNodeModelTest"]
# Keep only the selected cases (the ~1,800 others would only be reported as skipped).
for _name in [n for n in vars(OnnxBackendNodeModelTest) if n.startswith("test_") and not re.search(_selected, n)]:
    delattr(OnnxBackendNodeModelTest, _name)


def test_run_node_infers_output_types():
    x = np.array([[-1.5, 0.0, 2.0]], np.float32)
    (y,) = EdgekitBackend.run_node(helper.make_node("Relu", ["x"], ["y"]), [x])
    np.testing.assert_array_equal(y, np.maximum(x, 0))


def test_rep_accepts_list_dict_and_single_array():
    node = helper.make_node("LeakyRelu", ["x"], ["y"], alpha=0.5)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [2, 2])],
                              [helper.make_tensor_value_info("y", 1, [2, 2])])
    rep = EdgekitBackend.prepare(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.random.default_rng(0).standard_normal((2, 2)).astype(np.float32)
    want = np.where(x < 0, 0.5 * x, x)
    for feed in ([x], {"x": x}, x):
        out = rep.run(feed)
        np.testing.assert_allclose(out["y"], want, rtol=1e-6)
        np.testing.assert_allclose(out[0], want, rtol=1e-6)


def test_cpu_only():
    assert EdgekitBackend.supports_device("CPU")
    assert not EdgekitBackend.supports_device("CUDA")


def test_every_expected_failure_pattern_is_a_valid_regex_with_a_reason():
    for pattern, reason in EXPECTED_FAILURES.items():
        assert re.compile(pattern) and reason.strip()


def test_expected_failures_are_refusals_not_wrong_outputs():
    """Every selected case listed in EXPECTED_FAILURES fails by raising edgekit's UnsupportedOpError
    (a form edgekit declines), never by returning wrong numbers a broad pattern would hide."""
    names = set(node_test_names(_cases))
    outcomes = [run_node_test(c) for c in _cases if c.name in names and expected_failure(c.name)]
    assert outcomes
    imprecise = [o for o in outcomes if near_miss(o.name)]
    assert imprecise and all(o.status == "fail" and o.message.startswith("Not equal to tolerance") for o in imprecise)
    wrong = [(o.name, o.status, o.message) for o in outcomes
             if not o.message.startswith("UnsupportedOpError") and o not in imprecise]
    assert not wrong, wrong[:5]
