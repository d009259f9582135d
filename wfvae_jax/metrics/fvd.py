"""Fréchet Video Distance (Unterthiner et al. 2018, arXiv 1812.01717) over a whole set.

FVD is the Fréchet distance between Gaussians fitted to I3D embeddings of the real and of the
generated videos (:mod:`wfvae_jax.metrics.i3d`). The statistics are the sample mean and the
unbiased covariance (``np.cov``), as in the reference's ``frechet_distance``
(causalvideovae/eval/fvd/styleganv/fvd.py, copied there from StyleGAN-V).

Difference from the reference eval: scripts/eval.py calls ``calculate_fvd`` on every batch
(batch size 1 in examples/eval.sh) and averages the per-batch values. With one video per batch
the covariance term is skipped and the "FVD" is only the squared distance of two single
embeddings; with small batches it is biased by the rank-deficient covariances. That is not
FVD and is not reproduced here: gather the features of the whole set (``i3d_features`` per
batch, concatenated) and compute one distance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.linalg

from wfvae_jax.metrics.i3d import i3d_features

# sqrtm's result is accepted when ||X X - A||_F <= tol ||A||_F and its imaginary part is
# negligible; otherwise the symmetric eigen-decomposition route is used.
_SQRTM_RTOL = 1e-6
_IMAG_RTOL = 1e-6


def compute_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D), float64, of features (N, D), N >= 2.

    Raises:
      ValueError: not 2-D, fewer than 2 rows, or non-finite values.
    """
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("features contain NaN or inf")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((sigma1 sigma2)^(1/2)) for symmetric positive semi-definite sigma1, sigma2, (D, D).

    For full-rank covariances: ``scipy.linalg.sqrtm(sigma1 @ sigma2)`` (the usual FID/FVD
    route), accepted when its residual ``||X X - A||_F / ||A||_F`` is <= 1e-6, it is finite
    and its imaginary part is negligible. Otherwise, and whenever a covariance is numerically
    singular (fewer samples than dimensions, where the square root of rounding noise in the
    null space adds O(D sqrt(eps)) to the trace), :func:`trace_sqrt_product_eigh` is used.
    """
    if _is_singular(sigma1) or _is_singular(sigma2):
        return trace_sqrt_product_eigh(sigma1, sigma2)
    product = sigma1 @ sigma2
    with np.errstate(all="ignore"):
        root = scipy.linalg.sqrtm(product)
    if np.all(np.isfinite(root)):
        scale = max(np.linalg.norm(product), np.finfo(np.float64).tiny)
        residual = np.linalg.norm(root @ root - product) / scale
        trace = np.trace(root)
        if residual <= _SQRTM_RTOL and abs(np.imag(trace)) <= _IMAG_RTOL * max(abs(trace), 1.0):
            return float(np.real(trace))
    return trace_sqrt_product_eigh(sigma1, sigma2)


def trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((sigma1 sigma2)^(1/2)) through symmetric eigen-decompositions only.

    With R = sigma1^(1/2), sigma1 sigma2 = R (R sigma2 R) R^-1 is similar to the symmetric
    PSD matrix R sigma2 R, so the trace is the sum of the square roots of its eigenvalues.
    Eigenvalues below the numerical-rank threshold ``D * eps * max`` (rounding noise, possibly
    negative) are set to 0 before the square roots. Stable for singular covariances.
    """
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    r = (v * np.sqrt(_drop_noise(w))) @ v.T
    m = r @ sigma2 @ r
    return float(np.sum(np.sqrt(_drop_noise(np.linalg.eigvalsh((m + m.T) / 2)))))


def _drop_noise(eigenvalues: np.ndarray) -> np.ndarray:
    tol = eigenvalues.shape[0] * np.finfo(np.float64).eps * float(np.max(np.abs(eigenvalues)))
    return np.where(eigenvalues > tol, eigenvalues, 0.0)


def _is_singular(sigma: np.ndarray) -> bool:
    w = np.linalg.eigvalsh((sigma + sigma.T) / 2)
    return bool(w[0] <= sigma.shape[0] * np.finfo(np.float64).eps * max(abs(w[-1]), 1e-300))


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    d = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)), in float64.

    Args:
      mu1, mu2: means, (D,).
      sigma1, sigma2: symmetric positive semi-definite covariances, (D, D).

    Returns:
      The distance (>= 0 up to rounding; tiny negative values are not clipped).

    Raises:
      ValueError: inconsistent shapes or non-finite input.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            "expected mu (D,) and sigma (D, D) for both, got "
            f"{mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}"
        )
    if not all(np.all(np.isfinite(a)) for a in (mu1, mu2, sigma1, sigma2)):
        raise ValueError("frechet_distance: NaN or inf in the statistics")
    diff = mu1 - mu2
    return float(
        diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    )


def fvd_from_features(real_features: Any, fake_features: Any) -> float:
    """FVD from I3D features of two whole sets, (N1, D) and (N2, D), N >= 2 each.

    Raises:
      ValueError: see :func:`compute_statistics`; different D.
    """
    mu1, s1 = compute_statistics(real_features)
    mu2, s2 = compute_statistics(fake_features)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature sizes differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    return frechet_distance(mu1, s1, mu2, s2)


def fvd(
    real_videos: Any,
    fake_videos: Any,
    variables: Mapping[str, Any] | None = None,
    batch_size: int = 8,
) -> float:
    """FVD between two sets of videos held in memory.

    Args:
      real_videos, fake_videos: (N, T, H, W, 3) float in [-1, 1], T >= 9, N >= 2 each (use
        at least a few hundred videos for a meaningful value; the estimate is biased for small
        N). For sets that do not fit in memory, call ``i3d_features`` per batch and
        :func:`fvd_from_features` on the concatenated features.
      variables: I3D variables (``load_i3d_variables()``); None loads the shipped weights.
      batch_size: videos per I3D call.

    Returns:
      The FVD (float).

    Raises:
      ValueError: see ``i3d.preprocess`` and :func:`compute_statistics`.
    """
    if variables is None:
        from wfvae_jax.metrics.i3d import load_i3d_variables

        variables = load_i3d_variables()
    return fvd_from_features(
        i3d_features(real_videos, variables, batch_size),
        i3d_features(fake_videos, variables, batch_size),
    )
