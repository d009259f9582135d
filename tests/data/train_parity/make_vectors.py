"""Writes ``vectors.npz`` for ``tests/test_train_parity.py`` (not run by the tests).

Runs the reference's own training step (``benchmarks/reference_trainer.py``: PKU-YuanGroup/WF-VAE
@ d858bee imported from the given checkout, ``train_ddp.py``'s loop body) for four steps from
known weights on a fixed batch of real clips, and records what the test compares::

    /path/to/torch-venv/bin/python tests/data/train_parity/make_vectors.py /path/to/WF-VAE

Needs CPU torch, diffusers, einops, safetensors, PyAV and numpy (no JAX). Setup:
- Generator: the tiny parity checkpoint ``tests/data/wfvae_tiny`` (2.3M parameters).
- Discriminator: the reference's ``NLayerDiscriminator3D`` with ``weights_init`` (seed 0),
  ``n_layers=4`` as ``LPIPSWithDiscriminator3D``, but ``ndf=8`` instead of its fixed 64 so its
  weights (stored here) and their updates stay small; the code path is the same.
- LPIPS: the seeded random VGG16 of ../shared/README.md and the real lpips 0.1 heads.
- ``train_ddp.py`` defaults: AdamW lr 1e-5, weight decay 1e-4, betas (0.9, 0.999), eps 1e-8,
  no clipping, GradScaler (disabled on CPU), EMA 0.999, disc_weight 0.5, kl_weight 1e-6,
  perceptual_weight 1, l1, ``--wavelet_loss`` with weight 0.1; ``disc_start=1``, so step 0 is a
  generator step before ``disc_start`` (no GAN term), step 1 a discriminator step, step 2 a
  generator step with the adaptive weight, step 3 a discriminator step.
- Batch: frames 0-8 of ``tests/data/videos/bikes_0000.mp4`` and ``bikes_0120.mp4`` (160x68),
  center 64x64 crop, 2x2 box average -> (2, 3, 9, 32, 32) in [-1, 1].
- Draws: each step's posterior noise and dropout masks from ``reference_trainer.draws``, stored.

``vectors.npz`` (reference names and NCTHW layouts):
- ``video``; ``disc_init/<key>``: the discriminator's initial state dict.
- ``s<k>/eps``, ``s<k>/mask<i>``: the draws of step k (masks of the calls the step makes).
- ``s0/<name>``: the generator forward pass of step 0 (``recon``, ``mean``, ``logvar``,
  ``enc_l1``, ``dec_l1``, ``enc_l2``, ``dec_l2``); ``s1/recon``: the reconstruction the first
  discriminator step sees.
- Parameter updates, packed: ``s<k>/q`` int8 and ``s<k>/scale`` float32 hold
  ``(before - after) / lr = scale[i] * q`` for every trainable tensor ``i`` of the model stepped
  (generator: ``meta["gen_keys"]``, discriminator: ``meta["disc_keys"]``, flattened and
  concatenated in that order; the rounding is at most ``lr * scale / 2``, ~4e-8 here).
- ``s<k>/ema_ulps`` (generator steps): the EMA's change in float32 units in the last place
  (``int32`` bit patterns after minus before) of the first ``EMA_HEAD`` elements of every tensor.
- ``adamw/*``: AdamW and the reference's ``EMA`` at magnitudes float32 resolves (at lr 1e-5
  weight decay changes a weight by 1e-9 of itself, below float32's resolution): ``p0``
  (3, 64), ``grads`` (4, 3, 64) with rows scaled 1, 1e-6, 1e-9 (the last near AdamW's eps),
  ``params`` and ``ema`` after each of the 4 steps (lr 1e-2, weight decay 0.1, EMA decay 0.9).
- ``meta``: JSON with the settings and, per step, every logged loss term, the per-frame LPIPS,
  the discriminator's logit means, the gradient norms and the AdamW moments' norms per tensor.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]
TINY = REPO / "tests" / "data" / "wfvae_tiny"
CLIPS = [REPO / "tests" / "data" / "videos" / n for n in ("bikes_0000.mp4", "bikes_0120.mp4")]
HEADS = REPO / "wfvae_jax" / "metrics" / "lpips_weights" / "lpips_v0.1_vgg_linear_heads.safetensors"
FRAMES, CROP, SIZE = 9, 64, 32
SEED, STEPS, DISC_NDF, DISC_LAYERS = 0, 4, 8, 4
EMA_HEAD = 256
LR, WEIGHT_DECAY, EMA_DECAY = 1e-5, 1e-4, 0.999
LOSS = dict(
    disc_start=1,
    disc_weight=0.5,
    kl_weight=1e-6,
    logvar_init=0.0,
    perceptual_weight=1.0,
    loss_type="l1",
    wavelet_weight=0.1,
)


def load_clip(path: pathlib.Path) -> np.ndarray:
    """Frames 0..FRAMES-1, center CROP x CROP, 2x2 box average: (3, T, SIZE, SIZE) in [-1, 1]."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == FRAMES:
                break
    x = np.stack(frames).astype(np.float64)  # (T, H, W, 3)
    top, left = (x.shape[1] - CROP) // 2, (x.shape[2] - CROP) // 2
    x = x[:, top : top + CROP, left : left + CROP]
    f = CROP // SIZE
    x = x.reshape(FRAMES, SIZE, f, SIZE, f, 3).mean(axis=(2, 4))
    return np.transpose(x / 127.5 - 1.0, (3, 0, 1, 2)).astype(np.float32)


