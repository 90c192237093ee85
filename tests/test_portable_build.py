"""The 8-lane (AVX2) build of the kernels, which most edge CPUs run, checked on this AVX-512 machine.

A subprocess compiles the kernels for Haswell (NUMBA_CPU_NAME=haswell with an empty
NUMBA_CPU_FEATURES: the CPU's own features, no AVX-512) into its own Numba cache dir and checks that
``simd.AVX512`` is False and ``simd.LANES`` 8, then matches onnxruntime within 1e-4 (absolute and
relative) on fresh standard-normal inputs: the benchmark models (cnn1d, cnn2d, mobilenet, mlp), bundled
exporters' models (LSTM, bidirectional GRU, transformer, TCN, Keras MobileNet), Exp/Erf/Gelu/Pow/Sigmoid
on a shape that leaves partial vectors, 3x3 stride-1 and stride-2 max and average pools; and a
StreamingSession on the PPG demo model equals its window inference (rtol 1e-5). The script is this
file run as ``python tests/test_portable_build.py``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AVX2_ENV = {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "",
            "NUMBA_CACHE_DIR": os.path.join(tempfile.gettempdir(), "edgekit-numba-haswell")}
EXPORTED = ("cnn_lstm_opset17", "bigru_opset17", "transformer_opset17", "tcn_opset17", "keras/mobilenet_opset17")


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
    import onnx

    import edgekit
    from benchmarks import models as bench
    from demos import ppg_data as data
    from edgekit.converters.stream import to_streaming
    from edgekit.runtimes.kernels import simd
    from oracle import assert_matches_ort

    assert simd.AVX512 is False and simd.LANES == 8, (simd.AVX512, simd.LANES)
    rng = np.random.default_rng(20261129)
    named = [(f.__name__, f()) for f in (bench.cnn1d, bench.cnn2d, bench.mobilenet, bench.mlp)]
    named += [(name, onnx.load(os.path.join(ROOT, "tests", "models", name + ".onnx"))) for name in EXPORTED]
    named += _pointwise_and_pool_models()
    for name, model in named:
        session = edgekit.InferenceSession(model)
        feeds = {x.name: rng.standard_normal([1 if isinstance(d, str) else d for d in x.shape]).astype(np.float32)
                 for x in session.get_inputs()}
        assert_matches_ort(model, feeds, rtol=1e-4, atol=1e-4, session=session)
        print("matches onnxruntime:", name, flush=True)

    proto = onnx.load(os.path.join(ROOT, "demos", "models", "ppg_cnn.onnx"))
    stream, window = edgekit.StreamingSession(to_streaming(proto, hop=data.HOP)), edgekit.InferenceSession(proto)
    x = rng.standard_normal(data.WINDOW + 6 * data.HOP).astype(np.float32)
    outs = stream.push(x[None])
    assert len(outs) == 7, len(outs)
    for k, (got,) in enumerate(outs):
        (want,) = window.run(None, {"ppg": x[None, None, k * data.HOP:k * data.HOP + data.WINDOW]})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    print("portable build ok", flush=True)


if __name__ == "__main__":
    main()
