"""Haar transforms against pywavelets, exact identities and the reference's conventions."""

import numpy as np
import pytest
import pywt

from wfvae_jax.core import wavelets as w

RNG = np.random.default_rng(0)


def _key(name: str) -> str:
    return "".join("a" if ch == "L" else "d" for ch in name)


def test_haar3d_matches_pywavelets_dwtn():
    x = RNG.standard_normal((2, 5, 8, 6, 3)).astype(np.float32)
    y = np.asarray(w.haar3d(x, w.EXACT_SCALE_3D))
    assert y.shape == (2, 3, 4, 3, 24)
    # Causal: the first frame is replicated once before pairing.
    ref = pywt.dwtn(np.concatenate([x[:, :1], x], 1), "haar", axes=(1, 2, 3))
    for s, name in enumerate(w.SUBBANDS_3D):
        np.testing.assert_allclose(y[..., 3 * s : 3 * s + 3], ref[_key(name)], atol=1e-5)


def test_haar2d_matches_pywavelets_in_reference_order():
    x = RNG.standard_normal((2, 3, 8, 10, 4)).astype(np.float32)
    y = np.asarray(w.haar2d(x))
    ref = pywt.dwtn(x, "haar", axes=(2, 3))
    # Reference order aa, ad, da, dd = LL, high-in-H, high-in-W, HH.
    for s, key in enumerate(["aa", "da", "ad", "dd"]):
        np.testing.assert_allclose(y[..., 4 * s : 4 * s + 4], ref[key], atol=1e-5)


def test_inverse_haar3d_matches_pywavelets_idwtn():
    c = RNG.standard_normal((1, 3, 4, 5, 16)).astype(np.float32)
    coeffs = {_key(n): c[..., 2 * s : 2 * s + 2] for s, n in enumerate(w.SUBBANDS_3D)}
    ref = pywt.idwtn(coeffs, "haar", axes=(1, 2, 3))
    got = np.asarray(w.inverse_haar3d(c, w.EXACT_SCALE_3D, causal=False))
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # The causal inverse drops the first reconstructed frame.
    np.testing.assert_allclose(
        np.asarray(w.inverse_haar3d(c, w.EXACT_SCALE_3D)), ref[:, 1:], atol=1e-5
    )


@pytest.mark.parametrize("t", [1, 3, 9])
def test_exact_scale_perfect_reconstruction_and_parseval(t):
    x = RNG.standard_normal((2, t, 8, 8, 3)).astype(np.float32)
    y = np.asarray(w.haar3d(x, w.EXACT_SCALE_3D))
    np.testing.assert_allclose(np.asarray(w.inverse_haar3d(y, w.EXACT_SCALE_3D)), x, atol=1e-5)
    # Parseval on the time-padded signal (first frame counted twice).
    xp = np.concatenate([x[:, :1], x], 1)
    np.testing.assert_allclose((y**2).sum(), (xp**2).sum(), rtol=1e-5)
    y2 = np.asarray(w.haar2d(x))
    np.testing.assert_allclose(np.asarray(w.inverse_haar2d(y2)), x, atol=1e-5)
    np.testing.assert_allclose((y2**2).sum(), (x**2).sum(), rtol=1e-5)


def test_reference_scale_round_trip_gain():
    x = RNG.standard_normal((1, 5, 4, 4, 2)).astype(np.float32)
    r = np.asarray(w.inverse_haar3d(w.haar3d(x)))
    np.testing.assert_allclose(r, x * 8 * 0.3536**2, rtol=1e-5, atol=1e-6)
    assert abs(8 * 0.3536**2 - 1.000264) < 1e-6


def test_first_frame_rule():
    """Coefficient frame 0 depends only on frame 0 (the pair (x0, x0)): no temporal detail."""
    x = RNG.standard_normal((1, 5, 4, 4, 1)).astype(np.float32)
    y = np.asarray(w.haar3d(x, w.EXACT_SCALE_3D))
    np.testing.assert_allclose(y[:, 0, ..., 4:], 0.0, atol=1e-6)  # H* (temporal high) bands
    x2 = x.copy()
    x2[:, 1:] += 1.0
    y2 = np.asarray(w.haar3d(x2, w.EXACT_SCALE_3D))
    np.testing.assert_array_equal(y[:, 0], y2[:, 0])
    # Chunks after the first pair frames without replication.
    a = np.asarray(w.haar3d(x[:, 1:], w.EXACT_SCALE_3D, causal=False))
    np.testing.assert_allclose(a, y[:, 1:], atol=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="T = 1 \\+ 2k"):
        w.haar3d(np.zeros((1, 4, 4, 4, 1), np.float32))
    with pytest.raises(ValueError, match="even H and W"):
        w.haar3d(np.zeros((1, 3, 5, 4, 1), np.float32))
    with pytest.raises(ValueError, match="even H, W"):
        w.haar2d(np.zeros((1, 3, 4, 1), np.float32))
    with pytest.raises(ValueError, match="divisible by 8"):
        w.inverse_haar3d(np.zeros((1, 2, 2, 2, 12), np.float32))
