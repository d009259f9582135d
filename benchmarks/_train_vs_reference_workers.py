"""The two worker processes of ``benchmarks/train_vs_reference.py`` (the method is in its
docstring): the reference's training in the torch venv, ours in this checkout's venv. Each prints
its result as one tagged JSON line for the driver::

    python benchmarks/_train_vs_reference_workers.py reference|ours SPEC_JSON
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [REPO, HERE]  # this checkout's wfvae_jax, and reference_trainer
RESULT_TAG = "@@TRAIN_VS_REFERENCE@@ "
GEN_KEYS = ("total_loss", "nll_loss", "kl_loss", "wl_loss", "d_weight", "g_loss")
DISC_KEYS = ("disc_loss", "logits_real", "logits_fake")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ shared


def loss_kwargs() -> dict[str, Any]:
    """``LPIPSWithDiscriminator3D`` arguments as ``examples/train_ddp.sh`` gives them."""
    return dict(
        disc_start=0,
        disc_weight=0.5,
        kl_weight=1e-6,
        logvar_init=0.0,
        perceptual_weight=1.0,
        loss_type="l1",
        wavelet_weight=0.1,
    )


def step_draws(spec: dict[str, Any], step: int):
    """Step ``step``'s draws (reference layout) and their SHA-256 (the workers compare it)."""
    from reference_trainer import draws, dropout_shapes, latent_shape

    b, t, s = spec["batch"], spec["frames"], spec["size"]
    eps, masks = draws(
        spec["seed"],
        step,
        latent_shape(b, t, s, spec["config"]),
        dropout_shapes(b, t, s, spec["disc_ndf"], spec["disc_num_layers"]),
    )
    h = hashlib.sha256(eps.tobytes())
    for m in masks:
        h.update(m.tobytes())
    return eps, masks, h.hexdigest()


def batch_of(spec: dict[str, Any], windows, step: int):
    """The ``(B, T, H, W, 3)`` batch of ``step``: windows in a seeded shuffle per epoch."""
    import numpy as np

    n, b = len(windows), spec["batch"]
    first = step * b
    idx = []
    for i in range(first, first + b):
        epoch, pos = divmod(i, n)
        idx.append(np.random.default_rng((spec["seed"], epoch)).permutation(n)[pos])
    return windows[np.asarray(idx)]


def evaluation_points(steps: int, every: int) -> list[int]:
    """Steps after which both sides evaluate (0 = the initial weights), always the last."""
    return sorted({0, steps, *range(every, steps, every)})


