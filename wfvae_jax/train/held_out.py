"""Held-out evaluation during training: PSNR of the raw and EMA weights, and the sample strip.

Source: the reference ``train_ddp.py`` validates the raw and the EMA weights periodically.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from wfvae_jax.io.video import abs_error_frames, save_strip_png
from wfvae_jax.metrics import psnr
from wfvae_jax.train.state import TrainState
from wfvae_jax.train.step import TrainSteps


def evaluate_psnr(
    steps: TrainSteps, state: TrainState, clips: np.ndarray, batch_size: int
) -> tuple[dict[str, float], np.ndarray]:
    """Held-out PSNR (dB, mean over frames and clips) of the raw and EMA weights."""
    results, ema_recon = {}, None
    for name, params in (("ema", state.ema_params), ("raw", state.params)):
        recon = []
        for i in range(0, len(clips), batch_size):
            x = jax.device_put(jnp.asarray(clips[i : i + batch_size]), steps.replicated)
            recon.append(np.asarray(steps.reconstruct(params, x)))
        recon = np.concatenate(recon)
        results[f"eval/psnr_{name}"] = float(np.mean(np.asarray(psnr(clips, recon))))
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
