"""Encode a video dataset into WF-VAE latents: sharded over devices and hosts, resumable.

Usage::

    python -m wfvae_jax.encode_dataset --checkpoint CKPT --videos DIR --out OUT \\
        --num_frames 33 --resolution 256 [--frame_stride 1] [--clips_per_video 1] \\
        [--batch_size B] [--t_chunk C] [--dtype float32|bfloat16] \\
        [--store mean_logvar|sample] [--storage_dtype float32|float16|bfloat16]
    # a prepared TFDS dataset instead of a folder: --tfds NAME [--tfds_split train]
    # one process per host: add --multihost (see wfvae_jax.inference.multihost)

Read the output with ``wfvae_jax.data.LatentSource(OUT)``; the format (shards, records, manifest)
is documented in ``wfvae_jax.data.latents``.

What is encoded. Inputs are the sorted video files under ``--videos`` (or the TFDS records in
order); input ``i`` belongs to shard ``i // videos_per_shard``. Each input gives up to
``clips_per_video`` clips: its decoded frames taken every ``frame_stride``-th frame, cut from the
first frame into consecutive clips of ``num_frames`` frames (clip ``k`` starts at decoded frame
``k * num_frames * frame_stride``); frames are resized on the short side to cover
``resolution`` (antialiased) and centre-cropped, as ``read_video(..., crop="center")``. Clip 0 is
the evaluation clip of ``wfvae_jax.eval`` (square resolutions). Inputs that cannot be decoded or
hold no whole clip are skipped, counted and listed with the reason in the manifest.

How. Shard ``s`` belongs to process ``s % process_count``, which decodes its videos in grain
worker processes (``--worker_count``) while the devices encode the previous batch; a batch holds
``batch_size / process_count`` clips of one shard from each process and is sharded over a
``("data", "space")`` mesh of every device (``--mesh data=D,space=S``; default ``data=`` all
devices): clips over ``data``, each clip's height over ``space`` (``wfvae_jax.inference.sharding``).
Long clips go through Causal Cache (``--t_chunk``; default: ``wfvae_jax.auto_t_chunk``; 0: each
clip at once).
Results are written to the shard's temporary file; after the shard's last clip it is renamed and
its marker written. Processes that run out of clips keep stepping with empty batches until all
are done (one small all-gather per step decides when).

Why the output is byte-identical after a kill -9, and for any number of processes: a shard's
content depends only on its inputs and the spec (never on which process or batch a clip ran
in: batches never mix shards, samples use a key derived from the clip's identity), records are
in input order, and finished shards are never rewritten. A restart skips finished shards and
redoes unfinished ones from their start. An ``OUT`` written with another checkpoint, clip spec,
input list or encode settings (``t_chunk`` included) is refused unless ``--overwrite``; when
the folder under ``--videos`` changed (files added or removed since ``OUT`` was started), the
error names them (up to three of each, then a count). A file deleted or corrupted while the run
is going is skipped and counted like one that was bad from the start (``missing: ...`` /
``unreadable: ...`` in the manifest's ``skipped``). The
per-device batch size may change float rounding: keep ``--batch_size`` per device when resuming
for bit-equal results.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import gc
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import av
import grain
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from wfvae_jax.core import compile_options
from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.data import latents as fmt
from wfvae_jax.data.sources import find_videos, window_span
from wfvae_jax.inference.api import DTYPES, T_CHUNK_HELP, encode, parse_dtype
from wfvae_jax.inference.sharding import (
    activation_sharding,
    add_mesh_arg,
    axis_size,
    make_mesh,
    parse_mesh,
)
from wfvae_jax.io.decode import decoded_frames, open_video
from wfvae_jax.io.frames import parse_resolution as video_io_parse_resolution
from wfvae_jax.io.frames import resize_and_crop

logger = logging.getLogger(__name__)

COMPUTE_DTYPES = tuple(DTYPES)  # the names wfvae_jax.inference.api.parse_dtype reads
DEFAULT_VIDEOS_PER_SHARD = 128
DEFAULT_WORKER_COUNT = 4


def compute_dtype(name: str) -> Any:
    """The jnp dtype of a ``--dtype`` name (``inference.api.parse_dtype``); ValueError otherwise."""
    try:
        return parse_dtype(name)
    except ValueError as e:
        raise ValueError(f"--{e}") from e


def parse_resolution(text: str | int | Sequence[int]) -> tuple[int, int]:
    """``"256"`` -> ``(256, 256)``; ``"256x320"`` -> ``(256, 320)`` (height x width); the text
    forms are ``wfvae_jax.io.video.parse_resolution``'s (``native`` has no fixed size here)."""
    if not isinstance(text, str):
        text = str(int(text)) if isinstance(text, (int, np.integer)) else "x".join(map(str, text))
    try:
        r = video_io_parse_resolution(text)
    except ValueError as e:
        raise ValueError(f"--{e}") from e
    if r is None:
        raise ValueError("--resolution native: a dataset needs one clip size (S or HxW)")
    return (r, r) if isinstance(r, int) else r


