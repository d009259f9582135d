"""Sample videos from a trained run: an ODE solver from noise to latents, then WF-VAE decoding.

Usage (from the repository root)::

    python -m examples.latent_video_diffusion.sample --workdir runs/ldm \\
        [--out runs/ldm/samples] [--set sample.num_steps=16 --set sample.solver=euler]

The model's velocity field is integrated from Gaussian noise at ``t = 1`` to ``t = 0`` on
``sample.num_steps`` equal steps, with Euler (one model call per step) or Heun (two, second
order; Karras et al. 2022, Algorithm 1 without noise). The latents are denormalised with the
statistics the model was trained on (``run.json``; ``wfvae_jax.denormalize_latents``), decoded
by WF-VAE in Causal Cache chunks of ``sample.t_chunk`` latent frames (``wfvae_jax.decode``), and
written as ``sample_NN.mp4`` plus one ``samples.png`` strip: one row per sample, under a row
``data`` (the first training clip's latent decoded by the same VAE); ``samples.json`` holds the
settings and the seconds each stage took.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

import wfvae_jax
from examples.latent_video_diffusion import config as config_lib
from examples.latent_video_diffusion import data, model, train
from wfvae_jax.data import LatentSource
from wfvae_jax.io.video import save_strip_png, write_video

logger = logging.getLogger(__name__)
SOLVERS = ("euler", "heun")


def solve(velocity, noise: jnp.ndarray, num_steps: int, solver: str) -> jnp.ndarray:
    """Integrates ``dx/dt = velocity(x, t)`` from ``noise`` at ``t = 1`` to ``t = 0``.

    ``velocity(x (B, ...), t (B,)) -> (B, ...)``. Raises ValueError for an unknown solver or
    fewer than one step.
    """
    if solver not in SOLVERS:
        raise ValueError(f"sample.solver must be one of {SOLVERS}, got {solver!r}")
    if num_steps < 1:
        raise ValueError(f"sample.num_steps must be >= 1, got {num_steps}")
    ts = jnp.linspace(1.0, 0.0, num_steps + 1)
    full = lambda t: jnp.full((noise.shape[0],), t)  # noqa: E731

    def step(i, x):
        t, t_next = ts[i], ts[i + 1]
        v = velocity(x, full(t))
        x_next = x + (t_next - t) * v
        if solver == "heun":
            v_next = velocity(x_next, full(t_next))
            x_next = x + (t_next - t) * 0.5 * (v + v_next)
        return x_next

    return jax.lax.fori_loop(0, num_steps, step, noise)


def load_run(workdir: str) -> tuple[dict, ml_collections.ConfigDict]:
    """``run.json`` of a training workdir and its settings as a ConfigDict."""
    path = os.path.join(workdir, train.RUN_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: not a training workdir of this example")
    with open(path) as f:
        run = json.load(f)
    cfg = config_lib.get_config("cpu")
    cfg.unlock()
    cfg.update(run["config"])
    cfg.lock()
    return run, cfg


def load_params(workdir: str, cfg: Any, net: model.VideoDiT, latent_shape) -> tuple[Any, int]:
    """The model parameters of the newest checkpoint and its step."""
    manager = train.checkpoint_manager(workdir)
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"{workdir} holds no checkpoint yet; train first")
    target = train.abstract_state(net, cfg, latent_shape, data.make_mesh())
    state = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
    ).state
    manager.close()
    return state.params, step


def sample(workdir: str, out: str, cfg: Any, run: dict) -> dict:
    """Writes ``out/sample_NN.mp4`` and ``out/samples.png``; returns the decoded videos
    (float32 ``(N, T, H, W, 3)``, nominally [-1, 1]) and the time of each stage in seconds."""
    s = cfg.sample
    latent_shape = tuple(run["latent_shape"])
    net = model.build_model(cfg, latent_shape[-1])
    params, step = load_params(workdir, cfg, net, latent_shape)
    vae_params, vae_config = wfvae_jax.load_pretrained(run["vae"], part="decoder")
    # Denormalise with the statistics the model learned; a later latent-stats run does not
    # change what its outputs mean.
    trained = vae_config.replace(scale=run["scale"], shift=run["shift"])
    if trained != vae_config:
        logger.warning("the VAE's scale/shift changed since training; using the run's")

    def generate(params: Any, noise: jnp.ndarray) -> jnp.ndarray:
        velocity = lambda x, t: net.apply({"params": params}, x, t)  # noqa: E731
        return solve(velocity, noise, s.num_steps, s.solver)

    times = {}
    t0 = time.perf_counter()
    noise = jax.random.normal(jax.random.key(s.seed), (s.num_samples, *latent_shape))
    x = jax.block_until_ready(jax.jit(generate)(params, noise))
    times["sample"] = time.perf_counter() - t0

    # Decoded with the samples: the posterior mean of the first training clip, i.e. what the
    # data looks like through this VAE (the best a sampler can reach).
    data_z = LatentSource(run["latents"])[0]["mean"]
    t0 = time.perf_counter()
    z = jnp.concatenate([data_z[None], wfvae_jax.denormalize_latents(x, trained)])
    video = wfvae_jax.decode(vae_params, z, vae_config, t_chunk=s.t_chunk)
    data_video, video = np.asarray(video[0], np.float32), np.asarray(video[1:], np.float32)
    times["decode"] = time.perf_counter() - t0

    os.makedirs(out, exist_ok=True)
    for i, clip in enumerate(video):
        write_video(os.path.join(out, f"sample_{i:02d}.mp4"), clip, fps=run["fps"])
    labels = ["data"] + [f"#{i}" for i in range(len(video))]
    save_strip_png(os.path.join(out, "samples.png"), [data_video, *video], labels=labels)
    with open(os.path.join(out, "samples.json"), "w") as f:
        info = {k: s[k] for k in ("solver", "num_steps", "t_chunk", "seed")}
        json.dump({"step": step, "shape": list(video.shape), "times": times, **info}, f)
    return {"video": video, "step": step, "times": times}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="the training run (train.py --workdir)")
    p.add_argument("--out", default=None, help="output folder (default WORKDIR/samples)")
    p.add_argument("--set", action="append", default=[], metavar="sample.FIELD=VALUE")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    run, cfg = load_run(args.workdir)
    if any(not item.startswith("sample.") for item in args.set):
        raise ValueError("--set changes sample.* fields only here (the model is trained)")
    config_lib.apply_overrides(cfg, args.set)
    out = args.out or os.path.join(args.workdir, "samples")
    result = sample(args.workdir, out, cfg, run)
    t = result["times"]
    print(
        f"{len(result['video'])} samples of {result['video'].shape[1:]} at step "
        f"{result['step']}: ODE {t['sample']:.1f} s ({cfg.sample.solver}, "
        f"{cfg.sample.num_steps} steps), decode {t['decode']:.1f} s; wrote {out}"
    )
    return result


if __name__ == "__main__":
    from wfvae_jax.commands.errors import run as run_command

    run_command(main)
