"""LMUFormer as ONNX: the full-sequence model on ``ai.edgekit`` LMU/LIF ops, and its step model.

LMUFormer (Liu et al., "LMUFormer: Low Complexity Yet Powerful Spiking Model With Legendre Memory
Units", ICLR 2024) is a convolutional patch embedding (k=3 Conv1d + BN + act per layer), one
Legendre Memory Unit block (Voelker et al., NeurIPS 2019) with a hidden projection, a 1x1
convolutional channel mixer with BN, and a classifier on the running mean of the tokens, so it
predicts at every frame. ``act`` is ReLU, or a LIF neuron in the spiking variant.

``build_lmuformer`` assembles the full-sequence model from weights named as in the torch
state_dict (they stay the initializer names). ``to_step`` derives the standard-op step model: one
frame in, that frame's logits out, with every piece of history an explicit state (the last two
inputs of each embedding conv, the LMU memory m, the LIF membrane potentials, the running sum of
the head's projections and a frame counter), so it runs in onnxruntime too. The LMU step is
m_t = m_(t-1) Abar^T + u_t Bbar. A lookahead embedding (symmetric padding, one frame ahead per
layer) streams with a delay of n_embed frames: layer i's output for frame t is emitted one frame
later, and until a layer has a real output its output and every later state update are masked.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from typing import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import ModelError
from edgekit.legendre import discretize
from edgekit.metadata import STEP_KEY, STREAM_KEY
from edgekit.model import ModelSource, check_model, load_model

from .stream_graph import StateSpec, finish_step_model

__all__ = ["CONFIG_KEY", "DOMAIN", "LMUFormerConfig", "StepModel", "build_lmuformer", "config_of", "load_npz",
           "to_step", "weight_shapes"]

CONFIG_KEY = "edgekit.lmuformer"
DOMAIN = "ai.edgekit"
OPSET = 17
BN_EPS = 1e-5


@dataclass(frozen=True)
class LMUFormerConfig:
    """Hyper-parameters of an LMUFormer (see docs/lmu.md); stored as JSON in the ONNX metadata."""

    c_in: int
    dim: int
    order: int
    theta: float
    n_embed: int
    classes: int
    spiking: bool
    lookahead: bool = False
    tau: float = 2.0
    threshold: float = 1.0
    reset: str = "hard"
    discretization: str = "zoh"

    def __post_init__(self) -> None:
        for name in ("c_in", "dim", "order", "n_embed", "classes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ModelError(f"LMUFormerConfig.{name} must be a positive integer, got {v!r}")
        for name in ("spiking", "lookahead"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ModelError(f"LMUFormerConfig.{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("theta", "tau", "threshold"):
            v = getattr(self, name)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ModelError(f"LMUFormerConfig.{name} must be a number, got {v!r}")
        if not (np.isfinite(self.theta) and self.theta > 0):
            raise ModelError(f"LMUFormerConfig.theta must be a positive number, got {self.theta!r}")
        if not (np.isfinite(self.tau) and self.tau > 0) or not np.isfinite(self.threshold):
            raise ModelError(f"LIF needs tau > 0 and a finite threshold, got tau={self.tau!r}, "
                             f"threshold={self.threshold!r}")
        if self.reset not in ("hard", "soft"):
            raise ModelError(f"LMUFormerConfig.reset must be 'hard' or 'soft', got {self.reset!r}")
        if self.discretization not in ("zoh", "euler"):
            raise ModelError(f"LMUFormerConfig.discretization must be 'zoh' or 'euler', got {self.discretization!r}")
        for names, kind in ((("c_in", "dim", "order", "n_embed", "classes"), int), (("spiking", "lookahead"), bool),
                            (("theta", "tau", "threshold"), float), (("reset", "discretization"), str)):
            for name in names:  # NumPy scalars as Python ones: ONNX shapes and the JSON metadata take only those
                object.__setattr__(self, name, kind(getattr(self, name)))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes | Mapping) -> "LMUFormerConfig":
        """Parse the JSON written by ``to_json`` (or a dict); ModelError on unknown or missing keys."""
        try:
            d = dict(text) if isinstance(text, Mapping) else json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"LMUFormer config is not valid JSON: {exc}") from None
        if not isinstance(d, dict):
            raise ModelError(f"LMUFormer config must be a JSON object (keys {[f.name for f in fields(cls)]}), "
                             f"got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        if set(d) - known:
            raise ModelError(f"unknown LMUFormer config keys {sorted(set(d) - known)}; expected {sorted(known)}")
        try:
            return cls(**d)
        except TypeError as exc:
            raise ModelError(f"incomplete LMUFormer config: {exc}") from None


def weight_shapes(config: LMUFormerConfig) -> dict[str, tuple[int, ...]]:
    """Every weight an LMUFormer of ``config`` needs, name -> shape (torch state_dict names)."""
    c = config
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, n: int) -> None:
        shapes.update({f"{prefix}.{k}": (n,) for k in ("weight", "bias", "running_mean", "running_var")})

    for i in range(c.n_embed):
        shapes[f"embed.{i}.conv.weight"] = (c.dim, c.c_in if i == 0 else c.dim, 3)
        bn(f"embed.{i}.bn", c.dim)
    shapes.update({"lmu.u.weight": (1, c.dim, 1), "lmu.u.bias": (1,), "lmu.h.weight": (c.dim, c.order + c.dim, 1),
                   "lmu.h.bias": (c.dim,), "mixer.fc1.weight": (4 * c.dim, c.dim, 1)})
    bn("mixer.bn1", 4 * c.dim)
    shapes["mixer.fc2.weight"] = (c.dim, 4 * c.dim, 1)
    bn("mixer.bn2", c.dim)
    shapes.update({"head.weight": (c.classes, c.dim), "head.bias": (c.classes,)})
    return shapes


def _checked_weights(weights: Mapping[str, np.ndarray], config: LMUFormerConfig) -> dict[str, np.ndarray]:
    """The weights the model uses as float32 arrays; ModelError naming a missing or misshapen one."""
    out = {}
    for name, shape in weight_shapes(config).items():
        if name not in weights:
            raise ModelError(f"weight {name!r} {list(shape)} is missing")
        a = np.asarray(weights[name])
        if a.shape != shape:
            raise ModelError(f"weight {name!r} has shape {list(a.shape)}, the config needs {list(shape)}")
        if not np.all(np.isfinite(a)):
            raise ModelError(f"weight {name!r} contains NaN or Inf")
        out[name] = np.ascontiguousarray(a, np.float32)
    return out


def load_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], LMUFormerConfig]:
    """Weights and config saved by the training script (arrays plus a 0-d JSON string ``config``)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read LMUFormer weights from {os.fspath(path)!r}: {exc}") from None
    if "config" not in arrays:
        raise ModelError(f"{os.fspath(path)!r} has no 'config' entry (the LMUFormer config as JSON)")
    config = LMUFormerConfig.from_json(str(arrays.pop("config")))
    return arrays, config