# ---------------------------------------------------------------------------------- clips


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Which clips each input gives (see the module doc).

    Attributes:
      num_frames: frames per clip, ``1 + k * temporal_downsample`` of the model.
      resolution: ``(H, W)`` of every clip (an int: square), multiples of the model's
        ``spatial_downsample``.
      frame_stride: decoded frames between clip frames.
      clips_per_video: at most this many consecutive clips per input (>= 1).
      resample: ``read_video``'s resize filter.
    """

    num_frames: int
    resolution: tuple[int, int]
    frame_stride: int = 1
    clips_per_video: int = 1
    resample: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolution", parse_resolution(self.resolution))
        window_span(self.num_frames, self.frame_stride)  # raises for values < 1
        if self.clips_per_video < 1:
            raise ValueError(f"clips_per_video must be >= 1, got {self.clips_per_video}")

    @property
    def span(self) -> int:
        """Decoded frames one clip covers."""
        return window_span(self.num_frames, self.frame_stride)

    def check(self, config: WFVAEConfig) -> None:
        """Raises ValueError unless the model accepts these clips (frame count, H, W)."""
        config.check_num_frames(self.num_frames, "--num_frames")
        d = config.spatial_downsample
        h, w = self.resolution
        if h < d or w < d or h % d or w % d:
            raise ValueError(f"--resolution must be multiples of {d}, got {h}x{w}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["resolution"] = list(self.resolution)
        d["crop"] = "center"
        return d


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
        frame = resize_and_crop(rgb[None], spec.resolution, "center", None, spec.resample)
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
        h, w = spec.resolution
        return {
            **item,
            "clips": np.stack(clips) if clips else np.zeros((0, spec.num_frames, h, w, 3), "f4"),
            "starts": np.asarray(starts, np.int64),
            "fps": float(fps),
            "size": np.asarray(size or (0, 0), np.int64),
            "error": error,
        }


def _decoded(items: list[dict], op: DecodeClips, worker_count: int) -> Iterator[dict]:
    """``op`` applied to ``items`` in order, by a grain DataLoader (``worker_count`` processes)."""
    if not items:
        return iter(())
    if worker_count > 0:
        from wfvae_jax.data.pipeline import _allow_unparsed_absl_flags

        _allow_unparsed_absl_flags()
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


# ---------------------------------------------------------------------------------- batches


@dataclasses.dataclass
class _Batch:
    """One process's share of a global batch: clips of one shard, padded with empty rows."""

    shard: int
    video: np.ndarray  # (b, T, H, W, 3) float32
    key_data: np.ndarray  # (b, 2) uint32
    sources: list[dict | None]  # per row; None = padding


@dataclasses.dataclass
class _ShardEnd:
    shard: int
    videos: tuple[int, int]
    skipped: list[dict]


def _events(
    decoded: Iterator[dict], spec: ClipSpec, local_batch: int, seed: int, on_video
) -> Iterator[_Batch | _ShardEnd]:
    """Batches and shard ends in order; a shard's last batch is padded rather than mixed."""
    h, w = spec.resolution
    rows: list[tuple[np.ndarray, dict]] = []
    skipped: list[dict] = []

    def flush(shard: int) -> _Batch:
        video = np.zeros((local_batch, spec.num_frames, h, w, 3), np.float32)
        keys = np.zeros((local_batch, 2), np.uint32)
        sources: list[dict | None] = [None] * local_batch
        for r, (clip, src) in enumerate(rows):
            video[r], sources[r] = clip, src
            keys[r] = fmt.sample_key_data(seed, src["video"], src["start"])
        rows.clear()
        return _Batch(shard, video, keys, sources)

    for position, item in enumerate(decoded):
        if item["position"] != position:  # grain keeps the order; records rely on it
            raise RuntimeError(f"work item {item['position']} arrived at position {position}")
        on_video(item)
        if item["error"]:
            kind = item["error"].split(":", 1)[0].replace(" ", "_")
            skipped.append({"video": item["video"], "kind": kind, "reason": item["error"]})
        for clip, start in zip(item["clips"], item["starts"], strict=True):
            source = {
                "video": item["video"],
                "start": int(start),
                "frame_stride": spec.frame_stride,
                "fps": item["fps"],
                "size": [int(s) for s in item["size"]],
            }
            rows.append((clip, source))
            if len(rows) == local_batch:
                yield flush(item["shard"])
        if item["last"]:
            if rows:
                yield flush(item["shard"])
            yield _ShardEnd(item["shard"], tuple(item["shard_videos"]), skipped)
            skipped = []


