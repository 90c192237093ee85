"""`edgekit convert --stream` and `edgekit stream` on the bundled PPG model: the written step model,
run hop by hop in onnxruntime, equals onnxruntime's window inference; the streamed outputs equal
StreamingSession's (as printed), bad sources and flag mixes give exit 1 / 2, a
closed stdout pipe ends the stream quietly, NaN samples need --allow-nan.
`edgekit convert --binarize --mst --report` on the bundled BNN: the written model gives the float
model's predictions, the report times every layer and `edgekit info` counts its packed weights and
XNOR-popcount MACs; `edgekit convert --paramfree max|avg` writes the pool asked for, matching
onnxruntime; converters never import the runtime (the
report's timing runs in the CLI through edgekit.InferenceSession)."""
import ast
import glob
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import edgekit
import edgekit.converters
import edgekit.demos
from edgekit.cli import main
from edgekit.metadata import STREAM_KEY

PPG = os.path.join(os.path.dirname(edgekit.demos.__file__), "models", "ppg_cnn.onnx")
BNN = os.path.join(os.path.dirname(edgekit.demos.__file__), "models", "bnn_fashion.onnx")
LMU = os.path.join(os.path.dirname(edgekit.demos.__file__), "models", "lmu_basicmotions.onnx")


@pytest.fixture
def signal_csv(tmp_path):
    x = np.sin(2 * np.pi * 1.3 * np.arange(700) / 32).astype(np.float32)
    path = tmp_path / "ppg.csv"
    np.savetxt(path, x[:, None], delimiter=",", header="ppg", comments="", fmt="%.7g")
    return str(path), np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)


def test_convert_stream_writes_a_step_model_onnxruntime_runs(tmp_path, capsys):
    """The written file, run hop by hop in onnxruntime from its own metadata (zero-filled states fed
    back), gives at every hop after the warm-up what onnxruntime gives on the window model over the last
    256 samples (the PPG net has valid convolutions): rtol 1e-5, atol 1e-5 x the output's scale."""
    out = str(tmp_path / "step.onnx")
    assert main(["convert", PPG, "--stream", "--hop", "64", "-o", out, "--report"]) == 0
    text = capsys.readouterr().out
    assert "step model, 64 new samples per call" in text and "NRMSE" in text
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[-1] == 64
    step = onnx.load(out)
    meta = json.loads({p.key: p.value for p in step.metadata_props}[STREAM_KEY])
    hop, window, warmup = meta["hop"], meta["window"], meta["warmup_hops"]
    assert (hop, window, meta["delay"]) == (64, 256, 0)
    x = np.random.default_rng(4).standard_normal((1, 1, (warmup + 20) * hop)).astype(np.float32)
    states = {s["input"]: np.full([1, *s["shape"][1:]], s["fill"], np.float32) for s in meta["states"]}
    names = meta["outputs"] + [s["output"] for s in meta["states"]]
    got = []
    for h in range(warmup + 20):
        res = sess.run(names, {meta["input"]: x[:, :, h * hop:(h + 1) * hop], **states})
        states = {s["input"]: v for s, v in zip(meta["states"], res[len(meta["outputs"]):])}
        got.append(res[0])
    windows = np.concatenate([x[:, :, (h + 1) * hop - window:(h + 1) * hop] for h in range(warmup, warmup + 20)])
    (want,) = ort.InferenceSession(PPG, providers=["CPUExecutionProvider"]).run(None, {"ppg": windows})
    np.testing.assert_allclose(np.concatenate(got[warmup:]), want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))


def test_stream_prints_the_session_outputs_per_hop(signal_csv, capsys):
    path, x = signal_csv
    assert main(["stream", PPG, "--hop", "64", "--source", path]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("hop ")]
    expected = edgekit.StreamingSession(PPG, hop=64).push(x[None])
    assert len(lines) == len(expected) == 700 // 64 - 3
    for line, outputs in zip(lines, expected):
        printed = float(line.split("[")[1].rstrip("]"))
        np.testing.assert_allclose(printed, outputs[0].item(), rtol=1e-4)  # printed with 4 decimals


