"""`python -m benchmarks.lmu`: LMUFormer per-step latency, edgekit vs onnxruntime; LMU parallel vs recurrent.

Table 1: an LMUFormer (one k=3 embedding conv from 40 features, the LMU block, the 4x channel
mixer, 35 classes; random weights) run one frame per step. Columns: edgekit.StreamingSession.push
of one frame on the fused LMUFormer step kernel with 1 and 2 threads; the same push with the
generic edgekit plan of the step model (edgekit.runtimes.stream.StreamingSession); the ONNX step
model on onnxruntime with 1 and 2 intra-op threads, states fed back; the ratios fused / onnxruntime
at equal thread counts, with medians and (2 threads) with the 10th percentiles of both engines timed
on their own; and 'weights us', one pass of a vectorised Numba sum over the step's
weight bytes: a dense float32 engine reads all of them once per step, so when they exceed the
core's L2 cache this is its single-thread floor (the fused kernel skips the rows of zero inputs:
ReLU zeros and silent neurons).

Two threads: onnxruntime's intra-op threads spin between runs by default; Numba's OpenMP threads
sleep, and waking one can take up to a scheduler tick (10 ms on the project's VM) per parallel
region. So this benchmark sets OMP_WAIT_POLICY=active (unless set) before the first parallel
region, making Numba's second thread spin as onnxruntime's does: set it the same way to use
StreamingSession(threads=2) on a dedicated core.

Table 2: the ai.edgekit LMU op (order 256, theta 128, batch 1) on sequences of T frames, mode
'recurrent' (one step per frame) vs 'parallel' (causal convolution with the impulse response,
direct or FFT, picked by cost), and the largest difference between them relative to max |m|.
Calls of the engines are interleaved in rounds; medians.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

import numpy as np
import onnx
from numba import njit
from onnx import TensorProto, helper, numpy_helper

from edgekit import InferenceSession, StreamingSession
from edgekit.benchmarks.timing import interleaved, machine, ort_session
from edgekit.cli_args import positive_int
from edgekit.converters.lmu import LMUFormerConfig, build_lmuformer, to_step, weight_shapes
from edgekit.runtimes.ops.lmu import choose_form
from edgekit.runtimes.stream import StreamingSession as PlanSession

BLOCKS = ((256, 256), (128, 128))
LENGTHS = (128, 1024, 10000)


def lmuformer(dim: int, order: int, spiking: bool, c_in: int = 40, classes: int = 35, seed: int = 0) -> onnx.ModelProto:
    """An LMUFormer with random weights and BN statistics (theta 128, one embedding conv)."""
    rng = np.random.default_rng(seed)
    config = LMUFormerConfig(c_in=c_in, dim=dim, order=order, theta=128.0, n_embed=1, classes=classes,
                             spiking=spiking)
    weights = {}
    for name, shape in weight_shapes(config).items():
        if name.endswith(("running_var", "bn.weight", "bn1.weight", "bn2.weight")):
            weights[name] = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("bias", "running_mean")):
            weights[name] = rng.normal(0.5 if spiking else 0.0, 0.3, shape)
        else:
            weights[name] = 2 * rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
    return build_lmuformer({k: v.astype(np.float32) for k, v in weights.items()}, config)


@njit(cache=True, fastmath=True)
def _read_all(w: np.ndarray) -> float:
    """Sum of a float32 array (vectorised: fastmath lets it reassociate): one streaming pass over its bytes."""
    acc = np.float32(0.0)
    for i in range(w.size):
        acc += w[i]
    return acc


def step_latency(model: onnx.ModelProto, repeat: int, seed: int = 0) -> dict[str, float]:
    """Median seconds per frame of each column of table 1, the 10th percentiles of the two-thread
    engines (timed again, on their own), and the step's weight megabytes."""
    sm = to_step(model)
    step = sm.step_model
    frames = np.random.default_rng(seed).standard_normal((32, 1, sm.channels, 1)).astype(np.float32)
    streams = {"fused1": StreamingSession(sm), "fused2": StreamingSession(sm, threads=2),
               "plan": PlanSession(sm)}
    weights = np.concatenate([numpy_helper.to_array(t).reshape(-1) for t in step.graph.initializer
                              if t.data_type == TensorProto.FLOAT]).astype(np.float32)
    names = [s.input for s in sm.states]
    k = [0]

    def frame() -> np.ndarray:
        k[0] = (k[0] + 1) % len(frames)
        return frames[k[0]]

    def ort_stepper(threads: int) -> Callable[[], None]:
        ort, states = ort_session(step, threads), sm.initial_states(1)

        def run() -> None:
            res = ort.run(None, {sm.input: frame(), **states})
            states.update(zip(names, res[1:]))
        return run

    fns = {name: (lambda s=s: s.push(frame())) for name, s in streams.items()}
    fns.update({"ort1": ort_stepper(1), "ort2": ort_stepper(2), "weights": lambda: _read_all(weights)})
    fast = interleaved({k: fns[k] for k in ("fused2", "ort2")}, repeat, warmup=3, q=10)
    return {**interleaved(fns, repeat, warmup=3), "fused2_p10": fast["fused2"], "ort2_p10": fast["ort2"],
            "mb": weights.nbytes / 1e6}


