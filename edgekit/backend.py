"""edgekit as an ``onnx.backend.base`` backend, and a runner for onnx's own backend node tests.

``EdgekitBackend.prepare(model)`` returns a ``BackendRep`` around an ``edgekit.InferenceSession``,
so the node-test suite that ships in the onnx wheel (built in memory, ~1,900 cases) runs against
edgekit. ``node_test_names()`` selects the cases whose every op is in edgekit's registry, so the
selection grows with the registry; ``EXPECTED_FAILURES`` is the one list of cases edgekit fails on
purpose, each with its reason. ``python -m edgekit.backend`` (or ``edgekit backend-test``) runs the
selection and prints pass/fail counts, failures by op and the expected-failure list.
"""
from __future__ import annotations

import re
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

from .errors import EdgekitError, ModelError, UnsupportedOpError

# Test-name regex (matched with re.search against names such as "test_relu_cpu") -> why edgekit
# fails that case on purpose. Genuine kernel bugs do not belong here.
EXPECTED_FAILURES: dict[str, str] = {
    r"^test_.*(_double|_fp64|_float64)": "float64 inputs: edgekit computes float32",
    r"^test_.*(_float16|_fp16|_bfloat16|_bf16)": "float16/bfloat16 inputs: edgekit computes float32",
    r"^test_cast(like)?_.*(FLOAT8|FLOAT4E2M1|INT4|INT2|BFLOAT16)":
        "Cast to/from float8, float4, int4, int2, bfloat16: no NumPy dtype, edgekit has no kernels for them",
    r"^test_reduce_log_sum_exp_.*_expanded": "this expansion computes in float64: edgekit computes float32",
    r"^test_(reshape_|expand_dim_|constantofshape_|(constant|edge|reflect|wrap)_pad|range_|slice|split_variable_parts_"
    r"|split_zero_size_splits_|squeeze|unsqueeze_|tile|center_crop_pad_|reduce_(?!(max|min|prod)_default_axes))":
        "shape, axes (also of reductions), pads, starts, split, repeats or Range bounds fed as run-time inputs: "
        "plans are specialised on shapes, so these must be constants (initializers or Constant nodes)",
    r"^test_loop11_cpu$": "Loop with scan outputs and its trip count fed at run time: the scan length sets an "
                          "output shape, and plans are specialised on shapes",
    r"^test_affine_grid_(2d|3d)(_align_corners)?_expanded": "the output size is fed at run time (the shape of "
                                                           "Expand/ConstantOfShape): plans are specialised on shapes",
    r"^test_clip(_example|_inbounds|_outbounds|_splitbounds|_min_greater_than_max|_default_min|_default_max)?_cpu$":
        "Clip with min/max fed at run time: edgekit needs constant bounds (they become kernel parameters)",
    r"^test_clip_default_int8_(min|max|inbounds)_cpu$": "Clip on int8: activations compute float32",
    r"^test_(?!pow_types_float32_|bitshift_|(add|sub|mul|div|mod|mod_mixed_sign|max|min|equal|greater|greater_equal|less"
    r"|less_equal|quantizelinear|dequantizelinear)_u?int(8|16)(_expanded)?_cpu$|maxpool_2d_u?int8_cpu$)"
    r"\w+_(u?int8|u?int16|uint32|uint64|string)(_broadcast)?(_expanded)?_cpu$":
        "int8/int16/unsigned/string tensors in other ops: edgekit computes float32, integers of 8 to 64 bits in "
        "arithmetic, comparisons, Max/Min, Cast and quantization, 8-bit ones in MaxPool, int32/int64 in shape ops",
    r"^test_(de)?quantizelinear_(e4m3fn|e5m2|float4e2m1|u?int4|u?int2)(_zero_point)?_cpu$":
        "QuantizeLinear/DequantizeLinear on float8, float4, int4, int2: edgekit quantizes to 8- and 16-bit integers",
    r"^test_(de)?quantizelinear_blocked": "blocked quantization (block_size): edgekit quantizes per tensor or per axis",
    r"^test_(qlinearconv|qlinearmatmul|convinteger|matmulinteger)_":
        "QLinearConv, QLinearMatMul, ConvInteger and MatMulInteger with weights, scales and zero points fed at run "
        "time: edgekit runs them as float32 Conv and MatMul on weights prepared at load time, so those must be "
        "constants (initializers or Constant nodes)",
    r"^test_pow_types_int(32|64)_": "Pow of an integer base by a run-time exponent: edgekit raises integers only to a constant 1 to 4",
    r"^test_bitshift_(left|right)_int(8|16)_":
        "BitShift on int8/int16: edgekit shifts uint8-uint64, and int32/int64 from opset 28",
    r"^test_(max|average)pool_3d_": "3D pooling (rank-5 inputs): edgekit pools 1D and 2D signals",
    r"^test_maxpool_with_argmax_": "MaxPool's Indices output: edgekit is an inference runtime and does not produce it",
    r"^test_training_dropout": "training-mode Dropout (random masks): edgekit is inference only",
    r"^test_batchnorm_.*training_mode": "training-mode BatchNormalization: edgekit is inference only",
    r"^test_identity_(sequence|opt)_": "sequence and optional values: edgekit runs tensors only",
    r"^test_pow_types_float32_int(32|64)_cpu$":
        "Pow of float32 by a run-time integer exponent: edgekit needs the exponent constant or float32",
    r"^test_top_k(_same_values(_largest|_2d)?|_smallest|_negative_axis)?_cpu$":
        "TopK with K fed at run time: K sets the output shape and plans are specialised on shapes, so K must be a "
        "constant (initializer or Constant node)",
    r"^test_attention_(24_qk_matmul_output_mode3_softmax_precision|local_window_gqa_rank4_mask)_expanded":
        "these attention expansions compute in float16/float64 or take lengths at run time: edgekit computes "
        "float32 on shapes known at load time",
    r"^test_(blackman|hamming|hann)window(_symmetric)?_expanded": "window expansions build their length from a "
        "run-time size (Range): plans are specialised on shapes",
    r"^test_((blackman|hamming|hann)window(_symmetric)?|melweightmatrix|stft(_with_window)?|dft(_axis|_inverse|_rfft|_irfft)?)_cpu$":
        "window sizes, MelWeightMatrix's sizes, STFT's frame step and DFT's axis fed at run time: they set output "
        "shapes, and plans are specialised on shapes, so they must be constants",
    r"^test_dft_inverse_opset19_cpu$": "reference outputs off by float32 rounding: imaginary parts of 1.9e-7 where the "
        "exact value is 0, above the case's atol of 1e-7 (edgekit accumulates in float64 and gives ~1e-15, "
        "checked against numpy's float64 FFT in tests/runtimes/test_spectral.py; onnxruntime is off by 1.9e-5)",
    r"^test_onehot_(without_axis|with_axis|negative_indices|out_of_range_indices|with_negative_axis)_cpu$":
        "OneHot with depth fed at run time: depth sets the output shape and plans are specialised on shapes, so it "
        "must be a constant",
    r"^test_convtranspose_3d": "3-D ConvTranspose: edgekit implements 1-D and 2-D",
    r"^test_resize_.*cubic": "Resize mode cubic: edgekit implements nearest and linear",
    r"^test_resize_.*antialias": "Resize antialias: not implemented",
    r"^test_resize_tf_crop_and_resize": "Resize coordinate_transformation_mode tf_crop_and_resize: not implemented",
    r"^test_resize_.*_not_(larger|smaller)": "Resize keep_aspect_ratio_policy not_larger/not_smaller: edgekit implements stretch",
    r"^test_(resize_(up|down)sample_(scales|sizes)_(nearest|linear)|upsample_nearest)":
        "Resize/Upsample scales or sizes fed as run-time inputs: plans are specialised on shapes, so they must be constants",
}

