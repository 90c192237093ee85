"""Latency of edgekit and onnxruntime on the same model and inputs, measured in the same run.

Calls of the two engines are interleaved in rounds, so load from other processes on a shared
machine hits both alike. Sessions run single-threaded unless told otherwise; onnxruntime keeps
its default graph optimisations.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx

ROUND = 10


def ort_session(model: onnx.ModelProto, threads: int = 1):
    """onnxruntime with ``threads`` intra-op threads and default graph optimisations."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_session_or_refusal(model: onnx.ModelProto, threads: int = 1) -> tuple[object | None, str | None]:
    """(``ort_session(model, threads)``, None), or (None, why onnxruntime cannot load ``model``: the first
    line of its error): a model ``edgekit convert`` wrote with edgekit's own ops (domain ai.edgekit) runs
    on edgekit only."""
    try:
        return ort_session(model, threads), None
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        return None, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def edgekit_session(model: onnx.ModelProto, threads: int = 1):
    """edgekit; its kernels run on one thread except binary layers, which get ``threads``."""
    import edgekit
    from edgekit.runtimes.kernels import binary

    binary.set_threads(threads)
    return edgekit.InferenceSession(model)


@dataclass
class Comparison:
    """Per-call latencies in seconds of both engines on one model, and how far their outputs differ."""

    name: str
    edgekit: np.ndarray
    ort: np.ndarray
    max_abs_diff: float

    @staticmethod
    def _us(t: np.ndarray, q: float) -> float:
        return float(np.percentile(t, q)) * 1e6

    @property
    def edgekit_median_us(self) -> float:
        return self._us(self.edgekit, 50)

    @property
    def ort_median_us(self) -> float:
        return self._us(self.ort, 50)

    @property
    def ratio(self) -> float:
        """edgekit median / onnxruntime median (below 1: edgekit is faster)."""
        return self.edgekit_median_us / self.ort_median_us

    def p90_us(self, engine: str) -> float:
        return self._us(getattr(self, engine), 90)


def _calls(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def interleaved_times(fns: dict[str, Callable[[], object]], repeat: int, warmup: int = 0) -> dict[str, np.ndarray]:
    """Seconds of each of ``repeat`` timed calls of every zero-argument function, after ``warmup``
    untimed calls each; the timed calls go in rounds of ROUND per function, so load from other
    processes hits all of them alike."""
    for fn in fns.values():
        _calls(fn, warmup)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for done in range(0, repeat, ROUND):
        for k, fn in fns.items():
            times[k] += _calls(fn, min(ROUND, repeat - done))
    return {k: np.array(t) for k, t in times.items()}


def interleaved(fns: dict[str, Callable[[], object]], repeat: int, warmup: int = 0, q: float = 50) -> dict[str, float]:
    """Seconds per call of every function, percentile ``q`` (the median by default) of interleaved_times."""
    return {k: float(np.percentile(t, q)) for k, t in interleaved_times(fns, repeat, warmup).items()}


def median_seconds(model: onnx.ModelProto, feeds: dict[str, np.ndarray], repeat: int = 50) -> float:
    """Median seconds of one ``edgekit.InferenceSession`` run of ``model`` on ``feeds``, after one
    untimed call: the ``run`` that converters.mst.time_layers takes to time a layer alone."""
    import edgekit

    sess = edgekit.InferenceSession(model)
    return interleaved({"edgekit": lambda: sess.run(None, feeds)}, repeat, warmup=1)["edgekit"]


def compare(name: str, model: onnx.ModelProto, feeds: dict[str, np.ndarray], repeat: int = 200,
            threads: int = 1, warmup: int = 5, ort: object | None = None) -> Comparison:
    """Time ``repeat`` calls of each engine on ``feeds`` after ``warmup`` untimed calls each (onnxruntime:
    ``ort`` when given, else a session of ``threads`` intra-op threads)."""
    ek, ort = edgekit_session(model, threads), ort or ort_session(model, threads)
    run = {"edgekit": lambda: ek.run(None, feeds), "ort": lambda: ort.run(None, feeds)}
    diff = max((float(np.max(np.abs(a - b), initial=0)) for a, b in zip(run["edgekit"](), run["ort"]())), default=0.0)
    t = interleaved_times(run, repeat, warmup)
    return Comparison(name, t["edgekit"], t["ort"], diff)


def machine() -> str:
    """CPU model, core count and the versions that matter for the numbers."""
    import numba
    import onnxruntime

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, numpy {np.__version__}, "
            f"numba {numba.__version__}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}")
