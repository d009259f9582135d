"""Frequency analysis of video latents: subband energy, per-channel energy, lag-1 autocorrelation.

Usage (after a model exists)::

    wfvae analyze --checkpoint DIR --videos DIR --out OUT [--num_frames 65 --levels 0,2]
    python -m wfvae_jax analyze ...     # the same

writes ``OUT/latent_frequency.json`` and, per Multi-WT depth L in ``--levels``,
``OUT/energy_share_L{L}.png``, ``OUT/channel_energy_L{L}.png`` and ``OUT/lag1_L{L}.png``.

Source: LC-VAE supplementary Sec. C (Fig. 10 subband energy share, Fig. 11 per-channel energy per
subband, Eqs. 10-11 lag-1 temporal autocorrelation). The paper's exact normalisations are not in
the reference code, so the definitions used here are stated in full:

- Coefficients ``W = lc.multi_wt(z, L, scale="exact")`` (orthonormal, so energies add up to
  ``||z||^2``); band names are ``lc.band_names(L)``, L = 0 giving the 3D subbands LLL..HHH.
- Energy of band b, latent channel c: ``E[b, c] = sum W[..., b*C + c]**2`` over batch, frames and
  positions. Subband energy share ``E[b, :].sum() / E.sum()`` (Fig. 10); per-channel share
  ``E[b, c] / E.sum()`` (Fig. 11); temporal-path share sums the bands of one ``lc.temporal_path``.
- Lag-1 autocorrelation of a channel's series ``x_t`` (t = 0..T-1, pooled over batch and
  positions): the Pearson correlation of the pairs ``(x_t, x_{t+1})``,
  ``rho(1) = sum (x_t - m0)(x_{t+1} - m1) / sqrt(sum (x_t - m0)^2 * sum (x_{t+1} - m1)^2)``
  with ``m0``/``m1`` the means of ``x_0..x_{T-2}``/``x_1..x_{T-1}``. A series constant in time
  gives 1, white noise about 0, an AR(1) process with coefficient phi about phi. NaN where a
  side has (numerically) no variance or there is no pair. It is computed per band and channel
  on W and per channel on the latent itself; per video, then averaged over videos.
- Causal latents (WF-VAE, ``time_mode="causal"``): frame 0 encodes the first video frame alone,
  so it (and coefficient frame 0) is left out of rho(1), though not out of the energies. At
  L = 2 a 33-frame clip leaves one coefficient frame, so rho(1) needs 65+ frames there; L = 0
  works from 9 frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wfvae_jax import lc

# Variance below this fraction of the mean square of the whole array counts as zero (float32
# rounding leaves ~1e-14 residue in bands that are exactly zero in exact arithmetic).
_REL_ZERO_VAR = 1e-12


def band_channel_energy(coeffs: Any, latent_dim: int) -> np.ndarray:
    """Energy per (band, latent channel) of Multi-WT coefficients.

    Args:
      coeffs: ``(B, T, h, w, N)`` array (NumPy or JAX), ``N = n_bands * latent_dim``.
    Returns:
      float64 ``(n_bands, latent_dim)``: sums of squares over batch, frames and positions.
    Raises:
      ValueError: N not divisible by ``latent_dim``.
    """
    w = np.asarray(coeffs, np.float64)
    if w.ndim != 5 or w.shape[-1] % latent_dim:
        raise ValueError(f"expected (B, T, h, w, n*{latent_dim}) coefficients, got {w.shape}")
    return np.square(w).sum(axis=(0, 1, 2, 3)).reshape(-1, latent_dim)


def energy_shares(energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(band_share (n_bands,), channel_share (n_bands, C))`` of a ``(n_bands, C)`` energy table.

    Both are fractions of the total (they sum to 1); all-NaN when the total is zero.
    """
    total = float(np.sum(energy))
    if total <= 0.0:
        nan = np.full(energy.shape, np.nan)
        return nan.sum(axis=1), nan
    share = np.asarray(energy, np.float64) / total
    return share.sum(axis=1), share


