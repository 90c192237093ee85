"""Parameter-free demo: the bundled Fashion-MNIST subset and model pair (small, checked, differing
only in the spatial op, accurate, the same on edgekit and onnxruntime), the table, the demo end
to end with its plot (its edgekit-vs-onnxruntime agreement: every prediction, logits within 1e-4), --no-plot, and usage errors for bad arguments."""
import os
import re

import numpy as np
import onnx
import pytest

from edgekit.demos import fashion_mnist
from edgekit.demos import paramfree as demo
from oracle import assert_matches_ort


def test_bundled_subset_is_small_and_sane():
    assert os.path.getsize(fashion_mnist.DATA) < 500 * 1024
    images, labels = demo.load_images()
    assert images.shape == (1000, 1, 28, 28) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0.1
    assert set(np.unique(labels)) == set(range(10))


def test_bundled_pair_differs_only_in_the_spatial_op():
    dw, mp = (onnx.load(demo.MODELS[k]) for k in ("depthwise", "max-pool"))
    for proto in (dw, mp):
        onnx.checker.check_model(proto, full_check=True)
    assert all(os.path.getsize(path) < 200 * 1024 for path in demo.MODELS.values())
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in dw.graph.node if n.op_type == "Conv"]
    assert sum(g > 1 for g in groups) == 4
    ops = [n.op_type for n in mp.graph.node]
    assert ops.count("MaxPool") == 4
    assert all(next((a.i for a in n.attribute if a.name == "group"), 1) == 1 for n in mp.graph.node if n.op_type == "Conv")


@pytest.mark.parametrize("key", sorted(demo.MODELS))
def test_bundled_models_are_accurate_and_match_onnxruntime(key):
    images, labels = demo.load_images()
    proto = onnx.load(demo.MODELS[key])
    (logits,) = assert_matches_ort(proto, {"image": images[:200]}, rtol=1e-3, atol=1e-3)
    assert np.mean(logits.argmax(1) == labels[:200]) > 0.8


def test_table_reports_both_models():
    rows = [{"name": n, "accuracy": a, "ort_accuracy": a, "same_predictions": 1.0, "max_abs_diff": 1e-6,
             "params": p, "macs": m, "edgekit_us": t, "ort_us": 2 * t}
            for n, a, p, m, t in (("depthwise", 0.9, 40_000, 3_000_000, 100.0), ("max-pool", 0.88, 36_000, 2_700_000, 80.0))]
    text = demo.table(rows)
    assert "-10.0% parameters" in text and "-10.0% MACs" in text and "-2.0 points" in text
    assert "speedup 1.25x on edgekit, 1.25x on onnxruntime" in text


def test_demo_end_to_end(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "pf.png"
    assert demo.main(["--repeat", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "depthwise" in text and "max-pool" in text and "speedup" in text and "same predictions" in text
    assert "without retraining" in text
    agree = re.findall(r"(depthwise|max-pool) ([\d.]+)% same predictions \(max \|logit diff\| (\S+)\)", text)
    assert [a[0] for a in agree] == ["depthwise", "max-pool"], text  # edgekit against onnxruntime, per model
    assert all(float(same) == 100.0 and float(diff) < 1e-4 for _, same, diff in agree), agree
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_plot_writes_nothing_and_bad_arguments_are_usage_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--repeat", "1", "--no-plot", "--out", str(tmp_path / "missing" / "pf.png")]) == 0
    assert "speedup" in capsys.readouterr().out and not list(tmp_path.iterdir())
    for argv in (["--repeat", "0"], ["--out", str(tmp_path / "missing" / "pf.png")]):
        with pytest.raises(SystemExit) as exc:
            demo.main(argv)
        assert exc.value.code == 2 and argv[0] in capsys.readouterr().err
