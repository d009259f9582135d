"""The training state: one pytree holding everything a step reads and writes.

Source: what the reference ``train_ddp.py`` keeps and checkpoints (generator and discriminator
weights, both AdamW states, the EMA shadow, the step counter), as one immutable pytree so the
train steps are pure functions ``state -> state``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.core.model import init_params
from wfvae_jax.losses import LossConfig, NLayerDiscriminator3D

Params = Any


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW hyper-parameters (paper Sec. 4.1 / Table 7; ``train_ddp.py`` for weight decay).

    Attributes:
      learning_rate: fixed learning rate (1e-5 in the paper).
      b1, b2, eps: Adam moments and epsilon (0.9 / 0.999 / 1e-8, PyTorch's AdamW defaults).
      weight_decay: decoupled weight decay applied to every parameter (1e-4, ``train_ddp.py``).
      grad_clip_norm: clip the global gradient norm to this value first; 0 disables clipping
        (the reference parses ``--clip_grad_norm`` but never applies it).
    """

    learning_rate: float = 1e-5
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 1e-4
    grad_clip_norm: float = 0.0

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
            raise ValueError(f"b1 and b2 must be in [0, 1), got {self.b1}, {self.b2}")
        if self.weight_decay < 0 or self.grad_clip_norm < 0:
            raise ValueError("weight_decay and grad_clip_norm must be >= 0")


def make_optimizer(config: OptimConfig) -> optax.GradientTransformation:
    """AdamW (optionally after global-norm clipping); used for both generator and discriminator."""
    adamw = optax.adamw(
        config.learning_rate,
        b1=config.b1,
        b2=config.b2,
        eps=config.eps,
        weight_decay=config.weight_decay,
    )
    if config.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), adamw)
    return adamw


@flax.struct.dataclass
class TrainState:
    """Everything one train step reads and writes; a pytree of arrays (checkpointed as is).

    Attributes:
      step: int32 scalar, the 0-based global step (advances on generator AND discriminator steps,
        as ``current_step`` in ``train_ddp.py``).
      rng: uint32 ``(2,)`` raw PRNG key; step ``s`` draws from ``fold_in(rng, s)``, so the random
        stream does not depend on where a run was interrupted.
      params: generator (WF-VAE) parameters, float32.
      ema_params: EMA shadow of ``params`` (updated after generator steps only).
      opt_state: generator AdamW state.
      disc_params: discriminator (``NLayerDiscriminator3D``) parameters, float32.
      disc_batch_stats: discriminator BatchNorm running statistics (never read in training: the
        reference keeps the discriminator in train mode).
      disc_opt_state: discriminator AdamW state.
    """

    step: jax.Array
    rng: jax.Array
    params: Params
    ema_params: Params
    opt_state: optax.OptState
    disc_params: Params
    disc_batch_stats: Params
    disc_opt_state: optax.OptState


def make_discriminator(loss_config: LossConfig, ndf: int, dtype: Any) -> NLayerDiscriminator3D:
    """The 3D PatchGAN of ``LPIPSWithDiscriminator3D`` (``ndf=64`` there) in ``dtype`` compute."""
    return NLayerDiscriminator3D(ndf=ndf, n_layers=loss_config.disc_num_layers, dtype=dtype)


def init_discriminator(loss_config: LossConfig, ndf: int, rng: jax.Array) -> tuple[Params, Params]:
    """Fresh discriminator ``(params, batch_stats)`` (``weights_init`` of the reference)."""
    disc = make_discriminator(loss_config, ndf, jnp.float32)
    # Conv and BatchNorm shapes do not depend on the video size, so a small dummy suffices.
    x = jnp.zeros((1, 4, 16, 16, 3), jnp.float32)
    variables = disc.init({"params": rng, "dropout": rng}, x, train=False)
    return variables["params"], variables["batch_stats"]


def create_train_state(
    model_config: WFVAEConfig,
    loss_config: LossConfig,
    optim_config: OptimConfig,
    *,
    disc_ndf: int,
    rng: jax.Array,
) -> TrainState:
    """A fresh state: PyTorch-default-initialised WF-VAE, ``weights_init`` discriminator.

    Args:
      model_config: the generator architecture.
      loss_config: discriminator depth (``disc_num_layers``).
      optim_config: AdamW settings (both optimizers share them, as ``train_ddp.py``).
      disc_ndf: discriminator width (64 in the reference).
      rng: a ``jax.random.key`` or raw uint32 ``(2,)`` threefry key.
    Returns:
      :class:`TrainState` at step 0 with ``ema_params == params``.
    """
    rng = jnp.asarray(jax.random.key_data(rng) if _is_typed_key(rng) else rng, jnp.uint32)
    k_model, k_disc, k_train = jax.random.split(jax.random.wrap_key_data(rng), 3)
    # Initial weights are drawn with the "rbg" generator: XLA compiles its RngBitGenerator far
    # faster than hundreds of inlined threefry hashes (about 3x on CPU). The values depend on the
    # platform (and may on the sharding), which is harmless for a fresh start.
    k_model, k_disc = (_rbg_key(k) for k in (k_model, k_disc))
    params = init_params(model_config, k_model)  # shapes do not depend on the video size
    disc_params, batch_stats = init_discriminator(loss_config, disc_ndf, k_disc)
    tx = make_optimizer(optim_config)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(k_train),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=tx.init(params),
        disc_params=disc_params,
        disc_batch_stats=batch_stats,
        disc_opt_state=tx.init(disc_params),
    )


def _rbg_key(key: jax.Array) -> jax.Array:
    seed = jax.random.bits(key, (4,), jnp.uint32)
    return jax.random.wrap_key_data(seed, impl="rbg")


def _is_typed_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
