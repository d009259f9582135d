"""LC-VAE: a WF-VAE whose latent passes through Multi-WT -> subband mask -> inverse before decoding.

Source: LC-VAE (1mather/LC-VAE-code, ``WVAE_Compressed_TopK_multi_wavelet.py``,
``TemporalCompressedLatentProcessor``). The parameters are exactly a WF-VAE's (the compression
has none), so a converted or trained WF-VAE checkpoint loads unchanged and ``encode``/``decode``
of ``wfvae_jax`` still apply; the forward pass is
``encode -> z ~ q(z|x) -> compress(z) -> decode`` and the KL term uses the uncompressed
posterior, as the reference does.

:class:`LCSettings` is the one description of the compression: the model field, the training
config's ``model.lc``, the ``"lc"`` entry an exported LC-VAE checkpoint carries in its
``config.json`` (``wfvae_jax.io.checkpoint``), and what ``wfvae_jax.reconstruct(..., lc=...)``
applies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp

from wfvae_jax.core.model import WFVAE
from wfvae_jax.lc import masks
from wfvae_jax.lc.transforms import (
    DEFAULT_LEVELS,
    TIME_MODES,
    compress,
    inverse_multi_wt,
    multi_wt,
    num_channels,
    scale_factors,
)

MASK_KINDS = ("fixed", "keep_ratio", "topk", "topk_position", "none")


def make_compressor(
    latent_dim: int,
    mask: str = "fixed",
    keep_ratio: float = 0.5,
    levels: int = DEFAULT_LEVELS,
    scale: str = "exact",
    time_mode: str = "causal",
) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """The LC-VAE latent step for a model config: returns ``f(z) -> compressed z``.

    The model calls it between the posterior sample and the decoder (encode -> Multi-WT -> mask ->
    Multi-IWT -> decode); it is linear in ``z`` for the fixed masks and differentiable.
    Args:
      latent_dim: latent channels C.
      mask: ``"fixed"`` (handcrafted 50%), ``"keep_ratio"`` (handcrafted ``keep_ratio`` in
        0.25/0.5/0.75), ``"topk"`` (adaptive: per sample the ``round(keep_ratio * N)`` most
        energetic channels), ``"topk_position"`` (the reference's dynamic per-position Top-k) or
        ``"none"`` (identity; the uncompressed baseline).
      keep_ratio, levels, scale, time_mode: as in ``masks.keep_ratio_mask`` and ``multi_wt``.
    Raises:
      ValueError: unknown mask kind or a combination the masks do not cover.
    """
    if mask not in MASK_KINDS:
        raise ValueError(f"mask must be one of {MASK_KINDS}, got {mask!r}")
    scale_factors(scale)
    if time_mode not in TIME_MODES:
        raise ValueError(f"time_mode must be one of {TIME_MODES}, got {time_mode!r}")
    if mask == "none":
        return lambda z: z
    if mask in ("fixed", "keep_ratio"):
        fixed = masks.keep_ratio_mask(0.5 if mask == "fixed" else keep_ratio, latent_dim, levels)
        return lambda z: compress(z, fixed, levels, scale, time_mode)
    k = int(round(keep_ratio * num_channels(latent_dim, levels)))

    def adaptive(z: jnp.ndarray) -> jnp.ndarray:
        coeffs = multi_wt(z, levels, scale, time_mode)
        if mask == "topk":
            m = masks.topk_mask(coeffs, k)
        else:
            m = masks.topk_position_mask(coeffs, keep_ratio)
        return inverse_multi_wt(coeffs * m, levels, scale, time_mode)

    return adaptive


@dataclasses.dataclass(frozen=True)
class LCSettings:
    """LC-VAE latent compression settings (hashable, so a jit-static model field).

    Attributes: ``mask`` (:data:`MASK_KINDS`), ``keep_ratio``, ``levels`` (temporal Haar levels
    after the 3D Haar), ``scale`` (``"exact"`` or ``"reference"``), ``time_mode`` (``"causal"``
    for WF-VAE's ``1 + k`` latent frames: with 2 levels it needs ``1 + 8m`` latent frames, i.e.
    33-, 65-, 129-frame clips). See :func:`make_compressor`.
    Raises (at construction): ValueError for an unknown mask kind, scale or time mode.
    """

    mask: str = "fixed"
    keep_ratio: float = 0.5
    levels: int = DEFAULT_LEVELS
    scale: str = "exact"
    time_mode: str = "causal"

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_ratio", float(self.keep_ratio))
        object.__setattr__(self, "levels", int(self.levels))
        if self.mask not in MASK_KINDS:
            raise ValueError(f"lc mask must be one of {MASK_KINDS}, got {self.mask!r}")
        if not 0.0 <= self.keep_ratio <= 1.0:
            raise ValueError(f"lc keep_ratio must be in [0, 1], got {self.keep_ratio}")
        scale_factors(self.scale)
        if self.time_mode not in TIME_MODES:
            raise ValueError(f"lc time_mode must be one of {TIME_MODES}, got {self.time_mode!r}")

    def compressor(self, latent_dim: int) -> Callable[[jnp.ndarray], jnp.ndarray]:
        """``f(z) -> compressed z`` for ``latent_dim`` channels (:func:`make_compressor`)."""
        return make_compressor(latent_dim, **dataclasses.asdict(self))

    def compress(self, z: jnp.ndarray) -> jnp.ndarray:
        """Compresses a latent ``(B, t, h, w, C)``; same shape and dtype."""
        return self.compressor(z.shape[-1])(z)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LCSettings:
        """From :meth:`to_dict` (or a training config's ``model.lc``, whose ``enabled`` key is
        ignored). Raises ValueError for an unknown key."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {"enabled"})
        if unknown:
            raise ValueError(f"unknown LC-VAE settings {unknown}; known: {sorted(names)}")
        return cls(**{k: v for k, v in d.items() if k in names})


class LCVAE(WFVAE):
    """WF-VAE with LC-VAE latent compression in the forward pass (:class:`LCSettings` ``lc``).

    It reuses ``WFVAE.__call__`` and overrides only its latent hook, so it has the same
    parameters, taps and outputs; the KL term sees the uncompressed posterior.
    """

    lc: LCSettings = LCSettings()

    def process_latent(self, z: jnp.ndarray) -> jnp.ndarray:
        """``z`` (B, t, h, w, L) -> the masked latent, same shape (a projection for fixed masks)."""
        return self.lc.compress(z)
