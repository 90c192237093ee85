"""BNN demo: the bundled Fashion-MNIST subset (the Debian test set's first images, read by the one
reader demos.fashion_mnist) and float model (small, checked, binarizable), the demo
end to end (accuracy far above chance, binary and float predictions identical, the forced MST plan
exact, its table and the cost model's per-layer choice consistent), and the converted
model, dense and MST-compressed, against its standard-op float export run in onnxruntime; bad
demo arguments are usage errors."""
import os
import re

import numpy as np
import onnx
import pytest

import edgekit
from edgekit.converters.binarize import DOMAIN, binarize, to_float
from edgekit.converters.mst import compress
from edgekit.demos import bnn as demo
from edgekit.demos import fashion_mnist
from oracle import ort_session

# Ten balanced classes: chance is 10%. The bundled model scores 91.3% on the 1,000 images (float and
# binary alike); 80% leaves room for a retrained model while any broken conversion (wrong thresholds,
# flipped channels, bad packing) falls to near chance.
MIN_ACCURACY = 0.80


def test_bundled_subset_and_model_are_small_and_sane():
    assert os.path.getsize(fashion_mnist.DATA) < 500 * 1024 and os.path.getsize(demo.MODEL) < 1024 * 1024
    images, labels = demo.load_images()
    assert images.shape == (1000, 1, 28, 28) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0.1
    assert set(np.unique(labels)) == set(range(10))
    onnx.checker.check_model(onnx.load(demo.MODEL), full_check=True)


def test_bundled_subset_is_the_first_debian_test_images():
    """The one Fashion-MNIST reader (demos, training scripts) reads Debian's files as the subset was written."""
    if not os.path.isdir(fashion_mnist.DEBIAN):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    images, labels = fashion_mnist.as_float(*fashion_mnist.read("t10k"))
    subset = fashion_mnist.load_images(200)
    assert np.array_equal(subset[0], images[:200]) and np.array_equal(subset[1], labels[:200])


def test_demo_end_to_end(capsys):
    assert demo.main(["--repeat", "5"]) == 0
    text = capsys.readouterr().out
    float_acc = float(re.search(r"float model \(onnxruntime\)\s+([\d.]+)%", text).group(1)) / 100
    binary_acc = float(re.search(r"binary model \(edgekit, packed\)\s+([\d.]+)%", text).group(1)) / 100
    same = float(re.search(r"same predictions ([\d.]+)%", text).group(1))
    assert binary_acc > MIN_ACCURACY and float_acc > MIN_ACCURACY
    assert same == 100.0 and binary_acc == float_acc  # the conversion is exact: same argmax on every image
    assert "XNOR bit-ops per image" in text and "weight storage, bits" in text
    assert "max |diff| 0.0e+00" in text  # the forced MST plan gives the dense binary model's logits
    # The table is the forced plan: "mst(forced)" exactly where it predicts more time than dense. The
    # lines after it are what runs (the cost model's choice), one per layer, counted in their heading.
    table = [line.split() for line in text.splitlines() if line.startswith("/")]
    assert len(table) == 3
    for row in table:
        dense_us, mst_us = (float(t) for t in row[-3].split("/"))
        assert row[-1] in ("mst", "mst(forced)")
        if mst_us != dense_us:  # (equal after rounding to 0.1 us: either)
            assert row[-1] == ("mst(forced)" if mst_us > dense_us else "mst")
    runs = [line.split() for line in text.splitlines() if line.startswith("  /")]
    assert [r[0] for r in runs] == [r[0] for r in table]
    applied = int(re.search(r"cost model's choice, MST on (\d+) of 3 layers", text).group(1))
    assert applied == sum(r[1] == "MST" for r in runs)
    assert all(r[1] in ("MST", "dense") for r in runs)
    assert re.search(r"onnxruntime float [\d.]+ us, edgekit binary [\d.]+ us .*MST plan forced [\d.]+ us", text)


@pytest.mark.parametrize("argv", [["--repeat", "0"], ["--images", "0"], ["--images", "1001"], ["--depth", "-1"]])
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(argv)
    assert exc.value.code == 2 and argv[0] in capsys.readouterr().err


@pytest.mark.parametrize("plan", ["dense", "mst"])
def test_binary_model_agrees_with_its_float_export_in_onnxruntime(plan):
    """The binary model (edgekit, XNOR/popcount) against ``to_float`` of it (onnxruntime, +-1 float convs):
    the pre-activation sums are integers both ways and every hidden layer is a threshold, so only the
    last layer's float scale and bias can differ, by float32 rounding: rtol 1e-5, atol 1e-5 on logits
    of magnitude ~10, and identical predictions."""
    converted = binarize(demo.MODEL)
    assert sum(n.domain == DOMAIN for n in converted.graph.node) == 3
    if plan == "mst":
        converted, report = compress(converted, depth=3, force=True, metric="bits")  # the paper's plan
        assert all(row.chosen == "mst" and 0 < row.plan.depth.max() <= 3 for row in report.layers)
    images, _ = demo.load_images(300)
    (ours,) = edgekit.InferenceSession(converted).run(None, {"image": images})
    (ref,) = ort_session(to_float(converted)).run(None, {"image": images})
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    assert np.array_equal(ours.argmax(1), ref.argmax(1))
