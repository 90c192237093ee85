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
from edgekit.model import ModelSource, check_model, load_model

from .stream import METADATA_KEY as STREAM_KEY
from .stream_graph import StateSpec

__all__ = ["CONFIG_KEY", "DOMAIN", "LMUFormerConfig", "StepModel", "build_lmuformer", "config_of", "load_npz",
           "to_step"]

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
        if not (np.isfinite(self.theta) and self.theta > 0):
            raise ModelError(f"LMUFormerConfig.theta must be a positive number, got {self.theta!r}")
        if not (np.isfinite(self.tau) and self.tau > 0) or not np.isfinite(self.threshold):
            raise ModelError(f"LIF needs tau > 0 and a finite threshold, got tau={self.tau!r}, "
                             f"threshold={self.threshold!r}")
        if self.reset not in ("hard", "soft"):
            raise ModelError(f"LMUFormerConfig.reset must be 'hard' or 'soft', got {self.reset!r}")
        if self.discretization not in ("zoh", "euler"):
            raise ModelError(f"LMUFormerConfig.discretization must be 'zoh' or 'euler', got {self.discretization!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes | Mapping) -> "LMUFormerConfig":
        """Parse the JSON written by ``to_json`` (or a dict); ModelError on unknown or missing keys."""
        try:
            d = dict(text) if isinstance(text, Mapping) else json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"LMUFormer config is not valid JSON: {exc}") from None
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
        self.count = 0

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
    edgekit and onnxruntime fold it into the conv). The running mean of the head is a product with
    a (T, T) triangular matrix (the head's projection first, so only ``classes`` rows).
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

    # Running mean over frames s <= t of the head's projection, as a product with tri[s, t] = [s <= t] / (t + 1).
    proj = g.op("MatMul", ["head.weight", z], "head.proj")
    length = g.op("Shape", ["x"], "head.length", start=2, end=3)
    frames = g.op("Range", [g.const("head.zero", np.array(0, np.int64)),
                            g.op("Squeeze", [length], "head.length.scalar"),
                            g.const("head.one", np.array(1, np.int64))], "head.frames")
    axis0, axis1 = g.const("head.axis0", np.array([0], np.int64)), g.const("head.axis1", np.array([1], np.int64))
    causal = g.op("LessOrEqual", [g.op("Unsqueeze", [frames, axis1], "head.s"),
                                  g.op("Unsqueeze", [frames, axis0], "head.t")], "head.causal")
    counts = g.op("Cast", [g.op("Add", [frames, "head.one"], "head.count")], "head.countf", to=TensorProto.FLOAT)
    tri = g.op("Div", [g.op("Cast", [causal], "head.causalf", to=TensorProto.FLOAT), counts], "head.tri")
    mean = g.op("MatMul", [proj, tri], "head.mean")
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
