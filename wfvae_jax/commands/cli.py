"""The ``wfvae`` command: one entry point that dispatches to each tool's ``main``.

Usage::

    wfvae convert RELEASE_DIR OUT_DIR                     # python -m wfvae_jax convert
    wfvae reconstruct --checkpoint DIR --input VIDEO ...  # python -m wfvae_jax reconstruct
    wfvae eval --checkpoint DIR --videos DIR ...          # python eval.py
    wfvae train --config configs/cpu_small.py ...         # python train.py
    wfvae latent-stats --checkpoint DIR --videos DIR # python -m wfvae_jax latent-stats
    wfvae analyze --checkpoint DIR --videos DIR           # python -m wfvae_jax analyze
    wfvae encode-dataset --checkpoint DIR --videos DIR    # python -m wfvae_jax encode-dataset
    wfvae bench causal_cache|throughput|... [ARGS]        # python benchmarks/NAME.py

``python -m wfvae_jax COMMAND ...`` is the same without the console script. Each subcommand's
module is imported only when it runs, so ``wfvae reconstruct`` needs only the
inference install (``pip install .``) and a subcommand whose optional dependencies are missing
fails, before it starts, with one ``error:`` line naming the extra to install
(:mod:`wfvae_jax.commands.extras`). Errors follow
:mod:`wfvae_jax.commands.errors` (``error:`` + ``hint:``, exit 2; ``--debug`` shows tracebacks).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from wfvae_jax.commands.errors import missing_package_error, run
from wfvae_jax.commands.extras import COMMAND_EXTRAS, check_command_extras, install_hint
from wfvae_jax.errors import DEBUG_ENV, UserError, debug_enabled

# name -> (module, function, one-line description); the pip extra each needs is in
# wfvae_jax.commands.extras.COMMAND_EXTRAS.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "convert": ("wfvae_jax.commands.convert", "main", "convert a PyTorch WF-VAE checkpoint"),
    "reconstruct": ("wfvae_jax.commands.reconstruct", "main", "encode + decode a video, PSNR/SSIM"),
    "eval": ("wfvae_jax.commands.eval", "main", "PSNR/SSIM/LPIPS/FVD over a video set"),
    "train": ("wfvae_jax.commands.cli", "train_main", "train or fine-tune (configs/*.py)"),
    "latent-stats": ("wfvae_jax.commands.latent_stats", "main", "per-channel latent shift/scale"),
    "analyze": ("wfvae_jax.commands.analyze", "main", "latent frequency analysis (LC-VAE)"),
    "encode-dataset": (
        "wfvae_jax.commands.encode_dataset",
        "main",
        "encode a video set to latents",
    ),
    "bench": ("wfvae_jax.commands.cli", "bench_main", "run a benchmark script (benchmarks/)"),
}


# What to run instead while a subcommand's module is missing from an installed version.
_FALLBACK = {
    "train": "from a source checkout: python train.py --config configs/cpu_small.py --workdir DIR",
}
# Where the training command's main will live in the package; until then `wfvae train` runs the
# checkout's train.py.
TRAIN_MODULE = "wfvae_jax.commands.train"


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: wfvae COMMAND [ARGS...]   (wfvae COMMAND --help for its options)", ""]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, _, desc) in COMMANDS.items()]
    lines += ["", "--debug (any command) shows the traceback of an error."]
    return "\n".join(lines)


def resolve(name: str) -> Callable[[Sequence[str]], Any]:
    """The ``main(argv)`` of subcommand ``name``, imported now.

    The command's pip extra (:data:`wfvae_jax.commands.extras.COMMAND_EXTRAS`) is checked
    first, so a command never starts work that a missing package would end.
    Raises:
      UserError: an unknown command, a command whose module is not in this version, or whose
        optional dependencies are not installed (the hint names the pip extra).
    """
    if name not in COMMANDS:
        close = [c for c in COMMANDS if name and c.startswith(name[:3])]
        guess = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"unknown command {name!r}", hint=f"{guess}commands: {', '.join(COMMANDS)}")
    check_command_extras(name)
    module_name, attr, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise UserError(
                f"`wfvae {name}` is not available in this version ({module_name} is missing)",
                hint=_FALLBACK.get(name, "install a newer wfvae_jax (pip install -U .)"),
            ) from e
        user = missing_package_error(e)
        hint = user.hint if user else install_hint(COMMAND_EXTRAS.get(name, "dev"))
        raise UserError(f"`wfvae {name}` needs the Python package {e.name!r}", hint=hint) from e
    return getattr(module, attr)


def _checkout_path(name: str) -> str | None:
    """``name`` in the source checkout this package runs from (``pip install -e .`` or the
    repository root on ``sys.path``), if it exists."""
    import wfvae_jax

    root = os.path.dirname(os.path.dirname(os.path.abspath(wfvae_jax.__file__)))
    path = os.path.join(root, name)
    return path if os.path.exists(path) else None


def _benchmarks_dir() -> str | None:
    path = _checkout_path("benchmarks")
    return path if path and os.path.isdir(path) else None


def _run_script(script: str, argv: Sequence[str]) -> int:
    env = dict(os.environ, **({DEBUG_ENV: "1"} if debug_enabled() else {}))
    return subprocess.call([sys.executable, script, *argv], env=env)


def train_main(argv: Sequence[str]) -> Any:
    """``wfvae train ARGS``: the package's training command (:data:`TRAIN_MODULE`), or the source
    checkout's ``train.py ARGS`` (absl flags: ``--config configs/X.py --workdir DIR``).

    Raises:
      UserError: neither is there (an installed wheel without the training command).
    """
    try:
        module = importlib.import_module(TRAIN_MODULE)
    except ModuleNotFoundError as e:
        if e.name is None or not TRAIN_MODULE.startswith(e.name):
            raise
        script = _checkout_path("train.py")
        if script is None:
            raise UserError(
                "`wfvae train` is not available in this version (no commands.train, and no "
                "source checkout with train.py)",
                hint=_FALLBACK["train"],
            ) from e
        return _run_script(script, argv)
    return module.main(argv)


def bench_main(argv: Sequence[str]) -> int:
    """``wfvae bench NAME [ARGS]``: runs ``benchmarks/NAME.py ARGS`` of the source checkout.

    The benchmark scripts start fresh child processes of themselves (one per configuration), so
    they run as scripts, not imported. Returns the script's exit status.
    Raises:
      UserError: no source checkout (installed from a wheel), or an unknown benchmark name.
    """
    bench_dir = _benchmarks_dir()
    if bench_dir is None:
        raise UserError(
            "the benchmarks are scripts in the source repository, not part of the package",
            hint="from a checkout: python benchmarks/causal_cache.py --quick",
        )
    names = sorted(
        f[:-3] for f in os.listdir(bench_dir) if f.endswith(".py") and not f.startswith("_")
    )
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: wfvae bench NAME [ARGS]  (NAME --help for its options)\n\nNAME: {names}")
        return 0 if argv else 2
    name = argv[0].removesuffix(".py")
    if name not in names:
        raise UserError(f"no benchmark {name!r} in {bench_dir}", hint=f"one of: {', '.join(names)}")
    return _run_script(os.path.join(bench_dir, name + ".py"), argv[1:])


def dispatch(argv: Sequence[str]) -> Any:
    """Runs ``wfvae ARGV``; returns the subcommand's result (its exit status or None)."""
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    fn = resolve(name)
    # Subcommands are `prog` to their own argparse help/errors; restored after, so an
    # in-process caller (tests, notebooks) keeps its own argv.
    saved, sys.argv = sys.argv, [f"wfvae {name}", *rest]
    try:
        return fn(rest)
    finally:
        sys.argv = saved


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``wfvae``); exits with the subcommand's status (2 on a user error)."""
    run(dispatch, argv)


if __name__ == "__main__":
    main()
