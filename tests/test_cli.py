"""The `edgekit` command line, in process via ``edgekit.cli.main`` and once as a real subprocess.

Every verb runs and has --help; usage errors exit 2; a missing model or missing input exits 1
with a message naming it; `run` writes outputs matching NumPy (Relu, exact); the bundled demo
model is what demos/make_models.py generates.
"""
import importlib
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper

from edgekit import __version__
from edgekit.cli import DEFAULT_DEMO, DEMOS, main
from oracle import make_model

VERBS = ["info", "ops", "run", "bench", "convert", "stream", "partition", "serve", "demo", "backend-test"]


@pytest.fixture
def relu_model(tmp_path):
    """Relu over a [batch, 8] float32 input, saved to disk; batch is dynamic."""
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (["batch", 8], np.float32)}, ["y"])
    path = tmp_path / "relu.onnx"
    onnx.save(model, path)
    return str(path)


def test_version_in_process_and_as_module(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    done = subprocess.run([sys.executable, "-m", "edgekit", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"edgekit {__version__}"


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb, capsys):
    assert main([verb, "--help"]) == 0
    assert "usage: edgekit" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    [], ["frobnicate"], ["info"], ["run"], ["bench", "m.onnx", "--threads", "0"],
    ["info", "m.onnx", "--dim", "batch"], ["info", "m.onnx", "--dim", "batch=-3"],
    ["run", "m.onnx", "--input", "x"], ["demo", "no-such-demo"],
    ["serve", "plan", "--tier", "edge", "--deadline", "0"],
])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2


@pytest.mark.parametrize("verb", ["info", "partition"])
def test_bad_dim_same_message_in_every_verb(verb, capsys):
    extra = ["-o", "out"] if verb == "partition" else []
    assert main([verb, "m.onnx", "--dim", "batch=0", *extra]) == 2
    assert "dimension 'batch': expected a positive integer, got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["4000000000000000000", "99999999999999999999999"])
def test_absurd_dims_are_usage_errors_not_tracebacks(value, relu_model, capsys):
    """Dims whose byte sizes overflow int64 once crashed `info` deep in the planner."""
    assert main(["info", relu_model, "--dim", f"batch={value}"]) == 2
    assert "is larger than" in capsys.readouterr().err
    assert main(["info", relu_model, "--dim", "batch=100000"]) == 0


def test_info_with_dims_whose_product_overflows_int64(tmp_path, capsys):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": (["a", "b", 3], np.float32)}, ["y"])
    onnx.save(model, tmp_path / "m.onnx")
    assert main(["info", str(tmp_path / "m.onnx"), "--dim", "a=4294967296", "--dim", "b=4294967296"]) == 0
    assert "exceed 4.0 GiB" in capsys.readouterr().out


def test_missing_model_exits_1_with_message(tmp_path, capsys):
    missing = str(tmp_path / "nope.onnx")
    for verb in ("info", "run", "bench"):
        assert main([verb, missing]) == 1
        err = capsys.readouterr().err
        assert err.startswith("edgekit: error:") and "nope.onnx" in err and "does not exist" in err