def config_of(model: ModelSource) -> LMUFormerConfig | None:
    """The LMUFormer config stored in a model built by ``build_lmuformer``; None for other models."""
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model)
    props = {p.key: p.value for p in proto.metadata_props}
    return LMUFormerConfig.from_json(props[CONFIG_KEY]) if CONFIG_KEY in props else None


class _Graph:
    """Nodes and initializers under unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op: str, inputs: list[str], name: str, domain: str = "", outputs: int = 1, **attrs) -> str:
        """Add a node; its (first) output is called ``name``."""
        outs = [name] + [f"{name}.{k}" for k in range(1, outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"{name}.{op}", domain=domain or None, **attrs))
        return name


def _lif_attrs(c: LMUFormerConfig) -> dict:
    return {"tau": float(c.tau), "threshold": float(c.threshold), "reset": c.reset, "v_reset": 0.0}


def build_lmuformer(weights: Mapping[str, np.ndarray], config: LMUFormerConfig) -> onnx.ModelProto:
    """The full-sequence LMUFormer: ``x`` (N, c_in, T) float32 -> ``logits`` (N, classes, T), one
    prediction per frame from the frames up to it (and n_embed frames after it with lookahead).

    Uses the ``ai.edgekit`` ops LMU and LIF (docs/ops.md); BatchNormalization stays a node (both
    edgekit and onnxruntime fold it into the conv). The running mean of the head is a CumSum over
    time of the head's projection (first, so only ``classes`` rows) divided by the frame count.
    """
    c = config
    w = _checked_weights(weights, c)
    g = _Graph()
    for name, value in w.items():
        g.const(name, value)

    def act(x: str, name: str) -> str:
        return g.op("LIF", [x], name, domain=DOMAIN, **_lif_attrs(c)) if c.spiking else g.op("Relu", [x], name)

    def bn(x: str, prefix: str, name: str) -> str:
        return g.op("BatchNormalization", [x] + [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean",
                                                                           "running_var")], name, epsilon=BN_EPS)

    z = "x"
    pads = [1, 1] if c.lookahead else [2, 0]
    for i in range(c.n_embed):
        p = f"embed.{i}"
        y = g.op("Conv", [z, f"{p}.conv.weight"], f"{p}.conv", kernel_shape=[3], pads=pads)
        z = act(bn(y, f"{p}.bn", f"{p}.bn"), f"{p}.act")
    u = g.op("Conv", [z, "lmu.u.weight", "lmu.u.bias"], "lmu.u", kernel_shape=[1])
    m = g.op("LMU", [u], "lmu.m", domain=DOMAIN, order=c.order, theta=float(c.theta),
             discretization=c.discretization)
    cat = g.op("Concat", [m, z], "lmu.cat", axis=1)
    h = act(g.op("Conv", [cat, "lmu.h.weight", "lmu.h.bias"], "lmu.h", kernel_shape=[1]), "lmu.act")
    z = g.op("Add", [z, h], "lmu.out")
    a = g.op("Conv", [z, "mixer.fc1.weight"], "mixer.fc1", kernel_shape=[1])
    a = act(bn(a, "mixer.bn1", "mixer.bn1"), "mixer.act")
    y = bn(g.op("Conv", [a, "mixer.fc2.weight"], "mixer.fc2", kernel_shape=[1]), "mixer.bn2", "mixer.bn2")
    z = g.op("Add", [z, y], "mixer.out")

    # Running mean over frames s <= t of the head's projection: its CumSum over time divided by CumSum of ones.
    proj = g.op("MatMul", ["head.weight", z], "head.proj")
    time_axis = g.const("head.time", np.array(2, np.int64))
    total = g.op("CumSum", [proj, time_axis], "head.sum")
    length = g.op("Shape", ["x"], "head.length", start=2, end=3)
    ones = g.op("ConstantOfShape", [length], "head.ones", value=numpy_helper.from_array(np.ones(1, np.float32)))
    counts = g.op("CumSum", [ones, g.const("head.axis0", np.array(0, np.int64))], "head.count")
    mean = g.op("Div", [total, counts], "head.mean")
    axis1 = g.const("head.axis1", np.array([1], np.int64))
    bias = g.op("Unsqueeze", ["head.bias", axis1], "head.bias.col")
    g.op("Add", [mean, bias], "logits")

    graph = helper.make_graph(
        g.nodes, "lmuformer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c.c_in, "T"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", c.classes, "T"])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)],
                              producer_name="edgekit.lmu")
    model.ir_version = 8
    helper.set_model_props(model, {CONFIG_KEY: c.to_json()})
    check_model(model)
    return model


@dataclass
class StepModel:
    """The result of ``to_step``: a standard-op ONNX model computing one frame.

    ``step_model`` maps (``input`` (N, c_in, 1), every ``states[i].input``) to (``outputs``:
    logits (N, classes, 1), every ``states[i].output``); feed the state outputs back as the next
    call's state inputs, starting from ``initial_states``. The logits of call k are those of frame
    k - ``delay`` (n_embed with a lookahead embedding, else 0); drop the first ``warmup_hops``.
    """

    step_model: onnx.ModelProto
    config: LMUFormerConfig
    input: str
    outputs: list[str]
    states: list[StateSpec]
    delay: int
    warmup_hops: int
    hop: int = 1
    window: int = 1

    @property
    def channels(self) -> int:
        return self.config.c_in

    def initial_states(self, batch: int = 1) -> dict[str, np.ndarray]:
        """State input name -> its value at the start of a stream of ``batch`` sequences."""
        return {s.input: s.initial(batch) for s in self.states}


def _bn_affine(w: dict[str, np.ndarray], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) of an inference BatchNormalization, float64."""
    scale = w[f"{prefix}.weight"] / np.sqrt(w[f"{prefix}.running_var"] + BN_EPS)
    return scale, w[f"{prefix}.bias"] - w[f"{prefix}.running_mean"] * scale


