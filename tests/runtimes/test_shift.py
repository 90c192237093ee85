"""The streaming engine's history shift (runtimes/kernels/shift.py ``shift_history``) against numpy:
buf[:, :, :keep] = buf[:, :, start:start + keep] for histories of one, two and more vectors (up
to two take the grouped paths), overlapping (start < keep) or not, row counts around the
group size, in rows exactly start + keep long (as the engine's shift buffers), one column longer
(moved as one flat block where ``moves_flat`` holds) and many columns longer (row by row); columns past keep are left undefined, nothing outside the
buffer is written. Exact (a copy). The 1-D window pools that write into a shift buffer, against
numpy. And the PPG demo CNN, whose hop runs these kernels (and the mean of rows, the one-row Gemm),
streamed by a StreamingSession against onnxruntime's window inference at every hop."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgekit import InferenceSession, StreamingSession
from edgekit.demos.ppg import MODEL as PPG_MODEL
from edgekit.runtimes.kernels.simd import LANES
from edgekit.runtimes.kernels.pool import AVG, MAX
from edgekit.runtimes.kernels.shift import SHIFT_GROUP, WINDOW_POOL_INTO, shift_history
from oracle import ort_session


@pytest.mark.parametrize("extra", [0, 1, 3 * LANES])
@pytest.mark.parametrize("channels", [0, 1, 3, SHIFT_GROUP, 2 * SHIFT_GROUP + 1, 32])
@pytest.mark.parametrize("keep, start", [(1, 1), (5, 4), (8, 1), (9, 2), (8, 16), (LANES, 3), (LANES + 3, 2),
                                         (LANES + 1, 30), (2 * LANES, 1), (2 * LANES + 1, 40), (3 * LANES + 5, 2)])
def test_shift_history_matches_numpy(channels: int, keep: int, start: int, extra: int) -> None:
    rng = np.random.default_rng(channels * 1000 + keep * 10 + start + extra)
    shape = (2, channels, start + keep + extra)
    size = int(np.prod(shape))
    memory = rng.standard_normal(size + 2 * LANES).astype(np.float32)  # guard vectors either side
    buf = memory[LANES:LANES + size].reshape(shape)
    before = memory.copy()
    shift_history(buf, keep, start)
    np.testing.assert_array_equal(buf[:, :, :keep], before[LANES:LANES + size].reshape(shape)[:, :, start:start + keep])
    np.testing.assert_array_equal(memory[:LANES], before[:LANES])
    np.testing.assert_array_equal(memory[LANES + size:], before[LANES + size:])


@pytest.mark.parametrize("code", [MAX, AVG])
@pytest.mark.parametrize("k, stride, length, out_len", [(4, 4, 64, 16), (2, 2, 8, 4), (3, 3, 9, 3), (4, 4, 18, 4),
                                                        (3, 2, 11, 5), (2, 3, 8, 3), (2, 2, 2, 1), (4, 4, 4, 1),
                                                        (4, 4, 16, 4), (4, 4, 2 * LANES, LANES // 2),
                                                        (2, 2, LANES + 4, LANES // 2 + 2), (2, 2, 2 * LANES, LANES)])
@pytest.mark.parametrize("channels", [3, 17])
def test_window_pool_into_matches_numpy(code: int, k: int, stride: int, length: int, out_len: int,
                                        channels: int) -> None:
    """The 1-D full-window pool written into a shift buffer's last columns (windows of 2 or 4 tiling
    rows of at most two vectors, average: per-row float32 pair sums; other tiling windows: one
    sweep then row copies; otherwise row by row), NaN and infinities propagating as in a max or a
    sum; the history columns untouched. Average: rtol 1e-6, atol 1e-6 (float32 sums of up to four
    values of magnitude ~1; float64 sums on the other paths)."""
    rng = np.random.default_rng(k * 100 + stride * 10 + length + channels)
    x = rng.standard_normal((2, channels, length)).astype(np.float32)
    x[1, 2, min(stride, length - 1)] = np.nan
    x[0, 1, 0], x[0, 1, 1] = np.inf, -np.inf
    x[1, 0, 0] = np.inf
    history = 5
    buf = rng.standard_normal((2, channels, history + out_len)).astype(np.float32)
    want = buf.copy()
    windows = np.stack([x[:, :, j * stride:j * stride + k] for j in range(out_len)], axis=2)
    with np.errstate(invalid="ignore"):
        want[:, :, history:] = windows.max(axis=3) if code == MAX else windows.astype(np.float64).mean(axis=3)
    WINDOW_POOL_INTO[code](x, np.zeros((2, channels, out_len), np.float32), buf, k, stride, history)
    np.testing.assert_allclose(buf, want, rtol=1e-6, atol=0 if code == MAX else 1e-6)


@pytest.mark.parametrize("window, hop", [(512, 16), (512, 32), (256, 64)])
def test_ppg_demo_streams_like_window_inference(window: int, hop: int) -> None:
    """Every hop's output of the streamed PPG demo (AvgPool 4/2/2 into shift buffers, histories of
    nearly whole rows moved flat, GlobalAveragePool, Gemm 32 -> 32 + Relu, Gemm 32 -> 1) equals
    onnxruntime's and edgekit's InferenceSession's on the last ``window`` samples: rtol 1e-5, atol
    1e-5 x the output's scale (float32 sums in other orders)."""
    proto = onnx.load(PPG_MODEL)
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_value = window
    rng = np.random.default_rng(window + hop)
    hops = window // hop + 12
    x = rng.standard_normal((1, 1, hops * hop)).astype(np.float32)
    got = StreamingSession(proto, hop=hop).push(x)
    assert len(got) == hops - window // hop + 1
    ends = [(h + 1) * hop for h in range(hops - len(got), hops)]
    windows = np.concatenate([x[:, :, e - window:e] for e in ends])
    want = ort_session(proto).run(None, {"ppg": windows})[0]
    mine = InferenceSession(proto).run(None, {"ppg": windows})[0]
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(np.concatenate([g[0] for g in got]), want, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(mine, want, rtol=1e-5, atol=1e-5 * scale)