# ---------------------------------------------------------------------------------- encode


@dataclasses.dataclass(frozen=True)
class EncodeOptions:
    """Settings of :func:`encode_dataset` besides the clips.

    Attributes:
      batch_size: global clips per step, a multiple of the device count (``None``: one clip per
        device).
      dtype: compute dtype name (``COMPUTE_DTYPES``).
      t_chunk: Causal Cache chunk in video frames; 0 encodes each clip at once; None: the
        default rule (``wfvae_jax.auto_t_chunk``: long clips in chunks).
      store: ``"mean_logvar"`` (the posterior) or ``"sample"`` (one draw per clip).
      storage_dtype: ``fmt.STORAGE_DTYPES`` name of the stored arrays.
      seed: seed of the ``"sample"`` draws (``fmt.sample_key_data``).
      videos_per_shard: inputs per output shard (the unit of resuming).
      worker_count: grain decoding processes per host (0: decode in this process).
      overwrite: replace an ``OUT`` that holds another encoding.
      progress: show a progress bar (process 0).
      mesh: ``"data=D,space=S"`` (``inference.sharding.parse_mesh``): split each batch over D
        devices and each clip's height over S; ``D * S`` must be every device of the run
        (``None``: ``data=`` every device).
    """

    batch_size: int | None = None
    dtype: str = "float32"
    t_chunk: int | None = None
    store: str = "mean_logvar"
    storage_dtype: str = "float32"
    seed: int = 0
    videos_per_shard: int = DEFAULT_VIDEOS_PER_SHARD
    worker_count: int = DEFAULT_WORKER_COUNT
    overwrite: bool = False
    progress: bool = True
    mesh: str | None = None

    def check(self) -> None:
        compute_dtype(self.dtype)
        if self.mesh:
            parse_mesh(self.mesh)
        fmt.storage_dtype(self.storage_dtype)
        if self.store not in fmt.STORES:
            raise ValueError(f"--store must be one of {fmt.STORES}, got {self.store!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.videos_per_shard < 1:
            raise ValueError(f"--videos_per_shard must be >= 1, got {self.videos_per_shard}")
        if self.worker_count < 0:
            raise ValueError(f"--worker_count must be >= 0, got {self.worker_count}")


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def params_hash(params: Any) -> str:
    """sha256 over every parameter's path, dtype, shape and float32 bytes (in path order)."""
    h = hashlib.sha256()
    for path, leaf in sorted(
        jax.tree_util.tree_flatten_with_path(params)[0], key=lambda kv: jax.tree_util.keystr(kv[0])
    ):
        a = np.ascontiguousarray(np.asarray(leaf, np.float32))
        h.update(f"{jax.tree_util.keystr(path)}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def scale_shift(config: WFVAEConfig) -> tuple[list[float], list[float]]:
    """The config's ``scale``/``shift`` as ``latent_dim`` entries each.

    The reference's 4-entry placeholders (all entries equal) broadcast to every channel, with a
    warning: measure real values with ``wfvae latent-stats --write_config``.
    Raises ValueError for any other length mismatch.
    """
    c = config.latent_dim
    out = []
    for name in ("scale", "shift"):
        v = [float(x) for x in getattr(config, name)]
        if len(v) != c:
            if len(set(v)) != 1:
                raise ValueError(f"config {name} has {len(v)} entries, latent_dim is {c}")
            logger.warning(
                "config %s %s has %d entries for %d channels (the reference's placeholder); "
                "using %g for every channel. Measure real values with wfvae latent-stats.",
                name,
                v,
                len(v),
                c,
                v[0],
            )
            v = v[:1] * c
        out.append(v)
    return out[0], out[1]


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


def _few(names: list[str], k: int = 3) -> str:
    more = len(names) - k
    return ", ".join(names[:k]) + (f" and {more} more" if more > 0 else "")


def _input_changes(manifest: dict, videos: list[str] | None) -> str | None:
    """``"1 added (c.mp4); 2 removed (a.mp4, b.mp4)"`` between the manifest's video list and
    ``videos``, or None when either list is unknown or they are equal."""
    old = (manifest.get("source_info") or {}).get("videos")
    if old is None or videos is None:
        return None
    added, removed = sorted(set(videos) - set(old)), sorted(set(old) - set(videos))
    parts = [f"{len(added)} added ({_few(added)})"] if added else []
    parts += [f"{len(removed)} removed ({_few(removed)})"] if removed else []
    return "; ".join(parts) or None


def _check_compatible(
    out: str, spec: dict, spec_hash: str, videos: list[str] | None = None
) -> None:
    """Raises ValueError if ``out`` holds shards or a manifest of another spec; when only the
    input folder changed, the message names the added and removed files (``videos``: the
    relative paths now, for a folder input)."""
    manifest = fmt.read_manifest(out)
    if manifest is not None and manifest.get("spec_hash") != spec_hash:
        old, new = _flat(manifest.get("spec", {})), _flat(spec)
        diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if manifest.get("format") != fmt.FORMAT or manifest.get("version") != fmt.VERSION:
            diff = ["format/version"]
        changes = _input_changes(manifest, videos)
        if changes is not None and all(k.startswith("source.") for k in diff):
            raise ValueError(
                f"the videos under --videos changed since {out} was encoded: {changes}; pass "
                "--overwrite to encode the folder as it is now (all shards are redone), or "
                "use a new --out"
            )
        raise ValueError(
            f"{out} holds latents of a different encoding (differs in: "
            f"{', '.join(diff[:6]) or 'spec'}); pass --overwrite to replace them, or use a "
            "new --out"
        )
    for index, marker in fmt.list_markers(out).items():
        if marker.get("spec_hash") != spec_hash:
            raise ValueError(
                f"{out} holds shard {index} of a different encoding; pass --overwrite to "
                "replace it, or use a new --out"
            )


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _allgather_json(obj: Any) -> list[Any]:
    """Every process's ``obj`` (JSON-serialisable), in process order."""
    if jax.process_count() == 1:
        return [obj]
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([data.size], np.int32))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    gathered = multihost_utils.process_allgather(padded)
    return [
        json.loads(bytes(gathered[i, : int(sizes[i, 0])]).decode())
        for i in range(jax.process_count())
    ]


def _any_process(flag: bool) -> bool:
    if jax.process_count() == 1:
        return flag
    return bool(multihost_utils.process_allgather(np.asarray([int(flag)], np.int32)).max())


def run_mesh(spec: str | None) -> Mesh:
    """The run's ``("data", "space")`` mesh over every device of every process.

    ``spec`` is ``"data=D,space=S"`` (a missing axis is 1) or ``None`` (``data=`` all devices).
    Raises:
      ValueError: a malformed ``spec``, or ``D * S`` not the device count (a process whose
        devices are outside the mesh could not take part in the steps).
    """
    n = jax.device_count()
    sizes = parse_mesh(spec) if spec else {"data": n, "space": 1}
    if sizes["data"] * sizes["space"] != n:
        raise ValueError(
            f"--mesh {spec} uses {sizes['data'] * sizes['space']} devices but the run has {n}; "
            f"pick sizes with data*space = {n}, e.g. --mesh data={n},space=1"
        )
    return make_mesh(**sizes)


@functools.lru_cache(maxsize=8)
def _make_step(
    config: WFVAEConfig, mesh: Mesh, dtype: Any, t_chunk: int | None, store: str, storage: Any
):
    data, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())

    def step(params, video, key_data):
        post = encode(params, video, config, dtype=dtype, t_chunk=t_chunk, mesh=mesh)
        mean, logvar = post.mean.astype(jnp.float32), post.logvar.astype(jnp.float32)
        if store == "sample":
            keys = jax.random.wrap_key_data(key_data, impl="threefry2x32")  # (B,)
            eps = jax.vmap(lambda k: jax.random.normal(k, mean.shape[1:], jnp.float32))(keys)
            return {"latent": (mean + jnp.exp(0.5 * logvar) * eps).astype(storage)}
        return {"mean": mean.astype(storage), "logvar": logvar.astype(storage)}

    video = activation_sharding(mesh)  # B over "data", H over "space"
    return compile_options.jit(step, in_shardings=(replicated, video, data), out_shardings=data)


