"""What an encoding depends on: the clips (:class:`ClipSpec`), the settings
(:class:`EncodeOptions`), the model's parameters; :func:`spec_dict` gathers them for the manifest,
whose hash decides whether an output directory holds the same encoding."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.data import latents as fmt
from wfvae_jax.data.sources import window_span
from wfvae_jax.inference.api import DTYPES, parse_dtype
from wfvae_jax.inference.sharding import parse_mesh
from wfvae_jax.io.frames import parse_resolution as video_io_parse_resolution

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


def sha256_json(obj: Any) -> str:
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


def spec_dict(params, config, inputs, spec: ClipSpec, options: EncodeOptions) -> dict:
    """Everything the records depend on (``scale``/``shift`` do not: they are applied on read)."""
    arch = {k: v for k, v in config.to_dict().items() if k not in ("scale", "shift")}
    return {
        "model": {
            "config": arch,
            "config_hash": sha256_json(arch),
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
