"""Per-channel latent statistics for diffusion users: ``shift`` (mean) and ``scale`` (1 / std).

A latent diffusion model wants latents of roughly zero mean and unit variance per channel. This
measures, over a video dataset, the mean and standard deviation of every latent channel across
all latent positions (clips x latent frames x height x width) and writes them into the
checkpoint's ``config.json`` as

    shift = mean,   scale = 1 / std,   normalised latent = (z - shift) * scale,
    and back: z = z_normalised / scale + shift.

That is the convention of the reference's scripts/vae_var_test.py
(``latents = (vae.encode(x)[0].sample() - shift) * scale``, printing ``normalizer = 1 / std``)
and of Open-Sora Plan's ``WFVAEModelWrapper`` (``(sample - shift) * scale`` after encoding,
``z / scale + shift`` before decoding, from ``vae.config``). The reference ships 4-entry
placeholders (scale 0.18215, shift 0, its issue #17); after ``--write_config`` both have
``latent_dim`` entries.

By default the statistics are those of the posterior mean ``z = mode()`` (deterministic); with
``--sample`` of posterior samples ``mean + std * eps``, which is what both of the above
normalise (their std also holds the posterior variance, so it is slightly larger). The standard
deviation is the unbiased one (``ddof = 1``), as ``torch.std``. Sums are accumulated in float64
with Chan et al.'s parallel update (numerically stable for millions of positions).

Usage::

    wfvae latent-stats --checkpoint CONVERTED --videos DIR \
        [--num_frames 33 --resolution 256 --max_videos 1000] [--write_config]
    python -m wfvae_jax latent-stats ...      # the same
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from wfvae_jax.core.config import WFVAEConfig


class ChannelMoments:
    """Streaming count, mean and sum of squared deviations (M2) per channel, float64.

    ``update(z)`` takes any array ``(..., C)``; every leading position is one sample of each
    channel. Batches are merged with the parallel formula of Chan, Golub & LeVeque (1979):
    ``M2 = M2_a + M2_b + delta^2 n_a n_b / n``, exact in exact arithmetic and stable in floats.
    """

    def __init__(self, num_channels: int):
        if num_channels < 1:
            raise ValueError(f"num_channels must be >= 1, got {num_channels}")
        self.count = 0
        self.mean = np.zeros(num_channels, np.float64)
        self.m2 = np.zeros(num_channels, np.float64)

    def update(self, z: Any) -> None:
        """Adds every position of ``z`` (``(..., C)``, any float dtype). Raises ValueError for
        a wrong channel count or non-finite values."""
        z = np.asarray(z, np.float64)
        if z.ndim < 1 or z.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"expected (..., {self.mean.shape[0]}) latents, got {z.shape}")
        flat = z.reshape(-1, z.shape[-1])
        if not np.all(np.isfinite(flat)):
            raise ValueError("latents contain NaN or Inf")
        n_b = flat.shape[0]
        if n_b == 0:
            return
        mean_b = flat.mean(axis=0)
        m2_b = np.square(flat - mean_b).sum(axis=0)
        n_a, n = self.count, self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + np.square(delta) * (n_a * n_b / n)
        self.count = n

    def std(self, ddof: int = 1) -> np.ndarray:
        """Per-channel standard deviation (``ddof=1``: unbiased, as ``torch.std``).

        Raises ValueError with fewer than ``ddof + 1`` samples."""
        if self.count <= ddof:
            raise ValueError(f"need more than {ddof} samples per channel, have {self.count}")
        return np.sqrt(self.m2 / (self.count - ddof))


def compute_latent_stats(
    params: Any,
    config: WFVAEConfig,
    clips: Iterable[Any],
    *,
    batch_size: int = 1,
    dtype: Any = "float32",
    t_chunk: int | None = None,
    sample: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Per-channel mean and std of the latents of every clip.

    Args:
      params, config: the model.
      clips: iterable of ``wfvae_jax.eval.clips.EvalClip`` (or anything with ``.video``,
        float32 ``(T, H, W, 3)`` in [-1, 1], all one shape).
      batch_size: clips per encoder call (a short last batch is padded, not counted twice).
      dtype: encoder compute dtype (``wfvae_jax.inference.api.parse_dtype``).
      t_chunk: Causal Cache chunk in video frames (a multiple of the model's
        ``temporal_downsample``); 0: direct; None: ``wfvae_jax.auto_t_chunk``.
      sample: use posterior samples (``seed``-determined) instead of posterior means.
    Returns:
      ``{"mean": [C floats], "std": [C floats], "shift": mean, "scale": 1 / std,
      "num_videos": n, "positions_per_channel": N, "latent": "mean" | "sample"}``.
    Raises:
      ValueError: no clip, a channel with zero spread, or encoder input errors.
    """
    from wfvae_jax.inference.api import encode

    moments = ChannelMoments(config.latent_dim)
    key = jax.random.key(seed)
    n_videos = 0
    batch: list[np.ndarray] = []
    total = len(clips) if hasattr(clips, "__len__") else None
    bar = tqdm(total=total, unit="video", desc="latent stats", disable=not progress)

    def flush() -> None:
        nonlocal key
        n = len(batch)
        # Padding with repeats keeps one input shape (one compile); the repeats are not counted.
        x = np.stack(batch + [batch[-1]] * (batch_size - n))
        post = encode(params, x, config, dtype=dtype, t_chunk=t_chunk)
        if sample:
            key, sub = jax.random.split(key)
            z = post.sample(sub)
        else:
            z = post.mode()
        moments.update(np.asarray(z, np.float32)[:n])
        bar.update(len(batch))
        batch.clear()

    for clip in clips:
        batch.append(np.asarray(clip.video, np.float32))
        n_videos += 1
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    bar.close()
    if n_videos == 0:
        raise ValueError("no usable clip: cannot compute latent statistics")
    std = moments.std(ddof=1)
    if np.any(std <= 0):
        raise ValueError(f"latent channels {np.flatnonzero(std <= 0).tolist()} have zero spread")
    return {
        "mean": moments.mean.tolist(),
        "std": std.tolist(),
        "shift": moments.mean.tolist(),
        "scale": (1.0 / std).tolist(),
        "num_videos": n_videos,
        "positions_per_channel": int(moments.count),
        "latent": "sample" if sample else "mean",
        "convention": "normalised = (z - shift) * scale; z = normalised / scale + shift",
    }