class _StepBuilder(_Graph):
    """A step graph plus its states; matrices are stored (K, N) for Gemm without transposes."""

    def __init__(self, batch: str) -> None:
        super().__init__()
        self.batch = batch
        self.states: list[StateSpec] = []

    def f32(self, name: str, value: np.ndarray) -> str:
        return self.const(name, np.ascontiguousarray(value, np.float32))

    def state(self, name: str, size: int, kind: str, layer: str, batched: bool = True) -> StateSpec:
        shape = (self.batch, size) if batched else (size,)
        spec = StateSpec(name, f"{name}.next", shape, "float32", 0.0, layer, kind, batched)
        self.states.append(spec)
        return spec

    def gemm(self, a: str, b: np.ndarray, c: str | np.ndarray | None, name: str) -> str:
        """a @ b + c for a constant (K, N) matrix ``b`` and a constant or run-time ``c``."""
        ins = [a, self.f32(f"{name}.w", b)]
        if c is not None:
            ins.append(c if isinstance(c, str) else self.f32(f"{name}.b", c))
        return self.op("Gemm", ins, name)

    def gated(self, make, gate: str | None, name: str) -> str:
        """``make(out)`` builds a tensor called ``out``; the result, times the 0/1 ``gate`` if any, is ``name``."""
        if gate is None:
            return make(name)
        return self.op("Mul", [make(f"{name}.ungated"), gate], name)


