"""InferenceSession: the onnxruntime-compatible entry point that runs a model on edgekit's plans."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper

from edgekit.arrays import as_array
from edgekit.errors import InputError, ModelError
from edgekit.ir import Dim, ValueInfo, read_graph
from edgekit.model import ModelMetadata, ModelSource, load_model, model_metadata

from .plan import Plan, Prepared, prepare, specialize

MAX_CACHED_PLANS = 16
PROVIDER = "EdgekitNumbaExecutionProvider"


@dataclass(frozen=True)
class NodeArg:
    """Name, shape and type of a model input or output, as onnxruntime's NodeArg gives them."""

    name: str
    shape: list[Dim]
    type: str


def _type_string(dtype: np.dtype | None) -> str:
    if dtype is None:
        return "unknown"
    return f"tensor({onnx.TensorProto.DataType.Name(helper.np_dtype_to_tensor_dtype(dtype)).lower()})"


class InferenceSession:
    """Run an ONNX model on edgekit's Numba kernels; a drop-in for ``onnxruntime.InferenceSession``.

    ``model`` is a path, serialized bytes or an ``onnx.ModelProto``. ``sess_options`` and
    ``providers`` are accepted for compatibility; edgekit has one provider. Execution plans are
    compiled per distinct set of input shapes (dynamic batch or length dims) and cached. NaN and
    +-Inf inputs propagate as in onnxruntime; ``allow_nan=False`` refuses them (InputError naming the
    input and the first such value) before anything runs.
    """

    def __init__(self, model: ModelSource, sess_options: Any = None, providers: Sequence | None = None,
                 provider_options: Sequence | None = None, *, allow_nan: bool = True, **kwargs: Any) -> None:
        self._allow_nan = allow_nan
        self._proto = load_model(model)
        self._graph = read_graph(self._proto)
        self._prepared = prepare(self._graph)
        self._inputs = self._graph.inputs
        self._input_names = [v.name for v in self._inputs]
        self._input_set = set(self._input_names)
        self._output_names = [v.name for v in self._graph.outputs]
        self._output_set = set(self._output_names)
        self._plans: dict[tuple, Plan] = {}
        self._lock = threading.Lock()
        static = [vi.shape for vi in self._inputs]
        if all(s is not None and all(isinstance(d, int) and d > 0 for d in s) for s in static):
            self._plan_for(tuple(tuple(s) for s in static))

    def get_inputs(self) -> list[NodeArg]:
        return [NodeArg(v.name, list(v.shape or []), _type_string(v.dtype)) for v in self._inputs]

    def get_outputs(self) -> list[NodeArg]:
        return [NodeArg(v.name, list(v.shape or []), _type_string(v.dtype)) for v in self._graph.outputs]

    def get_providers(self) -> list[str]:
        return [PROVIDER]

    def get_modelmeta(self) -> ModelMetadata:
        """The model's metadata with the fields of onnxruntime's ModelMetadata (producer_name,
        graph_name, domain, description, graph_description, version, custom_metadata_map)."""
        return model_metadata(self._proto)

    @property
    def model(self) -> onnx.ModelProto:
        """The loaded model, as it was given (not fused)."""
        return self._proto

    def run(self, output_names: Sequence[str] | None, input_feed: dict[str, Any],
            run_options: Any = None) -> list[np.ndarray]:
        """Compute ``output_names`` (all outputs when None or empty, as onnxruntime) for the arrays in
        ``input_feed``."""
        arrays = self._check_feed(input_feed)
        output_names = output_names or None
        if output_names is not None:
            for n in output_names:
                if n not in self._output_set:
                    raise InputError(f"{n!r} is not an output of the model; outputs are {self._output_names}")
        key = tuple([a.shape for a in arrays])
        with self._lock:
            plan = self._plans.get(key) or self._plan_for_feed(key)
            return plan.run(arrays, self._output_names if output_names is None else output_names)

    @property
    def prepared(self) -> Prepared:
        """The model's graph as the plans run it: ordered, pruned and fused (for profilers)."""
        return self._prepared

    def plan(self, shapes: tuple) -> Plan:
        """The compiled plan for these input shapes (in input order), for runtimes that drive its
        buffers directly, like the StreamingSession; a plan is not safe to share across threads."""
        return self._plans.get(shapes) or self._plan_for(shapes)

    def _plan_for(self, shapes: tuple) -> Plan:
        if len(self._plans) >= MAX_CACHED_PLANS:
            self._plans.pop(next(iter(self._plans)))
        plan = specialize(self._prepared, dict(zip(self._input_names, shapes)))
        self._plans[shapes] = plan
        return plan

    def _plan_for_feed(self, shapes: tuple) -> Plan:
        """The plan for the shapes of a feed that matched the declared inputs: a node that cannot run on
        them (a dynamic dim the model's arithmetic does not allow) is an InputError naming them."""
        try:
            return self._plan_for(shapes)
        except ModelError as exc:
            named = ", ".join(f"{n} {tuple(s)}" for n, s in zip(self._input_names, shapes))
            raise InputError(f"the model cannot run on inputs of shapes {named}: {exc}") from None

    def _check_feed(self, feed: dict[str, Any]) -> list[np.ndarray]:
        if not isinstance(feed, dict):
            raise InputError(f"input_feed must be a dict of name -> array, got {type(feed).__name__}")
        if feed.keys() != self._input_set:
            unknown = [k for k in feed if k not in self._input_set]
            missing = [k for k in self._input_names if k not in feed]
            constant = [k for k in unknown if k in self._graph.constants]
            raise InputError(
                f"inputs do not match the model: unknown {unknown}, missing {missing}; "
                f"the model takes {self._input_names}"
                + (f" ({constant} are initializers, which edgekit folds into its plans: they cannot be fed)"
                   if constant else ""))
        arrays = []
        symbols: dict[str, int] = {}
        for vi in self._inputs:
            a = feed[vi.name]
            if type(a) is not np.ndarray:
                a = as_array(a, f"input {vi.name!r}")
            if a.shape != vi.shape or a.dtype != vi.dtype:  # else it matches a fully static input as declared
                _check_array(vi, a, symbols)
            if not self._allow_nan and a.dtype.kind in "fc":
                _check_finite(vi.name, a)
            arrays.append(a)
        return arrays


def _check_finite(name: str, a: np.ndarray) -> None:
    """Raise InputError if ``a`` holds a NaN or an infinity (the session's allow_nan=False)."""
    bad = ~np.isfinite(a)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"input {name!r} holds {a[at]} at index {at} (the session was made with allow_nan=False)")


def _check_array(vi: ValueInfo, a: np.ndarray, symbols: dict[str, int]) -> None:
    """Raise InputError unless ``a`` matches the declared dtype and shape of input ``vi``."""
    if vi.dtype is not None and a.dtype != vi.dtype:
        raise InputError(f"input {vi.name!r} expects dtype {vi.dtype}, got {a.dtype}")
    if vi.shape is None or a.shape == vi.shape:
        return
    if a.ndim != len(vi.shape):
        raise InputError(f"input {vi.name!r} expects shape {list(vi.shape)} (rank {len(vi.shape)}), got {list(a.shape)}")
    for axis, (want, got) in enumerate(zip(vi.shape, a.shape)):
        if isinstance(want, int) and want > 0 and want != got:
            raise InputError(f"input {vi.name!r} expects shape {list(vi.shape)}, got {list(a.shape)} (axis {axis})")
        if isinstance(want, str):
            if symbols.setdefault(want, got) != got:
                raise InputError(
                    f"input {vi.name!r}: dimension {want!r} is {got} here but {symbols[want]} in another input")
