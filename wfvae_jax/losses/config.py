"""Loss hyper-parameters of WF-VAE training.

Field names follow the reference's ``LPIPSWithDiscriminator3D`` constructor
(``causalvideovae/model/losses/perceptual_loss.py`` lines 60-78); defaults are the values its
training script passes (``train_ddp.py`` argparse defaults, lines 617-631), not the constructor's
own defaults (which differ: kl_weight=1.0, disc_weight=1.0, wavelet_weight=0.01).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights and schedule of the generator and discriminator losses.

    Attributes:
        disc_start: first global step at which the adversarial term is on and the discriminator
            trains (``train_ddp.py`` default 5; the released ``examples/train_ddp.sh`` passes 0).
        logvar_init: the fixed NLL log-variance ``s``; ``nll = rec / exp(s) + s`` per element.
            The reference keeps it fixed (``learn_logvar=False``) at 0.
        kl_weight: weight of the KL term (lambda_KL, 1e-6).
        perceptual_weight: LPIPS weight added to the per-pixel loss (1.0); 0 skips LPIPS.
        disc_num_layers: ``n_layers`` of ``NLayerDiscriminator3D`` (4).
        disc_factor: multiplier of the adversarial terms once ``disc_start`` is reached (1.0).
        disc_weight: multiplier of the adaptive adversarial weight (lambda_adv, 0.5).
        disc_loss: ``"hinge"`` or ``"vanilla"`` (softplus) discriminator loss.
        wavelet_weight: weight of the WL loss (lambda_WL, 0.1).
        loss_type: per-pixel loss, ``"l1"`` or ``"l2"`` (squared error).
        adaptive_weight_eps: delta added to the adversarial gradient norm (1e-6).
        adaptive_weight_max: upper clamp of the adaptive weight before ``disc_weight`` (1e6 in
            ``LPIPSWithDiscriminator3D``, perceptual_loss.py:107-108; the VQ variant uses 1e-4/1e4).
    """

    disc_start: int = 5
    logvar_init: float = 0.0
    kl_weight: float = 1e-6
    perceptual_weight: float = 1.0
    disc_num_layers: int = 4
    disc_factor: float = 1.0
    disc_weight: float = 0.5
    disc_loss: str = "hinge"
    wavelet_weight: float = 0.1
    loss_type: str = "l1"
    adaptive_weight_eps: float = 1e-6
    adaptive_weight_max: float = 1e6

    def __post_init__(self) -> None:
        if self.disc_loss not in ("hinge", "vanilla"):
            raise ValueError(f"disc_loss must be 'hinge' or 'vanilla', got {self.disc_loss!r}")
        if self.loss_type not in ("l1", "l2"):
            raise ValueError(f"loss_type must be 'l1' or 'l2', got {self.loss_type!r}")
        for name in ("kl_weight", "perceptual_weight", "disc_factor", "disc_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.wavelet_weight < 0:
            raise ValueError(f"wavelet_weight must be >= 0, got {self.wavelet_weight}")
        if self.disc_num_layers < 1:
            raise ValueError(f"disc_num_layers must be >= 1, got {self.disc_num_layers}")
        if self.adaptive_weight_eps <= 0 or self.adaptive_weight_max <= 0:
            raise ValueError("adaptive_weight_eps and adaptive_weight_max must be positive")