def _emit(result: dict[str, Any]) -> None:
    print(RESULT_TAG + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------ workers


def reference_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in ``--torch_python``: the reference's training, its initial weights, its evals."""
    import numpy as np
    import torch
    from reference_trainer import ReferenceTrainer
    from safetensors.numpy import save_file

    torch.set_num_threads(spec["threads"])
    trainer = ReferenceTrainer(
        spec["reference"],
        spec["config"],
        loss_kwargs=loss_kwargs(),
        lpips_heads=spec["lpips_heads"],
        lr=spec["lr"],
        disc_ndf=spec["disc_ndf"],
        seed=spec["seed"],
    )
    save_file(
        {k: v.detach().numpy() for k, v in trainer.model.state_dict().items()},
        spec["init_gen"],
    )
    save_file(trainer.discriminator_state(), spec["init_disc"])
    return _train_loop(
        spec,
        step_fn=lambda video, eps, masks: trainer.step(
            np.transpose(video, (0, 4, 1, 2, 3)), eps, masks
        ),
        reconstruct=lambda video: np.transpose(
            trainer.reconstruct(np.transpose(video, (0, 4, 1, 2, 3))), (0, 2, 3, 4, 1)
        ),
        extra={"torch": torch.__version__, "torch_threads": torch.get_num_threads()},
    )


def ours_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in this Python: ours from the reference's initial weights on the same draws."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from reference_trainer import vgg16_recipe
    from safetensors.numpy import load_file

    from wfvae_jax.core.config import WFVAEConfig
    from wfvae_jax.inference.api import reconstruct
    from wfvae_jax.io.convert import torch_state_dict_to_params
    from wfvae_jax.losses import LossConfig
    from wfvae_jax.losses import discriminator as disc_lib
    from wfvae_jax.metrics import lpips
    from wfvae_jax.train.state import OptimConfig, TrainState, make_optimizer
    from wfvae_jax.train.step import (
        StepConfig,
        discriminator_update,
        generator_update,
        replay_draws,
    )

    # A rerun (same settings) skips recompiling: XLA's persistent cache in the workdir.
    jax.config.update("jax_compilation_cache_dir", os.path.join(spec["workdir"], "xla_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    config = WFVAEConfig.from_dict(spec["config"])
    cfg = StepConfig(
        model=config,
        loss=LossConfig(**loss_kwargs(), disc_num_layers=spec["disc_num_layers"]),
        optim=OptimConfig(learning_rate=spec["lr"]),
        disc_ndf=spec["disc_ndf"],
    )
    params = torch_state_dict_to_params(load_file(spec["init_gen"]), config)
    disc_params, stats = disc_lib.from_torch_state_dict(
        load_file(spec["init_disc"]), spec["disc_num_layers"]
    )
    tx = make_optimizer(cfg.optim)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(jax.random.key(spec["seed"])),
        params=params,
        ema_params=jax.tree.map(jnp.array, params),
        opt_state=tx.init(params),
        disc_params=disc_params,
        disc_batch_stats=stats,
        disc_opt_state=tx.init(disc_params),
    )
    lpips_params = lpips.lpips_params("vgg", lpips.backbone_from_torchvision("vgg", vgg16_recipe()))

    def replayed(update):
        def step(state, video, lpips_params, eps, masks):
            with replay_draws(eps, masks):
                return update(state, video, lpips_params, cfg=cfg)

        return jax.jit(step, donate_argnums=0)

    steps = {"G": replayed(generator_update), "D": replayed(discriminator_update)}
    rec = jax.jit(lambda p, v: reconstruct(p, v, config, t_chunk=0))
    holder = {"state": state, "step": 0}

    def to_nthwc(a):
        return jnp.asarray(np.transpose(a, (0, 2, 3, 4, 1)))

    def step_fn(video, eps, masks):
        st = holder["state"]
        kind = "D" if holder["step"] % 2 == 1 else "G"  # disc_start 0
        used = masks if kind == "D" else masks[: len(masks) // 2]
        st, metrics = steps[kind](
            st, jnp.asarray(video), lpips_params, to_nthwc(eps), [to_nthwc(m) for m in used]
        )
        metrics = jax.block_until_ready(metrics)
        holder["state"], holder["step"] = st, holder["step"] + 1
        out = {k.split("/", 1)[1]: float(v) for k, v in metrics.items()}
        if kind == "D":
            out["grad_norm"] = out.pop("disc_grad_norm")
        return dict(out, kind=kind)

    def reconstruct_fn(video):
        return np.asarray(rec(holder["state"].params, jnp.asarray(video)))

    return _train_loop(spec, step_fn, reconstruct_fn, extra={"jax": jax.__version__})


def _train_loop(spec, step_fn, reconstruct, extra) -> dict[str, Any]:
    """The common loop: batches, draws, per-step logs and times, held-out reconstructions."""
    import numpy as np

    windows = np.load(spec["windows"], mmap_mode="r")
    heldout = np.load(spec["heldout"])
    points = evaluation_points(spec["steps"], spec["eval_every"])
    recon_dir = spec["recon_dir"]
    os.makedirs(recon_dir, exist_ok=True)
    rows, checksums = [], []
    t_start = time.perf_counter()
    for step in range(spec["steps"] + 1):
        if step in points:
            np.save(os.path.join(recon_dir, f"step{step:05d}.npy"), reconstruct(heldout))
        if step == spec["steps"]:
            break
        video = np.ascontiguousarray(batch_of(spec, windows, step))
        eps, masks, digest = step_draws(spec, step)
        if step < 3:
            checksums.append(digest)
        t0 = time.perf_counter()
        row = step_fn(video, eps, masks)
        row["time_s"] = time.perf_counter() - t0
        rows.append({k: v for k, v in row.items() if isinstance(v, (int, float, str))})
        if step % 10 == 0 or step == spec["steps"] - 1:
            elapsed = time.perf_counter() - t_start
            eta = elapsed / (step + 1) * (spec["steps"] - step - 1)
            log(
                f"  {spec['side']}: step {step + 1}/{spec['steps']} "
                f"{row['kind']} {row['time_s']:.2f} s, ETA {eta / 60:.1f} min"
            )
    return dict(extra, steps=rows, draw_checksums=checksums, eval_points=points)


if __name__ == "__main__":
    kind, spec = sys.argv[1], json.loads(sys.argv[2])
    _emit(reference_worker(spec) if kind == "reference" else ours_worker(spec))
