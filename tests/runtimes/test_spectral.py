"""DFT (opsets 17 and 20), STFT, the window ops and MelWeightMatrix against onnxruntime on random
signals, and DFT/STFT also against numpy's float64 FFT (edgekit accumulates in float64; onnxruntime's
float32 transform of a length that is not a power of two is off by up to ~3e-5 of the largest bin).
Tolerances: against numpy 1e-6 of the largest bin; against onnxruntime 1e-4 of the largest bin
(1e-6 for powers of two); windows and mel filters 3e-7 absolute (one float32 step of a value near 1, plus
the step of the random addend the test adds to them). Lengths cover powers of two (radix-2)
and others (Bluestein), real and complex input (real rows of even length run as complex transforms
of half the length), zero padding and truncation by dft_length, every axis, the inverse, one-sided spectra. Forms edgekit refuses are checked for their named reason.

The inverse one-sided DFT (IRFFT) is checked against numpy's float64 irfft (1e-6 of the largest value),
on random bins whose imaginary parts at bin 0 and n / 2 are not zero (both drop them), and against
onnxruntime (1e-4 of the largest value) where the input holds n // 2 + 1 bins: with more or fewer,
onnxruntime 1.32 gives other values (and it crashes on a dft_length given with the axis input left
empty). Two torch exports ending in irfft and istft are checked against torch's outputs saved with
them (tests/models/irfft/, written by tests/models/export_spectral.py; 1e-6 of the largest value).
"""
import os

import numpy as np
import onnx
import pytest
from onnx import helper

import edgekit
from edgekit.errors import InputError, ModelError, UnsupportedOpError
from oracle import make_model, ort_session