def _replicate(params: Any, mesh: Mesh) -> Any:
    sharding = NamedSharding(mesh, P())

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, params)


def _spec_dict(params, config, inputs, spec: ClipSpec, options: EncodeOptions) -> dict:
    """Everything the records depend on (``scale``/``shift`` do not: they are applied on read)."""
    arch = {k: v for k, v in config.to_dict().items() if k not in ("scale", "shift")}
    return {
        "model": {
            "config": arch,
            "config_hash": _sha256_json(arch),
            # The encoder's alone: records depend on nothing else, so full params and
            # load_pretrained(part="encoder") name the same encoding.
            "params_hash": params_hash({"encoder": params["encoder"]}),
        },
        "clips": spec.to_dict(),
        "source": inputs.identity(),
        "encode": {
            "dtype": options.dtype,
            "t_chunk": options.t_chunk,
            "store": options.store,
            "storage_dtype": options.storage_dtype,
            "seed": options.seed if options.store == "sample" else None,
        },
        "videos_per_shard": options.videos_per_shard,
    }


def _prepare_output(out: str, manifest: dict, overwrite: bool) -> dict[int, dict]:
    """Refuses another encoding (or clears it), writes the incomplete manifest (process 0) and
    returns the finished shards of this process: ``{shard: marker}``."""
    os.makedirs(out, exist_ok=True)
    if not overwrite:
        videos = (manifest.get("source_info") or {}).get("videos")
        _check_compatible(out, manifest["spec"], manifest["spec_hash"], videos)
    _sync("encode_dataset:checked")
    if overwrite:
        removed = fmt.remove_outputs(out)
        if removed:
            logger.info("--overwrite: removed %d files of an earlier encoding in %s", removed, out)
    _sync("encode_dataset:cleared")
    if jax.process_index() == 0:
        fmt.write_manifest(out, manifest)
    n_proc, proc = jax.process_count(), jax.process_index()
    finished = {s: m for s, m in fmt.list_markers(out).items() if s % n_proc == proc}
    _sync("encode_dataset:listed")  # nobody writes before everybody has listed
    return finished


