"""Legendre Memory Unit maths: the continuous (A, B), their discretisation and impulse response.

The LMU (Voelker et al., 2019) keeps d Legendre coefficients of a sliding window of length
theta: dm/dt = A m / theta + B u / theta. Everything here is float64 NumPy, computed once at
build time; converters and runtime kernels share it so both use the same Abar and Bbar.
"""
from __future__ import annotations

import numpy as np

# Pade(13, 13) numerator coefficients and the 1-norm bound under which it is accurate to
# double precision (Higham, "The scaling and squaring method for the matrix exponential
# revisited", 2005).
_PADE13 = (
    64764752532480000.0, 32382376266240000.0, 7771770303897600.0, 1187353796428800.0,
    129060195264000.0, 10559470521600.0, 670442572800.0, 33522128640.0, 1323241920.0,
    40840800.0, 960960.0, 16380.0, 182.0, 1.0,
)
_THETA13 = 5.371920351148152
NEGLIGIBLE = 1e-200  # LMU values below this are flushed to 0 (far below float32's smallest, 1.4e-45)


def lmu_matrices(order: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Continuous LMU matrices (not yet divided by theta): A (d, d) and B (d,), float64.

    A_ij = (2i+1) * (-1 if i < j else (-1)^(i-j+1)), B_i = (2i+1) * (-1)^i. ``theta`` is
    validated here so every caller rejects a bad window the same way.
    """
    _check(order, theta)
    i = np.arange(order)[:, None]
    j = np.arange(order)[None, :]
    sign = np.where(i < j, -1.0, np.where((i - j + 1) % 2 == 0, 1.0, -1.0))
    a = (2 * i + 1) * sign
    b = (2 * np.arange(order) + 1) * np.where(np.arange(order) % 2 == 0, 1.0, -1.0)
    return a.astype(np.float64), b.astype(np.float64)


def expm(m: np.ndarray) -> np.ndarray:
    """Matrix exponential of a square float64 matrix by scaling and squaring with Pade(13, 13)."""
    m = np.asarray(m, np.float64)
    n = m.shape[0]
    norm = np.abs(m).sum(axis=0).max() if n else 0.0
    s = max(0, int(np.ceil(np.log2(norm / _THETA13)))) if norm > _THETA13 else 0
    x = m / 2.0**s
    b = _PADE13
    eye = np.eye(n)
    x2 = x @ x
    x4 = x2 @ x2
    x6 = x4 @ x2
    u = x @ (x6 @ (b[13] * x6 + b[11] * x4 + b[9] * x2) + b[7] * x6 + b[5] * x4 + b[3] * x2 + b[1] * eye)
    v = x6 @ (b[12] * x6 + b[10] * x4 + b[8] * x2) + b[6] * x6 + b[4] * x4 + b[2] * x2 + b[0] * eye
    r = np.linalg.solve(v - u, v + u)
    for _ in range(s):
        r = r @ r
    return r


def discretize(order: int, theta: float, method: str = "zoh") -> tuple[np.ndarray, np.ndarray]:
    """Discrete (Abar (d, d), Bbar (d,)) float64 for a time step of 1.

    zoh: exp of the block matrix [[A/theta, B/theta], [0, 0]] (exact for piecewise-constant u);
    euler: Abar = I + A/theta, Bbar = B/theta.
    """
    a, b = lmu_matrices(order, theta)
    a, b = a / theta, b / theta
    if method == "euler":
        return np.eye(order) + a, b
    if method != "zoh":
        raise ValueError(f"discretization must be 'zoh' or 'euler', got {method!r}")
    block = np.zeros((order + 1, order + 1))
    block[:order, :order] = a
    block[:order, order] = b
    e = expm(block)
    return np.ascontiguousarray(e[:order, :order]), np.ascontiguousarray(e[:order, order])


def impulse_response(abar: np.ndarray, bbar: np.ndarray, length: int) -> np.ndarray:
    """H (length, d) float64 with H_k = Abar^k Bbar: the LMU's memory after a unit impulse at k=0.

    Once every entry of H_k is below NEGLIGIBLE the rest is exactly 0: a stable LMU decays into
    float64 subnormals (after ~4,700 steps at theta 128), which cost ~100x per operation and are 0
    in float32 anyway.
    """
    h = np.zeros((length, bbar.shape[0]))
    v = np.asarray(bbar, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # an unstable (Euler) LMU's response may overflow: inf
        for k in range(length):
            if np.abs(v).max(initial=0.0) < NEGLIGIBLE:
                break
            h[k] = v
            v = abar @ v
    return h


def _check(order: int, theta: float) -> None:
    if int(order) != order or order < 1:
        raise ValueError(f"LMU order must be a positive integer, got {order!r}")
    if not np.isfinite(theta) or theta <= 0:
        raise ValueError(f"LMU theta must be a positive finite number, got {theta!r}")
