"""Cold start: import of the engine, session creation and first run, in a fresh interpreter.

edgekit is measured twice on one new Numba cache directory (NUMBA_CACHE_DIR): first empty, so
every kernel the model uses compiles, then warm, so they load from the cache. This is what a
user meets on the first and on every later start of a program.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx

_PROBE = r"""
import sys, time
import numpy as np
engine, model, feeds = sys.argv[1], sys.argv[2], dict(np.load(sys.argv[3]))
t0 = time.perf_counter()
if engine == "onnxruntime":
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
else:
    import edgekit
    session = edgekit.InferenceSession(model)
session.run(None, feeds)
print(time.perf_counter() - t0)
"""


def _probe(engine: str, model_path: str, feeds_path: str, cache_dir: str) -> float:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    done = subprocess.run([sys.executable, "-c", _PROBE, engine, model_path, feeds_path], env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"{engine} cold start failed: {done.stderr.strip().splitlines()[-1:]}")
    return float(done.stdout.strip().splitlines()[-1])


def cold_start(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """Seconds to import + create a session + run once: edgekit with an empty and a warm Numba
    cache, and onnxruntime, each in a new process."""
    with tempfile.TemporaryDirectory(prefix="edgekit-cold-") as tmp:
        model_path, feeds_path = os.path.join(tmp, "model.onnx"), os.path.join(tmp, "feeds.npz")
        onnx.save(model, model_path)
        np.savez(feeds_path, **feeds)
        cache = os.path.join(tmp, "numba-cache")
        return {
            "edgekit_empty_cache": _probe("edgekit", model_path, feeds_path, cache),
            "edgekit_warm_cache": _probe("edgekit", model_path, feeds_path, cache),
            "onnxruntime": _probe("onnxruntime", model_path, feeds_path, cache),
        }