NEAR_MISSES = (r"^test_dft_inverse_opset19_cpu$",)
"""The EXPECTED_FAILURES whose outcome is a numeric near miss of imprecise reference data rather than a
refusal (every other expected failure must be an UnsupportedOpError)."""

DETAILS_PER_OP = 8
PROGRESS_EVERY = 100


class EdgekitRep(BackendRep):
    """A prepared model: ``run(inputs)`` takes a list (graph input order), a dict or one array."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self._input_names = [i.name for i in session.get_inputs()]
        self._output_names = [o.name for o in session.get_outputs()]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        if isinstance(inputs, dict):
            feed = dict(inputs)
        else:
            arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            feed = dict(zip(self._input_names, arrays))
        outputs = self.session.run(None, feed)
        return namedtupledict("Outputs", self._output_names)(*outputs)


class EdgekitBackend(Backend):
    """The ``onnx.backend.base.Backend`` of edgekit (CPU only)."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device) and not (model_ops(model) - registered_ops())

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> EdgekitRep:
        if not cls.supports_device(device):
            raise EdgekitError(f"edgekit runs on CPU only, not on {device!r}")
        from . import InferenceSession

        return EdgekitRep(InferenceSession(model))

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
                 **kwargs: Any) -> tuple[Any, ...]:
        """Run one node on ``inputs`` (a list in node-input order, or a dict by name)."""
        super().run_node(node, inputs, device=device, outputs_info=outputs_info, **kwargs)
        names = [n for n in node.input if n]
        arrays = [np.asarray(inputs[n]) for n in names] if isinstance(inputs, dict) else [np.asarray(a) for a in inputs]
        graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                        for n, a in zip(names, arrays)]
        opset = kwargs.get("opset_version", onnx.defs.onnx_opset_version())
        outputs = _output_infos(node, graph_inputs, opset, outputs_info)
        model = helper.make_model(helper.make_graph([node], f"{node.op_type}_node", graph_inputs, outputs),
                                  opset_imports=[helper.make_opsetid(node.domain, opset)])
        return cls.prepare(model, device).run(dict(zip(names, arrays)))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


