"""Discrete Fourier transforms of rows (ONNX DFT and STFT).

A row is ``count`` values read from the float32 input, flat, at ``base[r] + t * stride`` (t < count),
each one real value or a (real, imaginary) pair, multiplied by ``window[t]`` and zero-padded to the
transform length n; its spectrum bins 0..bins-1 are written as (real, imaginary) pairs at
``out_base[r] + k * out_stride``. DFT rows walk one axis of the input; STFT rows are its frames.

A ``hermitian`` row (the inverse of a one-sided spectrum, IRFFT) holds bins 0..count-1 of a real
signal's spectrum (count <= n // 2 + 1, the rest zero): bins n - k (0 < k < n / 2) are completed as
conj(bin k) and only the real part of the inverse is written, n real values per row. That real part
drops the imaginary parts of bin 0 and, for even n, bin n / 2 (a real signal's spectrum has none there),
as numpy's and torch's irfft do.

A power-of-two n runs an iterative radix-2 FFT. Any other n runs Bluestein's algorithm: with
w_j = exp(s pi i j^2 / n) (s = -1 forward, +1 inverse), X_k = w_k sum_t (x_t w_t) conj(w_(k-t)), a
convolution done by two radix-2 FFTs of a power of two m >= 2n - 1 and the transform of conj(w),
prepared at load (``Transform``). Both accumulate in float64 and round once to float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from .simd import flat


@dataclass
class Transform:
    """The tables ``dft_rows`` reads for length n and a direction: an FFT of length m (its bit-reversal
    order and twiddles cos/sin(2 pi j / m)) and, when m != n, Bluestein's chirp w and the transform
    ``kernel`` of conj(w) (both complex, as float64 (real, imaginary) columns)."""

    order: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    chirp: np.ndarray
    kernel: np.ndarray

    @classmethod
    def of(cls, n: int, inverse: bool) -> Transform:
        m = n if n & (n - 1) == 0 else 1 << (2 * n - 2).bit_length()
        bits = m.bit_length() - 1
        order = np.zeros(m, np.int64)
        for b in range(bits):
            order |= ((np.arange(m) >> b) & 1) << (bits - 1 - b)
        angle = 2.0 * np.pi * np.arange(m) / m
        if m == n:
            return cls(order, np.cos(angle), np.sin(angle), np.zeros((0, 2)), np.zeros((0, 2)))
        j = np.arange(n)
        chirp = np.exp((1.0 if inverse else -1.0) * 1j * np.pi * ((j * j) % (2 * n)) / n)
        taps = np.zeros(m, np.complex128)
        taps[:n] = np.conj(chirp)
        taps[m - n + 1:] = np.conj(chirp[1:])[::-1]
        kernel = np.fft.fft(taps)
        return cls(order, np.cos(angle), np.sin(angle), np.stack([chirp.real, chirp.imag], 1),
                   np.stack([kernel.real, kernel.imag], 1))

    def args(self) -> tuple[np.ndarray, ...]:
        return self.order, self.cos, self.sin, self.chirp, self.kernel


@njit(cache=True, inline="always")
def _fft(re, im, order, cos, sin, sign):
    """In-place radix-2 transform of the power-of-two length re.size: sum_t a_t exp(sign 2 pi i k t / m)."""
    m = re.size
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


@njit(cache=True)
def dft_rows(x, out, base, stride, count, complex_in, window, n, bins, inverse, hermitian, out_base, out_stride,
             order, cos, sin, chirp, kernel):
    """Spectra of the rows described in the module docstring: forward exp(-2 pi i k t / n) or, with
    ``inverse``, exp(+2 pi i k t / n) / n; with ``hermitian``, real signals of one-sided spectra; the
    last five arguments are ``Transform.of(n, inverse).args()``. ``x`` and ``out`` are C-contiguous, of
    any rank."""
    x, out = flat(x), flat(out)
    m = order.size
    re = np.zeros(m)
    im = np.zeros(m)
    sign = 1.0 if inverse else -1.0
    scale = 1.0 / n if inverse else 1.0
    bluestein = m != n
    for r in range(base.size):
        re[:] = 0.0
        im[:] = 0.0
        for t in range(count):
            at = base[r] + t * stride
            w = np.float64(window[t])
            re[t] = x[at] * w
            if complex_in:
                im[t] = x[at + 1] * w
        filled = count
        if hermitian:
            for k in range(n // 2 + 1, n):
                re[k] = re[n - k]
                im[k] = -im[n - k]
            filled = n
        if bluestein:
            for t in range(filled):
                a, b = re[t], im[t]
                re[t] = a * chirp[t, 0] - b * chirp[t, 1]
                im[t] = a * chirp[t, 1] + b * chirp[t, 0]
            _fft(re, im, order, cos, sin, -1.0)
            for j in range(m):
                a, b = re[j], im[j]
                re[j] = a * kernel[j, 0] - b * kernel[j, 1]
                im[j] = a * kernel[j, 1] + b * kernel[j, 0]
            _fft(re, im, order, cos, sin, 1.0)
            for k in range(bins):
                a, b = re[k] / m, im[k] / m
                at = out_base[r] + k * out_stride
                out[at] = (a * chirp[k, 0] - b * chirp[k, 1]) * scale
                if not hermitian:
                    out[at + 1] = (a * chirp[k, 1] + b * chirp[k, 0]) * scale
        else:
            _fft(re, im, order, cos, sin, sign)
            for k in range(bins):
                at = out_base[r] + k * out_stride
                out[at] = re[k] * scale
                if not hermitian:
                    out[at + 1] = im[k] * scale
