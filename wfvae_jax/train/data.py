"""Training and held-out evaluation data for the train loop.

Held-out clips must never reach training: the training source is a ``VideoFolderSource``
without the evaluation files (its ``exclude``: those and any files named in ``data.exclude``,
e.g. a re-encoded copy of an evaluation video), and :func:`load_eval_clips` reads fixed,
center-cropped windows of the evaluation files.

Data that changes between runs: :func:`data_manifest` is what a checkpoint records about the
training data (the sorted files with their frame counts, the window span, the data seed, grain's
worker count and the process count); :func:`data_changes` lists what differs from it now, and
:func:`resumed_data_seed` seeds the new order when a run continues after a change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from wfvae_jax.data import VideoFiles, VideoFolderSource
from wfvae_jax.io.clip_spec import ClipSpec
from wfvae_jax.io.windows import ClipTooShortError


def load_eval_clips(
    files: Sequence[str],
    *,
    num_frames: int,
    resolution: int,
    frame_stride: int = 1,
    clips_per_video: int = 2,
) -> np.ndarray:
    """Fixed evaluation windows: ``clips_per_video`` evenly spaced windows of each file.

    Returns:
      float32 ``(len(files) * clips_per_video, num_frames, resolution, resolution, 3)`` in
      [-1, 1]; short side resized to ``resolution`` (antialiased bilinear), center crop.
    Raises:
      ValueError: no files, or a file shorter than one window.
    """
    if not files:
        raise ValueError("eval.files is empty: name at least one held-out video")
    spec = ClipSpec(
        num_frames,
        frame_stride,
        0,
        resolution,
        "center",
        multiple=1,
        clips_per_video=clips_per_video,
        sampling="evenly_spaced",
    )
    source = VideoFiles(None, files)
    clips = []
    for i in range(len(source)):
        try:
            clips += source.read(i, spec).clips
        except ClipTooShortError as e:
            raise ValueError(f"{source.where(i)}: {e}; fewer than one eval window") from e
    return np.stack(clips)


def data_manifest(
    source: VideoFolderSource, *, seed: int, config_seed: int, worker_count: int, processes: int
) -> dict[str, Any]:
    """The checkpoint's record of the training data (``meta["data"]``), JSON-serialisable.

    ``seed`` is the seed of the grain sampler (``config_seed`` until the data changed,
    :func:`resumed_data_seed` after), ``config_seed`` the config's ``seed``.
    """
    return {
        **source.manifest(),
        "seed": int(seed),
        "config_seed": int(config_seed),
        "worker_count": int(worker_count),
        "processes": int(processes),
    }


def _few(names: list[str], k: int = 3) -> str:
    more = len(names) - k
    return ", ".join(names[:k]) + (f" and {more} more" if more > 0 else "")


def data_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two :func:`data_manifest` records, one phrase per kind of change
    (empty when the saved data position still applies). Names up to three files per kind."""
    before, now = dict(map(tuple, old["videos"])), dict(map(tuple, new["videos"]))
    added = sorted(now.keys() - before.keys())
    removed = sorted(before.keys() - now.keys())
    resized = sorted(k for k in before.keys() & now.keys() if before[k] != now[k])
    out = []
    if added:
        out.append(f"{len(added)} video(s) added ({_few(added)})")
    if removed:
        out.append(f"{len(removed)} removed or now unusable ({_few(removed)})")
    if resized:
        out.append(f"{len(resized)} with another frame count ({_few(resized)})")
    for key, what in (
        ("min_frames", "window span (data.num_frames, data.frame_stride)"),
        ("config_seed", "seed"),
        ("worker_count", "data.worker_count"),
        ("processes", "process count"),
    ):
        if old.get(key) != new.get(key):
            out.append(f"{what} {old.get(key)} -> {new.get(key)}")
    return out


def resumed_data_seed(seed: int, step: int) -> int:
    """The sampler seed of a run that continues at ``step`` after its data changed: a fixed
    function of (``seed``, ``step``), so the same resume gives the same order."""
    return int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1)[0] >> 1)
