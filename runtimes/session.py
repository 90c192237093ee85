"""InferenceSession: the onnxruntime-compatible entry point that runs a model on edgekit's plans."""
from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import helper

from edgekit.arrays import as_array
from edgekit.errors import InputError, ModelError, UnsupportedAPIError
from edgekit.ir import Dim, ValueInfo, read_graph, value_info
from edgekit.model import ModelMetadata, ModelSource, load_model, model_metadata
from edgekit.options import CPU_PROVIDERS, PROVIDER, SessionOptions, session_options

from .plan import Plan, Prepared, prepare, specialize

MAX_CACHED_PLANS = 16
FEEDS_CONVERTED = (list, bool, int, float)  # converted to the input's dtype, as onnxruntime converts lists


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


def _check_providers(providers: Sequence | None) -> None:
    """A list of provider names (or (name, options) pairs); one that is not a CPU provider gets a
    warning, as onnxruntime warns and falls back to the CPU (code written for a GPU box keeps running)."""
    if isinstance(providers, str):
        raise TypeError(f"providers must be a list of provider names, got the str {providers!r}: pass [{providers!r}]")
    names = [p[0] if isinstance(p, tuple) else p for p in providers or []]
    other = [n for n in names if n not in CPU_PROVIDERS]
    if other:
        warnings.warn(f"edgekit runs on the CPU only: providers {other} are not available; running on "
                      f"{PROVIDER}", stacklevel=3)


def _node_arg(v: ValueInfo) -> NodeArg:
    return NodeArg(v.name, list(v.shape or []), _type_string(v.dtype))


def _inferred(v: ValueInfo) -> ValueInfo:
    """``v`` as onnx shape inference gives it, with the dims it could not name (``unk__N``) as None,
    as onnxruntime shows them."""
    shape = None if v.shape is None else tuple(
        None if isinstance(d, str) and d.startswith("unk__") else d for d in v.shape)
    return ValueInfo(v.name, v.dtype, shape)


