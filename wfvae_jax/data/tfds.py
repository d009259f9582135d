"""A prepared TFDS dataset as a :class:`~wfvae_jax.data.video_source.VideoSource` (and a grain
source of ``{"video": uint8 (T, H, W, 3), "key": int}`` records, already decoded by TFDS)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from wfvae_jax.data.video_source import OpenedVideo, VideoSource


class TfdsVideoSource(VideoSource):
    """The records of a prepared TFDS dataset (array_record files) in order: a
    :class:`~wfvae_jax.data.video_source.VideoSource` and a grain ``RandomAccessDataSource``.

    Wraps ``tfds.data_source(name, split=split, data_dir=data_dir)``; each record becomes
    ``{"video": uint8 (T, H, W, 3), "key": record key}`` from the ``video_key`` feature, which must
    decode to uint8 RGB frames. Without tensorflow installed this works for features stored as
    ``tfds.features.Tensor`` (e.g. ``Tensor(shape=(None, H, W, 3), dtype=np.uint8,
    encoding="zlib")``); tfds 4.9.10's ``tfds.features.Video`` needs tensorflow to load.
    Records shorter than the window are dropped by the pipeline (``make_video_dataset``).

    Raises:
      ValueError: the dataset was not prepared in ``array_record`` format or cannot be found.
    """

    def __init__(
        self,
        name: str,
        split: str,
        data_dir: str | os.PathLike | None = None,
        video_key: str = "video",
    ):
        import tensorflow_datasets as tfds  # heavy import, only for users of this source

        self.name, self.split, self.video_key = name, split, video_key
        self.data_dir = None if data_dir is None else os.fspath(data_dir)
        try:
            self._source = tfds.data_source(name, split=split, data_dir=self.data_dir)
        except Exception as e:  # tfds raises several unrelated types for "not prepared"
            raise ValueError(
                f"cannot open TFDS dataset {name!r} split {split!r} in {self.data_dir}: "
                f"{type(e).__name__}: {e}"
            ) from e

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, record_key: int) -> dict:
        record_key = int(record_key)
        record = self._source[record_key]
        if self.video_key not in record:
            raise ValueError(
                f"TFDS record {record_key} of {self.name} has no key {self.video_key!r} "
                f"(keys: {sorted(record)})"
            )
        video = np.asarray(record[self.video_key])
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
            raise ValueError(
                f"{self.name}[{record_key}][{self.video_key!r}] must be uint8 (T, H, W, 3), got "
                f"{video.dtype} {video.shape}"
            )
        return {"video": video, "key": record_key}

    def __repr__(self) -> str:
        return (
            f"TfdsVideoSource(name={self.name!r}, split={self.split!r}, "
            f"data_dir={self.data_dir!r}, video_key={self.video_key!r}, num_records={len(self)})"
        )

    def video_id(self, index: int) -> str:
        return f"tfds:{self.name}/{self.split}[{index}]"

    def stem(self, index: int) -> str:
        return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', f'{self.name}_{self.split}')}_{index:06d}"

    def describe(self) -> str:
        return f"tfds:{self.name}/{self.split}"

    def identity(self) -> dict[str, Any]:
        return {
            "kind": "tfds",
            "name": self.name,
            "split": self.split,
            "video_key": self.video_key,
            "num_videos": len(self),
        }

    def info(self) -> dict[str, Any]:
        return {"data_dir": self.data_dir}

    def num_frames(self, index: int) -> int:
        return int(self[index]["video"].shape[0])

    @contextlib.contextmanager
    def open(self, index: int) -> Iterator[OpenedVideo]:
        """Record ``index``'s frames (TFDS states no frame rate: ``fps`` 0.0)."""
        video = self[index]["video"]
        yield OpenedVideo(iter(video), 0.0, int(video.shape[0]))
