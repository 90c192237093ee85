"""Discrete Fourier transforms of rows (ONNX DFT and STFT).

A row is ``count`` values read from the float32 input, flat, at ``base[r] + t * stride`` (t < count),
each one real value or a (real, imaginary) pair, multiplied by ``window[t]`` and zero-padded to the
transform length n; its spectrum bins 0..bins-1 are written as (real, imaginary) pairs at
``out_base[r] + k * out_stride``. DFT rows walk one axis of the input; STFT rows are its frames.

A ``hermitian`` row (the inverse of a one-sided spectrum, IRFFT) holds bins 0..count-1 of a real
signal's spectrum (count <= n // 2 + 1, the rest zero), completed by conjugate symmetry (bin n - k is
conj(bin k)); its inverse is written as n real values. It is the real part of the inverse of the
completed spectrum: the imaginary parts of bin 0 and, for even n, bin n / 2 are dropped (a real
signal's spectrum has none there), as numpy's and torch's irfft do.

A real row of even n (real input, or a hermitian row) runs as a complex transform of half its length,
h = n / 2: forward, the row packed as z_t = x_2t + i x_2t+1 has the transform Z, and with
E_k = (Z_k + conj Z_(h-k)) / 2 and O_k = (Z_k - conj Z_(h-k)) / 2i (the transforms of the even and odd
samples; Z_h = Z_0), X_k = E_k + exp(s 2 pi i k / n) O_k (s as below) for k <= h, and X_(n-k) = conj X_k beyond;
a hermitian row reverses the split (Z_k = 2 E_k + 2i O_k from X_k and X_(h-k)), and its h complex
results are the samples x_2t + i x_2t+1. Any other row runs a complex transform of length n.

A complex transform of a power-of-two length runs an iterative radix-2 FFT. Any other length L runs
Bluestein's algorithm: with w_j = exp(s pi i j^2 / L) (s = -1 forward, +1 inverse),
X_k = w_k sum_t (x_t w_t) conj(w_(k-t)), a convolution done by two radix-2 FFTs of a power of two
m >= 2L - 1 and the transform of conj(w), prepared at load (``Transform``). All accumulate in float64
and round once to float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from .simd import flat


@dataclass
class Transform:
    """The tables ``dft_rows`` reads for length n and a direction: an FFT of length m (its bit-reversal
    order and twiddles cos/sin(2 pi j / m)); when m is not the complex transform's length, Bluestein's
    chirp w and the transform ``kernel`` of conj(w); for a real row of even n, the ``split`` twiddles
    exp(s 2 pi i k / n), k <= n / 2 (complex tables as float64 (real, imaginary) columns, empty when
    unused)."""

    order: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    chirp: np.ndarray
    kernel: np.ndarray
    split: np.ndarray

    @classmethod
    def of(cls, n: int, inverse: bool, real: bool = False) -> Transform:
        """The tables of length n; ``real``: rows are real signals (real input, or a hermitian row), so
        an even n runs as a complex transform of n / 2."""
        sign = 1.0 if inverse else -1.0
        half = real and n % 2 == 0
        size = n // 2 if half else n
        split = np.zeros((0, 2))
        if half:
            turn = np.exp(sign * 2j * np.pi * np.arange(size + 1) / n)
            split = np.stack([turn.real, turn.imag], 1)
        m = size if size & (size - 1) == 0 else 1 << (2 * size - 2).bit_length()
        bits = m.bit_length() - 1
        order = np.zeros(m, np.int64)
        for b in range(bits):
            order |= ((np.arange(m) >> b) & 1) << (bits - 1 - b)
        angle = 2.0 * np.pi * np.arange(m) / m
        if m == size:
            return cls(order, np.cos(angle), np.sin(angle), np.zeros((0, 2)), np.zeros((0, 2)), split)
        j = np.arange(size)
        chirp = np.exp(sign * 1j * np.pi * ((j * j) % (2 * size)) / size)
        taps = np.zeros(m, np.complex128)
        taps[:size] = np.conj(chirp)
        taps[m - size + 1:] = np.conj(chirp[1:])[::-1]
        kernel = np.fft.fft(taps)
        return cls(order, np.cos(angle), np.sin(angle), np.stack([chirp.real, chirp.imag], 1),
                   np.stack([kernel.real, kernel.imag], 1), split)

    def args(self) -> tuple[np.ndarray, ...]:
        return self.order, self.cos, self.sin, self.chirp, self.kernel, self.split


@njit(cache=True, inline="always")
def _fft(re, im, order, cos, sin, sign):
    """In-place radix-2 transform of entries 0..m-1 (m = order.size, a power of two):
    sum_t a_t exp(sign 2 pi i k t / m)."""
    m = order.size
    for i in range(m):
        j = order[i]
        if i < j:
            re[i], re[j] = re[j], re[i]
            im[i], im[j] = im[j], im[i]
    size = 2
    while size <= m:
        half = size // 2
        step = m // size
        for start in range(0, m, size):
            for j in range(half):
                c = cos[j * step]
                s = sign * sin[j * step]
                a, b = start + j, start + j + half
                vr = re[b] * c - im[b] * s
                vi = re[b] * s + im[b] * c
                re[b] = re[a] - vr
                im[b] = im[a] - vi
                re[a] += vr
                im[a] += vi
        size *= 2


@njit(cache=True, inline="always")
def _transform(re, im, size, order, cos, sin, chirp, kernel, sign):
    """In place: entries 0..size-1 of re + i im (zero beyond, up to the tables' m) become
    sum_t a_t exp(sign 2 pi i k t / size): radix-2 when size is m, else Bluestein's algorithm (whose
    direction is in ``chirp``; entries size..m-1 are left undefined)."""
    m = order.size
    if m == size:
        _fft(re, im, order, cos, sin, sign)
        return
    for t in range(size):
        a, b = re[t], im[t]
        re[t] = a * chirp[t, 0] - b * chirp[t, 1]
        im[t] = a * chirp[t, 1] + b * chirp[t, 0]
    _fft(re, im, order, cos, sin, -1.0)
    for j in range(m):
        a, b = re[j], im[j]
        re[j] = a * kernel[j, 0] - b * kernel[j, 1]
        im[j] = a * kernel[j, 1] + b * kernel[j, 0]
    _fft(re, im, order, cos, sin, 1.0)
    for k in range(size):
        a, b = re[k] / m, im[k] / m
        re[k] = a * chirp[k, 0] - b * chirp[k, 1]
        im[k] = a * chirp[k, 1] + b * chirp[k, 0]


@njit(cache=True, inline="always")
def _unsplit(p, q, u, v, wr, wi):
    """Z_k = (X_k + conj X_(h-k)) + i w_k (X_k - conj X_(h-k)) for X_k = p + iq, X_(h-k) = u + iv and
    w_k = wr + i wi: the packed half-length spectrum of a real signal's one-sided one."""
    dr, di = p - u, q + v
    br, bi = wr * dr - wi * di, wr * di + wi * dr
    return p + u - bi, q - v + br


