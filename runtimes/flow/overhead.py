"""Measure the hop overhead of the cost model: the time one V2 request adds on this machine beyond
the remote compute (encode, HTTP over loopback, decode, answer), with no link emulation, as a fixed
part plus a part per byte sent (``measure_affine_hop_overhead``, a line through three sizes).

A tier server in a thread of this process serves a one-node model (GlobalAveragePool of a float32
tensor of the given size, so the request carries that many bytes and the answer almost none); a
FlowSession sends it requests and the overhead is the first quartile of round trip minus the
tier's compute (the low quartile, like the undisturbed profile: another process busy on the
machine must not inflate it).
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper

from .chain import Chain
from .plan import FORMAT, load_plan
from .server import TierServer
from .session import FlowSession

WARMUP = 3


def _probe_plan(plan_dir: str, nbytes: int) -> None:
    """A cloud-only plan of one GlobalAveragePool node reading ``nbytes`` of float32."""
    n = max(1, nbytes // 4)
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["x"], ["y"])], "hop_probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgekit.flow")
    model.ir_version = 8
    onnx.save(model, os.path.join(plan_dir, "cloud.onnx"))
    plan = {"format": FORMAT, "model": "hop-probe", "inputs": ["x"], "outputs": ["y"],
            "tiers": [{"name": "device", "speed": 1.0}, {"name": "cloud", "speed": 1.0}], "links": [],
            "parts": [{"tier": "cloud", "file": "cloud.onnx", "inputs": ["x"], "outputs": ["y"]}],
            "transfers": [{"from": "device", "to": "cloud", "compression": "none",
                           "tensors": [{"name": "x", "shape": [1, 1, n], "dtype": "float32", "bytes": 4 * n}]}]}
    with open(os.path.join(plan_dir, "plan.json"), "w", encoding="utf-8") as f:
        json.dump(plan, f)


def measure_hop_overhead(nbytes: int = 4096, requests: int = 30) -> float:
    """Seconds one request of ``nbytes`` spends on the way beyond the remote tier's compute (see
    the module docstring): the ``hop_overhead_s`` to give the partitioner for tiers like this one."""
    with tempfile.TemporaryDirectory(prefix="edgekit-hop-") as d:
        _probe_plan(d, nbytes)
        plan = load_plan(d)
        server = TierServer(Chain(plan, "cloud"))
        server.start()
        try:
            session = FlowSession(plan, {"cloud": server.url})
            feed = {"x": np.random.default_rng(0).standard_normal((1, 1, max(1, nbytes // 4))).astype(np.float32)}
            extra = []
            for r in range(requests + WARMUP):
                session.run(None, feed)
                compute = sum(e["compute_s"] for e in session.last_trace if e["event"] == "compute")
                if r >= WARMUP:
                    extra.append(session.last_total_s - compute)
            return float(np.percentile(extra, 25))
        finally:
            server.shutdown()
            server.server_close()


def measure_affine_hop_overhead(max_bytes: int = 1_000_000, requests: int = 30) -> tuple[float, float]:
    """(fixed seconds, seconds per byte) of one request: the least-squares line through the overheads
    measured (first quartiles, see measure_hop_overhead) at 1 kB, max_bytes / 4 and max_bytes, each
    part clipped at 0: the ``hop_overhead_s`` and ``hop_overhead_per_byte_s`` of the partitioner."""
    sizes = np.array([1000, max(2000, max_bytes // 4), max(4000, max_bytes)], dtype=float)
    times = np.array([measure_hop_overhead(int(n), requests) for n in sizes])
    slope = max(0.0, float(np.polyfit(sizes, times, 1)[0]))  # the intercept below is the fit's unless clipped
    return max(0.0, float(np.mean(times - slope * sizes))), slope
