"""Held-out evaluation during training: PSNR and SSIM of the raw and EMA weights, the sample strip.

Source: the reference ``train_ddp.py`` validates the raw and the EMA weights periodically.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from wfvae_jax.io.video import abs_error_frames, save_strip_png
from wfvae_jax.metrics import psnr, ssim
from wfvae_jax.train.state import TrainState
from wfvae_jax.train.step import TrainSteps


def evaluate_psnr(
    steps: TrainSteps, state: TrainState, clips: np.ndarray, batch_size: int
) -> tuple[dict[str, float], np.ndarray]:
    """Held-out PSNR (dB) and SSIM (in [-1, 1], 1 = identical), each the mean over frames and
    clips, of the EMA and the raw weights: ``{"eval/psnr_ema", "eval/ssim_ema", "eval/psnr_raw",
    "eval/ssim_raw"}`` (:mod:`wfvae_jax.metrics`, the reference eval's cal_psnr / cal_ssim), and
    the EMA reconstructions ``(N, T, H, W, 3)`` float32 in [-1, 1]."""
    results, ema_recon = {}, None
    for name, params in (("ema", state.ema_params), ("raw", state.params)):
        recon = []
        for i in range(0, len(clips), batch_size):
            x = jax.device_put(jnp.asarray(clips[i : i + batch_size]), steps.replicated)
            recon.append(np.asarray(steps.reconstruct(params, x)))
        recon = np.concatenate(recon)
        results[f"eval/psnr_{name}"] = float(np.mean(np.asarray(psnr(clips, recon))))
        results[f"eval/ssim_{name}"] = float(np.mean(np.asarray(ssim(clips, recon))))
        if name == "ema":
            ema_recon = recon
    return results, ema_recon


def save_eval_strip(path: str, clips: np.ndarray, recon: np.ndarray, count: int) -> np.ndarray:
    """Writes the PNG strip of the first ``count`` held-out clips (rows: input, EMA
    reconstruction, 4x absolute error) to ``path``; returns it as ``(H, W, 3)`` uint8."""
    rows, labels = [], []
    for i in range(min(count, len(clips))):
        rows += [clips[i], recon[i], abs_error_frames(clips[i], recon[i], gain=4.0)]
        labels += [f"input {i}", f"EMA rec {i}", "|err| x4"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_strip_png(path, rows, labels, num_samples=clips.shape[1])
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))
