"""The 8-lane (AVX2) build of the kernels, which most edge CPUs run, checked on this AVX-512 machine.

A subprocess compiles the kernels for Haswell (NUMBA_CPU_NAME=haswell with an empty
NUMBA_CPU_FEATURES: the CPU's own features, no AVX-512) into its own Numba cache dir and checks that
``simd.AVX512`` is False and ``simd.LANES`` 8, then matches onnxruntime within 1e-4 (absolute and
relative) on fresh standard-normal inputs: the benchmark 1D CNN (the single-row convolution tiles the
streaming programs run too, pools, Gemm) and MobileNet-style stack (2-D, depthwise and strided
convolutions), Exp/Erf/Gelu/Pow/Sigmoid on a shape that leaves partial vectors, 3x3 stride-1 and
stride-2 max and average pools: the kernel families that branch on the vector width, few enough that
the subprocess's cold compile stays short (it is paid in every CI run). The whole kernel, streaming
and exported-model suites passed in this build once (2026-11-29); run them so with the same
environment (``AVX2_ENV``). The script is this file run as ``python tests/test_portable_build.py``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AVX2_ENV = {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "",
            "NUMBA_CACHE_DIR": os.path.join(tempfile.gettempdir(), "edgekit-numba-haswell")}


def test_avx2_build_matches_onnxruntime() -> None:
    env = dict(os.environ, **AVX2_ENV)
    run = subprocess.run([sys.executable, os.path.abspath(__file__)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert "portable build ok" in run.stdout


def _pointwise_and_pool_models():
    """Exp/Erf/Gelu/Pow/Sigmoid on (1, 5, 37) and 3x3 max/avg pools at strides 1 and 2 on (1, 6, 23, 19)."""
    import numpy as np
    from onnx import helper

    from oracle import make_model

    ops = [helper.make_node("Exp", ["x"], ["exp"]), helper.make_node("Erf", ["x"], ["erf"]),
           helper.make_node("Gelu", ["x"], ["gelu"]), helper.make_node("Sigmoid", ["x"], ["sig"]),
           helper.make_node("Pow", ["sig", "p"], ["pow"])]
    pointwise = make_model(ops, {"x": ((1, 5, 37), np.float32)}, ["exp", "erf", "gelu", "sig", "pow"],
                           {"p": np.float32(1.7)}, opset=20)
    pools = [helper.make_node(op, ["x"], [f"{op}{s}"], kernel_shape=[3, 3], strides=[s, s], pads=[1, 1, 1, 1])
             for op in ("MaxPool", "AveragePool") for s in (1, 2)]
    pool = make_model(pools, {"x": ((1, 6, 23, 19), np.float32)}, [n.output[0] for n in pools])
    return [("pointwise", pointwise), ("pools", pool)]


def main() -> None:
    """Check the build this process compiles and print 'portable build ok'."""
    sys.path[:0] = [os.path.join(ROOT, "tests"), ROOT]
    import numpy as np

    import edgekit
    from benchmarks import models as bench
    from edgekit.runtimes.kernels import simd
    from oracle import assert_matches_ort

    assert simd.AVX512 is False and simd.LANES == 8, (simd.AVX512, simd.LANES)
    rng = np.random.default_rng(20261129)
    named = [(f.__name__, f()) for f in (bench.cnn1d, bench.mobilenet)]
    named += _pointwise_and_pool_models()
    for name, model in named:
        session = edgekit.InferenceSession(model)
        feeds = {x.name: rng.standard_normal([1 if isinstance(d, str) else d for d in x.shape]).astype(np.float32)
                 for x in session.get_inputs()}
        assert_matches_ort(model, feeds, rtol=1e-4, atol=1e-4, session=session)
        print("matches onnxruntime:", name, flush=True)
    print("portable build ok", flush=True)


if __name__ == "__main__":
    main()
