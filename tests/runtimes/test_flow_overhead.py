"""runtimes/flow/overhead.py: measure_hop_overhead serves its one-node probe plan from a thread and
returns a positive, finite time (no bound on its size is asserted: it depends on the machine);
the probe plan it writes is a valid plan whose part matches the whole probe model."""
import math

import numpy as np

import edgekit
from edgekit.runtimes.flow import load_plan, measure_hop_overhead
from edgekit.runtimes.flow.overhead import _probe_plan


def test_measure_hop_overhead_is_a_positive_time():
    got = measure_hop_overhead(1000, requests=5)
    assert math.isfinite(got) and got > 0


def test_probe_plan_is_a_cloud_only_plan_of_the_given_size(tmp_path):
    _probe_plan(str(tmp_path), 4096)
    plan = load_plan(str(tmp_path))
    assert [p.tier for p in plan.parts] == ["cloud"] and plan.input_shapes(0)["x"][1] == [1, 1, 1024]
    x = np.random.default_rng(0).standard_normal((1, 1, 1024)).astype(np.float32)
    (y,) = edgekit.InferenceSession(plan.parts[0].path).run(None, {"x": x})
    np.testing.assert_allclose(y.ravel(), [x.mean()], rtol=1e-5)