def pack_update(before: dict, after: dict, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(before - after) / LR`` of ``keys`` as one int8 array and one scale per tensor."""
    q, scales = [], []
    for k in keys:
        u = (before[k].astype(np.float64) - after[k]).ravel() / LR
        scale = max(float(np.abs(u).max()), 1e-30) / 127.0
        q.append(np.round(u / scale).astype(np.int8))
        scales.append(scale)
    return np.concatenate(q), np.asarray(scales, np.float32)


def ema_ulps(before: dict, after: dict, keys: list[str]) -> np.ndarray:
    """Bit-pattern differences of the first EMA_HEAD elements of each tensor (int32)."""
    out = []
    for k in keys:
        b, a = before[k].ravel()[:EMA_HEAD], after[k].ravel()[:EMA_HEAD]
        out.append(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))
    return np.concatenate(out).astype(np.int32)


def adamw_probe(reference_ema) -> dict[str, np.ndarray]:
    """torch AdamW (lr 1e-2, weight decay 0.1) and the reference EMA (0.9) on fixed gradients."""
    import torch

    rng = np.random.default_rng(1)
    p0 = rng.standard_normal((3, 64)).astype(np.float32)
    scale = np.array([1.0, 1e-6, 1e-9], np.float32)[None, :, None]
    grads = (rng.standard_normal((4, 3, 64)) * scale).astype(np.float32)
    module = torch.nn.Module()
    module.w = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = torch.optim.AdamW([module.w], lr=1e-2, weight_decay=0.1)
    ema = reference_ema(module, 0.9)
    ema.register()
    params, shadows = [], []
    for g in grads:
        module.w.grad = torch.from_numpy(g.copy())
        opt.step()
        ema.update()
        params.append(module.w.detach().numpy().copy())
        shadows.append(ema.shadow["w"].numpy().copy())
    return {"p0": p0, "grads": grads, "params": np.stack(params), "ema": np.stack(shadows)}


def _moment_norms(optimizer, names: dict[int, str]) -> dict[str, list[float]]:
    out = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if st:
                out[names[id(p)]] = [
                    float(st["exp_avg"].double().norm()),
                    float(st["exp_avg_sq"].double().norm()),
                ]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", help="root of a PKU-YuanGroup/WF-VAE checkout")
    ap.add_argument("--out", default=str(HERE / "vectors.npz"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from reference_trainer import ReferenceTrainer, draws, dropout_shapes, latent_shape
    from safetensors.numpy import load_file

    config = json.loads((TINY / "config.json").read_text())
    trainer = ReferenceTrainer(
        args.reference,
        config,
        loss_kwargs=LOSS,
        lpips_heads=str(HEADS),
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        ema_decay=EMA_DECAY,
        disc_ndf=DISC_NDF,
        seed=SEED,
        model_state=load_file(str(TINY / "diffusion_pytorch_model.safetensors")),
        record=True,
    )
    video = np.stack([load_clip(p) for p in CLIPS])
    b = video.shape[0]
    eps_shape = latent_shape(b, FRAMES, SIZE, config)
    mask_shapes = dropout_shapes(b, FRAMES, SIZE, DISC_NDF, DISC_LAYERS)
    out: dict[str, np.ndarray] = {"video": video}
    out.update({f"disc_init/{k}": v for k, v in trainer.discriminator_state().items()})
    names = {id(p): k for k, p in trainer.model.named_parameters()}
    names.update({id(p): k for k, p in trainer.loss.discriminator.named_parameters()})
    gen_keys = sorted(trainer.generator_state())
    disc_keys = sorted(trainer.discriminator_parameters())
    steps = []
    for s in range(STEPS):
        eps, masks = draws(SEED, s, eps_shape, mask_shapes)
        gen0, ema0 = trainer.generator_state(), trainer.ema_state()
        disc0 = trainer.discriminator_parameters()
        kind = "D" if trainer.is_discriminator_step() else "G"
        used = masks if kind == "D" else masks[: len(mask_shapes)]
        log = trainer.step(video, eps, masks, keep_tensors=s < 2)
        assert log["kind"] == kind
        out[f"s{s}/eps"] = eps
        out.update({f"s{s}/mask{i}": m for i, m in enumerate(used)})
        tensors = log.pop("tensors", {})
        if s == 0:
            out.update({f"s0/{k}": v for k, v in tensors.items()})
        elif s == 1:
            out["s1/recon"] = tensors["recon"]
        if kind == "G":
            out[f"s{s}/q"], out[f"s{s}/scale"] = pack_update(
                gen0, trainer.generator_state(), gen_keys
            )
            out[f"s{s}/ema_ulps"] = ema_ulps(ema0, trainer.ema_state(), gen_keys)
            log["moments"] = _moment_norms(trainer.gen_optimizer, names)
        else:
            after = trainer.discriminator_parameters()
            out[f"s{s}/q"], out[f"s{s}/scale"] = pack_update(disc0, after, disc_keys)
            log["moments"] = _moment_norms(trainer.disc_optimizer, names)
        log = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in log.items()}
        steps.append(log)
        print(s, kind, {k: v for k, v in log.items() if isinstance(v, float)})
    from causalvideovae.model.ema_model import EMA

    out.update({f"adamw/{k}": v for k, v in adamw_probe(EMA).items()})
    meta = dict(
        reference="PKU-YuanGroup/WF-VAE",
        clips=[p.name for p in CLIPS],
        seed=SEED,
        disc_ndf=DISC_NDF,
        disc_num_layers=DISC_LAYERS,
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        ema_decay=EMA_DECAY,
        loss=LOSS,
        ema_head=EMA_HEAD,
        gen_keys=[[k, list(trainer.generator_state()[k].shape)] for k in gen_keys],
        disc_keys=[[k, list(trainer.discriminator_parameters()[k].shape)] for k in disc_keys],
        steps=steps,
    )
    out["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
