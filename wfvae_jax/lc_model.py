"""LC-VAE: a WF-VAE whose latent passes through Multi-WT -> subband mask -> inverse before decoding.

Source: LC-VAE (1mather/LC-VAE-code, ``WVAE_Compressed_TopK_multi_wavelet.py``,
``TemporalCompressedLatentProcessor``). The parameters are exactly a WF-VAE's (the compression
has none), so a converted or trained WF-VAE checkpoint loads unchanged and ``encode``/``decode``
of ``wfvae_jax`` still apply; the forward pass is
``encode -> z ~ q(z|x) -> compress(z) -> decode`` and the KL term uses the uncompressed
posterior, as the reference does. See ``wfvae_jax.lc`` for the transform and masks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from wfvae_jax import lc
from wfvae_jax.config import WFVAEConfig
from wfvae_jax.model import WFVAE, ForwardOutput


class LCVAE(WFVAE):
    """WF-VAE with LC-VAE latent compression in the forward pass.

    Fields (besides ``config``, ``dtype``): ``lc_mask`` (``wfvae_jax.lc.MASK_KINDS``),
    ``lc_keep_ratio``, ``lc_levels`` (temporal Haar levels after the 3D Haar), ``lc_scale``
    (``"exact"`` or ``"reference"``), ``lc_time_mode`` (``"causal"`` for WF-VAE's 1 + k latent
    frames: needs 1 + 8m latent frames with 2 levels, i.e. 33-frame clips).
    """

    lc_mask: str = "fixed"
    lc_keep_ratio: float = 0.5
    lc_levels: int = lc.DEFAULT_LEVELS
    lc_scale: str = "exact"
    lc_time_mode: str = "causal"

    def compress_latent(self, z: jnp.ndarray) -> jnp.ndarray:
        """``z`` (B, t, h, w, L) -> the masked latent, same shape (a projection for fixed masks)."""
        f = lc.make_compressor(
            z.shape[-1],
            self.lc_mask,
            self.lc_keep_ratio,
            self.lc_levels,
            self.lc_scale,
            self.lc_time_mode,
        )
        return f(z)

    def __call__(
        self, x: jnp.ndarray, sample_posterior: bool = True, deterministic: bool = True
    ) -> ForwardOutput:
        posterior, (enc_l1, enc_l2), _ = self.encode(x, None, deterministic)
        z = posterior.sample(self.make_rng("sample")) if sample_posterior else posterior.mode()
        z = self.compress_latent(z)
        dec, (dec_l1, dec_l2), _ = self.decode(z, None, 0, deterministic)
        return ForwardOutput(dec, posterior, enc_l1, dec_l1, enc_l2, dec_l2)


@dataclasses.dataclass(frozen=True)
class LCSettings:
    """LC-VAE latent compression settings (hashable; the ``lc_*`` fields of :class:`LCVAE`)."""

    mask: str = "fixed"
    keep_ratio: float = 0.5
    levels: int = lc.DEFAULT_LEVELS
    scale: str = "exact"
    time_mode: str = "causal"


def build_model(
    config: WFVAEConfig, lc_settings: LCSettings | None = None, dtype: Any = jnp.float32
):
    """A :class:`WFVAE`, or an :class:`LCVAE` when ``lc_settings`` is given."""
    if lc_settings is None:
        return WFVAE(config, dtype)
    return LCVAE(
        config,
        dtype,
        lc_mask=lc_settings.mask,
        lc_keep_ratio=lc_settings.keep_ratio,
        lc_levels=lc_settings.levels,
        lc_scale=lc_settings.scale,
        lc_time_mode=lc_settings.time_mode,
    )
