"""edgekit.legendre against SciPy: A/B definition, expm, zoh/euler discretisation, impulse response."""
import numpy as np
import pytest

from edgekit.legendre import NEGLIGIBLE, discretize, expm, impulse_response, lmu_matrices

scipy_linalg = pytest.importorskip("scipy.linalg")
scipy_signal = pytest.importorskip("scipy.signal")


def test_lmu_matrices_match_the_definition():
    a, b = lmu_matrices(5, 3.0)
    for i in range(5):
        assert b[i] == (2 * i + 1) * (-1) ** i
        for j in range(5):
            assert a[i, j] == (2 * i + 1) * (-1 if i < j else (-1) ** (i - j + 1))
    assert a.dtype == b.dtype == np.float64


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0, 1e3])
def test_expm_matches_scipy(scale):
    m = np.random.default_rng(0).standard_normal((12, 12)) * scale / 12
    ref = scipy_linalg.expm(m)
    np.testing.assert_allclose(expm(m), ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("order,theta", [(1, 1.0), (6, 4.0), (64, 128.0), (256, 128.0), (256, 1000.0)])
def test_zoh_matches_scipy_cont2discrete(order, theta):
    a, b = lmu_matrices(order, theta)
    ref_a, ref_b, *_ = scipy_signal.cont2discrete(
        (a / theta, b[:, None] / theta, np.eye(order), np.zeros((order, 1))), 1.0, method="zoh")
    abar, bbar = discretize(order, theta)
    np.testing.assert_allclose(abar, ref_a, rtol=0, atol=1e-12 * np.abs(ref_a).max())
    np.testing.assert_allclose(bbar, ref_b[:, 0], rtol=0, atol=1e-12 * np.abs(ref_b).max())


def test_euler_and_bad_arguments():
    a, b = lmu_matrices(8, 16.0)
    abar, bbar = discretize(8, 16.0, "euler")
    np.testing.assert_array_equal(abar, np.eye(8) + a / 16.0)
    np.testing.assert_array_equal(bbar, b / 16.0)
    with pytest.raises(ValueError, match="discretization"):
        discretize(8, 16.0, "bilinear")
    with pytest.raises(ValueError, match="theta"):
        lmu_matrices(8, 0.0)
    with pytest.raises(ValueError, match="order"):
        lmu_matrices(0, 1.0)


def test_impulse_response_is_powers_of_abar_times_bbar():
    abar, bbar = discretize(10, 20.0)
    h = impulse_response(abar, bbar, 30)
    assert h.shape == (30, 10)
    np.testing.assert_allclose(h[0], bbar)
    np.testing.assert_allclose(h[7], np.linalg.matrix_power(abar, 7) @ bbar, rtol=1e-12, atol=1e-15)
    # It is the response of the discrete system to a unit impulse.
    _, y = scipy_signal.dimpulse((abar, bbar[:, None], np.eye(10), np.zeros((10, 1)), 1.0), n=30)
    np.testing.assert_allclose(h[:-1], y[0][1:], rtol=1e-10, atol=1e-14)


def test_impulse_response_tail_below_negligible_is_exactly_zero():
    abar, bbar = discretize(32, 8.0)  # decays fast: float64 subnormals within ~1,000 steps
    h = impulse_response(abar, bbar, 3000)
    tail = np.flatnonzero(np.abs(h).max(axis=1) == 0)
    assert tail.size and tail[0] > 100 and np.all(h[tail[0]:] == 0)
    assert np.abs(h[tail[0] - 1]).max() >= NEGLIGIBLE > np.abs(abar @ h[tail[0] - 1]).max()
