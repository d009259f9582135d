"""LC-VAE, 8 latent channels: a WF-VAE-L body whose latent is compressed by Multi-WT + mask.

Train (LPIPS needs the VGG backbone, see docs/training.md):
    python train.py --config configs/lc_vae_8ch.py --workdir DIR \
        --config.data.train_dir=VIDEOS --config.lpips.weights=lpips_vgg.safetensors
    python train.py --config configs/lc_vae_8ch.py:keep75 --workdir DIR   # mask variant

The config argument picks the mask: ``fixed`` (default; handcrafted 50%: temporal paths LLL, LLH,
LHL, HLL), ``keep25`` / ``keep50`` / ``keep75`` (handcrafted keep ratios), ``topk50`` (adaptive
Top-50% channel baseline, supplementary Sec. D.1) or ``none`` (uncompressed WF-VAE baseline).
The forward pass is encode -> sample z -> Multi-WT -> mask -> inverse -> decode
(``wfvae_jax.lc_model.LCVAE``); the KL term uses the uncompressed posterior, as the reference.
Values and sources: ``configs/lc_vae_common.py`` (LC-VAE supplementary Table 5).

Expected result: not run at scale here (200k steps on GPUs); LC-VAE reports reconstruction close
to the uncompressed WF-VAE at half the latent size.
"""

from configs.lc_vae_common import lc_vae_config


def get_config(arg: str | None = None):
    """``arg``: a mask variant of ``configs.lc_vae_common.VARIANTS`` (default ``fixed``)."""
    return lc_vae_config(8, arg)
