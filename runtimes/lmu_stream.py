"""The fused LMUFormer step engine: StreamingSession runs an LMUFormer step model with one kernel
call per frame (``runtimes/kernels/lmu_step.py``) instead of the plan's one call per node.

It reads the step model itself (a saved one too): ``edgekit.converters.lmu.to_step`` writes the
step's structure under the metadata key ``edgekit.metadata.STEP_KEY`` (sizes, LIF parameters, delay,
and which initializer is which folded weight; docs/lmu.md). The float32 weights are those the plan uses,
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
from edgekit.metadata import STEP_KEY

from .kernels import lmu_step as k
from .stream import EngineFactory, Engine

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
    """float32 blocks laid out one after another in one array, each aligned to ALIGN floats."""

    def __init__(self) -> None:
        self.blocks: list[tuple[int, np.ndarray]] = []
        self.size = 0

    def add(self, block: np.ndarray) -> int:
        """Append ``block`` (flattened to float32); its offset in the array."""
        offset, flat = self.size, np.asarray(block, np.float32).reshape(-1)
        self.blocks.append((offset, flat))
        self.size += -(-flat.size // ALIGN) * ALIGN
        return offset

    def array(self) -> np.ndarray:
        """Every block at its offset, zeros between."""
        out = np.zeros(max(self.size, 1), np.float32)
        for offset, flat in self.blocks:
            out[offset:offset + flat.size] = flat
        return out


def _panels(matrix: np.ndarray) -> np.ndarray:
    """A (k, n) matrix as its column panels of k_step.PANEL columns, each row-major, one after another."""
    return np.concatenate([np.ascontiguousarray(matrix[:, j:j + k.PANEL]).reshape(-1)
                           for j in range(0, matrix.shape[1], k.PANEL)])


def _weight_shapes(c_in: int, dim: int, order: int, classes: int, n_embed: int) -> dict[str, tuple[int, ...]]:
    """Role -> shape of every weight the fused step reads (docs/lmu.md); matrices (K, N) for x @ W."""
    shapes = {}
    for i in range(n_embed):
        shapes.update({f"embed.{i}.kernel": (3 * (c_in if i == 0 else dim), dim), f"embed.{i}.shift": (dim,)})
    return {**shapes, "lmu.u": (dim, 1), "lmu.u.bias": (1,), "lmu.bbar": (order,), "lmu.abar_t": (order, order),
            "lmu.h.m": (order, dim), "lmu.h.bias": (dim,), "lmu.h.z": (dim, dim), "mixer.fc1": (dim, 4 * dim),
            "mixer.fc1.shift": (4 * dim,), "mixer.fc2": (4 * dim, dim), "head": (dim, classes), "head.bias": (classes,)}


def _weights(step: onnx.ModelProto, names: dict[str, str], shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The step's float32 weights by role, checked against ``shapes`` (the kernel trusts every offset)."""
    inits = {t.name: t for t in step.graph.initializer}
    out = {}
    for role, shape in shapes.items():
        if names.get(role) not in inits:
            raise ModelError(f"LMUFormer step model: no initializer for {role!r} (its {STEP_KEY!r} metadata names "
                             f"{names.get(role)!r})")
        a = numpy_helper.to_array(inits[names[role]])
        if a.shape != shape or a.dtype != np.float32:
            raise ModelError(f"LMUFormer step model: {role!r} ({names[role]!r}) is {a.dtype} {list(a.shape)}, "
                             f"the fused step needs float32 {list(shape)}")
        out[role] = a
    return out


def _structure(step: onnx.ModelProto) -> dict:
    """The step's STEP_KEY metadata with typed values; ModelError naming what is malformed."""
    try:
        s = json.loads({p.key: p.value for p in step.metadata_props}[STEP_KEY])
        out = {key: int(s[key]) for key in ("c_in", "dim", "order", "classes", "n_embed", "delay")}
        out.update(spiking=s["spiking"], reset=str(s["reset"]), tau=float(s["tau"]),
                   threshold=float(s["threshold"]), weights=dict(s["weights"]))
        if not isinstance(out["spiking"], bool) or out["delay"] not in (0, out["n_embed"]) or \
                not all(isinstance(name, str) for name in out["weights"].values()):
            raise ValueError("spiking must be true or false, delay 0 or n_embed, and weights map roles to names")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"LMUFormer step model: malformed {STEP_KEY!r} metadata ({exc!r}); rebuild the step "
                         "model with edgekit.converters.lmu.to_step") from None
    return out


def lmu_step_engine(step: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], threads: int = 1) -> Engine:
    """The fused engine of LMUFormer step model ``step`` for these input shapes (batch from the input)."""
    s = _structure(step)
    c_in, dim, order, classes, n_embed = (s[key] for key in ("c_in", "dim", "order", "classes", "n_embed"))
    w = _weights(step, s["weights"], _weight_shapes(c_in, dim, order, classes, n_embed))
    if "x" not in shapes:
        raise ModelError("LMUFormer step model: its frame input must be called 'x'")
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
    given = {name: tuple(shape) for name, shape in shapes.items() if name != "x"}
    if given != {name: shape for name, (_, shape) in views.items()}:
        raise ModelError(f"LMUFormer step model: states {given} do not match its {STEP_KEY!r} metadata")
    inputs["x"] = x = np.zeros((batch, c_in, 1), np.float32)
    outputs = {f"{name}.next": a for name, a in inputs.items() if name != "x"}
    outputs["logits"] = logits = np.zeros((batch, classes, 1), np.float32)
    wide = 3 * max(c_in, dim)
    scratch = np.zeros(wide + 13 * dim + k.LANES + 2 * order + classes, np.float32)
    rows = np.zeros(max(wide, 4 * dim, order), np.int64)
    params = np.array([s["tau"], s["threshold"], 1.0, 0.0, 1.0 - int(s["delay"])], np.float32)
    step_kernel = k.step_threaded if threads > 1 else k.step
    xf, lf = x.reshape(-1), logits.reshape(-1)

    def run() -> None:
        step_kernel(xf, state_array, w_array, scratch, rows, lf, plan, params)

    return Engine(inputs, outputs, run)
