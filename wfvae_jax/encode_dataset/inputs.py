"""The clips of an encoding's inputs (a ``wfvae_jax.data.VideoSource``: a folder of videos or a
prepared TFDS dataset), decoded in grain worker processes in input order."""

from __future__ import annotations

from collections.abc import Iterator

import grain
import numpy as np

from wfvae_jax.data.pipeline import allow_unparsed_absl_flags
from wfvae_jax.data.video_source import VideoSource
from wfvae_jax.io.clip_spec import ClipSpec


class DecodeClips(grain.transforms.Map):
    """grain op (runs in the workers): work item -> the input's clips, or why it has none.

    Output: the item plus ``clips`` float32 ``(k, num_frames, H, W, 3)`` (``k`` may be 0),
    ``starts`` int64 ``(k,)``, ``fps``, ``size`` int64 ``(2,)`` and ``error`` ("" when usable,
    else ``"unreadable: ..."``, ``"missing: ..."`` or ``"too short: ..."``).
    """

    def __init__(self, inputs: VideoSource, spec: ClipSpec):
        self.inputs, self.spec = inputs, spec

    def map(self, item: dict) -> dict:
        got, error = self.inputs.try_read(item["index"], self.spec)
        if got is None:
            h, w = self.spec.size
            clips = np.zeros((0, self.spec.num_frames, h, w, 3), np.float32)
            starts, fps, size = [], 0.0, (0, 0)
        else:
            clips, starts, fps, size = np.stack(got.clips), got.starts, got.fps, got.size
        return {
            **item,
            "clips": clips,
            "starts": np.asarray(starts, np.int64),
            "fps": float(fps),
            "size": np.asarray(size, np.int64),
            "error": error,
        }


def decode_in_workers(items: list[dict], op: DecodeClips, worker_count: int) -> Iterator[dict]:
    """``op`` applied to ``items`` in order, by a grain DataLoader (``worker_count`` processes)."""
    if not items:
        return iter(())
    if worker_count > 0:
        allow_unparsed_absl_flags()
    sampler = grain.samplers.IndexSampler(
        num_records=len(items),
        shard_options=grain.sharding.NoSharding(),
        shuffle=False,
        num_epochs=1,
    )
    loader = grain.DataLoader(
        data_source=items,
        sampler=sampler,
        operations=[op],
        worker_count=worker_count,
        worker_buffer_size=2,
        # Work items are tiny; the decoded clips are what the buffers hold.
        read_options=grain.ReadOptions(num_threads=1, prefetch_buffer_size=4),
    )
    return iter(loader)