def test_info_reports_io_ops_and_unsupported(relu_model, tmp_path, capsys):
    assert main(["info", relu_model, "--dim", "batch=3"]) == 0
    out = capsys.readouterr().out
    assert "x: float32 [batch, 8]" in out and "Relu" in out and "unsupported by edgekit: none" in out

    odd = make_model([helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Det", ["h"], ["y"])],
                     {"x": ([2, 4, 4], np.float32)}, ["y"])
    path = tmp_path / "odd.onnx"
    onnx.save(odd, path)
    assert main(["info", str(path)]) == 0
    assert "Det: not implemented" in capsys.readouterr().out


def test_ops_lists_every_registered_op(capsys):
    from edgekit.runtimes.ops import supported_ops

    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    words = set(re.findall(r"[\w:.]+", out))
    assert all(op in words for op in supported_ops())
    assert f"{sum('::' not in op for op in supported_ops())} standard ONNX ops" in out


def test_a_dim_the_model_does_not_have_is_refused(relu_model, tmp_path, capsys):
    """A mistyped --dim name once changed nothing, silently."""
    for verb in ("info", "bench"):
        assert main([verb, relu_model, "--dim", "btach=3"]) == 1
        assert "--dim btach: not a dynamic dimension of the model's inputs (they have batch)" in capsys.readouterr().err
    assert main(["run", relu_model, "--random", "--dim", "btach=3"]) == 1
    assert main(["partition", relu_model, "--tier", "device:1", "--dim", "btach=3", "-o", str(tmp_path / "p")]) == 1
    assert "--dim btach: not a dynamic dimension" in capsys.readouterr().err and not (tmp_path / "p").exists()


def test_run_names_an_unknown_input_and_a_file_that_is_not_npy(relu_model, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 8), np.float32))
    assert main(["run", relu_model, "--input", f"z={tmp_path / 'x.npy'}"]) == 1
    assert "--input z: not an input of the model; it takes ['x']" in capsys.readouterr().err
    (tmp_path / "x.csv").write_text("1,2,3\n")
    assert main(["run", relu_model, "--input", f"x={tmp_path / 'x.csv'}"]) == 1
    assert "not a .npy file (write arrays with numpy.save)" in capsys.readouterr().err


def test_info_checks_ops_after_the_graph_rewrites(capsys):
    """tf2onnx's ReverseSequence of whole sequences and its GRU/SimpleRNN Loops run as rewritten
    nodes: `info` once listed ReverseSequence as not implemented on a model that runs."""
    model = os.path.join(os.path.dirname(__file__), "models", "keras", "rnn_forms_opset17.onnx")
    assert main(["info", model]) == 0
    out = capsys.readouterr().out
    assert "ReverseSequence" in out and "unsupported by edgekit: none" in out


def test_info_counts_macs_and_parameters(tmp_path, capsys):
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((5, 7)).astype(np.float32), np.zeros(5, np.float32)
    model = make_model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], {"x": (["n", 7], np.float32)},
                       ["y"], {"w": w, "b": b})
    path = tmp_path / "gemm.onnx"
    onnx.save(model, path)
    assert main(["info", str(path), "--dim", "n=4"]) == 0
    out = capsys.readouterr().out
    assert "parameters: 40 " in out and "MACs at n=4: 140 (Gemm 140)" in out


def test_info_counts_macs_past_custom_ops():
    """ONNX shape inference stops at the bundled LMUFormer's ai.edgekit LMU op; edgekit's plan does
    not, so the convolutions and the MatMul after it are counted too (from their weight shapes)."""
    from edgekit.demos.lmu import MODEL
    from edgekit.stats import model_stats

    proto = onnx.load(MODEL)
    weights = {t.name: t.dims for t in proto.graph.initializer}
    expected_conv = sum(int(np.prod(weights[n.input[1]][1:])) * weights[n.input[1]][0]
                        for n in proto.graph.node if n.op_type == "Conv")  # one output column per conv (T = 1)
    got = model_stats(proto, {"N": 1, "T": 1}).macs
    assert got["Conv"] == expected_conv and got["MatMul"] > 0


def test_run_writes_npz(relu_model, tmp_path, capsys):
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    assert main(["run", relu_model, "--input", f"x={tmp_path / 'x.npy'}", "-o", str(out)]) == 0
    assert "y: float32 [3, 8]" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(out)["y"], np.maximum(x, 0))
    assert main(["run", relu_model, "--input", f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "bare")]) == 0
    assert f"wrote {tmp_path / 'bare.npz'}" in capsys.readouterr().out  # the file np.savez writes
    assert (tmp_path / "bare.npz").exists()


def test_run_refuses_a_missing_output_directory_and_repeated_inputs(relu_model, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((3, 8), np.float32))
    feed = ["--input", f"x={tmp_path / 'x.npy'}"]
    assert main(["run", relu_model, *feed, "-o", str(tmp_path / "no" / "out.npz")]) == 1
    err = capsys.readouterr()
    assert "no directory" in err.err and "y: float32" not in err.out  # refused before running
    assert main(["run", relu_model, *feed, *feed]) == 2
    assert "given twice for x" in capsys.readouterr().err


