"""grain transforms turning source records into training windows.

Randomness comes only from the ``rng`` grain hands to ``RandomMap.random_map``: the
``IndexSampler`` seeds it per record as ``Philox(key=seed + global_index)``, where the global
index counts across epochs and shards. A window therefore depends only on (seed, position in
the sampled sequence), never on worker count, timing, or earlier elements, which is what makes a
restored iterator state reproduce the same batches.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import grain
import numpy as np

from wfvae_jax.io.clip_spec import ClipSpec, window_span
from wfvae_jax.io.frames import resize_and_crop
from wfvae_jax.io.windows import read_video

logger = logging.getLogger(__name__)


class SampleClip(grain.transforms.RandomMap):
    """Record -> ``{"video": float32 (num_frames, h, w, 3) in [-1, 1], "key": int64}`` (plus
    ``"skipped_key": int64`` with a ``source``).

    Draws the window start uniformly in ``[0, frames - span]`` (``span = (num_frames - 1) *
    frame_stride + 1``), then the crop position (``crop="random"``) from the same ``rng``, in
    that order; resizes the short side to cover ``resolution`` (antialiased, ``resample``) and
    crops. Accepts ``VideoFolderSource`` records (``path``, ``frames``: decoded here with PyAV)
    and ``TfdsVideoSource`` records (``video``: uint8 frames).

    A file that fails to read during training (deleted, truncated or replaced after the scan):
    with ``source`` (the ``VideoFolderSource`` the records come from) the clip is read from the
    next readable record instead, trying keys ``key + 1, key + 2, ...`` (mod ``len(source)``),
    each with the rng state the failed record started from, so the replacement is a function of
    (seed, position, which files are readable) only, never of which worker saw the failure first.
    ``key`` is then the replacement's key and ``skipped_key`` the failed one (``-1`` when nothing
    failed); the train loop counts it (``VideoFolderSource.mark_unreadable``). Failed keys are
    remembered per process and not read again. Without ``source`` the error propagates.

    Source: the reference ``TrainVideoDataset`` (``causalvideovae/dataset/video_dataset.py``)
    samples a random window, resizes the short side and center-crops; this adds the random crop
    option and seeds every draw from grain's per-record rng instead of Python's global one.
    """

    def __init__(
        self,
        num_frames: int,
        frame_stride: int,
        resolution: int | tuple[int, int],
        crop: str = "random",
        resample: str = "bilinear",
        source: Any = None,
    ):
        self.span = window_span(num_frames, frame_stride)
        if crop not in ("center", "random"):
            raise ValueError(f'crop must be "center" or "random", got {crop!r}')
        # The window: one per record, drawn with the record's rng (ClipSpec's "random" policy).
        self.spec = ClipSpec(
            num_frames, frame_stride, 0, resolution, crop, resample, multiple=1, sampling="random"
        )
        self.num_frames, self.frame_stride = int(num_frames), int(frame_stride)
        self.resolution, self.crop, self.resample = resolution, crop, resample
        self.source = source
        self._bad: set[int] = set()  # keys that failed in this process

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        if self.source is None or "video" in element:
            return self._read(element, rng)
        key, n = int(element["key"]), len(self.source)
        state0 = copy.deepcopy(rng.bit_generator.state)
        skipped, last_error = -1, None
        for j in range(n):
            record = element if j == 0 else self.source[(key + j) % n]
            rkey = int(record["key"])
            if rkey not in self._bad:
                if j:
                    rng.bit_generator.state = copy.deepcopy(state0)
                try:
                    out = self._read(record, rng)
                except (ValueError, OSError) as e:
                    last_error = e
                    self._bad.add(rkey)
                    logger.warning(
                        "video %s failed during training (%s: %s); skipped, reading the next "
                        "record instead",
                        record["path"],
                        type(e).__name__,
                        e,
                    )
                else:
                    return {**out, "skipped_key": np.int64(skipped)}
            if skipped < 0:
                skipped = rkey
        raise ValueError(
            f"no training video is readable any more (all {n} failed); last error: {last_error}"
        )

    def _read(self, element: dict, rng: np.random.Generator) -> dict:
        if "video" in element:
            total = int(element["video"].shape[0])
        else:
            total = int(element["frames"])
        if total < self.span:
            raise ValueError(
                f"record {element.get('key')} has {total} frames, fewer than the window span "
                f"{self.span}; filter the source first"
            )
        start = self.spec.window_starts(total, rng)[0]
        if "video" in element:
            window = element["video"][start : start + self.span : self.frame_stride]
            clip = resize_and_crop(window, self.resolution, self.crop, rng, self.resample)
        else:
            clip = read_video(
                element["path"],
                self.num_frames,
                frame_stride=self.frame_stride,
                start=start,
                resolution=self.resolution,
                crop=self.crop,
                rng=rng,
                resample=self.resample,
            )
        return {"video": clip, "key": np.int64(element["key"])}


class LongEnough(grain.transforms.Filter):
    """Keeps in-memory video records with at least ``min_frames`` frames; logs each drop.

    Used for ``TfdsVideoSource``, whose record lengths are only known once a record is read
    (``VideoFolderSource`` filters at indexing time instead).
    """

    def __init__(self, min_frames: int):
        self.min_frames = int(min_frames)

    def filter(self, element: dict) -> bool:
        frames = int(element["video"].shape[0])
        if frames < self.min_frames:
            logger.warning(
                "dropping record %s: %d frames < window span %d",
                element.get("key"),
                frames,
                self.min_frames,
            )
            return False
        return True
