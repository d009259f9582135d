"""The inputs of an encoding (a folder of videos or a prepared TFDS dataset) and their clips,
decoded in grain worker processes in input order."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from typing import Any

import av
import grain
import numpy as np

from wfvae_jax.data.pipeline import allow_unparsed_absl_flags
from wfvae_jax.data.sources import find_videos
from wfvae_jax.encode_dataset.spec import ClipSpec
from wfvae_jax.io.decode import decoded_frames, open_video
from wfvae_jax.io.frames import resize_and_crop


def cut_clips(
    frames: Iterable[np.ndarray], spec: ClipSpec
) -> tuple[list[np.ndarray], list[int], tuple[int, int] | None, int]:
    """Cuts uint8 ``(H, W, 3)`` frames into ``spec``'s clips, stopping once it has them all.

    Returns ``(clips, starts, size, frames_seen)``: float32 ``(num_frames, h, w, 3)`` clips in
    [-1, 1], the decoded index of each clip's first frame, the source ``(H, W)`` (None without
    frames), and how many frames were read.
    """
    clips: list[np.ndarray] = []
    starts: list[int] = []
    current: list[np.ndarray] = []
    size, seen = None, 0
    for index, rgb in enumerate(frames):
        seen = index + 1
        if size is None:
            size = (int(rgb.shape[0]), int(rgb.shape[1]))
        if index % spec.frame_stride:
            continue
        # Frame by frame, as read_video: the same resize and crop, without holding the originals.
        frame = resize_and_crop(rgb[None], spec.size, "center", None, spec.resample)
        current.append(frame[0])
        if len(current) == spec.num_frames:
            clips.append(np.stack(current))
            starts.append(index - (spec.num_frames - 1) * spec.frame_stride)
            current = []
            if len(clips) == spec.clips_per_video:
                break
    return clips, starts, size, seen


class FolderInput:
    """The video files under ``root`` (``wfvae_jax.data.find_videos``: recursive, sorted).

    Raises ValueError if ``root`` is not a directory or holds no video file.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = os.path.realpath(os.fspath(root))
        self.videos = find_videos(self.root)
        if not self.videos:
            raise ValueError(f"no video files (mp4, avi, mkv, mov, webm) under {self.root}")

    def __len__(self) -> int:
        return len(self.videos)

    def name(self, index: int) -> str:
        return self.videos[index]

    def identity(self) -> dict[str, Any]:
        """What the output depends on (part of the spec): the relative paths, not the root."""
        listing = hashlib.sha256("\n".join(self.videos).encode()).hexdigest()
        return {"kind": "folder", "num_videos": len(self.videos), "videos_sha256": listing}

    def info(self) -> dict[str, Any]:
        """Recorded in the manifest (``source_info``): the root and the relative paths, so a
        later run over a changed folder can name what changed."""
        return {"root": self.root, "videos": list(self.videos)}

    def read(self, index: int, spec: ClipSpec) -> tuple[list, list, float, tuple | None, int]:
        """Decodes input ``index``'s clips: ``(clips, starts, fps, size, frames_seen)``.

        Raises FileNotFoundError / ValueError (``video_io``) for a missing or undecodable file.
        """
        path = os.path.join(self.root, self.videos[index])
        with open_video(path) as container:
            rate = container.streams.video[0].average_rate
            frames = (f.to_ndarray(format="rgb24") for f in decoded_frames(container, path))
            clips, starts, size, seen = cut_clips(frames, spec)
        return clips, starts, float(rate) if rate else 0.0, size, seen


class TfdsInput:
    """The records of a prepared TFDS dataset (``wfvae_jax.data.TfdsVideoSource``), in order."""

    def __init__(
        self, name: str, split: str = "train", data_dir: str | None = None, key: str = "video"
    ):
        from wfvae_jax.data.sources import TfdsVideoSource

        self.source = TfdsVideoSource(name, split, data_dir, key)
        self.tfds_name, self.split, self.data_dir, self.key = name, split, data_dir, key

    def __len__(self) -> int:
        return len(self.source)

    def name(self, index: int) -> str:
        return f"tfds:{self.tfds_name}/{self.split}[{index}]"

    def identity(self) -> dict[str, Any]:
        return {
            "kind": "tfds",
            "name": self.tfds_name,
            "split": self.split,
            "video_key": self.key,
            "num_videos": len(self),
        }

    def info(self) -> dict[str, Any]:
        return {"data_dir": self.data_dir}

    def read(self, index: int, spec: ClipSpec) -> tuple[list, list, float, tuple | None, int]:
        clips, starts, size, seen = cut_clips(iter(self.source[index]["video"]), spec)
        return clips, starts, 0.0, size, seen


class DecodeClips(grain.transforms.Map):
    """grain op (runs in the workers): work item -> the input's clips, or why it has none.

    Output: the item plus ``clips`` float32 ``(k, num_frames, H, W, 3)`` (``k`` may be 0),
    ``starts`` int64 ``(k,)``, ``fps``, ``size`` int64 ``(2,)`` and ``error`` ("" when usable,
    else ``"unreadable: ..."``, ``"missing: ..."`` or ``"too short: ..."``).
    """

    def __init__(self, inputs: FolderInput | TfdsInput, spec: ClipSpec):
        self.inputs, self.spec = inputs, spec

    def map(self, item: dict) -> dict:
        spec, error = self.spec, ""
        clips, starts, fps, size = [], [], 0.0, None
        try:
            clips, starts, fps, size, seen = self.inputs.read(item["index"], spec)
            if not clips:
                error = (
                    f"too short: {seen} decodable frames, a clip of {spec.num_frames} frames at "
                    f"frame_stride {spec.frame_stride} spans {spec.span}"
                )
        except FileNotFoundError as e:
            error = f"missing: {e}"
        except (ValueError, OSError, av.error.FFmpegError) as e:
            error = f"unreadable: {e}"
        h, w = spec.size
        return {
            **item,
            "clips": np.stack(clips) if clips else np.zeros((0, spec.num_frames, h, w, 3), "f4"),
            "starts": np.asarray(starts, np.int64),
            "fps": float(fps),
            "size": np.asarray(size or (0, 0), np.int64),
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
