"""Latent normalisation for diffusion models: ``(z - shift) * scale`` per channel, and back.

A latent diffusion model wants latents of about zero mean and unit variance per channel. The
config's ``shift`` (per-channel mean) and ``scale`` (per-channel 1 / std) map a posterior sample
(or mode) ``z`` to that range and back:

    normalised = (z - shift) * scale        (after wfvae_jax.encode)
    z          = normalised / scale + shift (before wfvae_jax.decode)

Source: Open-Sora Plan's ``WFVAEModelWrapper`` (PKU-YuanGroup/Open-Sora-Plan, commit 1391955,
``opensora/models/causalvideovae/__init__.py`` line 40 ``(self.vae.encode(x).sample() - shift) *
scale``, line 47 ``self.vae.decode(x / scale + shift)``; Open-Sora Plan v1.5 applies its config's
32-entry ``scale``/``shift`` the same way), and the reference's ``scripts/vae_var_test.py`` line 62.
``wfvae latent-stats --write_config`` measures the values (``commands/latent_stats.py``).

Shapes: ``z`` is channels-last ``(..., latent_dim)`` (``(B, t, h, w, C)`` from ``encode``, or one
clip's ``(t, h, w, C)`` from a latent dataset); ``scale``/``shift`` hold ``latent_dim`` entries,
or one entry that applies to every channel. The reference ships 4-entry placeholders (scale
0.18215, shift 0) whatever its ``latent_dim``; they are refused rather than broadcast.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from wfvae_jax.core.config import WFVAEConfig

# The command that writes per-channel values into a checkpoint's config.json.
WRITE_CONFIG_COMMAND = "wfvae latent-stats --checkpoint DIR --videos DIR --write_config"


def latent_scale_shift(config: WFVAEConfig) -> tuple[np.ndarray, np.ndarray]:
    """``config.scale`` and ``config.shift`` as float32 arrays, checked.

    Returns:
      ``(scale, shift)``, each float32 of shape ``(latent_dim,)`` or ``(1,)`` (one value for
      every channel), as given in the config.
    Raises:
      ValueError: a length other than ``latent_dim`` or 1 (the reference's 4-entry placeholder
        for an 8-, 16- or 32-channel model, say), naming ``wfvae latent-stats --write_config``;
        a non-finite entry; a zero scale (``denormalize_latents`` divides by it).
    """
    c = config.latent_dim
    out = []
    for name in ("scale", "shift"):
        v = np.asarray(getattr(config, name), np.float32).reshape(-1)
        if v.shape[0] not in (1, c):
            placeholder = " (the reference's placeholder)" if v.shape[0] == 4 else ""
            raise ValueError(
                f"config.{name} has {v.shape[0]} entries{placeholder} but latent_dim is {c}: "
                f"give {c} per-channel values (or 1 for all channels); measure them with "
                f"`{WRITE_CONFIG_COMMAND}`"
            )
        if not np.all(np.isfinite(v)):
            raise ValueError(f"config.{name} holds non-finite values: {v.tolist()}")
        out.append(v)
    if np.any(out[0] == 0):
        raise ValueError(f"config.scale holds zeros ({out[0].tolist()}); it is 1 / std, never 0")
    return out[0], out[1]


def _check_channels(z: Any, config: WFVAEConfig) -> None:
    shape = tuple(np.shape(z))
    if not shape or shape[-1] != config.latent_dim:
        hint = " (channels-first? move the channel axis last)" if len(shape) > 1 else ""
        raise ValueError(
            f"latents must be channels-last (..., {config.latent_dim}), got shape {shape}{hint}"
        )


def _apply(z: Any, config: WFVAEConfig, inverse: bool) -> Any:
    _check_channels(z, config)
    scale, shift = latent_scale_shift(config)
    # NumPy in, NumPy out (data pipelines, grain workers); anything else (jax.Array, tracers
    # under jit / grad / vmap) goes through jax.numpy.
    xp = np if isinstance(z, np.ndarray | np.generic) else jnp
    z = xp.asarray(z)
    if not jnp.issubdtype(z.dtype, jnp.floating):
        raise ValueError(f"latents must be a float array, got dtype {z.dtype}")
    # At least float32 arithmetic (bfloat16 latents would lose ~3 digits on the shift), then
    # back to the latent's dtype.
    compute = jnp.promote_types(z.dtype, jnp.float32)
    zc, scale, shift = z.astype(compute), scale.astype(compute), shift.astype(compute)
    out = zc / scale + shift if inverse else (zc - shift) * scale
    return out.astype(z.dtype)


def normalize_latents(z: Any, config: WFVAEConfig) -> Any:
    """Maps VAE latents to the diffusion model's range: ``(z - shift) * scale`` per channel.

    Args:
      z: channels-last latents ``(..., latent_dim)``, any float dtype: ``posterior.sample(key)``
        or ``posterior.mode()`` of :func:`wfvae_jax.encode` (``(B, t, h, w, C)``), or one clip.
        A ``np.ndarray`` gives a ``np.ndarray``; a ``jax.Array`` (also under ``jax.jit``,
        ``jax.grad``, ``jax.vmap``) a ``jax.Array``.
      config: the model's :class:`WFVAEConfig`; its ``scale``/``shift`` have ``latent_dim``
        entries (channel ``c`` uses entry ``c``) or one entry, which applies to every channel.
    Returns:
      the normalised latents, same shape and dtype as ``z`` (computed in at least float32).
    Raises:
      ValueError: ``z``'s last axis is not ``latent_dim`` (channels-first input, say), ``z``
        is not a float array, or the config's scale/shift are unusable (see
        :func:`latent_scale_shift`: a length other than ``latent_dim`` or 1 names
        ``wfvae latent-stats --write_config``).
    Source: Open-Sora Plan ``WFVAEModelWrapper.encode`` (see the module docstring).
    """
    return _apply(z, config, inverse=False)


def denormalize_latents(z: Any, config: WFVAEConfig) -> Any:
    """Inverse of :func:`normalize_latents`: ``z / scale + shift`` per channel, for decoding.

    Args and Raises as :func:`normalize_latents`; returns latents for :func:`wfvae_jax.decode`,
    same shape and dtype as ``z``. ``denormalize_latents(normalize_latents(z, c), c)`` equals
    ``z`` to float rounding (exactly when the scales are powers of two and the shift is 0).
    Source: Open-Sora Plan ``WFVAEModelWrapper.decode`` (see the module docstring).
    """
    return _apply(z, config, inverse=True)
