"""onnxruntime's module-level API as edgekit offers it: options objects, enums and provider queries.

Code written for onnxruntime imports ``edgekit as ort`` and keeps calling ``ort.SessionOptions()``,
``ort.RunOptions()``, ``ort.GraphOptimizationLevel``, ``ort.ExecutionMode``, ``ort.ExecutionOrder``,
``ort.get_available_providers()`` and ``ort.get_device()``. The options objects accept and keep every
field onnxruntime's have (same names, same defaults), and a session also reads onnxruntime's own
options objects. What edgekit does with each field:

- ``intra_op_num_threads``, ``inter_op_num_threads``, ``execution_mode``, ``execution_order``: no
  effect. A run is one thread (binary layers, which use Numba's thread pool, and the fused LMUFormer
  step excepted), nodes run in the plan's order, and two runs of one session do not overlap.
- ``graph_optimization_level``: no effect. Every plan folds constants and fuses Conv/Gemm +
  BatchNormalization + activation whatever the level; ORT_DISABLE_ALL does not turn that off.
- ``log_severity_level``, ``log_verbosity_level``, ``logid``, ``enable_cpu_mem_arena``,
  ``enable_mem_pattern``, ``enable_mem_reuse``, ``use_deterministic_compute``, the session config
  entries and the provider options: no effect (edgekit logs nothing per run, its buffers are always
  planned and reused by liveness, and its kernels are deterministic).
- ``enable_profiling``: refused. edgekit records no per-run trace; per-node times come from
  ``edgekit.runtimes.profile.profile_model``.
- ``optimized_model_filepath``: refused. edgekit's fused plan is not an ONNX model to save.
- ``RunOptions.terminate``: honoured (the run is refused before it starts); the other RunOptions
  fields have no effect.
- Config entries are kept on edgekit's options; those set on an onnxruntime SessionOptions are not
  read (onnxruntime cannot list them). onnxruntime's other methods (``register_custom_ops_library``,
  ``add_initializer``, ``add_free_dimension_override_by_name`` ...) raise UnsupportedAPIError.
"""
from __future__ import annotations

import enum
from typing import Any

from .errors import UnsupportedAPIError

PROVIDER = "EdgekitNumbaExecutionProvider"
# Names a session accepts for its one provider: its own and onnxruntime's CPU provider.
CPU_PROVIDERS = (PROVIDER, "CPUExecutionProvider")


class GraphOptimizationLevel(enum.IntEnum):
    """onnxruntime's graph optimization levels (same names and values); edgekit ignores the level."""

    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_LAYOUT = 3
    ORT_ENABLE_ALL = 99


class ExecutionMode(enum.IntEnum):
    """onnxruntime's execution modes (same names and values); edgekit always runs sequentially."""

    ORT_SEQUENTIAL = 0
    ORT_PARALLEL = 1


class ExecutionOrder(enum.IntEnum):
    """onnxruntime's node execution orders (same names and values); edgekit runs its plan's order."""

    DEFAULT = 0
    PRIORITY_BASED = 1
    MEMORY_EFFICIENT = 2


# field -> onnxruntime's default; the module docstring says which fields edgekit honours.
SESSION_FIELDS: dict[str, Any] = {
    "intra_op_num_threads": 0, "inter_op_num_threads": 0, "execution_mode": ExecutionMode.ORT_SEQUENTIAL,
    "execution_order": ExecutionOrder.DEFAULT,
    "graph_optimization_level": GraphOptimizationLevel.ORT_ENABLE_ALL, "log_severity_level": -1,
    "log_verbosity_level": 0, "logid": "", "enable_profiling": False, "profile_file_prefix": "onnxruntime_profile_",
    "optimized_model_filepath": "", "enable_cpu_mem_arena": True, "enable_mem_pattern": True,
    "enable_mem_reuse": True, "use_deterministic_compute": False, "use_per_session_threads": True,
}
RUN_FIELDS: dict[str, Any] = {
    "log_severity_level": -1, "log_verbosity_level": 0, "logid": "", "terminate": False,
    "only_execute_path_to_fetches": False,
}


class _Options:
    """Fields with onnxruntime's names and defaults, plus string config entries."""

    _fields: dict[str, Any] = {}

    def __init__(self) -> None:
        for name, default in self._fields.items():
            setattr(self, name, default)
        self._config: dict[str, str] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name not in self._fields:  # a typo would otherwise pass silently
            raise AttributeError(f"{type(self).__name__} has no field {name!r}; fields are {sorted(self._fields)}")
        super().__setattr__(name, value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in self._fields)})"

    def __getattr__(self, name: str) -> Any:
        """onnxruntime's other methods (custom-op libraries, initializers, dimension overrides ...) are
        refused by name instead of a bare AttributeError."""
        import onnxruntime

        if not name.startswith("_") and hasattr(getattr(onnxruntime, type(self).__name__), name):
            raise UnsupportedAPIError(f"{type(self).__name__}.{name} is onnxruntime's; edgekit does not provide "
                                      "it (edgekit.options lists the fields it takes)")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _set_entry(self, key: str, value: str) -> None:
        self._config[str(key)] = str(value)

    def _get_entry(self, key: str) -> str:
        if key not in self._config:
            raise KeyError(f"no config entry {key!r}; set entries are {sorted(self._config)}")
        return self._config[key]


class SessionOptions(_Options):
    """onnxruntime's SessionOptions fields and config entries, kept as set; see the module docstring
    for the fields edgekit honours, ignores or refuses."""

    _fields = SESSION_FIELDS

    def add_session_config_entry(self, key: str, value: str) -> None:
        self._set_entry(key, value)

    def get_session_config_entry(self, key: str) -> str:
        return self._get_entry(key)


class RunOptions(_Options):
    """onnxruntime's RunOptions fields and config entries; edgekit honours ``terminate`` only."""

    _fields = RUN_FIELDS

    def add_run_config_entry(self, key: str, value: str) -> None:
        self._set_entry(key, value)

    def get_run_config_entry(self, key: str) -> str:
        return self._get_entry(key)


def session_options(given: Any) -> SessionOptions:
    """edgekit's copy of ``given`` (None, edgekit's or onnxruntime's SessionOptions): its fields read by
    name, the enums as edgekit's. Refuses (UnsupportedAPIError) the fields that ask for a file edgekit
    cannot write."""
    opts = SessionOptions()
    if given is None:
        return opts
    for name in SESSION_FIELDS:
        if hasattr(given, name):
            setattr(opts, name, getattr(given, name))
    opts.graph_optimization_level = GraphOptimizationLevel(int(opts.graph_optimization_level))
    opts.execution_mode = ExecutionMode(int(opts.execution_mode))
    opts.execution_order = ExecutionOrder(int(opts.execution_order))
    opts._config = dict(getattr(given, "_config", {}))
    if opts.enable_profiling:
        raise UnsupportedAPIError(
            "enable_profiling: edgekit records no per-run trace. Per-node times of a model come from "
            "edgekit.runtimes.profile.profile_model(model); leave enable_profiling False")
    if opts.optimized_model_filepath:
        raise UnsupportedAPIError(
            "optimized_model_filepath: edgekit's fused plan is not an ONNX model it can save. "
            "Converters in edgekit.converters write optimized ONNX models; leave the field empty")
    return opts


def get_available_providers() -> list[str]:
    """The execution providers of this build, as onnxruntime lists them: edgekit's one CPU provider."""
    return [PROVIDER]


def get_device() -> str:
    """The device edgekit runs on, as onnxruntime names it: always "CPU"."""
    return "CPU"