def test_stream_into_a_closed_pipe_stops_quietly(signal_csv):
    """``edgekit stream ... | head``: once the reader has gone, exit 1 without a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "stream", PPG, "--hop", "64", "--source",
                             signal_csv[0]], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the first hop is printed: the child is still importing
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_stream_rejects_rows_with_the_wrong_channel_count(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("1.0,2.0\n")
    assert main(["stream", PPG, "--hop", "64", "--source", str(path)]) == 1
    assert "has 2 value(s); the model takes 1 channel(s)" in capsys.readouterr().err


def test_file_errors_exit_1_with_a_message(signal_csv, tmp_path, capsys):
    cases = [(["stream", PPG, "--hop", "64", "--source", str(tmp_path / "missing.csv")], "No such file"),
             (["stream", PPG, "--hop", "64", "--source", PPG], "is not UTF-8 text"),
             (["convert", PPG, "--stream", "--hop", "64", "--report", "--data", str(tmp_path / "no.csv"),
               "-o", str(tmp_path / "x.onnx")], "No such file"),
             (["convert", PPG, "--stream", "--hop", "64", "-o", str(tmp_path / "missing" / "x.onnx")], "No such file")]
    (tmp_path / "bad.npy").write_bytes(b"not npy")
    (tmp_path / "empty.csv").write_text("ppg\n")
    for data, message in (("bad.npy", "cannot read"), ("empty.csv", "has no samples")):
        cases.append((["convert", PPG, "--stream", "--hop", "64", "--report", "--data", str(tmp_path / data),
                       "-o", str(tmp_path / "y.onnx")], message))
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("edgekit: error: ") and message in err, err
    assert not (tmp_path / "y.onnx").exists()  # a bad --data file is read before anything is written


def test_stream_reads_a_csv_with_a_byte_order_mark_from_its_first_sample(signal_csv, tmp_path, capsys):
    path, x = signal_csv
    bom = tmp_path / "bom.csv"
    bom.write_text("\n".join(f"{v:.7g}" for v in x), encoding="utf-8-sig")  # no header: every line is a sample
    assert main(["stream", PPG, "--hop", "64", "--source", str(bom)]) == 0
    plain = capsys.readouterr().out
    assert main(["stream", PPG, "--hop", "64", "--source", path]) == 0
    assert plain == capsys.readouterr().out and plain.count("hop ") == 700 // 64 - 3


def test_stream_refuses_nan_samples_unless_allowed(tmp_path, capsys):
    path = tmp_path / "nan.csv"
    path.write_text("\n".join(["0.5"] * 100 + ["nan"] + ["0.5"] * 199) + "\n")
    assert main(["stream", PPG, "--hop", "64", "--source", str(path)]) == 1
    assert "line 101 of the source holds a NaN or Inf: 'nan' (--allow-nan" in capsys.readouterr().err
    assert main(["stream", PPG, "--hop", "64", "--source", str(path), "--allow-nan"]) == 0
    assert capsys.readouterr().out.count("hop ") == 300 // 64 - 3


def test_convert_stream_of_an_lmuformer_writes_its_step_model(tmp_path, capsys):
    """No --hop needed (one frame per step); the file streams in `edgekit stream` exactly as the
    LMUFormer itself does; window-CNN flags are refused."""
    out = str(tmp_path / "lmu_step.onnx")
    assert main(["convert", LMU, "--stream", "-o", out]) == 0
    assert "LMUFormer step model, 1 frame per call" in capsys.readouterr().out
    frames = np.random.default_rng(3).standard_normal((6, 7)).astype(np.float32)
    want = edgekit.StreamingSession(LMU).push(frames)
    got = edgekit.StreamingSession(out).push(frames)
    assert len(got) == len(want) == 7
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g[0], w[0])
    for flags, why in ((["--hop", "4"], "--hop: an LMUFormer streams one frame per step"),
                       (["--window", "100"], "--split / --window: they choose a window CNN's"),
                       (["--report"], "--report: it measures a zero-padded window CNN's streaming error")):
        assert main(["convert", LMU, "--stream", "-o", out, *flags]) == 2
        assert why in capsys.readouterr().err


def test_convert_needs_exactly_one_technique(tmp_path):
    assert main(["convert", PPG, "-o", str(tmp_path / "x.onnx")]) == 2
    assert main(["convert", PPG, "--stream", "--binarize", "-o", str(tmp_path / "x.onnx")]) == 2
    assert main(["convert", PPG, "--stream", "-o", str(tmp_path / "x.onnx")]) == 2
    assert main(["convert", PPG, "--stream", "--hop", "64", "--data", "x.csv", "-o", str(tmp_path / "x.onnx")]) == 2
    assert main(["convert", PPG, "--paramfree", "max", "--data", "x.csv", "-o", str(tmp_path / "x.onnx")]) == 2
    for flags in (["--stream", "--hop", "64", "--mst"], ["--paramfree", "max", "--mst-depth", "2"],
                  ["--binarize", "--mst-depth", "2"], ["--binarize", "--mst", "--mst-depth", "-1"],
                  ["--stream", "--hop", "0"], ["--stream", "--hop", "64", "--window", "-5"]):
        assert main(["convert", BNN if "--binarize" in flags else PPG, *flags, "-o", str(tmp_path / "x.onnx")]) == 2
    assert not os.path.exists(tmp_path / "x.onnx")


@pytest.mark.parametrize("op", ["max", "avg"])
def test_convert_paramfree_writes_the_pooled_model(op, tmp_path, capsys):
    """`edgekit convert --paramfree max|avg`: the depthwise Conv of a MobileNetV2 block becomes the pool
    asked for, and the written model runs on edgekit as on onnxruntime (rtol/atol 1e-4)."""
    from edgekit.converters import paramfree as pf
    from oracle import assert_matches_ort

    src, out = tmp_path / "block.onnx", tmp_path / "pooled.onnx"
    onnx.save(pf.inverted_residual(8, 12, spatial="dw"), src)
    assert main(["convert", str(src), "--paramfree", op, "-o", str(out)]) == 0
    model = onnx.load(out)
    ops = [n.op_type for n in model.graph.node]
    other = pf.POOL_OPS["avg" if op == "max" else "max"]
    assert ops.count(pf.POOL_OPS[op]) == 1 and other not in ops
    assert ops.count("Conv") == 2  # the 1x1 expand and project remain
    x = np.random.default_rng(9).standard_normal((1, 8, 12, 12)).astype(np.float32)
    assert_matches_ort(model, {"x": x}, 1e-4, 1e-4)


def test_convert_binarize_without_binary_layers_writes_nothing(tmp_path, capsys):
    out = tmp_path / "x.onnx"
    assert main(["convert", PPG, "--binarize", "-o", str(out)]) == 1
    assert "no binary layer" in capsys.readouterr().err and not out.exists()


def test_convert_binarize_mst_report(tmp_path, capsys):
    from edgekit.demos.bnn import load_images
    from oracle import ort_session

    out = str(tmp_path / "bnn.onnx")
    assert main(["convert", BNN, "--binarize", "--mst", "--mst-depth", "2", "--report", "-o", out]) == 0
    text = capsys.readouterr().out
    assert "3 binary layer(s)" in text and "MST report (depth bound 2)" in text and f"wrote {out}" in text
    rows = [line.split() for line in text.splitlines() if line.startswith(("/3/Conv", "/6/Conv", "/10/MatMul"))]
    assert len(rows) == 3 and all("/" in row[-2] and row[-2] != "-" for row in rows)  # measured us, dense/MST
    images, _ = load_images(100)
    (ours,) = edgekit.InferenceSession(out).run(None, {"image": images})
    (ref,) = ort_session(onnx.load(BNN)).run(None, {"image": images})
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)  # exact sums; float32 last-layer scale and bias
    assert np.array_equal(ours.argmax(1), ref.argmax(1))


def test_info_counts_binary_weights_and_macs(tmp_path, capsys):
    """`edgekit info` on a binarized model: each packed weight bit is a parameter, and the XNOR-popcount
    MACs of the binary layers equal the float layers' MACs they replace."""
    from edgekit.stats import model_stats

    out = str(tmp_path / "bnn.onnx")
    assert main(["convert", BNN, "--binarize", "-o", out]) == 0
    float_model = onnx.load(BNN)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in float_model.graph.initializer}
    binarized = [n.input[1] for n in float_model.graph.node if n.op_type in ("Conv", "MatMul")][1:]  # not the first
    capsys.readouterr()
    assert main(["info", out]) == 0
    expected = sum(weights[name].size for name in binarized)
    assert f"{expected:,} of them binary, 1 bit each" in capsys.readouterr().out
    float_stats, packed = model_stats(float_model), model_stats(onnx.load(out))
    assert packed.binary_macs["BinaryConv"] == float_stats.macs["Conv"] - packed.macs["Conv"] > 0
    float_gemm = float_stats.macs["MatMul"] + float_stats.macs["Gemm"]  # (the plan runs the MatMul as a Gemm)
    assert packed.binary_macs["BinaryGemm"] == float_gemm > 0


def test_converters_never_import_the_runtime():
    """No converter module imports runtimes or the sessions, at the top or inside a function."""
    root = os.path.dirname(edgekit.converters.__file__)
    for path in glob.glob(os.path.join(root, "*.py")):
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            bad = [n for n in names if "runtimes" in n or n in ("InferenceSession", "StreamingSession", "streaming")]
            assert not bad, f"{os.path.basename(path)} line {node.lineno} imports {bad}"


def test_stream_report_runs_in_the_engine_it_is_given():
    """The CLI's stream report runs edgekit.InferenceSession; its error matches onnxruntime's (the default)."""
    from edgekit.converters.stream import report, to_streaming

    sm = to_streaming(PPG, 64)
    made = []

    def session(model):
        made.append(model)
        return edgekit.InferenceSession(model)

    ours, ref = report(sm, hops=8, session=session), report(sm, hops=8)
    assert made == [sm.step_model, sm.window_model]
    assert ours.hops_compared == ref.hops_compared and ours.exact == ref.exact
    np.testing.assert_allclose(ours.nrmse_percent, ref.nrmse_percent, rtol=1e-3, atol=1e-4)  # float32 engines
