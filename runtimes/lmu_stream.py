"""The fused LMUFormer step engine: StreamingSession runs an LMUFormer step model with one kernel
call per frame (``runtimes/kernels/lmu_step.py``) instead of the plan's one call per node.

It reads the step model itself (a saved one too): ``edgekit.converters.lmu.to_step`` writes the
step's structure under the metadata key STEP_KEY (sizes, LIF parameters, delay, and which
initializer is which folded weight; docs/lmu.md). The float32 weights are those the plan uses,
packed in panels into one array; every state is a view of one state array that the kernel updates
in place, so an engine output state is its input array and nothing is copied back per frame.
"""
from __future__ import annotations

import json
import numba
import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.errors import ModelError

from .kernels import lmu_step as k
from .stream import EngineFactory, _Engine

STEP_KEY = "edgekit.lmuformer.step"  # written by edgekit.converters.lmu.to_step
ALIGN = 16  # floats: every weight and state starts on a 64-byte line


def is_lmuformer_step(step: onnx.ModelProto | None) -> bool:
    """Whether ``step`` is an LMUFormer step model the fused engine can run."""
    return step is not None and any(p.key == STEP_KEY for p in step.metadata_props)


def engine_factory(threads: int = 1) -> EngineFactory:
    """A StreamingSession engine factory for LMUFormer step models, the products split over
    ``threads`` of Numba's threads (1: the single-threaded kernel)."""
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or \
            not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"threads must be an integer from 1 to {numba.config.NUMBA_NUM_THREADS}, got {threads!r}")
    return lambda step, shapes: lmu_step_engine(step, shapes, int(threads))


class _Arena:
    """Named float32 blocks laid out in one array, each aligned to ALIGN floats."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.size = 0

    def add(self, block: np.ndarray) -> int:
        offset = self.size
        self.blocks.append(np.asarray(block, np.float32).reshape(-1))
        self.size += -(-self.blocks[-1].size // ALIGN) * ALIGN
        return offset

    def array(self) -> np.ndarray:
        out = np.zeros(max(self.size, 1), np.float32)
        offset = 0
        for b in self.blocks:
            out[offset:offset + b.size] = b
            offset += -(-b.size // ALIGN) * ALIGN
        return out


def _panels(matrix: np.ndarray) -> np.ndarray:
    """A (k, n) matrix as its column panels of k_step.PANEL columns, each row-major, one after another."""
    return np.concatenate([np.ascontiguousarray(matrix[:, j:j + k.PANEL]).reshape(-1)
                           for j in range(0, matrix.shape[1], k.PANEL)])


def lmu_step_engine(step: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], threads: int = 1) -> _Engine:
    """The fused engine of LMUFormer step model ``step`` for these input shapes (batch from the input)."""
    s = json.loads({p.key: p.value for p in step.metadata_props}[STEP_KEY])
    inits = {t.name: t for t in step.graph.initializer}
    try:
        w = {role: numpy_helper.to_array(inits[name]).astype(np.float32) for role, name in s["weights"].items()}
    except KeyError as exc:
        raise ModelError(f"LMUFormer step model lacks initializer {exc} named in its {STEP_KEY!r} metadata") from None
    c_in, dim, order, classes, n_embed = (int(s[key]) for key in ("c_in", "dim", "order", "classes", "n_embed"))
    batch = shapes["x"][0]
    weights, states = _Arena(), _Arena()
    plan = np.zeros(k.P_EMBED + n_embed * k.E_SIZE, np.int64)
    plan[[k.P_BATCH, k.P_CIN, k.P_DIM, k.P_ORDER, k.P_CLASSES, k.P_NEMBED, k.P_SPIKING, k.P_SOFT, k.P_DELAY,
          k.P_SKIP, k.P_THREADS]] = (batch, c_in, dim, order, classes, n_embed, bool(s["spiking"]),
                                     s["reset"] == "soft", int(s["delay"]),
                                     all(np.isfinite(a).all() for a in w.values()), threads)
    views: dict[str, tuple[int, tuple[int, ...]]] = {}

    def state(name: str, shape: tuple[int, ...]) -> int:
        views[name] = (states.add(np.zeros(shape)), shape)
        return views[name][0]

    width = c_in
    for i in range(n_embed):
        e = k.P_EMBED + i * k.E_SIZE
        plan[e + k.E_W] = weights.add(_panels(w[f"embed.{i}.kernel"]))
        plan[e + k.E_B] = weights.add(w[f"embed.{i}.shift"])
        plan[e + k.E_TAIL] = state(f"embed.{i}.tail", (batch, 2 * width))
        plan[e + k.E_V] = state(f"embed.{i}.v", (batch, dim)) if s["spiking"] else 0
        plan[e + k.E_WIDTH] = width
        width = dim
    for index, role, packed in ((k.W_UW, "lmu.u", True), (k.W_UB, "lmu.u.bias", False), (k.W_BBAR, "lmu.bbar", False),
                                (k.W_ABAR, "lmu.abar_t", True), (k.W_HM, "lmu.h.m", True),
                                (k.W_HB, "lmu.h.bias", False), (k.W_HZ, "lmu.h.z", True), (k.W_F1, "mixer.fc1", True),
                                (k.W_F1B, "mixer.fc1.shift", False), (k.W_F2, "mixer.fc2", True),
                                (k.W_HEAD, "head", True), (k.W_HEADB, "head.bias", False)):
        plan[index] = weights.add(_panels(w[role]) if packed else w[role])
    plan[k.S_M] = state("lmu.m", (batch, order))
    if s["spiking"]:
        plan[k.S_LMUV] = state("lmu.v", (batch, dim))
        plan[k.S_MIXV] = state("mixer.v", (batch, 4 * dim))
    plan[k.S_SUM] = state("head.sum", (batch, classes))
    plan[k.S_FRAMES] = state("frames", (1,))

    state_array, w_array = states.array(), weights.array()
    inputs = {name: state_array[o:o + int(np.prod(shape))].reshape(shape) for name, (o, shape) in views.items()}
    missing = {i.name for i in step.graph.input} - set(inputs) - {"x"}
    if missing or set(inputs) - {i.name for i in step.graph.input}:
        raise ModelError(f"LMUFormer step model states do not match its {STEP_KEY!r} metadata: {sorted(missing)}")
    inputs["x"] = x = np.zeros((batch, c_in, 1), np.float32)
    outputs = {f"{name}.next": a for name, a in inputs.items() if name != "x"}
    outputs["logits"] = logits = np.zeros((batch, classes, 1), np.float32)
    wide = 3 * max(c_in, dim)
    scratch = np.zeros(wide + 13 * dim + k.LANES + 2 * order + classes, np.float32)
    rows = np.zeros(max(wide, 4 * dim, order), np.int64)
    params = np.array([s["tau"], s["threshold"], 1.0, 0.0, 1.0 - int(s["delay"])], np.float32)
    step_kernel = k.step
    xf, lf = x.reshape(-1), logits.reshape(-1)

    def run() -> None:
        step_kernel(xf, state_array, w_array, scratch, rows, lf, plan, params)

    return _Engine(inputs, outputs, run)
