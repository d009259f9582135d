"""Train the video diffusion transformer with rectified flow on WF-VAE latents; resumable.

Usage (from the repository root; the whole path is in README.md beside this file)::

    python -m examples.latent_video_diffusion.train --vae out/wfvae_tiny \\
        --latents out/latents --workdir runs/ldm [--preset cpu|base] [--set train.steps=1000]

Rectified flow (Liu et al. 2022; Esser et al. 2024, "SD3"): a clip's normalised latent ``x0``
and Gaussian noise ``e`` are joined by the straight line ``x_t = (1 - t) x0 + t e``; the model
learns its velocity ``v = e - x0`` at a random ``t`` (mean squared error). Sampling
(``sample.py``) integrates ``dx/dt = v`` from noise at ``t = 1`` to data at ``t = 0``.

The run's state lives in ``WORKDIR``: ``run.json`` (settings, the VAE and latents it uses, the
latent statistics it normalised with), ``checkpoints/`` (orbax: model, optimizer, data
iterator, every ``train.checkpoint_every`` steps), ``loss.jsonl`` and ``loss.png``. Stop it
any time (Ctrl-C, kill, kill -9): the same command continues from the last checkpoint and
redoes the same steps (the noise of step ``s`` is drawn from ``fold_in(seed, s)`` and the data
order is restored), so the result does not depend on interruptions. Raise ``train.steps`` to
train on; other settings must stay as they were.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

import grain
import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
from flax.training.train_state import TrainState
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

import wfvae_jax
from examples.latent_video_diffusion import config as config_lib
from examples.latent_video_diffusion import data, model

RUN_FILE = "run.json"
LOSS_FILE = "loss.jsonl"


def create_state(net: model.VideoDiT, cfg: Any, latent_shape: Sequence[int]) -> TrainState:
    """Fresh parameters and AdamW (linear warm-up, then constant, global-norm clipping); one
    compiled program (``jax.eval_shape(lambda: create_state(...))`` gives its shapes only)."""
    t = cfg.train
    schedule = optax.linear_schedule(0.0, t.learning_rate, max(t.warmup_steps, 1))
    tx = optax.chain(
        optax.clip_by_global_norm(t.grad_clip),
        optax.adamw(schedule, weight_decay=t.weight_decay),
    )

    @jax.jit
    def init() -> TrainState:
        params = model.init_params(net, tuple(latent_shape), t.seed)
        state = TrainState.create(apply_fn=net.apply, params=params, tx=tx)
        return state.replace(step=jnp.zeros((), jnp.int32))  # an array, so orbax saves it

    return init()


def flow_loss(params: Any, state: TrainState, x0: jnp.ndarray, key: jax.Array, t_cfg: Any):
    """Rectified-flow loss: mean squared error of the predicted velocity ``e - x0``."""
    k_time, k_noise = jax.random.split(key)
    b = x0.shape[0]
    if t_cfg.time_sampling == "logit_normal":
        t = jax.nn.sigmoid(t_cfg.logit_mean + t_cfg.logit_std * jax.random.normal(k_time, (b,)))
    else:
        t = jax.random.uniform(k_time, (b,))
    noise = jax.random.normal(k_noise, x0.shape)
    tt = t[:, None, None, None, None]
    x_t = (1 - tt) * x0 + tt * noise
    v = state.apply_fn({"params": params}, x_t, t)
    return jnp.mean(jnp.square(v - (noise - x0)))


def make_train_step(mesh, t_cfg: Any):
    """The jitted step: state replicated on every device, the batch split over ``"data"``."""
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

    def step(state: TrainState, x0: jnp.ndarray) -> tuple[TrainState, jnp.ndarray]:
        key = jax.random.fold_in(jax.random.key(t_cfg.seed), state.step)
        loss, grads = jax.value_and_grad(flow_loss)(state.params, state, x0, key, t_cfg)
        return state.apply_gradients(grads=grads), loss

    return jax.jit(step, in_shardings=(replicated, split), out_shardings=(replicated, replicated))


def abstract_state(net: model.VideoDiT, cfg: Any, latent_shape: Sequence[int], mesh) -> Any:
    """Shapes, dtypes and (replicated) shardings of the state, for orbax to restore into."""
    shapes = jax.eval_shape(lambda: create_state(net, cfg, latent_shape))
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)


def checkpoint_manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"),
        options=options,
        item_names=("state", "data"),
    )


def write_run_file(workdir: str, run: dict) -> None:
    """Writes ``run.json``, or checks that an existing one describes the same run.

    Raises:
      ValueError: the workdir holds another run (different settings other than
        ``train.steps``, VAE, latents or latent statistics), naming the differences.
    """
    path = os.path.join(workdir, RUN_FILE)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)

        def comparable(r: dict) -> dict:
            flat = {k: v for k, v in r.items() if k != "config"}
            for section, fields in r["config"].items():
                flat.update({f"{section}.{k}": v for k, v in fields.items()})
            flat.pop("train.steps", None)
            return flat

        a, b = comparable(old), comparable(run)
        diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        if diff:
            raise ValueError(
                f"{workdir} holds a run with other settings ({', '.join(diff)}); resume it with "
                "its settings (only train.steps may change) or choose a new --workdir"
            )
    with open(path + ".tmp", "w") as f:
        json.dump(run, f, indent=1)
    os.replace(path + ".tmp", path)


def read_losses(workdir: str, up_to: int) -> list[dict]:
    """The logged losses of steps <= ``up_to``: later ones were lost with the kill and redone."""
    path = os.path.join(workdir, LOSS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["step"] <= up_to]


def plot_losses(rows: list[dict], path: str) -> None:
    """The loss curve as a PNG (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("rectified-flow loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def train(cfg: Any, vae: str, latents: str, workdir: str, progress: bool = True) -> dict:
    """Trains (or resumes) the run in ``workdir``; returns ``{"start_step", "step",
    "losses": [{"step", "loss"}, ...]}``.

    Raises:
      ValueError / FileNotFoundError: a VAE checkpoint without per-channel latent statistics
        (naming ``wfvae latent-stats --write_config``), latents of another VAE or too few clips,
        a workdir of another run.
    """
    _, vae_config = wfvae_jax.load_pretrained(vae, part="decoder")  # memory-mapped: no read
    source = data.open_latents(latents, vae_config)
    mesh = data.make_mesh()
    batches = data.make_batches(
        source,
        vae_config,
        mesh,
        batch_size=cfg.train.batch_size,
        seed=cfg.train.seed,
        sample_posterior=cfg.train.sample_posterior,
    )
    os.makedirs(workdir, exist_ok=True)
    run = {
        "config": cfg.to_dict(),
        "vae": os.path.abspath(vae),
        "latents": os.path.abspath(latents),
        "latent_shape": list(source.latent_shape),
        "scale": list(vae_config.scale),
        "shift": list(vae_config.shift),
        "fps": data.clip_fps(source),
    }
    write_run_file(workdir, run)

    net = model.build_model(cfg, vae_config.latent_dim)
    manager = checkpoint_manager(workdir, cfg.train.max_to_keep)
    start = manager.latest_step() or 0
    if start:
        target = abstract_state(net, cfg, source.latent_shape, mesh)
        restored = manager.restore(
            start,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target),
                data=grain.checkpoint.CheckpointRestore(batches),
            ),
        )
        state = restored.state
    else:
        state = create_state(net, cfg, source.latent_shape)
        state = jax.device_put(state, NamedSharding(mesh, P()))
    step_fn = make_train_step(mesh, cfg.train)
    losses = read_losses(workdir, start)
    log = open(os.path.join(workdir, LOSS_FILE), "w")
    for row in losses:
        log.write(json.dumps(row) + "\n")
    pending: list[jax.Array] = []
    bar = tqdm(total=cfg.train.steps, initial=start, unit="step", disable=not progress)
    step = start
    for step in range(start + 1, cfg.train.steps + 1):
        batch = next(batches)
        state, loss = step_fn(state, data.to_global(batch["latent"], mesh))
        pending.append(loss)
        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            row = {"step": step, "loss": float(jnp.mean(jnp.stack(pending)))}
            pending.clear()
            losses.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
            manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data=grain.checkpoint.CheckpointSave(batches),
                ),
            )
        bar.update(1)
    bar.close()
    log.close()
    manager.wait_until_finished()
    manager.close()
    if losses and jax.process_index() == 0:
        plot_losses(losses, os.path.join(workdir, "loss.png"))
    return {"start_step": start, "step": max(step, start), "losses": losses}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vae", required=True, help="converted WF-VAE checkpoint (wfvae convert)")
    p.add_argument("--latents", required=True, help="wfvae encode-dataset output directory")
    p.add_argument("--workdir", required=True, help="checkpoints, logs; rerun to resume")
    p.add_argument("--preset", default="cpu", help="cpu (default) or base (see config.py)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--no_progress", dest="progress", action="store_false")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    cfg = config_lib.get_config(args.preset)
    config_lib.apply_overrides(cfg, args.set)
    result = train(cfg, args.vae, args.latents, args.workdir, progress=args.progress)
    if result["losses"]:
        first, last = result["losses"][0], result["losses"][-1]
        print(
            f"step {result['step']}: loss {last['loss']:.4f} (step {first['step']}: "
            f"{first['loss']:.4f}); curve in {os.path.join(args.workdir, 'loss.png')}"
        )
    return result


if __name__ == "__main__":
    from wfvae_jax.commands.errors import run

    run(main)
