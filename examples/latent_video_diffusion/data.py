"""Training batches: normalised WF-VAE latents from a ``wfvae encode-dataset`` output, split over
a data mesh.

Each process reads its share of the records (``LatentSource``, shuffled per epoch by grain),
draws a posterior sample per clip and normalises it with the VAE checkpoint's ``scale``/``shift``
(``SampleLatent`` -> ``wfvae_jax.normalize_latents``; the values ``wfvae latent-stats
--write_config`` measured), batches, and the batch becomes one global ``jax.Array`` split over
the mesh's ``"data"`` axis. The iterator's state goes into every checkpoint, so a resumed run
reads the same batches it would have read.
"""

from __future__ import annotations

import os

import grain
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from wfvae_jax import WFVAEConfig
from wfvae_jax.data import LatentSource


def make_mesh() -> Mesh:
    """A 1-D ``("data",)`` mesh over every device (of every process)."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def open_latents(path: str | os.PathLike, vae_config: WFVAEConfig) -> LatentSource:
    """The latent dataset at ``path``, checked against the VAE that will decode the samples.

    Raises:
      FileNotFoundError / ValueError: not a finished ``encode-dataset`` output
        (``LatentSource``), or its encoder's architecture differs from ``vae_config``'s.
    """
    source = LatentSource(path)
    # The architecture only: the statistics come from the VAE checkpoint (latent-stats may run
    # before or after encode-dataset).
    encoder = WFVAEConfig.from_dict(source.manifest["model_config"])
    if encoder.replace(scale=vae_config.scale, shift=vae_config.shift) != vae_config:
        raise ValueError(
            f"{path} was encoded by another WF-VAE architecture than the --vae checkpoint "
            f"(latent_dim {encoder.latent_dim} vs {vae_config.latent_dim}, base_channels "
            f"{encoder.base_channels} vs {vae_config.base_channels}); encode the videos "
            "with the checkpoint you decode with"
        )
    if len(source) == 0:
        raise ValueError(f"{path} holds no clips; see the skipped videos in its manifest.json")
    return source


def clip_fps(source: LatentSource) -> float:
    """Frames per second of the encoded clips (source rate / frame stride; 8 when unknown)."""
    record = source[0]
    fps = float(record["fps"]) / max(int(record["frame_stride"]), 1)
    return fps if fps > 0 else 8.0


def make_batches(
    source: LatentSource,
    vae_config: WFVAEConfig,
    mesh: Mesh,
    *,
    batch_size: int,
    seed: int,
    sample_posterior: bool = True,
) -> grain.DataLoaderIterator:
    """An endless iterator of this process's batches ``{"latent": float32 (b, t, h, w, C),
    ...}`` with ``b = batch_size / process_count`` (see :func:`to_global`).

    Raises:
      ValueError: ``batch_size`` not divisible by the device count, fewer clips than one
        batch, or a ``vae_config`` without per-channel statistics (the error names
        ``wfvae latent-stats --write_config``).
    """
    if batch_size % mesh.devices.size:
        raise ValueError(
            f"train.batch_size={batch_size} must be a multiple of the {mesh.devices.size} devices"
        )
    local = batch_size // jax.process_count()
    if len(source) < batch_size:
        raise ValueError(
            f"{len(source)} clips cannot fill a batch of {batch_size}: lower train.batch_size "
            "or encode more clips (--clips_per_video)"
        )
    shard = grain.sharding.ShardOptions(
        shard_index=jax.process_index(), shard_count=jax.process_count(), drop_remainder=True
    )
    loader = grain.DataLoader(
        data_source=source,
        sampler=grain.samplers.IndexSampler(
            num_records=len(source), shard_options=shard, shuffle=True, num_epochs=None, seed=seed
        ),
        operations=[
            source.sample_transform(sample=sample_posterior, config=vae_config),
            grain.transforms.Batch(batch_size=local, drop_remainder=True),
        ],
        shard_options=shard,
        worker_count=0,  # latents are small: reading is not the bottleneck
    )
    return iter(loader)


def to_global(local: np.ndarray, mesh: Mesh) -> jax.Array:
    """One ``jax.Array`` of the global batch from every process's rows, split over ``"data"``."""
    sharding = NamedSharding(mesh, P("data"))
    shape = (local.shape[0] * jax.process_count(), *local.shape[1:])
    return jax.make_array_from_process_local_data(sharding, local, shape)
