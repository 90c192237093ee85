"""PPG recordings for the heart-rate demo: loading, resampling, causal preprocessing, reference HR.

The recordings are the CSV files that the `heartpy` package ships (heartpy/data/). They are read
from the installed package with NumPy; nothing of heartpy is imported or copied into edgekit.
Reference heart rate comes from systolic peaks (band-pass, autocorrelation-guided
``scipy.signal.find_peaks``, median inter-beat interval), the model's input from a causal
band-pass and running amplitude normalisation at 32 Hz, so a live sensor could be fed the same way.
scipy (an extra, like heartpy) is imported where it is used, so that the demo can name the missing
extra instead of failing at import.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np

FS = 32          # model sample rate (Hz)
WINDOW = 256     # samples per window: 8 s
HOP = 64         # samples per hop: 2 s
INSTALL_HINT = 'the PPG demo needs the heartpy recordings: pip install "edgekit[demo]"'

# name -> (file, sample rate when the file has no time column); heartpy documents data.csv as 100 Hz.
RECORDINGS = {"data": ("data.csv", 100.0), "data2": ("data2.csv", None), "data3": ("data3.csv", None)}


@dataclass(frozen=True)
class Recording:
    """A raw PPG recording: samples (float64) at a uniform rate ``fs`` in Hz."""

    name: str
    x: np.ndarray
    fs: float

    @property
    def seconds(self) -> float:
        return len(self.x) / self.fs


def data_dir() -> str:
    """Folder of the installed heartpy's recordings; ModuleNotFoundError with an install hint if absent."""
    spec = importlib.util.find_spec("heartpy")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(INSTALL_HINT)
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def read_csv(path: str, fs: float | None = None) -> tuple[np.ndarray, float]:
    """Samples and sample rate of a PPG CSV: one bare column (``fs`` required), or a header
    ``timer,<name>`` (milliseconds) or ``datetime,<name>`` (timestamps). Timestamps are clock ticks
    of coarse resolution, so the rate is taken as (n - 1) / duration rather than per sample."""
    with open(path) as f:
        header = f.readline().strip().lower()
    if header.startswith("timer,"):
        t, x = np.loadtxt(path, delimiter=",", skiprows=1, unpack=True)
        return x, (len(x) - 1) / ((t[-1] - t[0]) / 1000.0)
    if header.startswith("datetime,"):
        t = np.loadtxt(path, delimiter=",", skiprows=1, usecols=0, dtype="datetime64[us]")
        x = np.loadtxt(path, delimiter=",", skiprows=1, usecols=1)
        return x, (len(x) - 1) / ((t[-1] - t[0]) / np.timedelta64(1, "s"))
    if fs is None:
        raise ValueError(f"{path}: a CSV without a timer/datetime column needs its sample rate")
    return np.loadtxt(path, ndmin=1), float(fs)


def load_recording(name: str) -> Recording:
    """One of heartpy's recordings by name: 'data' (25 s), 'data2' (128 s), 'data3' (11 min)."""
    file, fs = RECORDINGS[name]
    x, rate = read_csv(os.path.join(data_dir(), file), fs)
    return Recording(name, x, rate)


def resample(x: np.ndarray, fs: float, fs_out: float = FS) -> np.ndarray:
    """``x`` at ``fs`` resampled to ``fs_out`` (anti-alias low-pass at 0.4 fs_out, then linear
    interpolation); the rates need not be commensurate."""
    from scipy import signal

    cutoff = 0.4 * fs_out
    if cutoff < 0.45 * fs:
        x = signal.sosfiltfilt(signal.butter(4, cutoff, fs=fs, output="sos"), x)
    t = np.arange(int(len(x) * fs_out / fs)) / fs_out
    return np.interp(t, np.arange(len(x)) / fs, x)


def preprocess(x: np.ndarray, fs: float = FS, tau: float = 4.0, clip: float = 4.0) -> np.ndarray:
    """Model input from a raw signal, causally: band-pass 0.5-5 Hz, divide by a running RMS with
    time constant ``tau`` seconds, clip to +-``clip``. float32. Only the RMS's starting value looks
    ahead (the first second), so a live stream can be preprocessed sample by sample the same way."""
    from scipy import signal

    sos = signal.butter(2, [0.5, 5.0], btype="bandpass", fs=fs, output="sos")
    y = signal.sosfilt(sos, x, zi=signal.sosfilt_zi(sos) * x[0])[0]
    alpha = 1.0 / (tau * fs)
    power0 = np.mean(y[: int(fs)] ** 2) + 1e-12
    power = signal.lfilter([alpha], [1.0, alpha - 1.0], y * y, zi=[(1.0 - alpha) * power0])[0]
    return np.clip(y / np.sqrt(power + 1e-12), -clip, clip).astype(np.float32)


