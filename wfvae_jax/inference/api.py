"""Functional inference API: ``encode(params, video, config)`` and ``decode(params, z, config)``.

Both are jit-compiled per (config, dtype, shape), run in float32 or bfloat16 (parameters stay
float32 and are cast per layer; norms and softmax compute in float32), and validate their input.
Causal Cache chunked inference (``inference.causal_cache``) gives the same result on bounded
memory; by default (``t_chunk=None``) a long clip is chunked on its own (:func:`auto_t_chunk`, the
one rule), ``t_chunk=0`` forces direct inference. :func:`reconstruct` (encode, posterior mode,
decode) is the one reconstruction the tools share (``wfvae reconstruct``, ``eval.py``, training
samples); :func:`parse_dtype` the one reading of a dtype name; :func:`lower_encode` /
:func:`lower_decode` AOT-lower exactly what ``encode`` / ``decode`` run (benchmarks: compile
time, XLA memory).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wfvae_jax.core import compile_options
from wfvae_jax.core.config import WFVAEConfig, nearest_valid_num_frames  # noqa: F401 (re-export)
from wfvae_jax.core.model import WFVAE
from wfvae_jax.core.posterior import DiagonalGaussian
from wfvae_jax.inference import sharding

Params = Any

# Video values beyond [-1, 1] by more than this are an input error (0-255 frames, say); the slack
# admits rounding in the caller's resizing and dtype casts.
VIDEO_RANGE_TOL = 1e-2
_UINT8_HINT = "for uint8 / 0-255 frames use x / 127.5 - 1 (wfvae_jax.io.video.to_float)"
# A 4-D input is one clip without its batch axis; under jax.vmap every mapped clip is one.
_BATCH_HINT = (
    "add a batch axis: {x}[None]; under jax.vmap over clips, call it on {x}[None] and take "
    "[0] of the result"
)


def _value_stats(x: Any) -> tuple[bool, float, float] | None:
    """(all finite, min, max) of a concrete array, on its device; None under jit or if empty."""
    if isinstance(x, jax.core.Tracer) or np.size(x) == 0:
        return None  # under jit values are unknown; callers validate before tracing
    xp = jnp if isinstance(x, jax.Array) else np  # a device array is reduced where it lives
    a = xp.asarray(x, xp.float32)
    if not bool(xp.isfinite(a).all()):
        return False, float("nan"), float("nan")
    return True, float(a.min()), float(a.max())


# Compute dtypes by name (command-line flags, configs); parse_dtype is the one reader.
DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_DTYPE_ALIASES = {"fp32": "float32", "f32": "float32", "bf16": "bfloat16"}


def parse_dtype(dtype: Any) -> Any:
    """A compute dtype from a name (``"float32"``, ``"bfloat16"``; also ``fp32``/``bf16``) or a
    dtype (``jnp.float32``, ``np.dtype("float32")``, ...) -> ``jnp.float32`` or ``jnp.bfloat16``.

    Raises:
      ValueError: any other dtype or name (the message lists the names).
    """
    name = _DTYPE_ALIASES.get(dtype, dtype) if isinstance(dtype, str) else None
    if name is None:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = repr(dtype)
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    return DTYPES[name]


def check_params_part(params: Params, part: str) -> None:
    """Raises ValueError unless ``params`` hold the ``part`` (``"encoder"`` or ``"decoder"``)
    that the call needs: ``load_pretrained(path, part=...)`` may have loaded only the other."""
    if not isinstance(params, Mapping) or part in params:
        return
    other = {"encoder": "decoder", "decoder": "encoder"}[part]
    held = f"only the {other}" if set(params) == {other} else f"no {part} (keys {sorted(params)})"
    raise ValueError(
        f"these params hold {held}; load with part=None or part={part!r} "
        "(wfvae_jax.load_pretrained)"
    )


def _check_finite(x: Any, what: str) -> None:
    stats = _value_stats(x)
    if stats is not None and not stats[0]:
        raise ValueError(f"{what} contains NaN or Inf values")


def validate_video(video: Any, config: WFVAEConfig | None = None) -> None:
    """Checks a video batch for :func:`encode`.

    Expects ``(B, T, H, W, 3)`` channels-last, ``T = 1 + d k`` (``d = config.temporal_downsample``,
    4 or 8), ``H`` and ``W`` divisible by ``config.spatial_downsample`` (8), a float dtype,
    finite values in [-1, 1] (to within ``VIDEO_RANGE_TOL``). Values are checked only for
    concrete arrays (not under ``jax.jit``).
    Raises:
      ValueError: naming the problem; for a bad T, the nearest valid T; for an integer dtype
        (uint8 frames) or values outside [-1, 1], the conversion ``x / 127.5 - 1``. Never
        truncates or clips.
    """
    shape = tuple(np.shape(video))
    if len(shape) != 5:
        hint = f" ({_BATCH_HINT.format(x='video')})" if len(shape) == 4 else ""
        raise ValueError(f"video must be (B, T, H, W, 3) channels-last, got shape {shape}{hint}")
    b, t, h, w, c = shape
    if c != 3:
        hint = " (channels-first input? move axis 1 to the end)" if shape[1] == 3 else ""
        raise ValueError(f"video must have 3 channels (RGB) last, got {c}{hint}; shape {shape}")
    config = config or WFVAEConfig()
    config.check_num_frames(t)
    s = config.spatial_downsample
    if h % s or w % s or h == 0 or w == 0:
        raise ValueError(f"H and W must be positive multiples of {s}, got H={h}, W={w}")
    dtype = getattr(video, "dtype", None)
    dtype = np.asarray(video).dtype if dtype is None else dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"video must be a float array with values in [-1, 1], got dtype {dtype}; {_UINT8_HINT}"
        )
    stats = _value_stats(video)
    if stats is None:
        return
    finite, lo, hi = stats
    if not finite:
        raise ValueError("video contains NaN or Inf values")
    if lo < -1 - VIDEO_RANGE_TOL or hi > 1 + VIDEO_RANGE_TOL:
        raise ValueError(
            f"video values must be in [-1, 1], got min {lo:.4g}, max {hi:.4g}; {_UINT8_HINT}"
        )


def validate_latent(z: Any, config: WFVAEConfig) -> None:
    """Checks a latent ``(B, t, h, w, latent_dim)`` for :func:`decode`; raises ValueError."""
    shape = tuple(np.shape(z))
    if len(shape) != 5:
        hint = f" ({_BATCH_HINT.format(x='z')})" if len(shape) == 4 else ""
        raise ValueError(
            f"latent must be (B, t, h, w, {config.latent_dim}), got shape {shape}{hint}"
        )
    if shape[-1] != config.latent_dim:
        raise ValueError(
            f"latent has {shape[-1]} channels but the config's latent_dim is {config.latent_dim}"
        )
    _check_finite(z, "latent")


# Auto chunking budget: video pixels (frames x H x W) per Causal Cache chunk, i.e. 16 frames at
# 256x256, 64 at 128x128, 4 at 512x512. Peak memory grows with the chunk and time per frame falls
# with it; on WF-VAE-S (CPU, fp32) 16 frames of 256x256 is about 1.5 GiB of decoder activations.
AUTO_CHUNK_PIXELS = 16 * 256 * 256


# The --t_chunk help of every command that has the flag.
T_CHUNK_HELP = (
    "Causal Cache chunk in video frames (a multiple of the model's temporal downsampling, 4 or "
    "8); 0 = direct (the whole clip at once); default: auto, chunks of about 16 frames at "
    "256x256 (64 at 128x128, 4 at 512x512) when the clip is longer (wfvae_jax.auto_t_chunk)"
)


def auto_t_chunk(config: WFVAEConfig, num_frames: int, height: int, width: int) -> int:
    """The Causal Cache chunk :func:`encode` / :func:`decode` / :func:`reconstruct` use by default.

    The one rule (static: shapes and config only, never values or the device): a chunk holds
    ``m`` latent frames, ``m = max(1, AUTO_CHUNK_PIXELS // (height * width * d))`` with
    ``d = config.temporal_downsample``, i.e. ``d m`` video frames, about ``AUTO_CHUNK_PIXELS``
    video pixels (at least one latent frame). A clip that fits in its first frame plus one chunk
    (``num_frames - 1 <= d m``), and every ``norm_type="groupnorm"`` model (not exact in chunks),
    runs direct. The rule is per clip: the batch size and a ``mesh`` (which splits the height
    over devices, so each holds less) do not change it.

    Args:
      config: the model's config.
      num_frames: video frames ``T = 1 + d k`` (for :func:`decode`: ``config.video_frames(t)``).
      height, width: video frame size in pixels (for :func:`decode`: 8 times the latent's).
    Returns:
      the encoder chunk in video frames (a multiple of ``d``; the decoder's is
      ``config.latent_chunk`` of it, i.e. ``m`` latent frames), or 0 for direct inference.
    Raises:
      ValueError: ``num_frames`` not ``1 + d k``, or a non-positive height or width.
    """
    config.check_num_frames(num_frames)
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    if config.norm_type == "groupnorm":
        return 0
    d = config.temporal_downsample
    chunk = d * max(1, AUTO_CHUNK_PIXELS // (height * width * d))
    return 0 if num_frames - 1 <= chunk else chunk


def _resolve_chunk(t_chunk: int | None, auto: Any, return_taps: bool) -> int | None:
    """``t_chunk`` as the runners take it: None = direct, else a chunk (checked by them)."""
    if t_chunk is None:
        return None if return_taps else (auto() or None)
    if isinstance(t_chunk, bool) or not isinstance(t_chunk, (int, np.integer)) or t_chunk < 0:
        raise ValueError(
            f"t_chunk must be None (auto), 0 (direct) or a chunk size, got {t_chunk!r}"
        )
    if t_chunk and return_taps:
        raise ValueError("return_taps is only available with direct inference (t_chunk=0)")
    return int(t_chunk) or None


def _auto_encode_chunk(video: Any, config: WFVAEConfig) -> Any:
    _, t, h, w, _ = getattr(video, "shape", None) or np.shape(video)
    return lambda: auto_t_chunk(config, t, h, w)


def _auto_decode_chunk(z: Any, config: WFVAEConfig) -> Any:
    _, t, h, w, _ = getattr(z, "shape", None) or np.shape(z)
    s = config.spatial_downsample

    def chunk() -> int:
        if min(t, h, w) < 1:
            return 0  # an empty latent: nothing to chunk
        c = auto_t_chunk(config, config.video_frames(t), s * h, s * w)
        return config.latent_chunk(c) if c else 0

    return chunk


@compile_options.jit(
    static_argnames=("config", "dtype", "mesh"), cpu_extra=compile_options.CPU_MEMORY_SCHEDULER
)
def _encode(params: Params, video: jnp.ndarray, config: WFVAEConfig, dtype: Any, mesh=None):
    with sharding.constrain(mesh):
        post, taps, _ = WFVAE(config, dtype).apply({"params": params}, video, method=WFVAE.encode)
    return post, taps


@compile_options.jit(static_argnames=("config", "dtype", "mesh"))
def _decode(params: Params, z: jnp.ndarray, config: WFVAEConfig, dtype: Any, mesh=None):
    with sharding.constrain(mesh):
        dec, taps, _ = WFVAE(config, dtype).apply({"params": params}, z, method=WFVAE.decode)
    return dec, taps


def encode(
    params: Params,
    video: jnp.ndarray,
    config: WFVAEConfig,
    *,
    dtype: Any = jnp.float32,
    t_chunk: int | None = None,
    return_taps: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> DiagonalGaussian | tuple[DiagonalGaussian, tuple[jnp.ndarray, jnp.ndarray]]:
    """Encodes a video to the posterior ``q(z | x)``.

    Composes with ``jax.jit``, ``jax.grad`` and ``jax.vmap`` (each mapped clip is a batch of
    one: ``encode(params, clip[None], config)``); docs/diffusion.md shows each.

    Args:
      params: the ``params`` pytree (``load_pretrained`` or ``init_params``); the encoder
        half suffices (``load_pretrained(path, part="encoder")``).
      video: ``(B, T, H, W, 3)`` float, values in [-1, 1] (see :func:`validate_video`),
        ``T = 1 + d k`` with ``d = config.temporal_downsample`` (4, or 8 for the 8x8x8 variant),
        H and W multiples of 8.
      config: the model's :class:`WFVAEConfig`.
      dtype: compute dtype, ``jnp.float32`` or ``jnp.bfloat16`` (or its name, see
        :func:`parse_dtype`).
      t_chunk: video frames per Causal Cache chunk (a multiple of ``d``) for bounded memory;
        ``0`` encodes the whole clip at once; ``None`` (default) chooses by
        :func:`auto_t_chunk` (direct for short clips). All give the same result (layernorm
        models; to float rounding, ~1e-6).
      return_taps: also return the encoder's ``(W2, W3)`` coefficients; implies direct
        inference (an error with ``t_chunk > 0``).
      mesh: a ``jax.sharding.Mesh`` with axes ``"data"`` (batch) and/or ``"space"`` (height):
        the video, every activation and the result are split over it (``inference.sharding``);
        same result as one device. ``None``: the default device.
    Returns:
      :class:`DiagonalGaussian` with ``mean``/``logvar`` ``(B, 1 + k, H/8, W/8, latent_dim)``
      (dtype ``dtype``); with ``return_taps``, ``(posterior, (W2, W3))``.
    Raises:
      ValueError: params without the encoder (:func:`check_params_part`), bad shape, frame
        count, spatial size, dtype (uint8), non-finite values or values outside [-1, 1], or
        bad ``t_chunk``; with ``mesh``: B not divisible by
        ``data``, H not by ``8 * space``, unknown axis names.
    Source: reference ``WFVAEModel.encode``.
    """
    check_params_part(params, "encoder")
    validate_video(video, config)
    dtype = parse_dtype(dtype)
    t_chunk = _resolve_chunk(t_chunk, _auto_encode_chunk(video, config), return_taps)
    if mesh is not None:
        mesh, params, video = sharding.place(
            params, video, mesh, "video", config.spatial_downsample
        )
    if t_chunk is not None:
        from wfvae_jax.inference.causal_cache import encode_chunked

        return encode_chunked(params, video, config, t_chunk, dtype=dtype, mesh=mesh)
    post, taps = _encode(params, jnp.asarray(video), config, dtype, mesh)
    return (post, taps) if return_taps else post


def decode(
    params: Params,
    z: jnp.ndarray,
    config: WFVAEConfig,
    *,
    dtype: Any = jnp.float32,
    t_chunk: int | None = None,
    return_taps: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> jnp.ndarray | tuple[jnp.ndarray, tuple[jnp.ndarray, jnp.ndarray]]:
    """Decodes a latent to video.

    Composes with ``jax.jit``, ``jax.grad`` (direct and chunked) and ``jax.vmap`` (each mapped
    latent is a batch of one: ``decode(params, z[None], config)[0]``); see docs/diffusion.md.

    Args:
      params: as for :func:`encode`; the decoder half suffices
        (``load_pretrained(path, part="decoder")``).
      z: ``(B, t, h, w, latent_dim)`` latent (e.g. ``posterior.mode()``).
      t_chunk: latent frames per Causal Cache chunk (>= 1); ``0``: direct decoding; ``None``
        (default): :func:`auto_t_chunk` (``config.latent_chunk`` of its video-frame chunk for
        the decoded clip; direct for short clips).
      return_taps: also return the decoder's ``(W2^, W3^)`` coefficients for the WL loss;
        implies direct decoding (an error with ``t_chunk > 0``).
      mesh: as for :func:`encode`; the latent's h must be divisible by the ``"space"`` size.
    Returns:
      ``(B, d(t - 1) + 1, 8h, 8w, 3)`` (``d = config.temporal_downsample``) in ``dtype``
      (nominally [-1, 1], not clipped); with
      ``return_taps``, ``(video, (W2^, W3^))``.
    Raises:
      ValueError: params without the decoder (:func:`check_params_part`), wrong rank or
        channel count, non-finite values, bad ``t_chunk``; with
        ``mesh``: B not divisible by ``data``, h not by ``space``, unknown axis names.
    Source: reference ``WFVAEModel.decode``.
    """
    check_params_part(params, "decoder")
    validate_latent(z, config)
    dtype = parse_dtype(dtype)
    t_chunk = _resolve_chunk(t_chunk, _auto_decode_chunk(z, config), return_taps)
    if mesh is not None:
        mesh, params, z = sharding.place(params, z, mesh, "latent", 1)
    if t_chunk is not None:
        from wfvae_jax.inference.causal_cache import decode_chunked

        return decode_chunked(params, z, config, t_chunk, dtype=dtype, mesh=mesh)
    dec, taps = _decode(params, jnp.asarray(z), config, dtype, mesh)
    return (dec, taps) if return_taps else dec


def reconstruct(
    params: Params,
    video: Any,
    config: WFVAEConfig,
    *,
    t_chunk: int | None = None,
    dtype: Any = jnp.float32,
    lc: Any = None,
    return_latent: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
    """Encode, take the posterior mode, decode: the reconstruction the tools report.

    Works eagerly and under ``jax.jit`` (training samples jit it with their shardings).
    Args:
      video: ``(B, T, H, W, 3)`` float in [-1, 1], ``T = 1 + k * config.temporal_downsample``,
        H and W multiples of 8.
      t_chunk: Causal Cache chunk in video frames (encoder); the decoder gets
        ``config.latent_chunk(t_chunk)`` latent frames per chunk. ``0``: direct inference;
        ``None`` (default): :func:`auto_t_chunk` for both (direct for short clips).
      dtype: compute dtype (see :func:`parse_dtype`).
      lc: LC-VAE settings (``wfvae_jax.lc.LCSettings``) or ``None``: the latent is compressed
        (Multi-WT, mask, inverse) before decoding, as ``LCVAE``'s forward pass does.
      return_latent: also return the posterior mode (before any LC compression).
      mesh: split the batch over ``"data"`` and height over ``"space"`` (see :func:`encode`).
    Returns:
      the reconstruction ``(B, T, H, W, 3)`` float32 (not clipped); with ``return_latent``,
      ``(reconstruction, z)`` with ``z`` ``(B, 1 + k, H/8, W/8, latent_dim)`` float32.
    Raises:
      ValueError: as :func:`encode` / :func:`decode` (params need both halves), or LC settings
        the latent cannot take.
    Source: the reference's ``scripts/recon_video.py`` (encode, ``.mode()``, decode).
    """
    check_params_part(params, "decoder")  # before the encode, not after it
    dtype = parse_dtype(dtype)
    z = encode(params, video, config, dtype=dtype, t_chunk=t_chunk, mesh=mesh).mode()
    zc = z if lc is None else lc.compress(z)
    dec_chunk = t_chunk and config.latent_chunk(t_chunk)  # None: auto, 0: direct
    y = decode(params, zc, config, dtype=dtype, t_chunk=dec_chunk, mesh=mesh)
    y = y.astype(jnp.float32)
    return (y, z.astype(jnp.float32)) if return_latent else y


def _stand_in(x: Any) -> Any:
    """``x``, or for a ``jax.ShapeDtypeStruct`` a zero view of its shape (no memory) to validate."""
    if isinstance(x, jax.ShapeDtypeStruct):
        return np.broadcast_to(np.zeros((), np.float32), x.shape)
    return x


def lower_encode(
    params: Params,
    video: Any,
    config: WFVAEConfig,
    *,
    dtype: Any = jnp.float32,
    t_chunk: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> jax.stages.Lowered:
    """AOT lowering of the computation :func:`encode` runs for these arguments (same checks).

    ``.compile()`` it for compile time and ``memory_analysis()`` (per device with ``mesh``);
    ``video`` and the params may be ``jax.ShapeDtypeStruct``. ``t_chunk`` as for :func:`encode`
    (``None``: :func:`auto_t_chunk`, ``0``: direct).
    """
    check_params_part(params, "encoder")
    validate_video(_stand_in(video), config)
    dtype = parse_dtype(dtype)
    t_chunk = _resolve_chunk(t_chunk, _auto_encode_chunk(video, config), False)
    if mesh is not None:
        mesh, params, video = sharding.place(
            params, video, mesh, "video", config.spatial_downsample
        )
    if t_chunk is None:
        return _encode.lower(params, video, config, dtype, mesh)
    from wfvae_jax.inference.causal_cache import lower_encode_chunked

    return lower_encode_chunked(params, video, config, t_chunk, dtype, mesh)


def lower_decode(
    params: Params,
    z: Any,
    config: WFVAEConfig,
    *,
    dtype: Any = jnp.float32,
    t_chunk: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> jax.stages.Lowered:
    """AOT lowering of the computation :func:`decode` runs for these arguments (same checks;
    ``t_chunk`` as for :func:`decode`)."""
    check_params_part(params, "decoder")
    validate_latent(_stand_in(z), config)
    dtype = parse_dtype(dtype)
    t_chunk = _resolve_chunk(t_chunk, _auto_decode_chunk(z, config), False)
    if mesh is not None:
        mesh, params, z = sharding.place(params, z, mesh, "latent", 1)
    if t_chunk is None:
        return _decode.lower(params, z, config, dtype, mesh)
    from wfvae_jax.inference.causal_cache import lower_decode_chunked

    return lower_decode_chunked(params, z, config, t_chunk, dtype, mesh)