def temporal_path_shares(band_share: np.ndarray, levels: int) -> dict[str, float]:
    """Sums band shares per temporal path (``lc.temporal_path``; the units LC-VAE masks act on)."""
    out: dict[str, float] = {}
    for name, s in zip(lc.band_names(levels), band_share, strict=True):
        path = lc.temporal_path(name) if levels else name[0]
        out[path] = out.get(path, 0.0) + float(s)
    return out


def lag1_autocorrelation(x: Any, skip_first: bool = False) -> np.ndarray:
    """Lag-1 temporal autocorrelation per channel (definition in the module docstring).

    Args:
      x: ``(B, T, H, W, N)`` array (latent or coefficients), any float dtype.
      skip_first: leave frame 0 out (causal latents: the image frame).
    Returns:
      float64 ``(N,)`` in [-1, 1], NaN where undefined (no pair, or no variance on a side).
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 5:
        raise ValueError(f"expected (B, T, H, W, N), got shape {x.shape}")
    scale = float(np.mean(np.square(x))) if x.size else 0.0
    if skip_first:
        x = x[:, 1:]
    n = x.shape[-1]
    if x.shape[1] < 2:
        return np.full(n, np.nan)
    a = x[:, :-1].reshape(-1, n)
    b = x[:, 1:].reshape(-1, n)
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    va, vb = np.square(a).mean(axis=0), np.square(b).mean(axis=0)
    defined = (va > _REL_ZERO_VAR * scale) & (vb > _REL_ZERO_VAR * scale)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (a * b).mean(axis=0) / np.sqrt(va * vb)
    return np.where(defined, np.clip(rho, -1.0, 1.0), np.nan)


@dataclasses.dataclass(frozen=True)
class FrequencyStats:
    """Statistics of one latent at one Multi-WT depth.

    energy: ``(n_bands, C)`` band x channel energies; lag1: ``(n_bands, C)`` rho(1) of the
    coefficients; latent_lag1: ``(C,)`` rho(1) of the latent itself.
    """

    levels: int
    latent_dim: int
    energy: np.ndarray
    lag1: np.ndarray
    latent_lag1: np.ndarray


def latent_frequency_stats(
    z: Any, levels: int = lc.DEFAULT_LEVELS, time_mode: str = "causal"
) -> FrequencyStats:
    """Energies and lag-1 autocorrelations of a latent ``(B, T, H, W, C)`` (exact-scale Multi-WT).

    Raises ValueError (from :func:`wfvae_jax.lc.multi_wt`) for a T the levels cannot split.
    """
    z = np.asarray(z, np.float32)
    coeffs = np.asarray(lc.multi_wt(z, levels, "exact", time_mode))
    c = z.shape[-1]
    causal = time_mode == "causal"
    return FrequencyStats(
        levels=levels,
        latent_dim=c,
        energy=band_channel_energy(coeffs, c),
        lag1=lag1_autocorrelation(coeffs, skip_first=causal).reshape(-1, c),
        latent_lag1=lag1_autocorrelation(z, skip_first=causal),
    )


def _nan_to_none(a: np.ndarray) -> Any:
    if np.ndim(a) == 0:
        v = float(a)
        return None if math.isnan(v) else v
    return [_nan_to_none(v) for v in a]


def _nanmean(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    finite = np.isfinite(stack)
    count = finite.sum(axis=0)
    filled = np.where(finite, stack, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / count
        var = np.where(finite, np.square(stack - mean), 0.0).sum(axis=0) / count
    return np.where(count > 0, mean, np.nan), np.where(count > 0, np.sqrt(var), np.nan)


def summarize(stats: Sequence[FrequencyStats]) -> dict[str, Any]:
    """Aggregates per-video :class:`FrequencyStats` of one depth into a JSON-ready dict.

    Energies are summed over videos before taking shares; rho(1) values are averaged over the
    videos where they are defined (``*_std``: their standard deviation). NaN -> ``None``.
    """
    if not stats:
        raise ValueError("summarize needs at least one FrequencyStats")
    levels, c = stats[0].levels, stats[0].latent_dim
    if any(s.levels != levels or s.latent_dim != c for s in stats):
        raise ValueError("all stats must share levels and latent_dim")
    bands = lc.band_names(levels)
    energy = np.sum([s.energy for s in stats], axis=0)
    band_share, channel_share = energy_shares(energy)
    lag1, lag1_std = _nanmean(np.stack([s.lag1 for s in stats]))
    llag1, llag1_std = _nanmean(np.stack([s.latent_lag1 for s in stats]))
    return {
        "levels": levels,
        "latent_dim": c,
        "num_latents": len(stats),
        "bands": list(bands),
        "total_energy": float(energy.sum()),
        "band_energy_share": dict(zip(bands, _nan_to_none(band_share), strict=True)),
        "temporal_path_energy_share": temporal_path_shares(band_share, levels),
        "channel_energy_share": dict(zip(bands, _nan_to_none(channel_share), strict=True)),
        "lag1": dict(zip(bands, _nan_to_none(lag1), strict=True)),
        "lag1_std": dict(zip(bands, _nan_to_none(lag1_std), strict=True)),
        "latent_lag1": _nan_to_none(llag1),
        "latent_lag1_std": _nan_to_none(llag1_std),
    }


# ----------------------------------------------------------------------------- plots


def _table(summary: dict[str, Any], key: str) -> np.ndarray:
    rows = [summary[key][b] for b in summary["bands"]]
    return np.array([[np.nan if v is None else v for v in r] for r in rows], np.float64)


def plot_summary(summary: dict[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Writes the energy-share bar chart and the channel-energy and rho(1) heat maps as PNG.

    Returns the written paths (``energy_share_L{L}.png``, ``channel_energy_L{L}.png``,
    ``lag1_L{L}.png``).
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lv, bands = summary["levels"], summary["bands"]
    paths = []
    wide = max(6.0, 0.28 * len(bands))

    fig = Figure(figsize=(wide, 3.6), layout="constrained")
    ax = fig.add_subplot()
    share = [summary["band_energy_share"][b] or 0.0 for b in bands]
    ax.bar(range(len(bands)), share, color="tab:blue")
    ax.set_yscale("log")
    ax.set_xticks(range(len(bands)), bands, rotation=90, fontsize=7)
    ax.set_ylabel("energy share")
    ax.set_title(f"Subband energy share (Multi-WT levels={lv}, {summary['num_latents']} latents)")
    paths.append(out_dir / f"energy_share_L{lv}.png")
    fig.savefig(paths[-1], dpi=120)

    def heat(table: np.ndarray, title: str, name: str, **kw: Any) -> None:
        fig = Figure(figsize=(4 + 0.25 * summary["latent_dim"], 1.5 + 0.18 * len(bands)))
        fig.set_layout_engine("constrained")
        ax = fig.add_subplot()
        im = ax.imshow(table, aspect="auto", interpolation="nearest", **kw)
        ax.set_yticks(range(len(bands)), bands, fontsize=7)
        ax.set_xlabel("latent channel")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax)
        paths.append(out_dir / name)
        fig.savefig(paths[-1], dpi=120)

    share = _table(summary, "channel_energy_share")
    with np.errstate(divide="ignore", invalid="ignore"):
        log_share = np.where(share > 0, np.log10(share), np.nan)
    heat(
        log_share,
        f"log10 energy share per subband and channel (levels={lv})",
        f"channel_energy_L{lv}.png",
        cmap="viridis",
    )
    heat(
        _table(summary, "lag1"),
        f"lag-1 temporal autocorrelation rho(1) (levels={lv})",
        f"lag1_L{lv}.png",
        cmap="coolwarm",
        vmin=-1.0,
        vmax=1.0,
    )
    return paths


# ----------------------------------------------------------------------------- CLI

# Flag names before the project settled on --snake_case (still accepted, with a warning).
_RENAMED_FLAGS = {
    "--num-frames": "--num_frames",
    "--frame-stride": "--frame_stride",
    "--max-videos": "--max_videos",
    "--time-mode": "--time_mode",
}


def _parse_levels(text: str) -> list[int]:
    try:
        levels = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--levels wants integers like '0,2', got {text!r}") from e
    if not levels or levels[0] < 0:
        raise argparse.ArgumentTypeError(f"--levels wants integers >= 0, got {text!r}")
    return levels


def build_parser() -> argparse.ArgumentParser:
    from wfvae_jax.commands import clip_args
    from wfvae_jax.inference.api import DTYPES, T_CHUNK_HELP

    p = argparse.ArgumentParser(
        prog="wfvae analyze",
        description="Latent frequency analysis (LC-VAE supp. Sec. C): subband energy share, "
        "per-channel energy, lag-1 temporal autocorrelation, as JSON and PNG.",
    )
    p.add_argument("--checkpoint", required=True, help="converted checkpoint dir (load_pretrained)")
    p.add_argument("--videos", required=True, help="directory searched recursively for videos")
    p.add_argument("--out", default="latent_frequency", help="output directory")
    clip_args.add_clip_args(p, num_frames=33, resolution="256", start=False)
    p.add_argument("--max_videos", type=int, default=0, help="0: all")
    p.add_argument("--levels", type=_parse_levels, default=[0, 2], help="Multi-WT depths, '0,2'")
    p.add_argument("--time_mode", choices=lc.TIME_MODES, default="causal")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="encoder compute")
    p.add_argument("--t_chunk", type=int, default=None, help=T_CHUNK_HELP)
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """CLI: encode videos with a checkpoint, write JSON + PNG statistics; returns the JSON dict.

    Raises (printed as one ``error:`` line by ``commands.errors.run``): UserError / ValueError /
    FileNotFoundError for bad flags, a missing checkpoint or videos, or clips the levels cannot
    split.
    """
    from wfvae_jax.commands.errors import rename_flags

    args = build_parser().parse_args(
        rename_flags(sys.argv[1:] if argv is None else argv, _RENAMED_FLAGS)
    )
    # The plots come last: a missing matplotlib (the eval extra) stops the run before any work.
    import matplotlib.figure  # noqa: F401

    import wfvae_jax
    from wfvae_jax.commands import clip_args
    from wfvae_jax.errors import UserError
    from wfvae_jax.io.clip_spec import DEFAULT_MULTIPLE
    from wfvae_jax.io.windows import ClipTooShortError

    # The Multi-WT halves the latent's H and W once more: sizes are multiples of twice the
    # model's spatial downsampling.
    spec = clip_args.clip_spec_from_args(args, multiple=2 * DEFAULT_MULTIPLE)
    source = clip_args.video_folder(args.videos)
    count = min(len(source), args.max_videos) if args.max_videos > 0 else len(source)
    params, cfg = wfvae_jax.load_pretrained(args.checkpoint, part="encoder")
    spec.check_model(cfg)
    per_level: dict[int, list[FrequencyStats]] = {lv: [] for lv in args.levels}
    latent_shape = None
    for i in range(count):
        try:
            x = source.read(i, spec).clips[0]
        except ClipTooShortError as e:
            raise UserError(f"{source.where(i)} is too short: {e}", hint=e.hint(cfg)) from e
        post = wfvae_jax.encode(params, x[None], cfg, dtype=args.dtype, t_chunk=args.t_chunk)
        z = np.asarray(post.mean, np.float32)
        latent_shape = list(z.shape)
        for lv in args.levels:
            per_level[lv].append(latent_frequency_stats(z, lv, args.time_mode))
        name = source.video_id(i)
        print(f"[{i + 1}/{count}] {name}: latent {tuple(z.shape)}", file=sys.stderr)

    result = {
        "checkpoint": str(args.checkpoint),
        "videos": source.paths[:count],
        **spec.to_dict(),
        "time_mode": args.time_mode,
        "latent_shape": latent_shape,
        "levels": {str(lv): summarize(per_level[lv]) for lv in args.levels},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latent_frequency.json").write_text(json.dumps(result, indent=1))
    for lv in args.levels:
        plot_summary(result["levels"][str(lv)], out)
    print(f"wrote {out / 'latent_frequency.json'} and plots", file=sys.stderr)
    return result


if __name__ == "__main__":
    from wfvae_jax.commands.errors import run

    run(main)
