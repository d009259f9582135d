"""Evaluation outputs: metrics.json, metrics.md (paper-style tables), mp4s, PNG strips, arrays.

Layout of an evaluation directory::

    metrics.json        settings, per-metric summaries (mean/std/min/max over clips), FVD,
                        skipped metrics with reasons, the Causal Cache comparison, per-clip values
    metrics.md          the same as markdown tables (paper Table 1 / Table 5 form)
    recon/NAME.mp4      reconstruction (libx264 CRF 17) at the clip's frame rate
    strips/NAME.png     8 frames per row: input | reconstruction | |error| x gain
    arrays/NAME.npz     float32 input and reconstruction(s) (only with save_arrays)
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from wfvae_jax.eval.clips import EvalClip
from wfvae_jax.io.video import abs_error_frames, save_strip_png, write_video

_ARROWS = {"psnr": "PSNR ↑", "ssim": "SSIM ↑", "lpips": "LPIPS ↓", "fvd": "FVD ↓"}


def write_clip_outputs(
    out_dir: str,
    clip: EvalClip,
    reconstruction: np.ndarray,
    visuals: bool,
    arrays: dict[str, np.ndarray] | None,
    error_gain: float,
) -> None:
    """Writes ``recon/NAME.mp4`` and ``strips/NAME.png`` (if ``visuals``) and
    ``arrays/NAME.npz`` (if ``arrays``) for one clip; ``reconstruction`` is (T, H, W, 3) in
    [-1, 1] (values outside are clipped for the files)."""
    if visuals:
        for sub in ("recon", "strips"):
            os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
        write_video(os.path.join(out_dir, "recon", f"{clip.name}.mp4"), reconstruction, clip.fps)
        save_strip_png(
            os.path.join(out_dir, "strips", f"{clip.name}.png"),
            [clip.video, reconstruction, abs_error_frames(clip.video, reconstruction, error_gain)],
            labels=["input", "recon", f"|err| x{error_gain:g}"],
        )
    if arrays is not None:
        os.makedirs(os.path.join(out_dir, "arrays"), exist_ok=True)
        np.savez(
            os.path.join(out_dir, "arrays", f"{clip.name}.npz"),
            **{k: np.asarray(v, np.float32) for k, v in arrays.items()},
        )


def _cell(summary: Any, digits: int) -> str:
    if summary is None:
        return "—"
    if isinstance(summary, dict):
        return f"{summary['mean']:.{digits}f}"
    return f"{summary:.{digits}f}"


_DIGITS = {"psnr": 2, "ssim": 4, "lpips": 4, "fvd": 2}


def format_markdown(results: dict[str, Any]) -> str:
    """The paper-style markdown report of a :func:`wfvae_jax.eval.pipeline.evaluate` result."""
    s, m, d = results["settings"], results["metrics"], results["data"]
    t, h, w, _ = s["clip_shape_thwc"]
    lines = [
        "# WF-VAE reconstruction evaluation",
        "",
        f"- model: {results['model']['source']}",
        f"- data: {d['source']} — {d['num_videos']} clips"
        + (f" ({len(d['skipped'])} skipped, see metrics.json)" if d["skipped"] else ""),
        f"- clips: {t} frames, {h}×{w}"
        + (f", frame stride {s['frame_stride']}" if "frame_stride" in s else "")
        + ", first frames, short side resized + centre crop",
        f"- inference: posterior mode, {s['dtype']}, "
        + ("direct" if not s["t_chunk"] else f"Causal Cache chunks of {s['t_chunk']} frames"),
        "- metrics on float frames clamped to [-1, 1]"
        + (", quantised to uint8" if s["quantize_uint8"] else "")
        + f"; PSNR capped at {s['psnr_cap_db']:g} dB; LPIPS: AlexNet; FVD: I3D over the whole set",
        f"- time: {results['time_s']:.1f} s on {results['platform']}",
        "",
        "| Model | Frames | Resolution | Videos | PSNR ↑ | SSIM ↑ | LPIPS ↓ | FVD ↓ |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {results['model'].get('name', 'WF-VAE')} | {t} | {h}×{w} | {d['num_videos']} | "
        + " | ".join(_cell(m.get(k), _DIGITS[k]) for k in ("psnr", "ssim", "lpips", "fvd"))
        + " |",
    ]
    for metric, reason in results["skipped_metrics"].items():
        lines.append(f"\n{_ARROWS[metric].split()[0]} not computed: {reason}")
    if "psnr" in m and m["psnr"] is not None:
        lines += [
            "",
            "Spread over clips (mean ± std):",
            "",
            "| Metric | mean | std | min | max |",
            "| --- | --- | --- | --- | --- |",
        ]
        for k in ("psnr", "ssim", "lpips"):
            if m.get(k) is not None:
                v, dg = m[k], _DIGITS[k]
                lines.append(
                    f"| {_ARROWS[k]} | {v['mean']:.{dg}f} | {v['std']:.{dg}f} | "
                    f"{v['min']:.{dg}f} | {v['max']:.{dg}f} |"
                )
    if m.get("fvd") is not None:
        lines.append(
            f"\nFVD over {d['num_videos']} clips: the estimate is biased upwards and noisy for "
            "small sets; compare only values computed over the same, large set of clips."
        )
    b = results.get("causal_cache")
    if b is not None:
        names = [k for k in ("psnr", "ssim", "lpips") if b["direct"].get(k) is not None]
        lines += [
            "",
            "## Causal Cache (chunked) vs direct inference (paper Table 5 form)",
            "",
            "| Inference | Chunk (enc / dec frames) | "
            + " | ".join(_ARROWS[k] for k in names)
            + " | max abs diff vs direct |",
            "| --- | --- | " + " | ".join("---" for _ in names) + " | --- |",
            "| direct | — | "
            + " | ".join(_cell(b["direct"][k], _DIGITS[k] + 2) for k in names)
            + " | 0 |",
            f"| Causal Cache | {b['t_chunk_encoder']} / {b['t_chunk_decoder']} (latent) | "
            + " | ".join(_cell(b["chunked"][k], _DIGITS[k] + 2) for k in names)
            + f" | {b['max_abs_diff']:.2e} |",
            "",
            f"Max abs difference of the latent means: {b['max_abs_diff_latent']:.2e}. Causal "
            "Cache is lossless: differences are float rounding only (in [-1, 1] units about "
            "1e-6 in float32, 1e-2 in bfloat16).",
        ]
    return "\n".join(lines) + "\n"


def _json_safe(x: Any) -> Any:
    """NaN/inf (e.g. from a diverged model) -> None, so metrics.json stays standard JSON."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_results(out_dir: str, results: dict[str, Any]) -> None:
    """Writes ``metrics.json`` (non-finite numbers as null) and ``metrics.md`` into ``out_dir``."""
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(_json_safe(results), f, indent=2, allow_nan=False)
    with open(os.path.join(out_dir, "metrics.md"), "w") as f:
        f.write(format_markdown(results))