def _output_infos(node: onnx.NodeProto, graph_inputs: list, opset: int,
                  outputs_info: Sequence | None) -> list[onnx.ValueInfoProto]:
    """Typed graph outputs for a one-node model: from ``outputs_info`` or from shape inference."""
    if outputs_info:
        return [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), shape)
                for n, (dt, shape) in zip(node.output, outputs_info)]
    probe = helper.make_model(helper.make_graph([node], "probe", graph_inputs, []),
                              opset_imports=[helper.make_opsetid(node.domain, opset)])
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(probe).graph.value_info}
    missing = [n for n in node.output if n and n not in inferred]
    if missing:
        raise ModelError(f"cannot infer the type of output(s) {missing} of {node.op_type}: pass outputs_info")
    return [inferred[n] for n in node.output if n]


def registered_ops() -> set[tuple[str, str]]:
    """(domain, op_type) of every op in edgekit's registry, from ``supported_ops()``."""
    from .runtimes.ops import supported_ops

    return {tuple(name.split("::")) if "::" in name else ("", name) for name in supported_ops()}


def model_ops(model: onnx.ModelProto) -> set[tuple[str, str]]:
    """(domain, op_type) of every node of the model, subgraphs included."""
    found: set[tuple[str, str]] = set()

    def walk(graph: onnx.GraphProto) -> None:
        for n in graph.node:
            found.add(("" if n.domain == "ai.onnx" else n.domain, n.op_type))
            for a in n.attribute:
                for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                    walk(g)

    walk(model.graph)
    return found


def node_test_cases() -> list:
    """onnx's backend node test cases (TestCase objects with model, data_sets, rtol, atol)."""
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators warn about their own overflow tests
        return load_model_tests(kind="node")


def node_test_names(cases: list | None = None) -> list[str]:
    """Names of the node tests whose every op is registered in edgekit."""
    ops = registered_ops()
    return sorted(c.name for c in (cases or node_test_cases()) if not model_ops(c.model) - ops)


def selection_pattern(names: Sequence[str]) -> str:
    """One regex for ``BackendTest.include`` matching exactly these tests on CPU."""
    return r"^(?:" + "|".join(re.escape(n) for n in names) + r")_cpu$"


def expected_failure(name: str) -> str | None:
    """The reason a test is an expected failure, or None."""
    return next((why for pattern, why in EXPECTED_FAILURES.items() if re.search(pattern, f"{name}_cpu")), None)


def near_miss(name: str) -> bool:
    """Whether a test is one of the NEAR_MISSES."""
    return any(re.search(pattern, f"{name}_cpu") for pattern in NEAR_MISSES)


@dataclass
class Outcome:
    """The result of one node test: status is "pass", "fail" (wrong output) or "error" (raised)."""

    name: str
    ops: str
    status: str
    message: str = ""


