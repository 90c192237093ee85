"""Builder of a streaming step model: nodes, constants and the explicit state tensors it threads.

Every state is a graph input ``name`` and a graph output ``name + '.next'``: the caller feeds back
what a step returned. The primitives here are the only state patterns a step model uses: a shift
buffer in front of a windowed layer, a delay line, a warm-up mask register and the head's FIFO.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.errors import ModelError
from edgekit.model import check_model

TIME = 2  # the time axis of an (N, C, L) tensor

Dim = int | str


@dataclass(frozen=True)
class StateSpec:
    """One state tensor of a step model: fed as ``input``, returned as ``output``.

    ``shape`` has the model's batch dim first (an int, or a name when the batch is dynamic) unless
    ``batched`` is False (warm-up registers are (1, 1, k) for every batch). The initial value is
    ``fill`` everywhere; ``layer`` is the node of the window model the state belongs to and
    ``kind`` one of 'shift' (a windowed layer's past inputs), 'delay', 'mask' or 'fifo'.
    """

    input: str
    output: str
    shape: tuple[Dim, ...]
    dtype: str
    fill: float | bool
    layer: str
    kind: str
    batched: bool = True

    def initial(self, batch: int = 1) -> np.ndarray:
        """The state at the start of a stream for ``batch`` parallel streams."""
        shape = ((batch,) + tuple(self.shape[1:])) if self.batched else tuple(self.shape)
        return np.full(shape, self.fill, dtype=np.dtype(self.dtype))


class StepGraph:
    """Accumulates the nodes, initializers and states of a step model under unique names."""

    def __init__(self, taken: set[str], opset: int, batch: Dim) -> None:
        self.taken = set(taken)
        self.opset = opset
        self.batch = batch
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.states: list[StateSpec] = []
        self._masks: dict[tuple, str] = {}

    def name(self, base: str) -> str:
        """``base`` if unused, else ``base.1``, ``base.2`` ...; the name is reserved."""
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}.{i}"
        self.taken.add(name)
        return name

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> onnx.NodeProto:
        n = helper.make_node(op, inputs, outputs, name=self.name(name), **attrs)
        self.nodes.append(n)
        return n

    def add(self, node: onnx.NodeProto) -> None:
        """Append a node taken over from the window model (its name stays reserved)."""
        self.taken.add(node.name)
        self.nodes.append(node)

    def state(self, layer: str, kind: str, channels: int, cols: int, dtype: np.dtype, fill,
              batched: bool = True) -> StateSpec:
        base = self.name(f"state.{layer}.{kind}")
        shape = (self.batch, channels, cols) if batched else (1, 1, cols)
        spec = StateSpec(base, self.name(base + ".next"), shape, np.dtype(dtype).name, fill, layer, kind, batched)
        self.states.append(spec)
        return spec

    def slice_time(self, x: str, start: int, end: int, out: str | None = None, label: str = "slice") -> str:
        """``x[:, :, start:end]`` (opset-appropriate Slice)."""
        out = out or self.name(f"{x}.{label}")
        if self.opset >= 10:
            ins = [x, self.const(f"{out}.starts", np.array([start], np.int64)),
                   self.const(f"{out}.ends", np.array([end], np.int64)),
                   self.const(f"{out}.axes", np.array([TIME], np.int64))]
            self.node("Slice", ins, [out], f"{out}.Slice")
        else:
            self.node("Slice", [x], [out], f"{out}.Slice", starts=[start], ends=[end], axes=[TIME])
        return out

    def shift(self, x: str, n: int, keep: int, channels: int, dtype: np.dtype, fill, layer: str, kind: str,
              out: str | None = None, batched: bool = True) -> str:
        """Concat(past ``keep`` columns, block ``x`` of ``n`` columns); the last ``keep`` columns of
        the result become the next past. Returns the concatenation."""
        st = self.state(layer, kind, channels, keep, dtype, fill, batched)
        cat = out or self.name(f"{x}.{kind}")
        self.node("Concat", [st.input, x], [cat], f"{layer}.{kind}.Concat", axis=TIME)
        self.slice_time(cat, n, n + keep, out=st.output)
        return cat

    def delay(self, x: str, n: int, cols: int, channels: int, dtype: np.dtype, layer: str) -> str:
        """Block ``x`` delayed by ``cols`` columns (a delay line of ``cols`` columns of state)."""
        cat = self.shift(x, n, cols, channels, dtype, 0, layer, "delay")
        return self.slice_time(cat, 0, n, label="delayed")

    def mask(self, x: str, n: int, lag: int, fill, dtype: np.dtype, layer: str) -> str:
        """``x`` with its first columns replaced by ``fill`` while they precede the stream start.

        A block that lags ``lag`` columns behind the stream holds ``lag`` columns from before the
        stream at the first step; a zero-padded layer must see its padding value there. The valid
        flags come from a shift register of booleans (False for ``lag`` columns, then True).
        """
        if self.opset < 9:  # (Where, which the mask needs, came with opset 9)
            raise ModelError(f"layer {layer!r}: a zero-padded layer after a lagging one needs opset 9 or later in the "
                             f"step model, this model has opset {self.opset}; convert it first "
                             f"(onnx.version_converter.convert_version(model, 9))")
        key = (n, lag)
        if key not in self._masks:
            label = f"warmup{lag}x{n}"
            ones = self.const(f"{label}.true", np.ones((1, 1, n), bool))
            cat = self.shift(ones, n, lag, 1, np.dtype(bool), False, label, "mask", batched=False)
            self._masks[key] = self.slice_time(cat, 0, n, label="valid")
        fill_name = self.const(f"{x}.fill", np.array(fill, dtype=dtype))
        out = self.name(f"{x}.masked")
        self.node("Where", [self._masks[key], x, fill_name], [out], f"{layer}.mask")
        return out

    def fifo(self, x: str, n: int, width: int, channels: int, dtype: np.dtype, out: str, layer: str) -> None:
        """The last ``width`` columns of the stream of blocks ``x``, named ``out``."""
        if width > n:
            self.shift(x, n, width - n, channels, dtype, 0, layer, "fifo", out=out)
        elif width == n:
            self.node("Identity", [x], [out], f"{layer}.fifo")
        else:
            self.slice_time(x, n - width, n, out=out)


def check_ts_shape(name: str, shape, layer: str) -> tuple[int, int]:
    """(channels, columns) of an (N, C, L) tensor of the window model, or ModelError."""
    if shape is None or len(shape) != 3 or not all(isinstance(d, int) for d in shape[1:]):
        raise ModelError(f"layer {layer!r}: tensor {name!r} must have a static (N, C, L) shape to stream, "
                         f"shape inference gives {shape}")
    if shape[2] < 1:  # (shape inference lets a too-short window through; streaming it gave garbage)
        raise ModelError(f"layer {layer!r}: tensor {name!r} has {max(shape[2], 0)} columns in the window: the window "
                         f"is too short for the network's receptive field; use a longer window")
    return shape[1], shape[2]


def finish_step_model(step: onnx.ModelProto) -> onnx.ModelProto:
    """``step`` with inferred shapes, checked: a step model that fails either is a converter bug."""
    try:
        step = onnx.shape_inference.infer_shapes(step, strict_mode=True)
    except Exception as exc:
        raise ModelError(f"the step model fails shape inference (a converter bug): {str(exc).splitlines()[0]}") from None
    check_model(step)
    return step