@njit(cache=True)
def dft_rows(x, out, base, stride, count, complex_in, window, n, bins, inverse, hermitian, out_base, out_stride,
             order, cos, sin, chirp, kernel, split):
    """Spectra of the rows described in the module docstring: forward exp(-2 pi i k t / n) or, with
    ``inverse``, exp(+2 pi i k t / n) / n; with ``hermitian``, real signals of one-sided spectra; the
    last six arguments are ``Transform.of(n, inverse, real).args()``. ``x`` and ``out`` are
    C-contiguous, of any rank."""
    x, out = flat(x), flat(out)
    half = split.shape[0] > 0
    size = n // 2 if half else n
    re = np.zeros(max(order.size, size + 1))
    im = np.zeros(re.size)
    sign = 1.0 if inverse else -1.0
    scale = 1.0 / n if inverse else 1.0
    for r in range(base.size):
        re[:] = 0.0
        im[:] = 0.0
        if half and not hermitian:
            for t in range(0, count, 2):
                re[t >> 1] = x[base[r] + t * stride] * np.float64(window[t])
            for t in range(1, count, 2):
                im[t >> 1] = x[base[r] + t * stride] * np.float64(window[t])
        else:
            for t in range(count):
                at = base[r] + t * stride
                w = np.float64(window[t])
                re[t] = x[at] * w
                if complex_in:
                    im[t] = x[at + 1] * w
        if hermitian and half:
            im[0] = 0.0
            im[size] = 0.0
            for k in range(size // 2 + 1):
                j = size - k
                p, q, u, v = re[k], im[k], re[j], im[j]
                if 0 < k < j:
                    re[j], im[j] = _unsplit(u, v, p, q, split[j, 0], split[j, 1])
                re[k], im[k] = _unsplit(p, q, u, v, split[k, 0], split[k, 1])
            re[size] = 0.0
            im[size] = 0.0
        elif hermitian:
            for k in range(n // 2 + 1, n):
                re[k] = re[n - k]
                im[k] = -im[n - k]
        _transform(re, im, size, order, cos, sin, chirp, kernel, sign)
        if half and hermitian:
            for t in range(size):
                at = out_base[r] + 2 * t * out_stride
                out[at] = re[t] * scale
                out[at + out_stride] = im[t] * scale
        elif half:
            for k in range(bins):
                kk = k if k <= size else n - k
                a, b = re[kk % size], im[kk % size]
                c, d = re[(size - kk) % size], im[(size - kk) % size]
                er, ei, odd_r, odd_i = 0.5 * (a + c), 0.5 * (b - d), 0.5 * (b + d), 0.5 * (c - a)
                xr = er + split[kk, 0] * odd_r - split[kk, 1] * odd_i
                xi = ei + split[kk, 0] * odd_i + split[kk, 1] * odd_r
                at = out_base[r] + k * out_stride
                out[at] = xr * scale
                out[at + 1] = (xi if k <= size else -xi) * scale
        else:
            for k in range(bins):
                at = out_base[r] + k * out_stride
                out[at] = re[k] * scale
                if not hermitian:
                    out[at + 1] = im[k] * scale
