"""The streaming engine's history shift (runtimes/kernels/shift.py ``shift_history``) against numpy:
buf[:, :, :keep] = buf[:, :, start:start + keep] for histories of one, two and more vectors (up
to two take the grouped paths), overlapping (start < keep) or not, row counts around the
group size; every other column unchanged. Exact (a copy). And the 1-D window pools that write
into a shift buffer, against numpy."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.runtimes.kernels.simd import LANES
from edgekit.runtimes.kernels.pool import AVG, MAX
from edgekit.runtimes.kernels.shift import SHIFT_GROUP, WINDOW_POOL_INTO, shift_history


@pytest.mark.parametrize("channels", [0, 1, 3, SHIFT_GROUP, 2 * SHIFT_GROUP + 1, 32])
@pytest.mark.parametrize("keep, start", [(1, 1), (5, 4), (8, 1), (9, 2), (8, 16), (LANES, 3), (LANES + 3, 2),
                                         (LANES + 1, 30), (2 * LANES, 1), (2 * LANES + 1, 40), (3 * LANES + 5, 2)])
def test_shift_history_matches_numpy(channels: int, keep: int, start: int) -> None:
    rng = np.random.default_rng(channels * 1000 + keep * 10 + start)
    buf = rng.standard_normal((2, channels, start + keep + 1)).astype(np.float32)
    want = buf.copy()
    want[:, :, :keep] = buf[:, :, start:start + keep]
    shift_history(buf, keep, start)
    np.testing.assert_array_equal(buf, want)


@pytest.mark.parametrize("code", [MAX, AVG])
@pytest.mark.parametrize("k, stride, length, out_len", [(4, 4, 64, 16), (2, 2, 8, 4), (3, 3, 9, 3), (4, 4, 18, 4),
                                                        (3, 2, 11, 5), (2, 3, 8, 3)])
def test_window_pool_into_matches_numpy(code: int, k: int, stride: int, length: int, out_len: int) -> None:
    """The 1-D full-window pool written into a shift buffer's last columns (windows tiling the rows:
    one sweep then row copies; otherwise row by row), a NaN in the max pool propagating; the
    history columns untouched. AVG: float64 sums, rtol 1e-6."""
    rng = np.random.default_rng(k * 100 + stride * 10 + length)
    x = rng.standard_normal((2, 3, length)).astype(np.float32)
    if code == MAX:
        x[1, 2, stride] = np.nan
    history = 5
    buf = rng.standard_normal((2, 3, history + out_len)).astype(np.float32)
    want = buf.copy()
    windows = np.stack([x[:, :, j * stride:j * stride + k] for j in range(out_len)], axis=2)
    want[:, :, history:] = windows.max(axis=3) if code == MAX else windows.astype(np.float64).mean(axis=3)
    WINDOW_POOL_INTO[code](x, np.zeros((2, 3, out_len), np.float32), buf, k, stride, history)
    np.testing.assert_allclose(buf, want, rtol=1e-6)
