"""`edgekit convert --stream` and `edgekit stream` on the bundled PPG model: the step model and the
streamed outputs equal StreamingSession's (exactly), bad sources and flag mixes give exit 1 / 2."""
import os

import numpy as np
import onnxruntime as ort
import pytest

import edgekit
import edgekit.demos
from edgekit.cli import main

PPG = os.path.join(os.path.dirname(edgekit.demos.__file__), "models", "ppg_cnn.onnx")


@pytest.fixture
def signal_csv(tmp_path):
    x = np.sin(2 * np.pi * 1.3 * np.arange(700) / 32).astype(np.float32)
    path = tmp_path / "ppg.csv"
    np.savetxt(path, x[:, None], delimiter=",", header="ppg", comments="", fmt="%.7g")
    return str(path), np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)


def test_convert_stream_writes_a_step_model_onnxruntime_runs(tmp_path, capsys):
    out = str(tmp_path / "step.onnx")
    assert main(["convert", PPG, "--stream", "--hop", "64", "-o", out, "--report"]) == 0
    text = capsys.readouterr().out
    assert "step model, 64 new samples per call" in text and "NRMSE" in text
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[-1] == 64


def test_stream_prints_the_session_outputs_per_hop(signal_csv, capsys):
    path, x = signal_csv
    assert main(["stream", PPG, "--hop", "64", "--source", path]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("hop ")]
    expected = edgekit.StreamingSession(PPG, hop=64).push(x[None])
    assert len(lines) == len(expected) == 700 // 64 - 3
    for line, outputs in zip(lines, expected):
        printed = float(line.split("[")[1].rstrip("]"))
        np.testing.assert_allclose(printed, outputs[0].item(), rtol=1e-4)  # printed with 4 decimals


def test_stream_rejects_rows_with_the_wrong_channel_count(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("1.0,2.0\n")
    assert main(["stream", PPG, "--hop", "64", "--source", str(path)]) == 1
    assert "has 2 values; the model takes 1 channels" in capsys.readouterr().err


def test_convert_needs_exactly_one_technique(tmp_path):
    assert main(["convert", PPG, "-o", str(tmp_path / "x.onnx")]) == 2
    assert main(["convert", PPG, "--stream", "--binarize", "-o", str(tmp_path / "x.onnx")]) == 2
    assert main(["convert", PPG, "--stream", "-o", str(tmp_path / "x.onnx")]) == 2