def run_node_test(case: Any) -> Outcome:
    """Run one onnx node test case on edgekit and compare with its reference outputs."""
    from onnx.backend.test.runner import Runner

    ops = "+".join(sorted({op for _, op in model_ops(case.model)}))
    try:
        rep = EdgekitBackend.prepare(case.model)
        for inputs, expected in case.data_sets:
            got = rep.run([onnx.numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x for x in inputs])
            expected = [onnx.numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x for x in expected]
            Runner.assert_similar_outputs(expected, got, rtol=case.rtol, atol=case.atol)
    except AssertionError as exc:
        return Outcome(case.name, ops, "fail", _first_line(exc))
    except UnsupportedOpError as exc:
        why = "; ".join(f"{op}: {reason or 'not registered'}" for _, op, _, _, reason in exc.unsupported)
        return Outcome(case.name, ops, "error", f"UnsupportedOpError: {why}")
    except Exception as exc:  # any crash of a kernel or builder is a finding to report
        return Outcome(case.name, ops, "error", f"{type(exc).__name__}: {_first_line(exc)}")
    return Outcome(case.name, ops, "pass")


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if ln.startswith(("Max absolute", "Mismatched", "x:", "(shapes"))), "")
    return " | ".join(x for x in (lines[0] if lines else "", detail) if x)[:200]


def report(pattern: str | None = None, verbose: bool = False, out=None) -> int:
    """Run the selected node tests (and the expected failures, to keep that list honest); print a
    summary to ``out`` (standard output when None). Returns the number of unexpected failures."""
    out = out or sys.stdout
    t0 = time.perf_counter()
    cases = node_test_cases()
    selected = set(node_test_names(cases))
    chosen = [c for c in cases if c.name in selected and (pattern is None or re.search(pattern, c.name))]
    ok, bad, xfail = [], [], []
    print(f"running {len(chosen)} node tests (kernels compile on first use: several minutes on 2 cores with an "
          f"empty Numba cache)", file=out, flush=True)
    for i, case in enumerate(chosen, 1):
        t = time.perf_counter()
        outcome = run_node_test(case)
        expected = expected_failure(case.name) and (outcome.status != "fail" or near_miss(case.name))
        (xfail if expected else ok if outcome.status == "pass" else bad).append(outcome)  # (wrong numbers: bad)
        if verbose:
            print(f"{outcome.status:5s} {time.perf_counter() - t:6.2f} s  {case.name} {outcome.message}", file=out)
        elif i % PROGRESS_EVERY == 0:
            print(f"  {i} of {len(chosen)}: {len(bad)} unexpected failures so far  [{time.perf_counter() - t0:.0f} s]",
                  file=out, flush=True)
    print(f"onnx {onnx.__version__} backend node tests on edgekit: {len(registered_ops())} registered ops, "
          f"{len(selected)} of {len(cases)} node tests use only registered ops", file=out)
    print(f"ran {len(chosen)}: passed {len(ok)}, failed {len(bad)}, expected failures {len(xfail)}, "
          f"skipped (unregistered ops) {len(cases) - len(selected)}   [{time.perf_counter() - t0:.1f} s]", file=out)
    if bad:
        by_op = Counter(o.ops for o in bad)
        print("\nfailures by op: " + ", ".join(f"{op} {n}" for op, n in sorted(by_op.items())), file=out)
        for ops in sorted(by_op):
            shown = [o for o in bad if o.ops == ops]
            print(f"  {ops} ({len(shown)})", file=out)
            for o in shown[:None if verbose else DETAILS_PER_OP]:
                print(f"    {o.name}: {o.status}: {o.message}", file=out)
            if not verbose and len(shown) > DETAILS_PER_OP:
                print(f"    ... and {len(shown) - DETAILS_PER_OP} more (-v lists all)", file=out)
    print("\nexpected failures (EXPECTED_FAILURES in edgekit/backend.py):", file=out)
    for regex, why in EXPECTED_FAILURES.items():
        hits = [o for o in xfail if re.search(regex, f"{o.name}_cpu")]
        now_pass = [o.name for o in hits if o.status == "pass"]
        print(f"  {regex}  -- {why}: {len(hits)} tests" + (f", now passing: {now_pass}" if now_pass else ""), file=out)
    return len(bad)


def main(argv: list[str] | None = None) -> int:
    """`python -m edgekit.backend [-k REGEX] [-v]` is `edgekit backend-test`."""
    from .cli import main as cli_main

    return cli_main(["backend-test", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