def _work_items(inputs, num_shards: int, finished: dict, per_shard: int) -> list[dict]:
    """This process's inputs, in order: those of its unfinished shards (``s % P == p``)."""
    items = []
    for s in range(jax.process_index(), num_shards, jax.process_count()):
        if s in finished:
            continue
        lo, hi = s * per_shard, min((s + 1) * per_shard, len(inputs))
        for i in range(lo, hi):
            items.append(
                {
                    "position": len(items),
                    "index": i,
                    "shard": s,
                    "last": i == hi - 1,
                    "shard_videos": [lo, hi],
                    "video": inputs.name(i),
                }
            )
    return items


class _Loop:
    """Dispatches batches to the devices and writes the results of the previous one meanwhile.

    ``queue`` holds, in input order, dispatched batches and shard ends; a shard is committed
    once every batch before its end is written.
    """

    def __init__(self, out, step, params, mesh, spec_hash, options, bar):
        self.out, self.step, self.params, self.mesh = out, step, params, mesh
        self.spec_hash, self.options, self.bar = spec_hash, options, bar
        self.queue: collections.deque = collections.deque()
        self.in_flight = 0
        self.writers: dict[int, fmt.ShardWriter] = {}
        self.markers: dict[int, dict] = {}
        self.stats = collections.Counter()
        self.timing = {"input": 0.0, "device": 0.0}

    def next_batch(self, events: Iterator) -> _Batch | None:
        t0 = time.perf_counter()
        try:
            for ev in events:
                if isinstance(ev, _Batch):
                    return ev
                self.queue.append(ev)
            return None
        finally:
            waited = time.perf_counter() - t0
            self.timing["input"] += waited
            if "first_batch" in self.timing:
                self.timing["steady_input"] = self.timing.get("steady_input", 0.0) + waited

    def dispatch(self, b: _Batch, real: bool) -> None:
        # Each process holds whole clips (every H row): only B is split across processes.
        video = jax.make_array_from_process_local_data(activation_sharding(self.mesh), b.video)
        key_data = jax.make_array_from_process_local_data(
            NamedSharding(self.mesh, P("data")), b.key_data
        )
        outputs = self.step(self.params, video, key_data)  # async: decoding goes on meanwhile
        self.stats["steps"] += 1
        if real:
            self.queue.append((outputs, b))
            self.in_flight += 1

    def _fetch(self, outputs: dict) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        if jax.process_count() > 1:
            outputs = multihost_utils.global_array_to_host_local_array(
                outputs, self.mesh, P("data")
            )
        host = {k: np.asarray(v) for k, v in jax.device_get(outputs).items()}
        self.timing["device"] += time.perf_counter() - t0
        return host

    def _write(self, outputs: dict, b: _Batch) -> None:
        host = self._fetch(outputs)
        for r, source in enumerate(b.sources):
            if source is None:
                continue
            row = {k: v[r] for k, v in host.items()}
            if not all(np.isfinite(v.astype(np.float32)).all() for v in row.values()):
                raise ValueError(
                    f"non-finite latent for {source['video']} (start {source['start']}) with "
                    f"--dtype {self.options.dtype} --storage_dtype "
                    f"{self.options.storage_dtype}; try float32"
                )
            if b.shard not in self.writers:
                self.writers[b.shard] = fmt.ShardWriter(self.out, b.shard)
            self.writers[b.shard].write(fmt.encode_record(row, source))
            self.stats["records"] += 1
            self.bar.update(1)
        if "first_batch" not in self.timing:  # rates exclude the first step (it compiles)
            self.timing.update(first_batch=time.perf_counter(), first_records=self.stats["records"])

    def _commit(self, end: _ShardEnd) -> None:
        writer = self.writers.pop(end.shard, None) or fmt.ShardWriter(self.out, end.shard)
        info = {"spec_hash": self.spec_hash, "videos": list(end.videos), "skipped": end.skipped}
        self.markers[end.shard] = writer.commit(info)
        self.stats["shards"] += 1
        self.bar.set_postfix(shards=self.stats["shards"], skipped=self.stats["skipped"])

    def drain(self, keep_last: bool) -> None:
        """Writes and commits what is queued; with ``keep_last``, stops at the newest batch."""
        while self.queue:
            head = self.queue[0]
            if isinstance(head, tuple) and keep_last and self.in_flight == 1:
                return
            self.queue.popleft()
            if isinstance(head, tuple):
                self.in_flight -= 1
                self._write(*head)
            else:
                self._commit(head)

    def run(self, events: Iterator, empty: _Batch) -> None:
        while True:
            b = self.next_batch(events)
            # Every process runs every step: those without clips left send empty batches.
            if not _any_process(b is not None):
                break
            self.dispatch(b or empty, real=b is not None)
            self.drain(keep_last=True)
        self.drain(keep_last=False)


