"""The reference's training step, run in PyTorch on replayed random draws (optional tooling).

Used by ``benchmarks/train_vs_reference.py`` (its reference worker) and by
``tests/data/train_parity/make_vectors.py``; runs under a Python with CPU torch, diffusers,
einops, safetensors and numpy, with a checkout of PKU-YuanGroup/WF-VAE (tested at d858bee).
Nothing of the reference is copied: its ``WFVAEModel``, ``LPIPSWithDiscriminator3D``,
``NLayerDiscriminator3D``, ``weights_init`` and ``EMA`` are imported from the checkout, and
:meth:`ReferenceTrainer.step` is the body of ``train_ddp.py``'s loop (l.423-502) without DDP and
wandb: the same G/D alternation, ``torch.optim.AdamW(lr, weight_decay)`` with torch's default
betas and eps for both, ``torch.amp.GradScaler("cuda")`` with its calls (on a CPU-only torch it
disables itself, so ``scale`` is the identity and ``step`` is ``optimizer.step``),
``autocast("cuda", float32)``, no gradient clipping (``--clip_grad_norm`` is parsed but never
applied there), ``EMA.update`` after each generator step, and ``--wavelet_loss`` on (as
``examples/train_ddp.sh``).

Three things differ from a plain run, each so that both implementations see the same numbers:
- LPIPS: the reference's ``LPIPS`` downloads torchvision's VGG16 and the lpips heads at
  construction. Here ``torchvision.models.vgg16`` is a stand-in holding the seeded random VGG16
  of ``../shared/README.md`` (parity/lpips: :func:`vgg16_recipe`) and the heads are read from a
  local file (the lpips 0.1 heads, as ``wfvae_jax/metrics/lpips_weights``).
- Random draws: the posterior sample's noise and the discriminator's dropout masks of each step
  come from :func:`draws` (NumPy, seeded by ``(seed, step)``) instead of torch's generator;
  ``wfvae_jax.train.step.replay_draws`` feeds the same arrays to ours.
- The discriminator width ``ndf`` may differ from the reference's fixed 64
  (``LPIPSWithDiscriminator3D`` does not expose it): the discriminator is then the reference's
  own ``NLayerDiscriminator3D(ndf=...)`` with ``weights_init``, seeded.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
import warnings
from typing import Any

import numpy as np

# torchvision's vgg16().features: conv widths, "M" = 2x2 max pool (every conv is 3x3, padding 1).
VGG16_LAYOUT = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)
VGG_RECIPE_SEED = 1  # ../shared/README.md, parity/lpips: vgg seed 1
DROPOUT = 0.3  # NLayerDiscriminator3D's default, used by LPIPSWithDiscriminator3D


def vgg16_recipe(seed: int = VGG_RECIPE_SEED) -> dict[str, np.ndarray]:
    """The seeded random VGG16 ``features`` state dict of ../shared/README.md (parity/lpips).

    For each Conv2d in order: ``w = N(0, 1) * sqrt(2 / (I * 3 * 3))`` of shape ``(O, I, 3, 3)``,
    then ``b = N(0, 1) * 0.01``, from ``np.random.default_rng(seed)``, cast to float32. Keys are
    torchvision's (``features.<index>.weight``), which ``backbone_from_torchvision`` reads.
    """
    rng = np.random.default_rng(seed)
    state, index, c_in = {}, 0, 3
    for v in VGG16_LAYOUT:
        if v == "M":
            index += 1
            continue
        w = rng.standard_normal((v, c_in, 3, 3)) * np.sqrt(2.0 / (c_in * 9))
        state[f"features.{index}.weight"] = w.astype(np.float32)
        state[f"features.{index}.bias"] = (rng.standard_normal(v) * 0.01).astype(np.float32)
        index, c_in = index + 2, v
    return state


def latent_shape(batch: int, frames: int, size: int, config: dict[str, Any]) -> tuple[int, ...]:
    """The posterior's shape in the reference layout ``(B, latent_dim, t, h, w)``."""
    down = 8 if config.get("l1_dowmsample_block") == "Spatial2xTime2x3DDownsample" else 4
    if (frames - 1) % down or size % 8:
        raise ValueError(f"frames must be 1 + {down}k and size a multiple of 8")
    return (batch, config["latent_dim"], (frames - 1) // down + 1, size // 8, size // 8)


def dropout_shapes(
    batch: int, frames: int, size: int, ndf: int, n_layers: int
) -> list[tuple[int, ...]]:
    """Input shapes ``(B, C, T', H', W')`` of the discriminator's dropouts, in call order.

    ``NLayerDiscriminator3D`` (discriminator.py:96-126): every conv is 3x3x3 with padding 1, so a
    stride-2 axis maps ``n -> (n - 1) // 2 + 1``; the first conv strides (2, 2, 2), stage 1
    (2, 2, 2), stages 2.. (1, 2, 2), the last normalised conv 1.
    """

    def down(n: int, s: int) -> int:
        return (n - 1) // s + 1

    t, h = down(frames, 2), down(size, 2)
    shapes = []
    for n in range(1, n_layers):
        t, h = down(t, 2 if n == 1 else 1), down(h, 2)
        shapes.append((batch, ndf * min(2**n, 8), t, h, h))
    shapes.append((batch, ndf * min(2**n_layers, 8), t, h, h))
    return shapes


def draws(
    seed: int, step: int, eps_shape: tuple[int, ...], mask_shapes: list[tuple[int, ...]]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Step ``step``'s posterior noise and dropout keep-masks, reference layout (NCTHW).

    From ``np.random.default_rng((seed, step))``: ``eps`` standard normal float32, then two
    discriminator calls' masks (a generator step uses the first call's, a discriminator step
    both: real, then reconstruction), each element kept where a uniform draw is ``>= 0.3``.
    """
    rng = np.random.default_rng((seed, step))
    eps = rng.standard_normal(eps_shape, dtype=np.float32)
    masks = [rng.random(s, dtype=np.float32) >= DROPOUT for _ in range(2) for s in mask_shapes]
    return eps, masks


def _install_torchvision_stand_in(backbone: dict[str, np.ndarray]) -> None:
    """``torchvision.models.vgg16(pretrained=...)`` gives ``backbone`` (no torchvision, no I/O)."""
    import torch
    from torch import nn

    def vgg16(pretrained: bool = False, **_: Any) -> Any:
        layers: list[nn.Module] = []
        c_in = 3
        for v in VGG16_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c_in, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                c_in = v
        features = nn.Sequential(*layers)
        prefix = "features."
        features.load_state_dict(
            {k[len(prefix) :]: torch.from_numpy(v) for k, v in backbone.items()}, strict=True
        )
        return types.SimpleNamespace(features=features)

    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    tv.models.vgg16 = vgg16
    # diffusers probes importlib.util.find_spec("torchvision"), which needs a __spec__.
    tv.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
    tv.models.__spec__ = importlib.machinery.ModuleSpec("torchvision.models", None)
    sys.modules["torchvision"], sys.modules["torchvision.models"] = tv, tv.models


class _ReplayDropout:
    """Stands in for ``nn.Dropout`` in train mode: ``x * (keep / (1 - p))`` as torch computes it."""

    @staticmethod
    def make(p: float, queue: list) -> Any:
        import torch
        from torch import nn

        class ReplayDropout(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                keep = queue.pop(0)
                if tuple(keep.shape) != tuple(x.shape):
                    raise ValueError(f"mask {tuple(keep.shape)} for dropout input {tuple(x.shape)}")
                noise = torch.from_numpy(keep).to(x.dtype).div_(1.0 - p)
                return x * noise

        return ReplayDropout()


class ReferenceTrainer:
    """The reference's models, optimizers, scaler and EMA, stepped as ``train_ddp.py`` does.

    Args:
      reference: root of the WF-VAE checkout.
      model_config: ``WFVAEModel`` constructor fields (config.json; ``_*`` keys are ignored).
      loss_kwargs: ``LPIPSWithDiscriminator3D`` arguments as ``train_ddp.py`` passes them
        (``disc_start``, ``disc_weight``, ``kl_weight``, ``logvar_init``, ``perceptual_weight``,
        ``loss_type``, ``wavelet_weight``).
      lpips_heads: the lpips 0.1 VGG linear heads (safetensors, ``lin{k}.model.1.weight``).
      lr, weight_decay: both AdamWs (``train_ddp.py`` defaults 1e-5, 1e-4).
      ema_decay: EMA decay (``--ema_decay`` 0.999).
      disc_ndf: discriminator width (64 is the reference's own).
      seed: ``torch.manual_seed`` before building the model (if ``model_state`` is None) and the
        discriminator (if ``disc_state`` is None).
      model_state, disc_state: initial weights (numpy state dicts), else seeded inits.
      record: hook the per-frame LPIPS, the logit means and the adaptive weight's gradient
        norms into each step's result (the norms cost two more last-layer backward passes, so
        leave it off when timing).
    """

    def __init__(
        self,
        reference: str,
        model_config: dict[str, Any],
        *,
        loss_kwargs: dict[str, Any],
        lpips_heads: str,
        lr: float = 1e-5,
        weight_decay: float = 1e-4,
        ema_decay: float = 0.999,
        disc_ndf: int = 64,
        seed: int = 0,
        model_state: dict[str, np.ndarray] | None = None,
        disc_state: dict[str, np.ndarray] | None = None,
        record: bool = False,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        sys.path.insert(0, os.path.abspath(reference))
        _install_torchvision_stand_in(vgg16_recipe())
        import torch
        from causalvideovae.model.ema_model import EMA
        from causalvideovae.model.losses import lpips as ref_lpips
        from causalvideovae.model.losses.discriminator import NLayerDiscriminator3D, weights_init
        from causalvideovae.model.losses.perceptual_loss import LPIPSWithDiscriminator3D
        from causalvideovae.model.utils.distrib_utils import DiagonalGaussianDistribution
        from causalvideovae.model.vae.modeling_wfvae import WFVAEModel
        from safetensors.torch import load_file

        self.torch = torch
        heads = load_file(lpips_heads)
        ref_lpips.LPIPS.load_from_pretrained = lambda m, name="vgg_lpips": m.load_state_dict(
            heads, strict=False
        )
        torch.manual_seed(seed)
        kwargs = {k: v for k, v in model_config.items() if not k.startswith("_")}
        self.model = WFVAEModel(**kwargs)
        if model_state is not None:
            state = self.model.state_dict()
            state.update({k: torch.from_numpy(np.asarray(v)) for k, v in model_state.items()})
            self.model.load_state_dict(state, strict=True)
        torch.manual_seed(seed)
        self.loss = LPIPSWithDiscriminator3D(**loss_kwargs)
        n_layers = loss_kwargs.get("disc_num_layers", 4)  # train_ddp.py leaves the default 4
        if disc_ndf != 64:
            torch.manual_seed(seed)
            self.loss.discriminator = NLayerDiscriminator3D(
                input_nc=3, ndf=disc_ndf, n_layers=n_layers
            ).apply(weights_init)
        if disc_state is not None:
            sd = {k: torch.from_numpy(np.asarray(v)) for k, v in disc_state.items()}
            self.loss.discriminator.load_state_dict(sd, strict=False)
        self.masks: list[np.ndarray] = []
        main = self.loss.discriminator.main
        for i, layer in enumerate(main):
            if isinstance(layer, torch.nn.Dropout):
                main[i] = _ReplayDropout.make(layer.p, self.masks)
        self.eps: list[Any] = [None]
        eps = self.eps
        DiagonalGaussianDistribution.sample = lambda d: d.mean + d.std * eps[0]

        # train_ddp.py l.337-352: optimise encoder + decoder parameters that require grad.
        self.modules_to_train = [*self.model.get_decoder(), *self.model.get_encoder()]
        params = [p for m in self.modules_to_train for p in m.parameters() if p.requires_grad]
        self.gen_optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        disc_params = [p for p in self.loss.discriminator.parameters() if p.requires_grad]
        self.disc_optimizer = torch.optim.AdamW(disc_params, lr=lr, weight_decay=weight_decay)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "CUDA is not available. Disabling."
            self.scaler = torch.amp.GradScaler("cuda")
        self.ema = EMA(self.model, ema_decay)
        self.ema.register()
        for m in self.modules_to_train:
            m.train()
        self.current_step = 0
        self.record: dict[str, Any] = {}
        if record:
            self._hooks()

    def _hooks(self) -> None:
        """Records the per-frame LPIPS, logit means and the adaptive weight's gradient norms."""
        rec = self.record
        self.loss.perceptual_loss.register_forward_hook(
            lambda m, i, o: rec.__setitem__("lpips", o.detach().flatten().double().numpy())
        )
        self.loss.discriminator.register_forward_hook(
            lambda m, i, o: rec.setdefault("logits", []).append(float(o.detach().double().mean()))
        )
        original = self.loss.calculate_adaptive_weight
        torch = self.torch

        def adaptive(nll_loss, g_loss, last_layer=None):
            for name, loss in (("nll_grad_norm", nll_loss), ("g_grad_norm", g_loss)):
                (grad,) = torch.autograd.grad(loss, last_layer, retain_graph=True)
                rec[name] = float(torch.norm(grad))
            return original(nll_loss, g_loss, last_layer=last_layer)

        self.loss.calculate_adaptive_weight = adaptive

    def is_discriminator_step(self) -> bool:
        return (
            self.current_step % 2 == 1 and self.current_step >= self.loss.discriminator_iter_start
        )

    def step(
        self,
        video: np.ndarray,
        eps: np.ndarray,
        masks: list[np.ndarray],
        keep_tensors: bool = False,
    ) -> dict[str, Any]:
        """One step of ``train_ddp.py``'s loop on ``video`` ``(B, 3, T, H, W)`` in [-1, 1].

        Returns the reference's log values (keys without ``train/``), ``kind`` (``"G"``/``"D"``),
        ``grad_norm`` (global norm of the stepped optimizer's gradients) and what the hooks
        recorded (``lpips`` per frame, ``logits`` means per discriminator call, the adaptive
        weight's ``nll_grad_norm``/``g_grad_norm``). With ``keep_tensors``, ``tensors`` holds the
        forward pass's ``recon``, posterior ``mean``/``logvar`` and wavelet taps ``enc_l1``,
        ``dec_l1``, ``enc_l2``, ``dec_l2`` (float32 numpy, reference layout).
        """
        torch = self.torch
        self.record.clear()
        inputs = torch.from_numpy(np.ascontiguousarray(video, np.float32))
        self.eps[0] = torch.from_numpy(np.ascontiguousarray(eps, np.float32))
        step_dis = self.is_discriminator_step()
        self.masks[:] = list(masks if step_dis else masks[: len(masks) // 2])
        for m in self.modules_to_train:
            m.requires_grad_(not step_dis)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # autocast("cuda") without CUDA: disabled
            with torch.amp.autocast("cuda", dtype=torch.float32):
                outputs = self.model(inputs)
                recon, posterior = outputs.sample, outputs.latent_dist
                wavelet_coeffs = outputs.extra_output
            if not step_dis:
                with torch.amp.autocast("cuda", dtype=torch.float32):
                    loss, log = self.loss(
                        inputs,
                        recon,
                        posterior,
                        optimizer_idx=0,
                        global_step=self.current_step,
                        last_layer=self.model.get_last_layer(),
                        wavelet_coeffs=wavelet_coeffs,
                        split="train",
                    )
                self.gen_optimizer.zero_grad()
                self.scaler.scale(loss).backward()
                self.scaler.step(self.gen_optimizer)
                self.scaler.update()
                self.ema.update()
                optimizer = self.gen_optimizer
            else:
                with torch.amp.autocast("cuda", dtype=torch.float32):
                    loss, log = self.loss(
                        inputs,
                        recon,
                        posterior,
                        optimizer_idx=1,
                        global_step=self.current_step,
                        last_layer=None,
                        split="train",
                    )
                self.disc_optimizer.zero_grad()
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.disc_optimizer)
                self.scaler.step(self.disc_optimizer)
                self.scaler.update()
                optimizer = self.disc_optimizer
        if self.masks:
            raise RuntimeError(f"{len(self.masks)} dropout masks left over")
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        out: dict[str, Any] = {k.split("/", 1)[1]: float(v) for k, v in log.items()}
        out["kind"] = "D" if step_dis else "G"
        out["grad_norm"] = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
        out.update(self.record)
        if keep_tensors:
            named = {"recon": recon, "mean": posterior.mean, "logvar": posterior.logvar}
            named.update(zip(("enc_l1", "dec_l1", "enc_l2", "dec_l2"), wavelet_coeffs, strict=True))
            out["tensors"] = {k: v.detach().numpy().copy() for k, v in named.items()}
        self.current_step += 1
        return out

    def reconstruct(self, video: np.ndarray, ema: bool = False) -> np.ndarray:
        """``model(video, sample_posterior=False).sample`` in eval mode (the EMA's with ``ema``)."""
        torch = self.torch
        for m in self.modules_to_train:
            m.eval()
        if ema:
            self.ema.apply_shadow()
        try:
            with torch.no_grad():
                x = torch.from_numpy(np.ascontiguousarray(video, np.float32))
                y = self.model(x, sample_posterior=False).sample.numpy()
        finally:
            if ema:
                self.ema.restore()
            for m in self.modules_to_train:
                m.train()
        return y

    def generator_state(self) -> dict[str, np.ndarray]:
        """The generator's trainable parameters (float32 numpy, reference names)."""
        return {
            k: v.detach().numpy().copy()
            for k, v in self.model.named_parameters()
            if k in self.ema.shadow
        }

    def ema_state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.ema.shadow.items()}

    def discriminator_parameters(self) -> dict[str, np.ndarray]:
        """The discriminator's parameters (no BatchNorm running statistics)."""
        named = self.loss.discriminator.named_parameters()
        return {k: v.detach().numpy().copy() for k, v in named}

    def discriminator_state(self) -> dict[str, np.ndarray]:
        """The discriminator's state dict (parameters and BatchNorm buffers)."""
        return {
            k: v.detach().numpy().copy() for k, v in self.loss.discriminator.state_dict().items()
        }