def window_count(n: int, window: int = WINDOW, hop: int = HOP) -> int:
    """Windows [k*hop, k*hop + window) that fit in ``n`` samples."""
    return 0 if n < window else (n - window) // hop + 1


def reference_hr(x: np.ndarray, fs: float, window: float = WINDOW / FS, hop: float = HOP / FS) -> np.ndarray:
    """Reference heart rate (bpm) of each window [k*hop, k*hop + window) seconds of the raw ``x``:
    60 / median interval between systolic peaks; NaN where the beats are too few or irregular or
    the rate is not backed by at least two neighbouring windows."""
    from scipy import signal

    y = signal.sosfiltfilt(signal.butter(3, [0.5, 4.0], btype="bandpass", fs=fs, output="sos"), x)
    n_win, n_hop = int(round(window * fs)), hop * fs
    count = 0 if len(y) < n_win else int((len(y) - n_win) // n_hop) + 1
    hr = np.array([_window_hr(y[int(round(k * n_hop)):int(round(k * n_hop)) + n_win], fs) for k in range(count)])
    return _drop_outliers(hr, reach=max(1, round(6.0 / hop)))


def _drop_outliers(hr: np.ndarray, reach: int = 3, tol: float = 0.15) -> np.ndarray:
    """NaN where a window's HR is more than ``tol`` off the median of its +-``reach`` neighbours:
    the heart does not halve or double its rate within seconds, an artifact-driven detection can."""
    out = hr.copy()
    for k in range(len(hr)):
        near = hr[max(0, k - reach):k + reach + 1]
        near = near[~np.isnan(near)]
        if len(near) < 3 or abs(hr[k] - np.median(near)) > tol * np.median(near):
            out[k] = np.nan
    return out


def _window_hr(w: np.ndarray, fs: float) -> float:
    """HR of one band-passed window. The beat period is the shortest autocorrelation lag nearly as
    strong as the strongest (multiples of it score as high); it sets the peaks' minimum spacing, so
    the dicrotic wave is not counted as a beat."""
    from scipy import signal

    w = w - w.mean()
    if not np.any(w):
        return np.nan
    ac = np.correlate(w, w, "full")[len(w) - 1:] / np.arange(len(w), 0, -1)  # unbiased
    lo, hi = int(fs * 60 / 200), int(fs * 60 / 40)                          # 200 .. 40 bpm
    cand, _ = signal.find_peaks(ac[: hi + 1])
    cand = cand[cand >= lo]
    if len(cand) == 0 or ac[cand].max() < 0.45 * ac[0]:                    # not periodic enough
        return np.nan
    period = cand[np.argmax(ac[cand] >= 0.65 * ac[cand].max())]  # a dicrotic half-period scores ~0.5
    peaks, _ = signal.find_peaks(w, distance=max(1, int(0.6 * period)), prominence=0.3 * w.std())
    if len(peaks) < 4:
        return np.nan
    ibi = np.diff(_refine(w, peaks)) / fs
    med = np.median(ibi)
    if np.mean(np.abs(ibi - med) <= 0.2 * med) < 0.75 or not 60 / 200 <= med <= 60 / 40:
        return np.nan
    return 60.0 / med


def _refine(w: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """Peak positions to a fraction of a sample by a parabola through each peak and its neighbours."""
    p = peaks[(peaks > 0) & (peaks < len(w) - 1)]
    a, b, c = w[p - 1], w[p], w[p + 1]
    den = a - 2 * b + c
    return p + np.where(den != 0, 0.5 * (a - c) / np.where(den != 0, den, 1), 0.0)


def model_windows(rec: Recording, window: int = WINDOW, hop: int = HOP) -> tuple[np.ndarray, np.ndarray]:
    """The recording at 32 Hz preprocessed (float32) and the reference HR of each of its windows."""
    x32 = resample(rec.x, rec.fs)
    hr = reference_hr(rec.x, rec.fs, window / FS, hop / FS)[: window_count(len(x32), window, hop)]
    return preprocess(x32), hr