def test_run_random_inputs_and_missing_input(relu_model, capsys):
    assert main(["run", relu_model, "--random", "--dim", "batch=2"]) == 0
    assert "y: float32 [2, 8]" in capsys.readouterr().out
    assert main(["run", relu_model]) == 1
    assert "no value for input(s) ['x']" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["run", "bench"])
def test_random_inputs_too_large_exit_1_before_allocating(verb, relu_model, capsys):
    extra = ["--random"] if verb == "run" else []
    assert main([verb, relu_model, *extra, "--dim", "batch=1000000000"]) == 1
    assert "give smaller --dim values" in capsys.readouterr().err


def test_run_unreadable_input_exits_1(relu_model, tmp_path, capsys):
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    assert main(["run", relu_model, "--input", f"x={tmp_path / 'bad.npy'}"]) == 1
    assert "cannot read input 'x'" in capsys.readouterr().err


def test_bench_prints_both_engines(relu_model, capsys):
    assert main(["bench", relu_model, "--repeat", "5", "--dim", "batch=2"]) == 0
    out = capsys.readouterr().out
    assert "edgekit" in out and "onnxruntime" in out and "ratio edgekit/onnxruntime" in out


def test_bench_times_edgekit_alone_on_a_model_onnxruntime_cannot_run(capsys):
    """A model with edgekit's own ops (as `edgekit convert` writes) is timed on edgekit, with the reason."""
    from edgekit.demos.lmu import MODEL

    assert main(["bench", MODEL, "--repeat", "5"]) == 0
    out = capsys.readouterr().out
    assert "edgekit" in out and "ratio" not in out
    assert "onnxruntime cannot run this model, so edgekit was timed alone" in out and "ai.edgekit" in out


def test_demo_options_without_a_name_go_to_the_default_demo(monkeypatch):
    seen = []
    monkeypatch.setattr(importlib.import_module(DEMOS[DEFAULT_DEMO][0]), "main", lambda argv: seen.append(argv) or 0)
    assert main(["demo", "--no-plot"]) == 0
    assert seen == [["--no-plot"]]


def test_demo_table_entries_have_main():
    for module, _ in DEMOS.values():
        assert callable(importlib.import_module(module).main)


@pytest.mark.parametrize("demo", ["ppg", "paramfree", "lmu", "flow"])
def test_demo_plot_into_a_missing_directory_is_refused_before_running(demo, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["demo", demo, "--out", str(tmp_path / "missing" / "plot.png")])
    assert stop.value.code == 2
    assert f"no such directory: {tmp_path / 'missing'}" in capsys.readouterr().err


def test_demo_without_a_name_runs_the_ppg_demo_with_the_rest_of_the_arguments(monkeypatch):
    """`edgekit demo` alone is `edgekit demo ppg` (the README's default); options after the name reach the demo."""
    from edgekit.demos import paramfree, ppg

    calls = []
    monkeypatch.setattr(ppg, "main", lambda argv: calls.append(("ppg", argv)) or 0)
    monkeypatch.setattr(paramfree, "main", lambda argv: calls.append(("paramfree", argv)) or 0)
    assert main(["demo"]) == 0 and main(["demo", "paramfree", "--repeat", "2", "--no-plot"]) == 0
    assert calls == [("ppg", []), ("paramfree", ["--repeat", "2", "--no-plot"])]


def test_demo_quickstart_runs(capsys):
    """The demo's printed edgekit-vs-onnxruntime difference on its bundled 1D CNN is float32 rounding
    (logits of order 1: 1e-4), not merely printed."""
    assert main(["demo", "quickstart", "--repeat", "3"]) == 0
    diff = re.search(r"max \|difference\| (\S+)", capsys.readouterr().out)
    assert diff and float(diff.group(1)) < 1e-4, diff


def test_backend_test_verb(capsys):
    assert main(["backend-test", "-k", "^test_relu$"]) == 0
    assert "passed 1, failed 0" in capsys.readouterr().out


def test_bundled_demo_model_is_reproducible():
    from edgekit.demos.make_models import BUNDLED, MODELS_DIR

    for name, build in BUNDLED.items():
        with open(os.path.join(MODELS_DIR, name), "rb") as f:
            assert f.read() == build().SerializeToString(), f"{name}: rerun python -m edgekit.demos.make_models"
