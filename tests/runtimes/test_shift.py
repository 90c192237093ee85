"""The streaming engine's history shift (runtimes/kernels/shift.py ``shift_history``) against numpy:
buf[:, :, :keep] = buf[:, :, start:start + keep] for histories of one, two and more vectors (up
to two take the grouped paths), overlapping (start < keep) or not, row counts around the
group size; every other column unchanged. Exact (a copy)."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.runtimes.kernels.gemm import LANES
from edgekit.runtimes.kernels.shift import SHIFT_GROUP, shift_history


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
