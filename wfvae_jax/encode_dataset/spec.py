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
from wfvae_jax.inference.api import DTYPES, parse_dtype
from wfvae_jax.inference.sharding import parse_mesh
from wfvae_jax.io.clip_spec import ClipSpec
from wfvae_jax.io.frames import format_resolution
from wfvae_jax.io.frames import parse_resolution as parse_resolution_text

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
    forms are ``wfvae_jax.io.frames.parse_resolution``'s (``native`` has no fixed size here)."""
    if not isinstance(text, str):
        text = str(int(text)) if isinstance(text, (int, np.integer)) else "x".join(map(str, text))
    try:
        r = parse_resolution_text(text)
    except ValueError as e:
        raise ValueError(f"--{e}") from e
    if r is None:
        raise ValueError("--resolution native: a dataset needs one clip size (S or HxW)")
    return (r, r) if isinstance(r, int) else r


def check_clips(spec: ClipSpec, config: WFVAEConfig) -> None:
    """Raises unless ``spec`` describes dataset clips the model accepts: one size for every clip
    (a resolution, centre-cropped), consecutive clips from the first frame (see the package doc).

    Raises:
      ValueError: another crop, start or sampling, or no fixed size.
      wfvae_jax.errors.UserError: a frame count or size the model does not accept.
    """
    if spec.size is None or spec.crop != "center":
        raise ValueError(
            f"--resolution {format_resolution(spec.resolution)} with crop {spec.crop!r}: a "
            "dataset needs one clip size (S or HxW, centre-cropped)"
        )
    if spec.start or spec.sampling != "consecutive" or spec.num_frames is None:
        raise ValueError("dataset clips are consecutive clips of num_frames from frame 0")
    spec.check_model(config)


def clips_identity(spec: ClipSpec) -> dict[str, Any]:
    """The clip settings the records depend on (the manifest's ``spec.clips``)."""
    return {
        "num_frames": spec.num_frames,
        "resolution": list(spec.size),
        "frame_stride": spec.frame_stride,
        "clips_per_video": spec.clips_per_video,
        "resample": spec.resample,
        "crop": "center",
    }


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
        "clips": clips_identity(spec),
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