def lmu_model(order: int, steps: int, mode: str, theta: float = 128.0) -> onnx.ModelProto:
    """One ai.edgekit LMU node: U (1, 1, steps) -> M (1, order, steps)."""
    node = helper.make_node("LMU", ["u"], ["m"], "lmu", domain="ai.edgekit", order=order, theta=theta, mode=mode)
    graph = helper.make_graph([node], "lmu", [helper.make_tensor_value_info("u", TensorProto.FLOAT, [1, 1, steps])],
                              [helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, order, steps])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.edgekit", 1)])
    model.ir_version = 8
    return model


def lmu_forms(order: int, steps: int, repeat: int, seed: int = 0) -> dict[str, float | str]:
    """Median seconds per call of the recurrent and parallel LMU, their difference and auto's pick."""
    u = {"u": np.random.default_rng(seed).standard_normal((1, 1, steps)).astype(np.float32)}
    sessions = {mode: InferenceSession(lmu_model(order, steps, mode)) for mode in ("recurrent", "parallel")}
    out = {mode: s.run(None, u)[0] for mode, s in sessions.items()}
    diff = float(np.abs(out["recurrent"] - out["parallel"]).max() / np.abs(out["recurrent"]).max())
    times = interleaved({mode: (lambda s=s: s.run(None, u)) for mode, s in sessions.items()}, repeat, warmup=3)
    return {**times, "diff": diff, "parallel_form": choose_form("parallel", order, steps, False),
            "auto": choose_form("auto", order, steps, False)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lmu", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=positive_int, default=300, help="timed steps per engine and row (default 300)")
    parser.add_argument("--quick", action="store_true", help="60 timed steps per row, fewer LMU calls")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "active")  # read when Numba starts its OpenMP threads (see above)
    repeat = 60 if args.quick else args.repeat
    print(f"machine: {machine()}")
    print(f"LMUFormer step (c_in 40, 1 embedding conv, mixer 4x, 35 classes), batch 1, StreamingSession.push "
          f"per frame vs onnxruntime on the step model; median of {repeat} steps, microseconds\n")
    print(f"{'dim':>4s} {'order':>5s} {'spiking':>7s} {'weights MB':>10s} {'fused 1t':>8s} {'fused 2t':>8s} "
          f"{'plan':>6s} {'ort 1t':>6s} {'ort 2t':>6s} {'1t ratio':>8s} {'2t ratio':>8s} {'2t p10 ratio':>12s} "
          f"{'weights us':>10s}")
    for spiking in (False, True):
        for dim, order in BLOCKS:
            m = {k: v * 1e6 for k, v in step_latency(lmuformer(dim, order, spiking), repeat).items()}
            print(f"{dim:4d} {order:5d} {'yes' if spiking else 'no':>7s} {m['mb'] / 1e6:10.2f} {m['fused1']:8.1f} "
                  f"{m['fused2']:8.1f} {m['plan']:6.1f} {m['ort1']:6.1f} {m['ort2']:6.1f} "
                  f"{m['fused1'] / m['ort1']:8.2f} {m['fused2'] / m['ort2']:8.2f} "
                  f"{m['fused2_p10'] / m['ort2_p10']:12.2f} {m['weights']:10.1f}", flush=True)
    print("\nLMU op, order 256, theta 128, batch 1: recurrent vs parallel form on edgekit")
    print(f"{'T':>6s} {'recurrent ms':>12s} {'parallel ms':>11s} {'form':>6s} {'speedup':>8s} "
          f"{'Mframes/s par':>13s} {'max rel diff':>12s} {'auto picks':>10s}")
    for steps in LENGTHS:
        r = lmu_forms(256, steps, max(3, (repeat // 10) if steps > 1024 else repeat // 3))
        print(f"{steps:6d} {r['recurrent'] * 1e3:12.3f} {r['parallel'] * 1e3:11.3f} {r['parallel_form']:>6s} "
              f"{r['recurrent'] / r['parallel']:7.2f}x {steps / r['parallel'] / 1e6:13.2f} {r['diff']:12.1e} "
              f"{r['auto']:>10s}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
