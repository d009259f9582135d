"""Writes ``freeze_encoder.ckpt`` for ``tests/test_reference_ckpt.py`` (not run by the tests).

A training checkpoint as the reference writes it (PKU-YuanGroup/WF-VAE @ d858bee, imported from
the given checkout): ``train_ddp.py``'s own ``save_checkpoint`` (its source is read from the
checkout's ``train_ddp.py`` and run; importing that file needs wandb and lpips) called as its
training loop calls it, after one generator step of a ``--freeze_encoder --ema`` run::

    /path/to/torch-venv/bin/python tests/data/reference_ckpt/make_fixture.py /path/to/WF-VAE

Needs CPU torch, diffusers, einops and numpy (no JAX). What it does, as ``train_ddp.py``:
- ``WFVAEModel`` of ``tests/data/ckpt/small_config.json`` (base_channels 4, 135k parameters),
  seeded; ``LPIPSWithDiscriminator3D`` (its ``discriminator`` replaced by the reference's own
  ``NLayerDiscriminator3D(ndf=2)`` with ``weights_init``; its LPIPS VGG16 by one 1 channel wide
  with the same keys, so the file stays small; nothing reads those weights).
- Both wrapped in ``DistributedDataParallel`` (a one-process gloo group), so the EMA's keys
  carry ``module.`` as on a real run; ``--freeze_encoder``: the encoder's modules ``eval()`` and
  ``requires_grad_(False)``; AdamW (lr 1e-3, so one step moves the weights visibly) over the
  decoder's trainable parameters and the discriminator's; ``EMA(model, 0.9)`` registered, which
  therefore holds the decoder only.
- One generator step (L1 reconstruction of a seeded random clip), one discriminator step
  (hinge loss on it), ``ema.update()``; then ``save_checkpoint`` with the same arguments as
  ``train_ddp.py`` l.543-558.

Also writes ``expected.npz``: ``ema/<key>`` (the EMA shadow, ``module.`` removed),
``gen/<key>`` (``gen_model``) and ``disc/<key>`` (``dics_model``'s ``discriminator.*``), as torch
holds them.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import pathlib
import sys
import tempfile
import types

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]
CONFIG = REPO / "tests" / "data" / "ckpt" / "small_config.json"
# torchvision vgg16().features: conv and max-pool indices (the rest are ReLUs)
VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG_POOLS = (4, 9, 16, 23, 30)
SEED, NDF, LR, EMA_DECAY, STEP = 0, 2, 1e-3, 0.9, 2


def narrow_vgg16(pretrained: bool = False, **_):
    """torchvision's ``vgg16().features`` layout with every conv 1 channel wide."""
    from torch import nn

    layers = []
    for i in range(31):
        if i in VGG_CONVS:
            layers.append(nn.Conv2d(3 if i == 0 else 1, 1, 3, padding=1))
        else:
            layers.append(nn.MaxPool2d(2, 2) if i in VGG_POOLS else nn.ReLU())
    return types.SimpleNamespace(features=nn.Sequential(*layers))