class InferenceSession:
    """Run an ONNX model on edgekit's Numba kernels; a drop-in for ``onnxruntime.InferenceSession``.

    ``model`` is a path, serialized bytes or an ``onnx.ModelProto``. ``sess_options`` is edgekit's or
    onnxruntime's SessionOptions (``edgekit.options`` says which fields take effect); ``providers``
    and ``provider_options`` are accepted for compatibility: edgekit has one CPU provider. Execution
    plans are compiled per distinct set of input shapes (dynamic batch or length dims) and cached.
    NaN and +-Inf inputs propagate as in onnxruntime; ``allow_nan=False`` refuses them (InputError
    naming the input and the first such value) before anything runs.
    """

    def __init__(self, model: ModelSource, sess_options: Any = None, providers: Sequence | None = None,
                 provider_options: Sequence | None = None, *, allow_nan: bool = True, **kwargs: Any) -> None:
        self._options = session_options(sess_options)
        _check_providers(providers)
        self._allow_nan = allow_nan
        self._proto = load_model(model)
        self._graph = read_graph(self._proto)
        self._prepared = prepare(self._graph)
        self._inputs = self._graph.inputs
        self._input_names = [v.name for v in self._inputs]
        self._input_set = set(self._input_names)
        self._output_names = [v.name for v in self._graph.outputs]
        self._output_set = set(self._output_names)
        self._outputs: list[NodeArg] | None = None
        self._plans: dict[tuple, Plan] = {}
        self._lock = threading.Lock()
        static = [vi.shape for vi in self._inputs]
        if all(s is not None and all(isinstance(d, int) and d > 0 for d in s) for s in static):
            self._plan_for(tuple(tuple(s) for s in static))

    def get_inputs(self) -> list[NodeArg]:
        return [_node_arg(v) for v in self._inputs]

    def get_outputs(self) -> list[NodeArg]:
        """The outputs as declared; one declared without a type or shape is shown as onnx shape
        inference gives it (as onnxruntime does)."""
        if self._outputs is None:
            declared = self._graph.outputs
            if any(v.dtype is None or v.shape is None for v in declared):
                try:
                    found = {v.name: v for v in onnx.shape_inference.infer_shapes(self._proto).graph.output}
                except Exception:  # inference failed: the declarations are all there is
                    found = {}
                declared = [_inferred(value_info(found[v.name])) if v.name in found else v for v in declared]
            self._outputs = [_node_arg(v) for v in declared]
        return list(self._outputs)

    def get_overridable_initializers(self) -> list[NodeArg]:
        """Initializers also listed as graph inputs (onnxruntime lets a run feed them). edgekit folds
        initializers into its plans, so a run refuses them as feeds; they are listed all the same."""
        constants = self._graph.constants
        return [_node_arg(value_info(v)) for v in self._proto.graph.input if v.name in constants]

    def get_providers(self) -> list[str]:
        return [PROVIDER]

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        """Per provider, its options as onnxruntime reports them: edgekit's provider has none."""
        return {PROVIDER: {}}

    def set_providers(self, providers: Sequence | None = None, provider_options: Sequence | None = None) -> None:
        """Checked as the constructor checks ``providers``; edgekit keeps running on its one CPU provider."""
        _check_providers(providers)

    def get_session_options(self) -> SessionOptions:
        """The session's options as given (edgekit's SessionOptions holding the same fields)."""
        return self._options

    def end_profiling(self) -> str:
        """The profile file's name, as onnxruntime: "" since edgekit never profiles a session (see
        ``edgekit.options``)."""
        return ""

    def get_profiling_start_time_ns(self) -> int:
        return 0

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
        ``input_feed``. A list or Python scalar fed for an input is converted to the input's dtype
        (float values to an integer input truncate, as onnxruntime's conversion does)."""
        names = self._check_output_names(output_names) if output_names else self._output_names
        if run_options is not None and getattr(run_options, "terminate", False):
            raise InputError("run_options.terminate is set: the run was not started")
        arrays = self._check_feed(input_feed)
        key = tuple([a.shape for a in arrays])
        with self._lock:
            plan = self._plans.get(key) or self._plan_for_feed(key)
            return plan.run(arrays, names)

    def run_async(self, output_names: Sequence[str] | None, input_feed: dict[str, Any],
                  callback: Callable[[list[np.ndarray], Any, str], None], user_data: Any,
                  run_options: Any = None) -> None:
        """``run`` on a new thread, then ``callback(results, user_data, err)`` on that thread, as
        onnxruntime: ``err`` is "" on success, else the error's message with ``results`` empty."""
        def work() -> None:
            try:
                results = self.run(output_names, input_feed, run_options)
            except Exception as exc:  # reported to the callback, as onnxruntime reports a failed run
                callback([], user_data, str(exc))
                return
            callback(results, user_data, "")

        threading.Thread(target=work, name="edgekit-run-async", daemon=True).start()

    def run_with_ort_values(self, output_names: Sequence[str] | None, input_dict_ort_values: dict[str, Any],
                            run_options: Any = None) -> list:
        """``run`` on onnxruntime OrtValues (CPU tensors), returning OrtValues, as onnxruntime does."""
        from onnxruntime import OrtValue

        feed = {k: v.numpy() for k, v in input_dict_ort_values.items()}
        return [OrtValue.ortvalue_from_numpy(a) for a in self.run(output_names, feed, run_options)]

    def io_binding(self) -> Any:
        raise UnsupportedAPIError("io_binding: edgekit has no IOBinding (its buffers live on the CPU and "
                                  "results are fresh arrays); call run(output_names, input_feed)")

    def run_with_iobinding(self, iobinding: Any, run_options: Any = None) -> None:
        raise UnsupportedAPIError("run_with_iobinding: edgekit has no IOBinding; call "
                                  "run(output_names, input_feed)")

    def _check_output_names(self, output_names: Sequence[str]) -> Sequence[str]:
        """``output_names`` (not empty) if it is a sequence of the model's output names."""
        if isinstance(output_names, (str, bytes)):
            raise TypeError(f"output_names must be a list of output names or None, got the "
                            f"{type(output_names).__name__} {output_names!r}: pass [{output_names!r}]")
        for n in output_names:
            if n not in self._output_set:
                raise InputError(f"{n!r} is not an output of the model; outputs are {self._output_names}")
        return output_names

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
                a = _converted(vi, a) if isinstance(a, FEEDS_CONVERTED) else as_array(a, f"input {vi.name!r}")
            if a.shape != vi.shape or a.dtype != vi.dtype:  # else it matches a fully static input as declared
                if a.dtype.byteorder not in "=|" and a.dtype.newbyteorder("=") == vi.dtype:
                    a = a.astype(vi.dtype)  # a non-native byte order of the declared dtype
                _check_array(vi, a, symbols)
            if not self._allow_nan and a.dtype.kind in "fc":
                _check_finite(vi.name, a)
            arrays.append(a)
        return arrays


def _converted(vi: ValueInfo, value: list | bool | int | float) -> np.ndarray:
    """A (nested) list or Python scalar fed for input ``vi`` as an array of its declared dtype, as
    onnxruntime converts lists (it refuses scalars; edgekit takes them as 0-d arrays)."""
    try:
        return np.array(value, dtype=vi.dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"input {vi.name!r}: cannot convert the {type(value).__name__} fed to "
                         f"{vi.dtype or 'an array'}: {exc}") from None


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
