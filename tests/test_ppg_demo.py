"""PPG demo: CSV loading, resampling, causal preprocessing and reference heart rate on synthetic
pulse waves of known rate; the bundled model; the demo end to end on heartpy's recordings, where
streaming equals window inference (skipped when heartpy is absent); its one-line exit without them."""
import os

import numpy as np
import onnx
import pytest

from edgekit.demos import ppg, ppg_data as data


def pulse_wave(bpm: float, fs: float, seconds: float, seed: int = 0) -> np.ndarray:
    """PPG-like: a systolic peak and a smaller dicrotic wave per beat, baseline wander, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    phase = (t * bpm / 60.0) % 1.0
    period = 60.0 / bpm
    beat = np.exp(-0.5 * ((phase - 0.2) * period / 0.06) ** 2) + 0.45 * np.exp(-0.5 * ((phase - 0.55) * period / 0.08) ** 2)
    return 500 + 200 * beat + 20 * np.sin(2 * np.pi * 0.15 * t) + 3 * rng.standard_normal(t.size)


@pytest.mark.parametrize("bpm", [48.0, 75.0, 130.0])
def test_reference_hr_finds_the_rate_not_the_dicrotic_wave(bpm):
    fs = 100.0
    hr = data.reference_hr(pulse_wave(bpm, fs, 40.0), fs)
    assert len(hr) == data.window_count(int(40 * data.FS))  # 8 s windows every 2 s: 17
    assert not np.isnan(hr).any()
    np.testing.assert_allclose(hr, bpm, atol=1.0)


def test_reference_hr_rejects_noise():
    rng = np.random.default_rng(1)
    assert np.isnan(data.reference_hr(rng.standard_normal(3000), 100.0)).all()
    assert np.isnan(data.reference_hr(np.zeros(3000), 100.0)).all()


def test_read_csv_formats(tmp_path):
    fs = 117.0
    x = np.round(pulse_wave(70.0, fs, 20.0))
    t_ms = np.arange(len(x)) * 1000.0 / fs
    (tmp_path / "timer.csv").write_text("timer,hr\n" + "".join(f"{float(a)!r},{int(b)}\n" for a, b in zip(t_ms, x)))
    stamps = np.datetime64("2016-11-24T13:58:58") + (t_ms * 1000).astype("timedelta64[us]")
    (tmp_path / "stamps.csv").write_text("datetime,hr\n" + "".join(
        f"{str(s).replace('T', ' ')},{int(b)}\n" for s, b in zip(stamps, x)))
    (tmp_path / "bare.csv").write_text("".join(f"{int(b)}\n" for b in x))
    for name, rate in (("timer.csv", None), ("stamps.csv", None), ("bare.csv", fs)):
        got, got_fs = data.read_csv(str(tmp_path / name), rate)
        np.testing.assert_array_equal(got, x)
        assert got_fs == pytest.approx(fs, rel=1e-4), name
    with pytest.raises(ValueError, match="sample rate"):
        data.read_csv(str(tmp_path / "bare.csv"))


def test_resample_and_causal_preprocess():
    x = pulse_wave(90.0, 100.0, 30.0)
    x32 = data.resample(x, 100.0)
    assert len(x32) == 30 * data.FS
    # The resampled wave keeps its rate: reference HR at 32 Hz matches the one at 100 Hz.
    np.testing.assert_allclose(data.reference_hr(x32, data.FS), 90.0, atol=1.5)
    y = data.preprocess(x32)
    assert y.dtype == np.float32 and np.abs(y).max() <= 4.0
    assert 0.5 < np.sqrt(np.mean(y[64:] ** 2)) < 1.5
    # Causal: a prefix of the stream preprocesses to a prefix of the output.
    np.testing.assert_array_equal(data.preprocess(x32[:300]), y[:300])


def test_bundled_model_is_small_and_matches_onnxruntime():
    import edgekit
    from edgekit.benchmarks.timing import ort_session

    assert os.path.getsize(ppg.MODEL) < 200 * 1024
    proto = onnx.load(ppg.MODEL)
    onnx.checker.check_model(proto)
    x = data.preprocess(data.resample(pulse_wave(75.0, 100.0, 8.0), 100.0))[None, None]
    (ours,) = edgekit.InferenceSession(proto).run(None, {"ppg": x})
    (theirs,) = ort_session(proto).run(None, {"ppg": x})
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-3)
    assert 60.0 < float(theirs[0, 0]) < 90.0  # a plausible rate for a clean 75 bpm wave


def test_demo_without_heartpy_exits_1_with_install_hint(monkeypatch, capsys, tmp_path):
    def absent():
        raise ModuleNotFoundError(data.INSTALL_HINT)

    monkeypatch.setattr(data, "data_dir", absent)
    assert ppg.main(["--out", str(tmp_path / "p.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install "edgekit[demo]"' in err
    assert not (tmp_path / "p.png").exists()


def test_demo_end_to_end(tmp_path, capsys):
    if ppg._requirements():  # heartpy's data is only read, never imported (its import can fail)
        pytest.skip("heartpy or matplotlib is not installed")
    out = tmp_path / "ppg.png"
    assert ppg.main(["--recording", "data", "--out", str(out)]) == 0  # the short recording
    text = capsys.readouterr().out
    assert "MAE vs reference" in text and "median latency per hop" in text
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ppg.main(["--recording", "data", "--out", str(tmp_path / "none.png"), "--no-plot", "--quiet"]) == 0
    assert "MAE vs reference" in capsys.readouterr().out and not (tmp_path / "none.png").exists()

    cols = ppg.run("data2", verbose=False)  # the held-out recording the demo streams by default
    assert len(cols["stream"]) == data.window_count(len(cols["signal"])) == 61
    assert not np.isnan(cols["stream"]).any() and not np.isnan(cols["window"]).any()
    # Valid convolutions: every streamed hop equals window inference (float rounding apart).
    np.testing.assert_allclose(cols["stream"], cols["window"], rtol=1e-5, atol=1e-3)
    ok = ~np.isnan(cols["ref"])
    assert ok.sum() >= 30
    assert np.mean(np.abs(cols["stream"][ok] - cols["ref"][ok])) < 4.0
