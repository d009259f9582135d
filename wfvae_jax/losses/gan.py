"""Adversarial pieces of WF-VAE training: GAN losses, schedule, adaptive weight (paper Eq. 7).

Source: reference ``causalvideovae/model/losses/perceptual_loss.py`` (PKU-YuanGroup/WF-VAE @
d858bee): ``hinge_d_loss`` (l.10-14), ``vanilla_d_loss`` (l.17-22), ``adopt_weight`` (l.35-38),
``LPIPSWithDiscriminator3D.calculate_adaptive_weight`` (l.101-110), generator adversarial loss
(l.166-167); step alternation from ``train_ddp.py`` (l.423-433).

All functions are pure and jittable; ``global_step`` may be a Python int or a traced scalar.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    """Hinge discriminator loss ``0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))``.

    Args:
        logits_real: discriminator logits on real videos, any shape.
        logits_fake: discriminator logits on reconstructions, any shape.

    Returns:
        Scalar float32 (>= 0; 0 once real >= 1 and fake <= -1 everywhere).
    """
    loss_real = jnp.mean(jax.nn.relu(1.0 - logits_real.astype(jnp.float32)))
    loss_fake = jnp.mean(jax.nn.relu(1.0 + logits_fake.astype(jnp.float32)))
    return 0.5 * (loss_real + loss_fake)


def vanilla_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    """Non-saturating discriminator loss ``0.5 * (mean(softplus(-real)) + mean(softplus(fake)))``.

    Args:
        logits_real: discriminator logits on real videos, any shape.
        logits_fake: discriminator logits on reconstructions, any shape.

    Returns:
        Scalar float32 (> 0).
    """
    loss_real = jnp.mean(jax.nn.softplus(-logits_real.astype(jnp.float32)))
    loss_fake = jnp.mean(jax.nn.softplus(logits_fake.astype(jnp.float32)))
    return 0.5 * (loss_real + loss_fake)


def generator_adversarial_loss(logits_fake: jax.Array) -> jax.Array:
    """Generator adversarial loss ``-mean(logits_fake)`` (reference l.167).

    Args:
        logits_fake: discriminator logits on reconstructions, any shape.

    Returns:
        Scalar float32.
    """
    return -jnp.mean(logits_fake.astype(jnp.float32))


def adopt_weight(
    weight: float | jax.Array,
    global_step: int | jax.Array,
    threshold: int = 0,
    value: float = 0.0,
) -> jax.Array:
    """``value`` before ``threshold``, ``weight`` from it on (reference ``adopt_weight``).

    Args:
        weight: the weight to use once ``global_step >= threshold``.
        global_step: 0-based optimisation step (int or traced scalar).
        threshold: first step at which ``weight`` applies (``disc_start``).
        value: the weight before ``threshold``.

    Returns:
        Scalar float32.
    """
    return jnp.where(
        jnp.asarray(global_step) < threshold,
        jnp.asarray(value, jnp.float32),
        jnp.asarray(weight, jnp.float32),
    )


def adaptive_weight(
    nll_grads: Any,
    g_grads: Any,
    *,
    disc_weight: float = 1.0,
    eps: float = 1e-6,
    max_weight: float = 1e6,
) -> jax.Array:
    """Adaptive adversarial weight (paper Eq. 7), detached.

    ``stop_gradient(clip(||grad_W nll|| / (||grad_W g|| + eps), 0, max_weight)) * disc_weight``
    where ``W`` is the decoder's last layer kernel (``params["decoder"]["conv_out"]["kernel"]``;
    reference ``get_last_layer``, modeling_wfvae.py:624-628) and the norms are Frobenius norms
    (``torch.norm`` of the whole tensor). Reference values (``LPIPSWithDiscriminator3D``,
    perceptual_loss.py:107-109): ``eps = 1e-6``, clamp ``[0, 1e6]``, then ``* disc_weight``.

    The gradients are w.r.t. ``W`` only. ``objective.generator_loss_and_grads`` obtains both from
    one ``jax.vjp`` of the model forward; under ``jit`` the two extra pullbacks are pruned to the
    few ops between ``W`` and the output. Accepts arrays or pytrees (global norm over leaves).

    Args:
        nll_grads: gradient of the reconstruction NLL w.r.t. the last layer (array or pytree).
        g_grads: gradient of the generator adversarial loss w.r.t. the same leaves.
        disc_weight: lambda_adv multiplier applied after the clamp.
        eps: delta added to the adversarial gradient norm.
        max_weight: upper clamp.

    Returns:
        Scalar float32 in ``[0, max_weight * disc_weight]`` with zero gradient.
    """
    nll_norm = optax.tree.norm(nll_grads).astype(jnp.float32)
    g_norm = optax.tree.norm(g_grads).astype(jnp.float32)
    weight = jnp.clip(nll_norm / (g_norm + eps), 0.0, max_weight)
    return jax.lax.stop_gradient(weight) * disc_weight


def is_discriminator_step(global_step: int | jax.Array, disc_start: int) -> jax.Array:
    """Whether step ``global_step`` trains the discriminator (else the generator).

    Reference ``train_ddp.py`` l.423-433: odd steps at or after ``disc_start`` train the
    discriminator, every other step trains the generator; before ``disc_start`` only the
    generator trains.

    Args:
        global_step: 0-based step counter (incremented after every step of either kind).
        disc_start: ``LossConfig.disc_start``.

    Returns:
        Scalar bool.
    """
    step = jnp.asarray(global_step)
    return jnp.logical_and(step % 2 == 1, step >= disc_start)
