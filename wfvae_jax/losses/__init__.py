"""WF-VAE training losses and the 3D PatchGAN discriminator.

Modules: :mod:`.config` (``LossConfig``), :mod:`.vae_loss` (reconstruction/NLL, KL, WL),
:mod:`.gan` (GAN losses, ``adopt_weight``, adaptive weight, step alternation),
:mod:`.discriminator` (``NLayerDiscriminator3D``), :mod:`.objective` (full generator and
discriminator objectives for jitted train steps).
"""

from wfvae_jax.losses.config import LossConfig
from wfvae_jax.losses.discriminator import NLayerDiscriminator3D
from wfvae_jax.losses.gan import (
    adaptive_weight,
    adopt_weight,
    generator_adversarial_loss,
    hinge_d_loss,
    is_discriminator_step,
    vanilla_d_loss,
)
from wfvae_jax.losses.objective import (
    GeneratorOutputs,
    default_last_layer,
    discriminator_loss,
    generator_loss,
    generator_loss_and_grads,
)
from wfvae_jax.losses.vae_loss import kl_loss, reconstruction_loss, wavelet_loss

__all__ = [
    "GeneratorOutputs",
    "LossConfig",
    "NLayerDiscriminator3D",
    "adaptive_weight",
    "adopt_weight",
    "default_last_layer",
    "discriminator_loss",
    "generator_adversarial_loss",
    "generator_loss",
    "generator_loss_and_grads",
    "hinge_d_loss",
    "is_discriminator_step",
    "kl_loss",
    "reconstruction_loss",
    "vanilla_d_loss",
    "wavelet_loss",
]