def spectrum(x: np.ndarray, n: int, axis: int, inverse: bool, onesided: bool) -> np.ndarray:
    """numpy's float64 transform of [..., 1|2] along ``axis`` as [..., 2]."""
    z = x[..., 0].astype(np.float64) + (1j * x[..., 1] if x.shape[-1] == 2 else 0)
    y = np.fft.ifft(z, n=n, axis=axis) if inverse else np.fft.fft(z, n=n, axis=axis)
    if onesided:
        y = np.take(y, np.arange(n // 2 + 1), axis=axis)
    return np.stack([y.real, y.imag], -1)


def assert_spectrum(got: np.ndarray, truth: np.ndarray, ort: np.ndarray, n: int) -> None:
    scale = float(np.abs(truth).max())
    assert got.shape == truth.shape == ort.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, truth, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(got, ort, rtol=0, atol=(1e-6 if n & (n - 1) == 0 else 1e-4) * scale)


def dft_model(shape, axis, n, opset, **attrs) -> "onnx.ModelProto":
    inputs, inits = ["x", "n" if n else ""], {}
    if n:
        inits["n"] = np.array(n, np.int64)
    if opset >= 20:
        inputs.append("axis")
        inits["axis"] = np.array(axis, np.int64)
    else:
        attrs["axis"] = axis
    return make_model([helper.make_node("DFT", inputs, ["y"], name="dft", **attrs)], {"x": (shape, np.float32)},
                      rank_only(len(shape)), inits, opset=opset)


def rank_only(rank: int) -> dict:
    """Output y of a known rank (shape inference gives no shape to the forms edgekit refuses)."""
    return {"y": ([f"d{i}" for i in range(rank)], np.float32)}


CASES = [  # shape, axis, dft_length, inverse, onesided
    ((2, 16, 1), 1, None, 0, 0), ((2, 16, 2), 1, None, 0, 0), ((3, 12, 1), 1, None, 0, 1),
    ((2, 5, 7, 2), 2, None, 1, 0), ((2, 5, 8, 1), 1, 8, 0, 1), ((2, 20, 1), 1, 16, 0, 0),
    ((2, 10, 2), -2, 32, 1, 0), ((1, 512, 1), 1, None, 0, 1), ((1, 400, 1), 1, None, 0, 1),
    ((4, 3, 6, 2), 1, 5, 0, 0), ((1, 1, 1), 1, None, 0, 0), ((2, 9, 3, 1), -3, 11, 1, 0),
    ((2, 12, 1), 1, None, 1, 0), ((1, 6, 1), 1, 2, 0, 0), ((2, 3, 10, 1), 2, 14, 0, 0), ((3, 2, 1), 0, 6, 0, 1),
]


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("shape,axis,n,inverse,onesided", CASES)
def test_dft(shape, axis, n, inverse, onesided, opset):
    x = np.random.default_rng(len(shape) + shape[1]).standard_normal(shape).astype(np.float32)
    model = dft_model(shape, axis, n, opset, inverse=inverse, onesided=onesided)
    got = edgekit.InferenceSession(model).run(None, {"x": x})[0]
    length = n or shape[axis]
    assert_spectrum(got, spectrum(x, length, axis % len(shape), bool(inverse), bool(onesided)),
                    ort_session(model).run(None, {"x": x})[0], length)


IRFFT_CASES = [  # shape (one-sided bins along axis), axis, dft_length (None: 2 (bins - 1))
    ((2, 9, 2), 1, None), ((2, 9, 2), 1, 17), ((3, 5, 4, 2), 1, 12), ((3, 5, 4, 2), -2, 7), ((1, 4, 2), 1, 30),
    ((2, 6, 3, 2), 0, 5), ((1, 2, 2), 1, None), ((1, 201, 2), 1, None), ((2, 257, 2), 1, 512), ((1, 3, 2), 1, 1),
    ((2, 20, 2), 1, 16), ((2, 20, 2), 1, 24),
]


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("shape,axis,n", IRFFT_CASES)
def test_irfft(shape, axis, n, opset):
    """Real signals of n values from one-sided complex bins: padded or truncated to n // 2 + 1 bins,
    the missing ones conjugates of their mirrors, any axis, radix-2 and Bluestein lengths."""
    x = np.random.default_rng(shape[axis] + (n or 0)).standard_normal(shape).astype(np.float32)
    model = dft_model(shape, axis, n, opset, inverse=1, onesided=1)
    got = edgekit.InferenceSession(model).run(None, {"x": x})[0]
    truth = np.fft.irfft(x[..., 0].astype(np.float64) + 1j * x[..., 1], n=n, axis=axis % len(shape))[..., None]
    assert got.shape == truth.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, truth, rtol=0, atol=1e-6 * float(np.abs(truth).max()))
    length = n or 2 * (shape[axis] - 1)
    if shape[axis] == length // 2 + 1:  # (onnxruntime's values differ for other bin counts)
        ort = ort_session(model).run(None, {"x": x})[0]
        np.testing.assert_allclose(got, ort, rtol=0, atol=1e-4 * float(np.abs(truth).max()))


def test_irfft_of_one_bin_needs_a_length():
    """The default length 2 (bins - 1) of a single bin is 0: a model error, not a crash."""
    with pytest.raises(ModelError, match="DFT length 0"):
        edgekit.InferenceSession(dft_model((1, 1, 2), 1, None, 20, inverse=1, onesided=1))


MODELS = os.path.join(os.path.dirname(__file__), "..", "models", "irfft")


@pytest.mark.parametrize("name", ["spectral_gate", "stft_mask"])
def test_torch_exports_ending_in_irfft(name):
    """torch.fft.irfft (after rfft and a gain) and torch.istft (after stft and a mask) as torch's dynamo
    exporter writes them, batch 3 of a model exported with a dynamic batch, against torch's outputs."""
    model = onnx.load(os.path.join(MODELS, f"{name}_dynamo_opset20.onnx"))
    assert any(n.op_type == "DFT" and {(a.name, a.i) for a in n.attribute} >= {("inverse", 1), ("onesided", 1)}
               for n in model.graph.node)
    data = np.load(os.path.join(MODELS, f"{name}_dynamo_opset20.npz"))
    got = edgekit.InferenceSession(model).run(None, {"x": data["x"]})[0]
    assert got.shape == data["y"].shape
    np.testing.assert_allclose(got, data["y"], rtol=0, atol=1e-6 * float(np.abs(data["y"]).max()))


def test_dft_over_a_dynamic_batch():
    model = make_model([helper.make_node("DFT", ["x"], ["y"], onesided=1)], {"x": (("N", 24, 1), np.float32)}, ["y"])
    session = edgekit.InferenceSession(model)
    for batch in (1, 3, 8):
        x = np.random.default_rng(batch).standard_normal((batch, 24, 1)).astype(np.float32)
        assert_spectrum(session.run(None, {"x": x})[0], spectrum(x, 24, 1, False, True),
                        ort_session(model).run(None, {"x": x})[0], 24)


def stft_model(shape, step, frame, window, onesided=1) -> "onnx.ModelProto":
    nodes, inits = [], {"step": np.array(step, np.int64), "frame": np.array(frame, np.int64)}
    inputs = ["x", "step", "", "frame"]
    if window:
        nodes.append(helper.make_node(window, ["frame"], ["w"]))
        inputs[2] = "w"
    nodes.append(helper.make_node("STFT", inputs, ["y"], name="stft", onesided=onesided))
    return make_model(nodes, {"x": (shape, np.float32)}, rank_only(4), inits, opset=17)


@pytest.mark.parametrize("shape,step,frame,window,onesided", [
    ((2, 64, 1), 8, 16, "HannWindow", 1), ((1, 100, 1), 10, 30, None, 1), ((1, 64, 2), 16, 16, "HannWindow", 0),
    ((2, 1000, 1), 160, 400, "HammingWindow", 1), ((1, 700, 1), 128, 256, "BlackmanWindow", 1), ((1, 33, 1), 7, 33, None, 0),
])
def test_stft(shape, step, frame, window, onesided):
    x = np.random.default_rng(shape[1]).standard_normal(shape).astype(np.float32)
    model = stft_model(shape, step, frame, window, onesided)
    got = edgekit.InferenceSession(model).run(None, {"x": x})[0]
    w = np.ones(frame) if window is None else ort_session(
        make_model([helper.make_node(window, ["s"], ["w"])], {}, ["w"], {"s": np.array(frame, np.int64)})).run(None, {})[0]
    frames = np.stack([x[:, f * step:f * step + frame] * w[:, None] for f in range((shape[1] - frame) // step + 1)], 1)
    assert_spectrum(got, spectrum(frames, frame, 2, False, bool(onesided)), ort_session(model).run(None, {"x": x})[0], frame)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic,size", [(0, 2), (0, 10), (0, 255), (1, 1), (1, 2), (1, 10), (1, 255)])
def test_windows(op, periodic, size):  # (a symmetric window of size 1 is refused: test_refusals)
    model = make_model([helper.make_node(op, ["s"], ["w"], periodic=periodic), helper.make_node("Add", ["w", "z"], ["y"])],
                       {"z": ((size,), np.float32)}, ["y"], {"s": np.array(size, np.int64)})
    z = np.random.default_rng(size).standard_normal(size).astype(np.float32)
    np.testing.assert_allclose(edgekit.InferenceSession(model).run(None, {"z": z})[0],
                               ort_session(model).run(None, {"z": z})[0], rtol=0, atol=3e-7)


@pytest.mark.parametrize("mels,n,rate,low,high", [(8, 64, 16000, 0.0, 8000.0), (40, 512, 16000, 20.0, 7600.0),
                                                  (128, 1024, 22050, 0.0, 11025.0), (5, 400, 8000, 300.0, 3400.0)])
def test_mel_weight_matrix(mels, n, rate, low, high):
    inits = {"m": np.array(mels, np.int64), "n": np.array(n, np.int64), "r": np.array(rate, np.int64),
             "lo": np.array(low, np.float32), "hi": np.array(high, np.float32)}
    nodes = [helper.make_node("MelWeightMatrix", ["m", "n", "r", "lo", "hi"], ["w"]), helper.make_node("Add", ["w", "z"], ["y"])]
    model = make_model(nodes, {"z": ((n // 2 + 1, mels), np.float32)}, ["y"], inits)
    z = np.random.default_rng(mels).standard_normal((n // 2 + 1, mels)).astype(np.float32)
    got = edgekit.InferenceSession(model).run(None, {"z": z})[0]
    np.testing.assert_allclose(got, ort_session(model).run(None, {"z": z})[0], rtol=0, atol=3e-7)
    assert (got - z).max() > 0.99  # each band peaks at 1


def test_stft_window_fed_at_run_time_and_signals_too_short_for_a_frame():
    """A window computed at run time is read from its buffer; a dynamic signal shorter than a frame is
    an InputError naming the input (a static one, a ModelError), not an unsupported op."""
    model = make_model([helper.make_node("STFT", ["x", "step", "w"], ["y"], name="stft")],
                       {"x": ((1, "L", 1), np.float32), "w": ((10,), np.float32)}, rank_only(4),
                       {"step": np.array(4, np.int64)})
    session = edgekit.InferenceSession(model)
    rng = np.random.default_rng(5)
    feeds = {"x": rng.standard_normal((1, 64, 1)).astype(np.float32), "w": rng.uniform(0, 1, 10).astype(np.float32)}
    frames = np.stack([feeds["x"][:, f * 4:f * 4 + 10] * feeds["w"][:, None] for f in range(14)], 1)
    assert_spectrum(session.run(None, feeds)[0], spectrum(frames, 10, 2, False, True), ort_session(model).run(None, feeds)[0], 10)
    with pytest.raises(InputError, match=r"inputs of shapes x \(1, 8, 1\), w \(10,\).*frame_length 10 for a signal of 8"):
        session.run(None, {"x": feeds["x"][:, :8], "w": feeds["w"]})
    with pytest.raises(ModelError, match="frame_length 32 for a signal of 16"):
        edgekit.InferenceSession(stft_model((1, 16, 1), 4, 32, None))


def test_refusals():
    def refused(model, reason):
        with pytest.raises(UnsupportedOpError, match=reason):
            edgekit.InferenceSession(model)

    refused(dft_model((1, 8, 1), 1, None, 20, inverse=1, onesided=1), "dft.*IRFFT.*of a real input")
    refused(dft_model((1, 8, 2), 1, None, 17, onesided=1), "one-sided DFT of a complex input")
    refused(dft_model((1, 8, 1), 2, None, 17), "last")
    refused(make_model([helper.make_node("DFT", ["x", "n"], ["y"])], {"x": ((1, 8, 1), np.float32), "n": ((), np.int64)},
                       rank_only(3), opset=17), "dft_length.*constant")
    refused(make_model([helper.make_node("STFT", ["x", "step"], ["y"], name="stft")],
                       {"x": ((1, 64, 1), np.float32), "step": ((), np.int64)}, rank_only(4)), "stft.*frame_step.*constant")
    refused(make_model([helper.make_node("HannWindow", ["s"], ["w"], periodic=0)], {}, ["w"], {"s": np.array(1, np.int64)}),
            "symmetric HannWindow of size 1")
    inits = {"m": np.array(10, np.int64), "n": np.array(63, np.int64), "r": np.array(8000, np.int64),
             "lo": np.array(0.0, np.float32), "hi": np.array(4000.0, np.float32)}
    refused(make_model([helper.make_node("MelWeightMatrix", ["m", "n", "r", "lo", "hi"], ["w"])], {}, ["w"], inits),
            "bands reach bins 0..32 of a 32-bin spectrum")
