"""`edgekit convert --stream` and `edgekit stream` (edgekit/cli_convert.py) on bad signals, on a small
window CNN built here:

- `convert --stream --report --data` with data of the wrong shape, or too short for one output,
  exits 1 with the reason and writes nothing (the report is computed before the step model is saved);
- `stream` from standard input prints what the same CSV file gives (StreamingSession's values);
- `stream` on a source without samples (empty file, header only, empty stdin) exits 1 saying so,
  and on one too short for a first output exits 0 saying how many samples the first output needs.
"""
from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from onnx import helper

from edgekit.cli import main
from oracle import make_model


@pytest.fixture
def window_model(tmp_path):
    """Conv k3 -> GlobalAveragePool on (N, 2, 16): hop 4 gives its first output after 16 samples."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["y"], name="gap")]
    w = np.random.default_rng(0).standard_normal((3, 2, 3)).astype(np.float32)
    path = tmp_path / "win.onnx"
    onnx.save(make_model(nodes, {"x": (["N", 2, 16], np.float32)}, ["y"], {"w": w}), path)
    return str(path)


@pytest.mark.parametrize("shape,message", [((100, 2), "data must be (C, T)"), ((2, 10), "data too short")])
def test_convert_report_with_bad_data_writes_nothing(window_model, tmp_path, capsys, shape, message):
    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(1).standard_normal(shape).astype(np.float32))
    out = tmp_path / "step.onnx"
    argv = ["convert", window_model, "--stream", "--hop", "4", "--report", "--data", str(data), "-o", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgekit: error: ") and message in err, err
    assert not out.exists()


def test_convert_report_with_good_data_writes_then_reports(window_model, tmp_path, capsys):
    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32))
    out = tmp_path / "step.onnx"
    assert main(["convert", window_model, "--stream", "--hop", "4", "--report", "--data", str(data), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.exists() and text.index("wrote ") < text.index("NRMSE") and "(exact)" in text


@pytest.mark.parametrize("content", ["", "a,b\n", "\n\n"])
def test_stream_source_without_samples_is_an_error(window_model, tmp_path, capsys, content):
    src = tmp_path / "empty.csv"
    src.write_text(content)
    assert main(["stream", window_model, "--hop", "4", "--source", str(src)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgekit: error: ") and "no samples" in err, err


def test_stream_empty_stdin_is_an_error(window_model, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["stream", window_model, "--hop", "4", "--source", "-"]) == 1
    assert "no samples" in capsys.readouterr().err


def test_stream_from_stdin_prints_what_the_file_gives(window_model, tmp_path, monkeypatch, capsys):
    """`--source -` (a live source, read a row at a time) prints, hop by hop, what the same CSV read from
    a file prints, and those values are StreamingSession's (4 decimals)."""
    import edgekit

    x = np.random.default_rng(5).standard_normal((43, 2)).astype(np.float32)
    src = tmp_path / "sig.csv"
    np.savetxt(src, x, delimiter=",", fmt="%.9g")
    assert main(["stream", window_model, "--hop", "4", "--source", str(src)]) == 0
    from_file = capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO(src.read_text()))
    assert main(["stream", window_model, "--hop", "4", "--source", "-"]) == 0
    out, err = capsys.readouterr()
    assert out == from_file and err == "" and out.count("hop ") == 43 // 4 - 3
    want = edgekit.StreamingSession(window_model, hop=4).push(x.T)
    printed = [np.array(line.split(": ")[1].strip("[]").split(","), np.float32) for line in out.splitlines()]
    assert len(printed) == len(want)
    for p, w in zip(printed, want):
        np.testing.assert_allclose(p, w[0].reshape(-1), rtol=0, atol=6e-5)  # printed with 4 decimals


def test_stream_source_shorter_than_a_first_output_says_so(window_model, tmp_path, capsys):
    src = tmp_path / "short.csv"
    np.savetxt(src, np.ones((15, 2), np.float32), delimiter=",")
    assert main(["stream", window_model, "--hop", "4", "--source", str(src)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "15 samples" in err and "16" in err, err
    np.savetxt(src, np.ones((16, 2), np.float32), delimiter=",")
    assert main(["stream", window_model, "--hop", "4", "--source", str(src)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("hop 4 (sample 16): ") and err == ""


def test_stream_feeds_a_fixed_batch_model_the_signal_in_every_stream(window_model, tmp_path, capsys):
    """A model exported with a fixed batch N > 1 streams the CSV signal in each of its N streams (as
    report() repeats one signal) and prints the first stream's outputs: those of the batch-1 model."""
    fixed = onnx.load(window_model)
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 3
    path = tmp_path / "batch3.onnx"
    onnx.save(fixed, path)
    src = tmp_path / "sig.csv"
    np.savetxt(src, np.random.default_rng(3).standard_normal((40, 2)).astype(np.float32), delimiter=",")
    assert main(["stream", window_model, "--hop", "4", "--source", str(src)]) == 0
    one = capsys.readouterr().out
    assert main(["stream", str(path), "--hop", "4", "--source", str(src)]) == 0
    out, err = capsys.readouterr()
    assert out == one and out.count("hop ") == 40 // 4 - 3 and err == ""