def _final_manifest(manifest: dict, markers: dict[int, dict]) -> dict:
    """``manifest`` completed with every process's shard markers."""
    found: dict[int, dict] = {}
    for part in _allgather_json({str(s): m for s, m in markers.items()}):
        found.update({int(s): m for s, m in part.items()})
    shards = [found[s] for s in sorted(found)]
    skipped = [sk for m in shards for sk in m["skipped"]]
    keep = ("file", "videos", "records", "bytes", "sha256")
    return {
        **manifest,
        "complete": len(shards) == manifest["num_shards"],
        "shards": [{k: m[k] for k in keep} for m in shards],
        "num_records": sum(m["records"] for m in shards),
        "skipped": skipped,
        "skipped_counts": dict(collections.Counter(s["kind"] for s in skipped)),
    }


def encode_dataset(
    params: Any,
    config: WFVAEConfig,
    inputs: FolderInput | TfdsInput,
    out: str | os.PathLike,
    spec: ClipSpec,
    options: EncodeOptions = EncodeOptions(),
    *,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Encodes ``inputs``' clips into ``out`` (see the module doc); resumes a killed run.

    Every process of a multi-process run calls this with the same arguments.

    Args:
      params, config: the model (``wfvae_jax.load_pretrained``).
      inputs: :class:`FolderInput` or :class:`TfdsInput`.
      out: output directory (created).
      spec: the clips; options: :class:`EncodeOptions`.
      checkpoint: recorded in the manifest.
    Returns:
      ``{"num_records", "num_shards", "records_written", "shards_written",
      "shards_already_done", "skipped", "skipped_counts", "wall_s", "loop_s", "first_step_s",
      "input_wait_s", "steady_input_wait_s", "device_wait_s", "clips_per_s", "steps",
      "manifest"}``. ``*_written``, ``*_done``, the times and rates are this process's;
      ``clips_per_s`` and ``steady_*`` exclude the time up to the first written batch (it
      compiles; NaN after a single step); ``input_wait_s`` is the time the loop waited for
      decoded clips, ``device_wait_s`` for results.
    Raises:
      ValueError: bad settings, ``out`` holding another encoding (without ``overwrite``), or a
        non-finite latent (e.g. float16 storage overflow).
    """
    t_begin = time.perf_counter()
    out = os.path.abspath(os.fspath(out))
    spec.check(config)
    options.check()
    dtype, storage = compute_dtype(options.dtype), fmt.storage_dtype(options.storage_dtype)
    n_proc, proc = jax.process_count(), jax.process_index()
    mesh = run_mesh(options.mesh)
    n_data = axis_size(mesh, "data")
    batch = options.batch_size or n_data
    if batch % n_data:
        raise ValueError(
            f"--batch_size {batch} must be a multiple of the mesh's data={n_data} devices"
        )
    local_batch, (h, w) = batch // n_proc, spec.resolution

    step = _make_step(config, mesh, dtype, options.t_chunk, options.store, storage)
    replicated = _replicate(params, mesh)
    shapes = jax.eval_shape(  # validates frames and t_chunk before any decoding
        step,
        replicated,
        jax.ShapeDtypeStruct((batch, spec.num_frames, h, w, 3), jnp.float32),
        jax.ShapeDtypeStruct((batch, 2), jnp.uint32),
    )
    spec_dict = _spec_dict(params, config, inputs, spec, options)
    scale, shift = scale_shift(config)
    manifest = {
        "format": fmt.FORMAT,
        "version": fmt.VERSION,
        "spec": spec_dict,
        "spec_hash": _sha256_json(spec_dict),
        "model_config": config.to_dict(),
        "checkpoint": checkpoint,
        "source_info": inputs.info(),
        "scale": scale,
        "shift": shift,
        "latent_shape": list(next(iter(shapes.values())).shape[1:]),
        "num_shards": -(-len(inputs) // options.videos_per_shard),
        "complete": False,
        "run": {
            "processes": n_proc,
            "devices": int(mesh.devices.size),
            "mesh": dict(mesh.shape),
            "batch_size": batch,
        },
    }
    finished = _prepare_output(out, manifest, options.overwrite)
    items = _work_items(inputs, manifest["num_shards"], finished, options.videos_per_shard)

    k = spec.clips_per_video
    bar = tqdm(
        total=len(items) * k,
        unit="clip",
        desc=f"encode (process {proc}/{n_proc})" if n_proc > 1 else "encode",
        disable=not options.progress or proc != 0,
        dynamic_ncols=True,
    )
    loop = _Loop(out, step, replicated, mesh, manifest["spec_hash"], options, bar)
    loop.markers.update(finished)

    def on_video(item: dict) -> None:
        if len(item["starts"]) < k:  # fewer clips than the bar assumed
            bar.total -= k - len(item["starts"])
            bar.refresh()
        loop.stats["skipped"] += bool(item["error"])

    decoded = _decoded(items, DecodeClips(inputs, spec), options.worker_count)
    empty = _Batch(
        -1,
        np.zeros((local_batch, spec.num_frames, h, w, 3), np.float32),
        np.zeros((local_batch, 2), np.uint32),
        [None] * local_batch,
    )
    t_loop = time.perf_counter()
    loop.run(_events(decoded, spec, local_batch, options.seed, on_video), empty)
    t_end = time.perf_counter()
    # grain hands worker outputs over in shared memory, freed when the arrays die: drop the
    # loader now rather than at interpreter exit (where Python reports them as leaked).
    del decoded
    gc.collect()
    bar.close()

    manifest = _final_manifest(manifest, loop.markers)
    if proc == 0:
        fmt.write_manifest(out, manifest)
    _sync("encode_dataset:done")
    stats, timing = loop.stats, loop.timing
    steady = stats["records"] - timing.get("first_records", 0)
    steady_s = t_end - timing.get("first_batch", t_end)
    return {
        "num_records": manifest["num_records"],
        "num_shards": manifest["num_shards"],
        "records_written": stats["records"],
        "shards_written": stats["shards"],
        "shards_already_done": len(finished),
        "skipped": len(manifest["skipped"]),
        "skipped_counts": manifest["skipped_counts"],
        "wall_s": time.perf_counter() - t_begin,
        "loop_s": t_end - t_loop,
        "first_step_s": timing.get("first_batch", t_end) - t_loop,
        "input_wait_s": timing["input"],
        "steady_input_wait_s": timing.get("steady_input", 0.0),
        "device_wait_s": timing["device"],
        "clips_per_s": steady / steady_s if steady > 0 and steady_s > 0 else float("nan"),
        "steps": stats["steps"],
        "manifest": os.path.join(out, fmt.MANIFEST),
    }


# ---------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wfvae_jax.encode_dataset",
        description="Encode a video dataset into WF-VAE latents (ArrayRecord shards + manifest).",
    )
    p.add_argument("--checkpoint", required=True, help="converted checkpoint (load_pretrained)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", help="folder of videos (searched recursively)")
    src.add_argument("--tfds", metavar="NAME", help="a prepared TFDS dataset (array_record)")
    p.add_argument("--tfds_split", default="train")
    p.add_argument("--tfds_data_dir", default=None)
    p.add_argument("--tfds_video_key", default="video")
    p.add_argument("--out", required=True, help="output directory (resumes if it holds a run)")
    p.add_argument(
        "--num_frames",
        type=int,
        required=True,
        help="frames per clip (1 + 4k; 1 + 8k for 8x models)",
    )
    p.add_argument("--resolution", required=True, help="R (square) or HxW, multiples of 8")
    p.add_argument("--frame_stride", type=int, default=1)
    p.add_argument("--clips_per_video", type=int, default=1, help="consecutive clips per video")
    p.add_argument("--batch_size", type=int, default=None, help="global (default: 1 per device)")
    p.add_argument("--t_chunk", type=int, default=None, help=T_CHUNK_HELP)
    p.add_argument("--dtype", default="float32", choices=tuple(COMPUTE_DTYPES))
    p.add_argument("--store", default="mean_logvar", choices=fmt.STORES)
    p.add_argument("--storage_dtype", default="float32", choices=tuple(fmt.STORAGE_DTYPES))
    p.add_argument("--seed", type=int, default=0, help="seed of --store sample")
    p.add_argument("--videos_per_shard", type=int, default=DEFAULT_VIDEOS_PER_SHARD)
    p.add_argument(
        "--worker_count",
        type=int,
        default=DEFAULT_WORKER_COUNT,
        help="grain decoding processes per host (each holds ~2 videos' clips)",
    )
    p.add_argument("--resample", default="bilinear", choices=("bilinear", "area", "bicubic"))
    p.add_argument("--overwrite", action="store_true", help="replace another encoding in --out")
    p.add_argument("--multihost", action="store_true", help="one process per host")
    add_mesh_arg(p)
    p.add_argument("--no_progress", dest="progress", action="store_false")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.multihost:
        from wfvae_jax.inference import multihost

        multihost.initialize()
    from wfvae_jax.io.checkpoint import load_pretrained

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    spec = ClipSpec(
        args.num_frames, args.resolution, args.frame_stride, args.clips_per_video, args.resample
    )
    options = EncodeOptions(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(EncodeOptions)}
    )
    options.check()
    params, config = load_pretrained(args.checkpoint, part="encoder")  # the decoder is not used
    spec.check(config)
    if args.videos is not None:
        inputs = FolderInput(args.videos)
    else:
        inputs = TfdsInput(args.tfds, args.tfds_split, args.tfds_data_dir, args.tfds_video_key)
    r = encode_dataset(params, config, inputs, args.out, spec, options, checkpoint=args.checkpoint)
    if jax.process_index() == 0:
        counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in r["skipped_counts"].items())
        shards = f"{r['num_shards']} shard" + ("s" if r["num_shards"] != 1 else "")
        print(
            f"{r['num_records']} clips in {shards} ({r['records_written']} encoded now, "
            f"{r['clips_per_s']:.2f} clips/s after the first step); skipped {r['skipped']} "
            f"videos{f' ({counts})' if counts else ''}; manifest {r['manifest']}"
        )
    return 0


if __name__ == "__main__":
    from wfvae_jax.commands.errors import run

    run(main)
