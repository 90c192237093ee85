"""`edgekit demo flow` end to end on a short schedule: edge and cloud tier processes on loopback, plans
from the partitioner (with the measured hop overhead) at two bandwidths for the bundled frame CNN,
every split run equal to the whole model within 1e-5 (the demo checks it), the plot written, the
checks printed, and zero lost or wrong requests when the edge process is killed mid-run. No timing
is asserted: the timing checks' verdicts depend on the machine's load."""
import importlib.util
import os

from edgekit.demos import flow


def test_flow_demo(tmp_path, capsys):
    out = tmp_path / "flow.png"
    assert flow.main(["--bandwidths", "5,200", "--requests", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "answered 30 of 30, wrong 0, lost 0" in text
    assert "[PASS] zero lost or wrong requests with the edge killed mid-run" in text
    assert "FALLBACK edge->device" in text and "requests ran their parts on: device device device" in text
    assert text.count("one chosen request") == 2 and text.count("chosen vs baselines, measured") == 2
    assert "hop overhead" in text and "measured within 15% of predicted" in text
    if importlib.util.find_spec("matplotlib"):
        assert os.path.getsize(out) > 10_000
