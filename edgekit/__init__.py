"""edgekit: run ONNX models fast on small CPUs, on Numba kernels, over live signal streams.

``edgekit.InferenceSession`` is a drop-in for ``onnxruntime.InferenceSession`` (and ``SessionOptions``,
``RunOptions``, ``get_available_providers()`` ... for onnxruntime's module API, see ``edgekit.options``); converters in
``edgekit.converters`` rewrite models into faster ONNX; ``edgekit.runtimes`` executes them.
"""
import os as _os

# In a source checkout converters/, runtimes/, demos/ and benchmarks/ sit beside edgekit/; an
# installed wheel has them inside edgekit/. Extending __path__ makes `edgekit.runtimes` resolve the
# same way in both, also when running from the checkout without installing it.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(__path__[0], "runtimes")) and _os.path.isfile(
        _os.path.join(_root, "runtimes", "plan.py")):
    __path__.append(_root)

from .errors import EdgekitError, InputError, ModelError, TierError, UnsupportedAPIError, UnsupportedOpError

__version__ = "0.1.0"

__all__ = [
    "EdgekitError", "ExecutionMode", "ExecutionOrder", "GraphOptimizationLevel", "InferenceSession", "InputError", "ModelError",
    "RunOptions", "SessionOptions", "StreamingSession", "TierError", "UnsupportedAPIError", "UnsupportedOpError",
    "__version__", "get_available_providers", "get_device",
]
# onnxruntime's module API (edgekit.options), loaded on first use like the runtime.
_OPTIONS = {"ExecutionMode", "ExecutionOrder", "GraphOptimizationLevel", "RunOptions", "SessionOptions", "get_available_providers",
            "get_device"}


def __getattr__(name: str):
    # The runtime (and Numba) load on first use, so `edgekit --help` and the errors stay instant.
    if name == "InferenceSession":
        from .runtimes.session import InferenceSession

        return InferenceSession
    if name == "StreamingSession":
        from .streaming import StreamingSession

        return StreamingSession
    if name in _OPTIONS:
        from . import options

        return getattr(options, name)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
