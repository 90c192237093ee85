"""runtimes/flow/overhead.py: measure_hop_overhead serves its one-node probe plan from a thread and
returns a positive, finite time, and measure_affine_hop_overhead a finite fixed part > 0 and a
finite part per byte >= 0 (no bound on their sizes is asserted: they depend on the machine);
the probe plan it writes is a valid plan whose part matches the whole probe model."""
import math

import numpy as np

import edgekit
from edgekit.runtimes.flow import load_plan, measure_hop_overhead
from edgekit.runtimes.flow.overhead import _probe_plan, measure_affine_hop_overhead


def test_measure_hop_overhead_is_a_positive_time():
    got = measure_hop_overhead(1000, requests=5)
    assert math.isfinite(got) and got > 0


def test_measure_affine_hop_overhead_is_a_fixed_time_and_a_rate():
    fixed, per_byte = measure_affine_hop_overhead(40_000, requests=5)
    assert math.isfinite(fixed) and fixed > 0 and math.isfinite(per_byte) and per_byte >= 0


def test_probe_plan_is_a_cloud_only_plan_of_the_given_size(tmp_path):
    _probe_plan(str(tmp_path), 4096)
    plan = load_plan(str(tmp_path))
    assert [p.tier for p in plan.parts] == ["cloud"] and plan.input_shapes(0)["x"][1] == [1, 1, 1024]
    x = np.random.default_rng(0).standard_normal((1, 1, 1024)).astype(np.float32)
    (y,) = edgekit.InferenceSession(plan.parts[0].path).run(None, {"x": x})
    np.testing.assert_allclose(y.ravel(), [x.mean()], rtol=1e-5)
