"""``wfvae convert SRC OUT_DIR``: a PyTorch WF-VAE checkpoint to a wfvae_jax EXPORT.

Usage::

    wfvae convert SRC OUT_DIR [--config CONFIG] [--t_interpolation MODE] [--no_ema] [--force]

What SRC may be and how the config is found: :mod:`wfvae_jax.io.convert`. OUT_DIR must not exist
or be empty; ``--force`` replaces an earlier conversion (an OUT_DIR that is a wfvae_jax
checkpoint). The new checkpoint is written beside OUT_DIR and moved into place when complete, so
an interrupted conversion leaves OUT_DIR as it was.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from wfvae_jax.commands.errors import run
from wfvae_jax.core.config import WFVAEConfig
from wfvae_jax.errors import UserError
from wfvae_jax.io import checkpoint
from wfvae_jax.io.convert import load_reference


def check_out_dir(out: Path, force: bool) -> None:
    """Raises unless ``out`` may receive a conversion (see the module docstring)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"OUT_DIR {out} exists and is not a directory", hint="choose another path")
    contents = sorted(p.name for p in out.iterdir())
    if not contents:
        return
    if not force:
        raise UserError(
            f"OUT_DIR {out} exists and is not empty ({', '.join(contents[:5])})",
            hint="choose another OUT_DIR, or pass --force to replace it (its config.json, "
            "including scale/shift written by latent_stats --write_config, is replaced)",
        )
    if not checkpoint.is_export_dir(out) or set(contents) - {
        checkpoint.CONFIG_NAME,
        checkpoint.EXPORT_PARAMS,
        "latent_stats.json",
    }:
        raise UserError(
            f"--force replaces only an earlier conversion (config.json + params/); "
            f"{out} holds {contents[:5]}",
            hint="choose another OUT_DIR",
        )


def write_atomically(out: Path, params: Any, config: WFVAEConfig) -> None:
    """Writes the checkpoint to a hidden directory beside ``out``, then moves it into place
    (replacing ``out``); on any failure or Ctrl-C the partial directory is removed."""
    out = out.absolute()
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        checkpoint.save_pretrained(tmp, params, config)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="wfvae convert",
        description="Convert a PyTorch WF-VAE checkpoint to a wfvae_jax checkpoint directory.",
    )
    ap.add_argument(
        "src", metavar="SRC", help="release dir, sharded/.safetensors, or training .ckpt/.pt/.bin"
    )
    ap.add_argument("dst", metavar="OUT_DIR", help="output directory (config.json + params/)")
    ap.add_argument(
        "--config",
        default=None,
        help="config.json, a named config, or 'infer' (default: the config.json beside SRC, "
        "else inferred from the weights)",
    )
    ap.add_argument(
        "--t_interpolation",
        choices=("trilinear", "nearest"),
        default=None,
        help="decoder time upsampling; not stored in weights (default: the config's, else "
        "trilinear as released)",
    )
    ap.add_argument(
        "--no_ema",
        "--no-ema",
        dest="no_ema",
        action="store_true",
        help="take state_dict.gen_model, not ema_state_dict",
    )
    ap.add_argument("--force", action="store_true", help="replace an earlier conversion in OUT_DIR")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """The command; raises the library's errors (run it through :func:`cli` for clean ones)."""
    args = build_parser().parse_args(argv)
    out = Path(args.dst)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr)

    check_out_dir(out, args.force)
    params, config = load_reference(
        args.src,
        args.config,
        use_ema=not args.no_ema,
        t_interpolation=args.t_interpolation,
        report=say,
    )
    write_atomically(out, params, config)
    n = sum(np.size(v) for v in jax.tree.leaves(params))
    say(f"converted {args.src} -> {out}: {n:,} parameters")
    return 0


def cli(argv: Sequence[str] | None = None) -> None:
    """``wfvae convert``: :func:`main` with one-line errors (exit 2), Ctrl-C 130."""
    run(main, argv, on_interrupt=lambda: "OUT_DIR was left as it was (it is written when complete)")


if __name__ == "__main__":
    cli()
