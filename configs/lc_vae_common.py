"""Shared body of the LC-VAE configs (``lc_vae_8ch.py``, ``lc_vae_16ch.py``); not a config itself.

LC-VAE supplementary Table 5: 200k steps, lr 1e-5, batch 32, 32 frames, 256x256, on a WF-VAE-L
body (the reference's model JSONs under ``examples/WVAE_compressed_topk_multi_wavelet/``, with
latent_dim 8 or 16); EMA 0.999 and perceptual weight 1.0 come from its train script. WF-VAE is
causal and needs 1 + 4k frames, and the causal Multi-WT with 2 temporal levels needs 1 + 8m
latent frames, so 33-frame clips (9 latent frames) stand in for Table 5's 32.
"""

import ml_collections

from configs import default

# Config-argument variants: (wfvae_jax.lc mask kind, keep ratio).
VARIANTS = {
    "fixed": ("fixed", 0.5),
    "keep25": ("keep_ratio", 0.25),
    "keep50": ("keep_ratio", 0.5),
    "keep75": ("keep_ratio", 0.75),
    "topk50": ("topk", 0.5),
    "none": ("none", 1.0),
}


def lc_vae_config(latent_dim: int, arg: str | None) -> ml_collections.ConfigDict:
    """The LC-VAE training config for ``latent_dim`` channels and mask variant ``arg``."""
    arg = arg or "fixed"
    if arg not in VARIANTS:
        raise ValueError(f"unknown LC-VAE variant {arg!r}; known: {sorted(VARIANTS)}")
    mask, keep_ratio = VARIANTS[arg]
    config = default.get_config()
    config.model.name = "WF-VAE-L"
    config.model.overrides.latent_dim = latent_dim
    config.model.lc.enabled = mask != "none"
    config.model.lc.mask = mask
    config.model.lc.keep_ratio = keep_ratio
    config.num_steps = 200_000
    config.optim.learning_rate = 1e-5
    config.data.batch_size = 32
    config.data.num_frames = 33
    config.data.resolution = 256
    config.eval.num_frames = 33
    config.eval.resolution = 256
    config.ema_decay = 0.999
    config.loss.perceptual_weight = 1.0
    return config