def reference_save_checkpoint(reference: str):
    """``save_checkpoint`` as defined in the checkout's ``train_ddp.py`` (its own source)."""
    import torch

    source = pathlib.Path(reference, "train_ddp.py").read_text()
    (node,) = [
        n
        for n in ast.parse(source).body
        if isinstance(n, ast.FunctionDef) and n.name == "save_checkpoint"
    ]
    namespace = {"torch": torch, "Path": pathlib.Path}
    exec(compile(ast.Module([node], []), "train_ddp.py", "exec"), namespace)
    return namespace["save_checkpoint"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", help="root of a PKU-YuanGroup/WF-VAE checkout")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, os.path.abspath(args.reference))
    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    tv.models.vgg16 = narrow_vgg16
    import importlib.machinery

    tv.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
    tv.models.__spec__ = importlib.machinery.ModuleSpec("torchvision.models", None)
    sys.modules["torchvision"], sys.modules["torchvision.models"] = tv, tv.models

    import torch
    import torch.distributed as dist
    from causalvideovae.model.ema_model import EMA
    from causalvideovae.model.losses import lpips as ref_lpips
    from causalvideovae.model.losses.discriminator import NLayerDiscriminator3D, weights_init
    from causalvideovae.model.losses.perceptual_loss import LPIPSWithDiscriminator3D, hinge_d_loss
    from causalvideovae.model.vae.modeling_wfvae import WFVAEModel
    from torch.nn.parallel import DistributedDataParallel as DDP

    ref_lpips.LPIPS.load_from_pretrained = lambda self, name="vgg_lpips": None
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group(
            "gloo", init_method=f"file://{tmp}/rendezvous", rank=0, world_size=1
        )
        torch.manual_seed(SEED)
        config = json.loads(CONFIG.read_text())
        model = WFVAEModel(**{k: v for k, v in config.items() if not k.startswith("_")})
        loss = LPIPSWithDiscriminator3D(disc_start=0, wavelet_weight=0.1)
        loss.discriminator = NLayerDiscriminator3D(input_nc=3, ndf=NDF, n_layers=4).apply(
            weights_init
        )
        model, disc = DDP(model), DDP(loss)
        # train_ddp.py l.319-331 (--freeze_encoder)
        modules_to_train = list(model.module.get_decoder())
        for module in model.module.get_encoder():
            module.eval()
            module.requires_grad_(False)
        params = [p for m in modules_to_train for p in m.parameters() if p.requires_grad]
        gen_optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=1e-4)
        disc_optimizer = torch.optim.AdamW(
            filter(lambda p: p.requires_grad, disc.module.discriminator.parameters()),
            lr=LR,
            weight_decay=1e-4,
        )
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        ema = EMA(model, EMA_DECAY)
        ema.register()

        x = torch.rand(1, 3, 5, 16, 16, generator=torch.Generator().manual_seed(SEED)) * 2 - 1
        recon = model(x).sample
        gen_optimizer.zero_grad()
        (recon - x).abs().mean().backward()
        gen_optimizer.step()
        ema.update()
        logits_real = disc.module.discriminator(x)
        logits_fake = disc.module.discriminator(recon.detach())
        disc_optimizer.zero_grad()
        hinge_d_loss(logits_real, logits_fake).backward()
        disc_optimizer.step()

        save_checkpoint = reference_save_checkpoint(args.reference)
        path = save_checkpoint(
            0,
            STEP,
            {
                "gen_optimizer": gen_optimizer.state_dict(),
                "disc_optimizer": disc_optimizer.state_dict(),
            },
            {
                "gen_model": model.module.state_dict(),
                "dics_model": disc.module.state_dict(),
            },
            scaler.state_dict(),
            {"epoch": 0, "seed": SEED, "current_index": 2},  # CustomDistributedSampler's fields
            HERE,
            "freeze_encoder.ckpt",
            ema_state_dict=ema.shadow,
        )
        dist.destroy_process_group()

    def arrays(sd, prefix, strip=""):
        return {
            prefix + k.replace(strip, "", 1): v.detach().numpy().copy()
            for k, v in sd.items()
            if k.startswith(strip)
        }

    expected = arrays(ema.shadow, "ema/", "module.")
    expected.update(arrays(model.module.state_dict(), "gen/"))
    expected.update(arrays(disc.module.state_dict(), "disc/", "discriminator."))
    np.savez_compressed(HERE / "expected.npz", **expected)
    print(f"wrote {path} ({os.path.getsize(HERE / 'freeze_encoder.ckpt') / 2**10:.0f} KiB)")
    print(f"EMA: {len(ema.shadow)} tensors, e.g. {sorted(ema.shadow)[:2]}")


if __name__ == "__main__":
    main()
