"""LC-VAE: a WF-VAE-L body whose latent is compressed by Multi-WT + mask (8 or 16 channels).

Train (LPIPS needs the VGG backbone, see docs/training.md):
    wfvae train --config lc_vae:8 --workdir DIR \
        --config.data.train_dir=VIDEOS --config.lpips.weights=lpips_vgg.safetensors
    wfvae train --config lc_vae:16,keep75 --workdir DIR   # 16 channels, 75% kept

The config argument is ``LATENT_DIM[,VARIANT]``: latent channels 8 (default) or 16, and the mask:
``fixed`` (default; handcrafted 50%: temporal paths LLL, LLH, LHL, HLL), ``keep25`` / ``keep50`` /
``keep75`` (handcrafted keep ratios), ``topk50`` (adaptive Top-50% channel baseline,
supplementary Sec. D.1) or ``none`` (uncompressed WF-VAE baseline). The forward pass is
encode -> sample z -> Multi-WT -> mask -> inverse -> decode (``wfvae_jax.lc.LCVAE``); the KL term
uses the uncompressed posterior, as the reference. The export (WORKDIR/export) carries these
settings, so ``wfvae reconstruct`` and ``eval.py`` apply the same compression.

LC-VAE supplementary Table 5: 200k steps, lr 1e-5, batch 32, 32 frames, 256x256, on a WF-VAE-L
body (the reference's model JSONs under ``examples/WVAE_compressed_topk_multi_wavelet/``, with
latent_dim 8 or 16); EMA 0.999 and perceptual weight 1.0 come from its train script. WF-VAE is
causal and needs 1 + 4k frames, and the causal Multi-WT with 2 temporal levels needs 1 + 8m
latent frames, so 33-frame clips (9 latent frames) stand in for Table 5's 32.

Expected result: not run at scale here (200k steps on GPUs); LC-VAE reports reconstruction close
to the uncompressed WF-VAE at half the latent size.
"""

import ml_collections

from wfvae_jax.configs import default

LATENT_DIMS = (8, 16)  # the channel counts the reference ships masks for
# Config-argument variants: (wfvae_jax.lc mask kind, keep ratio).
VARIANTS = {
    "fixed": ("fixed", 0.5),
    "keep25": ("keep_ratio", 0.25),
    "keep50": ("keep_ratio", 0.5),
    "keep75": ("keep_ratio", 0.75),
    "topk50": ("topk", 0.5),
    "none": ("none", 1.0),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``arg``: ``LATENT_DIM[,VARIANT]``, e.g. ``"8"``, ``"16,keep75"`` (default ``"8,fixed"``)."""
    dim_text, _, arg = (arg or "8").partition(",")
    if not dim_text.strip().isdigit() or int(dim_text) not in LATENT_DIMS:
        raise ValueError(f"LC-VAE latent_dim must be one of {LATENT_DIMS}, got {dim_text!r}")
    latent_dim = int(dim_text)
    arg = arg.strip() or "fixed"
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
