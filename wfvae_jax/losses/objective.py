"""Full generator and discriminator objectives of WF-VAE, shaped for jitted train steps.

Source: reference ``LPIPSWithDiscriminator3D.forward`` (``causalvideovae/model/losses/
perceptual_loss.py`` l.112-217, PKU-YuanGroup/WF-VAE @ d858bee) and its use in ``train_ddp.py``
(l.423-502).

Generator (``optimizer_idx == 0``)::

    total = nll + kl_weight * kl + d_weight * disc_factor * g + wavelet_weight * wl

with ``nll``/``kl``/``wl`` from :mod:`.vae_loss`, ``g = -mean(D(reconstruction))``, and before
``disc_start``: ``d_weight = 0``, ``g = 0``, ``disc_factor = 0``; from ``disc_start`` on:
``d_weight = adaptive_weight(grad_W nll, grad_W g)`` (``= 1`` if ``disc_factor == 0``),
``disc_factor = config.disc_factor``.

Discriminator (``optimizer_idx == 1``)::

    d_loss = adopt_weight(disc_factor, step, disc_start) * hinge(D(x), D(stop_grad(y)))

How a train step plugs these in
- Generator step: call :func:`generator_loss_and_grads` with ``forward(params) ->
  GeneratorOutputs`` and ``discriminate(reconstruction) -> (logits, aux)``. It runs the model
  forward once under ``jax.vjp``, takes the loss gradients w.r.t. the model outputs, pulls back
  two cotangents to get ``grad_W nll`` and ``grad_W g`` for the adaptive weight (under ``jit``
  XLA prunes these pullbacks to the ops between the last layer and the output), then pulls back
  the combined cotangent once for the full parameter gradient. LPIPS and the discriminator run
  forward/backward once each. The result equals ``jax.grad`` of ``total`` with ``d_weight``
  held constant.
- The reference runs the discriminator in train mode in both steps (nothing ever calls
  ``.eval()`` on it): BatchNorm uses the batch statistics of each call and dropout is on. So
  ``discriminate`` should apply it with ``train=True``, a ``"dropout"`` rng and
  ``mutable=["batch_stats"]``, returning the updated stats as ``aux``.
- Discriminator step: apply the discriminator to the real batch and to the reconstructions in
  two SEPARATE calls (the reference does, so each gets its own BatchNorm batch statistics;
  concatenating them would change the result), then :func:`discriminator_loss`.
- Which step runs: :func:`wfvae_jax.losses.gan.is_discriminator_step`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from wfvae_jax.losses.config import LossConfig
from wfvae_jax.losses.gan import (
    adaptive_weight,
    adopt_weight,
    generator_adversarial_loss,
    hinge_d_loss,
    vanilla_d_loss,
)
from wfvae_jax.losses.vae_loss import LPIPSFn, kl_loss, reconstruction_loss, wavelet_loss


class GeneratorOutputs(NamedTuple):
    """The model outputs the generator loss differentiates.

    Attributes:
        reconstruction: ``(B, T, H, W, C)`` decoded video.
        mean: posterior mean, ``(B, ...)``.
        logvar: posterior log-variance, same shape as ``mean``.
        taps: ``(enc_w2, dec_w2, enc_w3, dec_w3)`` (the encoder's W2/W3 and the decoder's
            W2^/W3^) for the WL loss, or ``None`` to disable it (as the reference does without
            ``--wavelet_loss``).
    """

    reconstruction: jax.Array
    mean: jax.Array
    logvar: jax.Array
    taps: tuple[jax.Array, jax.Array, jax.Array, jax.Array] | None = None


def default_last_layer(params: Any) -> jax.Array:
    """``params["decoder"]["conv_out"]["kernel"]``, the reference's ``get_last_layer``."""
    return params["decoder"]["conv_out"]["kernel"]


