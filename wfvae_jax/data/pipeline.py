"""The training input pipeline: a sharded, shuffled, checkpointable grain ``DataLoader``."""

from __future__ import annotations

import os

import grain
from absl import flags

from wfvae_jax.data.sources import VideoFolderSource
from wfvae_jax.data.transforms import LongEnough, SampleClip
from wfvae_jax.io.clip_spec import window_span


def allow_unparsed_absl_flags() -> None:
    """Work around google/grain#1355 (grain 0.2.18) for programs that do not use ``absl.app``.

    With jaxlib >= 0.11 (extension version >= 448) grain reads the absl flag
    ``grain_enable_multiprocess_worker_profiling`` when it starts worker processes; in a program
    that never parsed absl flags that read raises ``UnparsedFlagAccessError``, so any
    ``worker_count > 0`` crashes. The workaround given in the issue is to mark the flags as
    parsed, which leaves every grain flag at its default. Fixed upstream by google/grain#1362;
    drop this once the pinned grain includes it. A program that parses absl flags itself is left
    alone.
    """
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_video_dataset(
    source: str | os.PathLike | grain.sources.RandomAccessDataSource,
    *,
    num_frames: int,
    resolution: int | tuple[int, int],
    batch_size: int,
    seed: int,
    frame_stride: int = 1,
    crop: str = "random",
    shard_index: int = 0,
    shard_count: int = 1,
    num_epochs: int | None = None,
    worker_count: int = 0,
    worker_buffer_size: int = 2,
    shuffle: bool = True,
    resample: str = "bilinear",
    cache_dir: str | os.PathLike | None = None,
    read_threads: int = 2,
    read_buffer_size: int = 16,
) -> grain.DataLoaderIterator:
    """Builds the iterator of training batches ``{"video": (B, T, H, W, 3), "key": (B,)}``.

    ``video`` is float32 in ``[-1, 1]`` with ``T = num_frames`` frames ``frame_stride`` decoded
    frames apart (a random window of each video), ``H, W = resolution`` (int -> square) after an
    antialiased short-side resize and a ``crop`` (``"random"`` or ``"center"``); ``key`` is the
    int64 record key of each clip in ``source``. For a ``VideoFolderSource`` batches also hold
    ``skipped_key`` (B,): the key of a file that failed to read during training and was replaced
    by the next readable record (``SampleClip``), else -1.

    Order and randomness are a pure function of the arguments: the sampler shuffles record keys
    per epoch with ``seed`` and ``SampleClip`` draws from grain's per-record rng (seeded by
    ``seed`` and the record's global position), so the same arguments give the same batches.
    Each clip depends only on (seed, position), but with ``worker_count > 0`` grain forms each
    batch from one worker's share of positions, so batch composition depends on
    ``worker_count`` too (and a saved state only restores under the same count). Each process
    reads its own shard (``ShardOptions(shard_index, shard_count, drop_remainder=True)``:
    disjoint, equal-sized subsets of the records), so pass ``jax.process_index()`` /
    ``jax.process_count()``.
    Incomplete final batches are dropped.

    Args:
      source: a folder of videos (indexed with ``VideoFolderSource(source,
        min_frames=span, cache_dir=cache_dir)``), a ``VideoFolderSource`` (its ``min_frames``
        must be at least the window span) or a ``TfdsVideoSource`` (records shorter than the
        span are dropped by a ``grain.transforms.Filter``).
      num_epochs: ``None`` repeats forever.
      worker_count: grain worker processes (0 decodes in this process).
      worker_buffer_size: batches each worker prepares ahead.
      cache_dir: index cache location when ``source`` is a path.
      read_threads, read_buffer_size: grain ``ReadOptions`` for fetching source records (per
        process/worker). grain's defaults (16 threads, 500 records ahead) cost seconds at every
        start and restore on a small machine and hold 500 decoded videos for a TFDS source.

    Returns:
      A ``grain.DataLoaderIterator``; ``it.get_state()`` returns bytes and ``it.set_state(s)``
      resumes at the same point of the same order (restore into an iterator built with the same
      arguments).

    Raises:
      ValueError: bad arguments, fewer records than ``shard_count``, or a ``VideoFolderSource``
        whose ``min_frames`` is below the window span.
    """
    span = window_span(num_frames, frame_stride)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}")
    if worker_count < 0:
        raise ValueError(f"worker_count must be >= 0, got {worker_count}")
    if isinstance(source, (str, os.PathLike)):
        source = VideoFolderSource(source, min_frames=span, cache_dir=cache_dir)
    if isinstance(source, VideoFolderSource) and source.min_frames < span:
        raise ValueError(
            f"the source keeps videos with >= {source.min_frames} frames, but a window of "
            f"{num_frames} frames at frame_stride {frame_stride} spans {span}; rebuild it with "
            f"min_frames={span}"
        )
    if len(source) < shard_count:
        raise ValueError(f"{len(source)} records cannot fill {shard_count} shards")

    shard_options = grain.sharding.ShardOptions(
        shard_index=shard_index, shard_count=shard_count, drop_remainder=True
    )
    sampler = grain.samplers.IndexSampler(
        num_records=len(source),
        shard_options=shard_options,
        shuffle=shuffle,
        num_epochs=num_epochs,
        seed=seed,
    )
    operations: list = []
    if not isinstance(source, VideoFolderSource):
        operations.append(LongEnough(span))
    operations += [
        SampleClip(
            num_frames,
            frame_stride,
            resolution,
            crop=crop,
            resample=resample,
            source=source if isinstance(source, VideoFolderSource) else None,
        ),
        grain.transforms.Batch(batch_size=batch_size, drop_remainder=True),
    ]
    if worker_count > 0:
        allow_unparsed_absl_flags()
    loader = grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=operations,
        worker_count=worker_count,
        worker_buffer_size=worker_buffer_size,
        shard_options=shard_options,
        read_options=grain.ReadOptions(
            num_threads=read_threads, prefetch_buffer_size=read_buffer_size
        ),
    )
    return iter(loader)