def write_config_stats(checkpoint_dir: str | os.PathLike, stats: dict[str, Any]) -> WFVAEConfig:
    """Writes ``stats["scale"]`` / ``stats["shift"]`` into ``checkpoint_dir/config.json``.

    Every other key of the file is kept as is; the file is replaced atomically. Returns the
    config as reloaded from the new file.
    Raises:
      FileNotFoundError: no config.json there.
      ValueError: scale/shift lengths differ from the config's ``latent_dim``.
    """
    from wfvae_jax.io.checkpoint import CONFIG_NAME

    path = os.path.join(os.fspath(checkpoint_dir), CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found; --write_config needs a converted checkpoint")
    with open(path) as f:
        d = json.load(f)
    scale, shift = [float(v) for v in stats["scale"]], [float(v) for v in stats["shift"]]
    dim = WFVAEConfig.from_dict(d).latent_dim
    if len(scale) != dim or len(shift) != dim:
        raise ValueError(f"scale/shift have {len(scale)}/{len(shift)} entries, latent_dim {dim}")
    d["scale"], d["shift"] = scale, shift
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(d, f, indent=2)
    os.replace(tmp, path)
    return WFVAEConfig.from_json(path)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``wfvae latent-stats``; prints and writes the statistics; returns them.

    Raises (printed as one ``error:`` line by ``commands.errors.run``): UserError, ValueError,
    FileNotFoundError for bad flags, a missing model or video folder.
    """
    from wfvae_jax.commands import clip_args
    from wfvae_jax.commands.eval import (
        HelpFormatter,
        add_data_args,
        add_model_args,
        clip_settings,
        clips_from_args,
    )
    from wfvae_jax.errors import UserError
    from wfvae_jax.inference.api import DTYPES, T_CHUNK_HELP
    from wfvae_jax.io.checkpoint import load_model

    parser = argparse.ArgumentParser(
        prog="wfvae latent-stats",
        description="Per-channel mean/std of WF-VAE latents over a dataset; shift = mean, "
        "scale = 1/std for diffusion ((z - shift) * scale).",
        formatter_class=HelpFormatter,
    )
    add_model_args(parser)
    add_data_args(parser, num_frames=33, resolution=256)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--t_chunk", type=int, default=None, help=T_CHUNK_HELP)
    parser.add_argument(
        "--sample", action="store_true", help="posterior samples instead of posterior means"
    )
    parser.add_argument("--seed", type=int, default=0, help="rng seed for --sample")
    parser.add_argument(
        "--out", default=None, help="JSON output (default: MODEL_DIR/latent_stats.json)"
    )
    parser.add_argument(
        "--write_config",
        action="store_true",
        help="write scale/shift into the --checkpoint's config.json",
    )
    parser.add_argument("--no_progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    if args.write_config and args.checkpoint is None:
        raise UserError(
            "--write_config needs --checkpoint (a converted checkpoint directory)",
            hint="convert or export the model first, then pass --checkpoint DIR",
        )
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {args.batch_size}")
    clip_args.clip_spec_from_args(args)  # flag errors before the model loads
    params, config, description = load_model(
        args.checkpoint, args.workdir, use_ema=args.use_ema, step=args.step, part="encoder"
    )
    clips = clips_from_args(args, config)
    stats = compute_latent_stats(
        params,
        config,
        clips,
        batch_size=args.batch_size,
        dtype=args.dtype,
        t_chunk=args.t_chunk,
        sample=args.sample,
        seed=args.seed,
        progress=args.progress,
    )
    stats["model"] = description
    stats["data"] = {**clip_settings(args), "source": clips.describe(), "skipped": clips.skipped}
    out = args.out or os.path.join(args.checkpoint or args.workdir, "latent_stats.json")
    with open(out, "w") as f:
        json.dump(stats, f, indent=2)
    print(f"latent statistics over {stats['num_videos']} clips, {stats['latent']} latents:")
    print("channel |      mean |       std |    scale (1/std)")
    for c, (m, s) in enumerate(zip(stats["mean"], stats["std"], strict=True)):
        print(f"{c:7d} | {m:9.5f} | {s:9.5f} | {1.0 / s:9.5f}")
    print(f"wrote {out}", file=sys.stderr)
    if args.write_config:
        write_config_stats(args.checkpoint, stats)
        print(f"wrote scale/shift into {os.path.join(args.checkpoint, 'config.json')}")
    return stats


if __name__ == "__main__":
    from wfvae_jax.commands.errors import run

    run(main)