def _terms(
    inputs: jax.Array, outputs: GeneratorOutputs, config: LossConfig, lpips_fn: LPIPSFn | None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    nll = _nll(inputs, outputs.reconstruction, config, lpips_fn)
    kl = kl_loss(outputs.mean, outputs.logvar)
    wl = _wl(outputs.taps)
    return nll, kl, wl


def _nll(
    inputs: jax.Array, reconstruction: jax.Array, config: LossConfig, lpips_fn: LPIPSFn | None
) -> jax.Array:
    return reconstruction_loss(
        inputs,
        reconstruction,
        perceptual_weight=config.perceptual_weight,
        lpips_fn=lpips_fn,
        loss_type=config.loss_type,
        logvar=config.logvar_init,
    )


def _wl(taps: tuple[jax.Array, ...] | None) -> jax.Array:
    if taps is None:
        return jnp.zeros((), jnp.float32)
    if len(taps) != 4:
        raise ValueError(f"taps must be (enc_w2, dec_w2, enc_w3, dec_w3), got {len(taps)} arrays")
    return wavelet_loss(*taps)


def _combine(
    nll: jax.Array,
    kl: jax.Array,
    wl: jax.Array,
    g: jax.Array,
    d_weight: jax.Array,
    global_step: int | jax.Array,
    config: LossConfig,
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """Reference l.168-200. Returns (total, scale of g in total, logs)."""
    active = jnp.asarray(global_step) >= config.disc_start
    if config.disc_factor > 0:
        d_weight = jax.lax.stop_gradient(jnp.asarray(d_weight, jnp.float32))
    else:
        d_weight = jnp.ones((), jnp.float32)
    d_weight = jnp.where(active, d_weight, 0.0)
    g = jnp.where(active, g, 0.0)
    disc_factor = adopt_weight(config.disc_factor, global_step, threshold=config.disc_start)
    adv_scale = d_weight * disc_factor
    total = nll + config.kl_weight * kl + adv_scale * g + config.wavelet_weight * wl
    logs = {
        "total_loss": total,
        "logvar": jnp.asarray(config.logvar_init, jnp.float32),
        "kl_loss": kl,
        "nll_loss": nll,
        "rec_loss": nll,
        "wl_loss": wl,
        "d_weight": d_weight,
        "disc_factor": disc_factor,
        "g_loss": g,
    }
    return total, adv_scale, jax.tree.map(jax.lax.stop_gradient, logs)


def generator_loss(
    inputs: jax.Array,
    outputs: GeneratorOutputs,
    logits_fake: jax.Array,
    *,
    d_weight: float | jax.Array,
    global_step: int | jax.Array,
    config: LossConfig,
    lpips_fn: LPIPSFn | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total generator loss for a GIVEN adaptive weight (reference l.128-201).

    Use this to evaluate the loss (e.g. for validation/logging) or inside ``jax.grad`` when the
    adaptive weight is known; :func:`generator_loss_and_grads` computes the weight itself.

    Args:
        inputs: ``(B, T, H, W, C)`` real videos in [-1, 1].
        outputs: model outputs (reconstruction, posterior mean/logvar, WL taps).
        logits_fake: discriminator logits on ``outputs.reconstruction``.
        d_weight: adaptive weight (already multiplied by ``disc_weight``); gradient is stopped.
            Ignored (treated as 1) if ``config.disc_factor == 0``, as the reference does.
        global_step: 0-based step (int or traced).
        config: loss weights and schedule.
        lpips_fn: per-frame LPIPS, ``(N, H, W, C) x (N, H, W, C) -> (N,)``; needed unless
            ``config.perceptual_weight == 0``.

    Returns:
        ``(total, logs)``: scalar float32 loss and a dict of scalar terms named as the
        reference's log keys (``total_loss, logvar, kl_loss, nll_loss, rec_loss, wl_loss,
        d_weight, disc_factor, g_loss``), all with stopped gradients.

    Raises:
        ValueError: on malformed shapes (see :mod:`.vae_loss`).
    """
    nll, kl, wl = _terms(inputs, outputs, config, lpips_fn)
    g = generator_adversarial_loss(logits_fake)
    total, _, logs = _combine(nll, kl, wl, g, d_weight, global_step, config)
    return total, logs


def generator_loss_and_grads(
    forward: Callable[[Any], Any],
    params: Any,
    discriminate: Callable[[jax.Array], tuple[jax.Array, Any]],
    inputs: jax.Array,
    *,
    global_step: int | jax.Array,
    config: LossConfig,
    lpips_fn: LPIPSFn | None = None,
    last_layer: Callable[[Any], Any] = default_last_layer,
    has_aux: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array], Any, Any, Any]:
    """Generator loss, its parameter gradient and the adaptive weight in one forward pass.

    Args:
        forward: ``params -> GeneratorOutputs`` (or ``(GeneratorOutputs, aux)`` if ``has_aux``);
            closes over the batch and the posterior-sampling rng.
        params: generator parameters (the pytree ``forward`` differentiates).
        discriminate: ``reconstruction -> (logits, disc_aux)``; closes over the discriminator
            variables and dropout rng. ``disc_aux`` (e.g. updated ``batch_stats``) is returned.
        inputs: ``(B, T, H, W, C)`` real videos in [-1, 1].
        global_step: 0-based step (int or traced).
        config: loss weights and schedule.
        lpips_fn: per-frame LPIPS (see :func:`generator_loss`).
        last_layer: selects the last decoder layer's leaves from a params-shaped pytree.
        has_aux: whether ``forward`` returns ``(outputs, aux)``.

    Returns:
        ``(total, logs, grads, disc_aux, forward_aux)``: scalar loss, logged terms (as
        :func:`generator_loss`), ``d total / d params`` with the adaptive weight held constant,
        the discriminator's aux output and ``forward``'s aux (``None`` without ``has_aux``).
    """

    def normalized_forward(p: Any) -> tuple[GeneratorOutputs, Any]:
        result = forward(p)
        out, aux = result if has_aux else (result, None)
        if not isinstance(out, GeneratorOutputs):
            raise ValueError(f"forward must return GeneratorOutputs, got {type(out).__name__}")
        # A fixed tuple structure keeps the cotangents built below congruent with the outputs.
        taps = None if out.taps is None else tuple(out.taps)
        return out._replace(taps=taps), aux

    outputs, pullback, forward_aux = jax.vjp(normalized_forward, params, has_aux=True)
    y = outputs.reconstruction

    nll, d_nll = jax.value_and_grad(lambda r: _nll(inputs, r, config, lpips_fn))(y)

    def adversarial(r: jax.Array) -> tuple[jax.Array, Any]:
        logits, aux = discriminate(r)
        return generator_adversarial_loss(logits), aux

    (g, disc_aux), d_g = jax.value_and_grad(adversarial, has_aux=True)(y)
    kl, (d_mean, d_logvar) = jax.value_and_grad(kl_loss, argnums=(0, 1))(
        outputs.mean, outputs.logvar
    )
    if outputs.taps is None:
        wl, d_taps = jnp.zeros((), jnp.float32), None
    else:
        wl, d_taps = jax.value_and_grad(_wl)(tuple(outputs.taps))

    zeros = jax.tree.map(jnp.zeros_like, outputs)

    def pull(cotangent: GeneratorOutputs) -> Any:
        cotangent = jax.tree.map(lambda c, o: c.astype(o.dtype), cotangent, outputs)
        return pullback(cotangent)[0]

    if config.disc_factor > 0:
        d_weight = adaptive_weight(
            last_layer(pull(zeros._replace(reconstruction=d_nll))),
            last_layer(pull(zeros._replace(reconstruction=d_g))),
            disc_weight=config.disc_weight,
            eps=config.adaptive_weight_eps,
            max_weight=config.adaptive_weight_max,
        )
    else:
        d_weight = jnp.ones((), jnp.float32)
    total, adv_scale, logs = _combine(nll, kl, wl, g, d_weight, global_step, config)

    # total is linear in the four terms with constant coefficients, so its output cotangent is
    # the same combination of the terms' cotangents.
    cotangent = GeneratorOutputs(
        reconstruction=d_nll + adv_scale * d_g,
        mean=config.kl_weight * d_mean,
        logvar=config.kl_weight * d_logvar,
        taps=None if d_taps is None else tuple(config.wavelet_weight * d for d in d_taps),
    )
    grads = pull(cotangent)
    return total, logs, grads, disc_aux, forward_aux


def discriminator_loss(
    logits_real: jax.Array,
    logits_fake: jax.Array,
    *,
    global_step: int | jax.Array,
    config: LossConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Discriminator loss (reference l.202-217): ``disc_factor * hinge(real, fake)``.

    ``disc_factor`` is ``config.disc_factor`` from ``disc_start`` on and 0 before (the
    reference's training loop only runs discriminator steps from ``disc_start`` anyway).

    Args:
        logits_real: discriminator logits on real videos (from their own forward call).
        logits_fake: logits on ``stop_gradient(reconstruction)`` (from a separate forward
            call; the reference detaches the reconstruction, not the logits).
        global_step: 0-based step (int or traced).
        config: ``disc_loss`` picks hinge or vanilla.

    Returns:
        ``(d_loss, logs)`` with logs ``disc_loss``, ``logits_real``, ``logits_fake`` (means).
    """
    loss_fn = hinge_d_loss if config.disc_loss == "hinge" else vanilla_d_loss
    disc_factor = adopt_weight(config.disc_factor, global_step, threshold=config.disc_start)
    d_loss = disc_factor * loss_fn(logits_real, logits_fake)
    logs = {
        "disc_loss": d_loss,
        "logits_real": jnp.mean(logits_real.astype(jnp.float32)),
        "logits_fake": jnp.mean(logits_fake.astype(jnp.float32)),
    }
    return d_loss, jax.tree.map(jax.lax.stop_gradient, logs)