def to_step(model: ModelSource) -> StepModel:
    """The step model of an LMUFormer built by ``build_lmuformer`` (reads its config and weights).

    Standard ONNX ops only (opset 17), so it runs in onnxruntime; it carries the ``edgekit.stream``
    metadata (hop 1, window 1) that ``edgekit.StreamingSession`` reads (docs/streaming.md).
    BatchNormalization is folded into the weights here, in float64.
    """
    proto = load_model(model)
    c = config_of(proto)
    if c is None:
        raise ModelError(f"not an LMUFormer model: no {CONFIG_KEY!r} metadata (build it with build_lmuformer)")
    w = {k: v.astype(np.float64) for k, v in _checked_weights(
        {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}, c).items()}
    g = _StepBuilder("N")
    roles: dict[str, str] = {}  # what each weight of the step is, for the fused engine
    delay = c.n_embed if c.lookahead else 0
    frames = g.state("frames", 1, "counter", "head", batched=False)
    gates: list[str | None] = [None] * c.n_embed
    if delay:  # embedding layer i has emitted a real frame once i + 1 frames came in
        for i in range(c.n_embed):
            ready = g.op("GreaterOrEqual", [frames.input, g.f32(f"embed.{i}.ready.at", np.array([i + 1]))],
                         f"embed.{i}.ready")
            gates[i] = g.op("Cast", [ready], f"embed.{i}.gate", to=TensorProto.FLOAT)
    late = gates[-1]  # gates every state after the embedding

    def act(pre: str, layer: str, size: int, out_gate: str | None, state_gate: str | None) -> str:
        if not c.spiking:
            return g.gated(lambda out: g.op("Relu", [pre], out), out_gate, f"{layer}.act")
        v = g.state(f"{layer}.v", size, "membrane", layer)
        leak = g.op("Div", [g.op("Sub", [pre, v.input], f"{layer}.lif.in"), g.f32(f"{layer}.lif.tau", np.array([c.tau]))],
                    f"{layer}.lif.leak")
        v1 = g.op("Add", [v.input, leak], f"{layer}.lif.v")
        fire = g.op("GreaterOrEqual", [v1, g.f32(f"{layer}.lif.threshold", np.array([c.threshold]))],
                    f"{layer}.lif.fire")
        after = (g.f32(f"{layer}.lif.v_reset", np.zeros(1)) if c.reset == "hard" else
                 g.op("Sub", [v1, f"{layer}.lif.threshold"], f"{layer}.lif.v_soft"))
        g.gated(lambda out: g.op("Where", [fire, after, v1], out), state_gate, v.output)
        return g.gated(lambda out: g.op("Cast", [fire], out, to=TensorProto.FLOAT), out_gate, f"{layer}.act")

    z = g.op("Flatten", ["x"], "x.frame", axis=1)
    width = c.c_in
    for i in range(c.n_embed):
        p = f"embed.{i}"
        tail = g.state(f"{p}.tail", 2 * width, "shift", p)
        window = g.op("Concat", [tail.input, z], f"{p}.window", axis=1)
        g.op("Slice", [window, g.const(f"{p}.tail.start", np.array([width], np.int64)),
                       g.const(f"{p}.tail.end", np.array([3 * width], np.int64)),
                       g.const(f"{p}.tail.axis", np.array([1], np.int64))], tail.output)
        scale, shift = _bn_affine(w, f"{p}.bn")
        kernel = w[f"{p}.conv.weight"].transpose(2, 1, 0).reshape(3 * width, c.dim)  # rows: frame t-2, t-1, t
        z = act(g.gemm(window, kernel * scale, shift, f"{p}.conv"), p, c.dim, gates[i], gates[i])
        roles.update({f"{p}.kernel": f"{p}.conv.w", f"{p}.shift": f"{p}.conv.b"})
        width = c.dim

    abar, bbar = discretize(c.order, c.theta, c.discretization)
    m = g.state("lmu.m", c.order, "memory", "lmu")
    u = g.gemm(z, w["lmu.u.weight"][0], w["lmu.u.bias"], "lmu.u")
    ubbar = g.op("Mul", [u, g.f32("lmu.bbar", bbar)], "lmu.ubbar")
    mem = g.gated(lambda out: g.gemm(m.input, abar.T, ubbar, out), late, m.output)
    wh = w["lmu.h.weight"][:, :, 0]
    hm = g.gemm(mem, wh[:, :c.order].T, w["lmu.h.bias"], "lmu.h.m")
    h = act(g.gemm(z, wh[:, c.order:].T, hm, "lmu.h"), "lmu", c.dim, None, late)
    z = g.op("Add", [z, h], "lmu.out")

    scale1, shift1 = _bn_affine(w, "mixer.bn1")
    a = act(g.gemm(z, w["mixer.fc1.weight"][:, :, 0].T * scale1, shift1, "mixer.fc1"), "mixer", 4 * c.dim, None, late)
    scale2, shift2 = _bn_affine(w, "mixer.bn2")
    z = g.gemm(a, w["mixer.fc2.weight"][:, :, 0].T * scale2, z, "mixer.out")  # + shift2, folded into the head bias
    roles.update({"lmu.u": "lmu.u.w", "lmu.u.bias": "lmu.u.b", "lmu.bbar": "lmu.bbar",
                  "lmu.abar_t": f"{m.output}{'.ungated' if late else ''}.w",
                  "lmu.h.m": "lmu.h.m.w", "lmu.h.bias": "lmu.h.m.b", "lmu.h.z": "lmu.h.w", "mixer.fc1": "mixer.fc1.w",
                  "mixer.fc1.shift": "mixer.fc1.b", "mixer.fc2": "mixer.out.w"})

    # The head is linear: the running mean of head.weight @ z_t (+ head.weight @ shift2) plus head.bias.
    total = g.state("head.sum", c.classes, "sum", "head")
    head_sum = g.gemm(z, w["head.weight"].T, total.input, "head.proj" if late else total.output)
    if late:
        g.op("Mul", [head_sum, late], total.output)
    seen = g.op("Add", [frames.input, g.f32("head.one", np.ones(1))], frames.output)
    if delay:
        seen = g.op("Max", [g.op("Add", [frames.input, g.f32("head.lag", np.array([1.0 - delay]))], "head.seen"),
                            "head.one"], "head.count")
    mean = g.op("Div", [head_sum, seen], "head.mean")
    logits = g.op("Add", [mean, g.f32("head.bias", w["head.bias"] + w["head.weight"] @ shift2)], "head.logits")
    roles.update({"head": f"{'head.proj' if late else total.output}.w", "head.bias": "head.bias"})
    g.op("Unsqueeze", [logits, g.const("head.time", np.array([2], np.int64))], "logits")

    io = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c.c_in, 1])]
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", c.classes, 1])]
    for s in g.states:
        io.append(helper.make_tensor_value_info(s.input, TensorProto.FLOAT, list(s.shape)))
        outs.append(helper.make_tensor_value_info(s.output, TensorProto.FLOAT, list(s.shape)))
    step = helper.make_model(helper.make_graph(g.nodes, "lmuformer_step", io, outs, g.inits),
                             opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgekit.lmu")
    step.ir_version = 8
    meta = {"input": "x", "outputs": ["logits"], "hop": 1, "window": 1, "delay": delay, "warmup_hops": delay,
            "channels": c.c_in,
            "states": [{**asdict(s), "shape": list(s.shape)} for s in g.states]}
    structure = {**{k: getattr(c, k) for k in ("c_in", "dim", "order", "classes", "n_embed", "spiking", "tau",
                                                "threshold", "reset")},
                 "delay": delay, "weights": roles}
    helper.set_model_props(step, {STREAM_KEY: json.dumps(meta), STEP_KEY: json.dumps(structure)})
    step = finish_step_model(step)
    return StepModel(step, c, "x", ["logits"], list(g.states), delay, delay)
