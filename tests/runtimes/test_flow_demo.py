"""`edgekit demo flow` end to end on a short schedule: edge and cloud tier processes on loopback, plans
from the partitioner (with the measured hop overhead) at two bandwidths for the bundled frame CNN,
every split run equal to the whole model within 1e-5 (the demo checks it), the checks printed, and
zero lost or wrong requests when the edge process is killed mid-run; with --no-plot no plot is
written. The plot itself is drawn from made-up rows; bad options are refused before any work. No
timing is asserted: the timing checks' verdicts depend on the machine's load."""
import importlib.util
import os

import pytest

from edgekit.demos import flow


def test_flow_demo(tmp_path, capsys):
    out = tmp_path / "flow.png"
    assert flow.main(["--bandwidths", "5,200", "--requests", "3", "--out", str(out), "--no-plot"]) == 0
    text = capsys.readouterr().out
    assert "answered 30 of 30, wrong 0, lost 0" in text
    assert "[PASS] zero lost or wrong requests with the edge killed mid-run" in text
    assert "FALLBACK edge->device" in text and "requests ran their parts on: device device device" in text
    assert text.count("one chosen request") == 2 and text.count("chosen vs baselines, measured") == 2
    assert "hop overhead" in text and "measured within 15% of predicted" in text
    assert not out.exists() and "wrote" not in text


def test_flow_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "flow.png"
    rows = {(i, config): (0.01 * (i + 1), 0.011 * (i + 1), "device -> edge")
            for i in range(2) for config in flow.CONFIGS}
    flow.plot(str(out), [5e6, 200e6], rows)
    assert os.path.getsize(out) > 10_000


@pytest.mark.parametrize("argv", [["--bandwidths", "abc"], ["--bandwidths", "10,-5"], ["--requests", "0"],
                                  ["--batch", "0"], ["--edge-speed", "2"], ["--out", "/no/such/dir/x.png"]])
def test_bad_options_are_refused_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        flow.main(argv)
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err
