"""The training command: ``wfvae train`` / ``python train.py`` ``--config NAME --workdir DIR``.

Flags (absl / ml_collections): ``--config NAME|FILE[:ARG]`` (required: a packaged config of
:mod:`wfvae_jax.configs` or a config file), ``--workdir DIR`` (required), ``--multihost``, any
``--config.FIELD=VALUE`` override, ``--debug`` (tracebacks), ``--help`` (the flags, the packaged
configs and every config field with its default and meaning, :func:`help_text`).

The packaged configs are modules of the package, loaded by path like any config file, so the
command works from any directory and from an installed wheel. A config file of one's own may
build on them: ``from wfvae_jax.configs import default``.

What a user sees while it trains is :mod:`wfvae_jax.train.progress`: one progress bar with short
lines above it on a terminal, plain log lines otherwise, and a summary at the end.

What a user sees (:mod:`wfvae_jax.commands.errors`):
  * a config or flag mistake, an unwritable workdir, training data that changed since the
    checkpoint: one ``error:`` line and a ``hint:`` line, exit 2, before anything is built;
  * a non-finite loss or a failed checkpoint write: one ``error:`` line naming the last good
    checkpoint, exit 1;
  * SIGTERM (a preemption) or Ctrl-C during training: the current step is saved, then one line
    names it and the command that resumes (:mod:`wfvae_jax.train.preemption`), exit 143 or 130;
    a second signal exits at once;
  * Ctrl-C before the loop has installed its handlers: ``error: interrupted (Ctrl-C) at step N``
    and a hint naming the checkpoint to resume from and the command that resumes, exit 130.
"""

from __future__ import annotations

import difflib
import logging
import os
import shlex
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Any

from wfvae_jax.commands.errors import run
from wfvae_jax.errors import UserError, debug_enabled

PROG = "python train.py"
USAGE = "usage: wfvae train --config NAME|FILE --workdir DIR [--config.FIELD=VALUE ...]"
HELP = f"""{USAGE}
       [--multihost] [--debug]      (from a source checkout also: python train.py ...)

Train or fine-tune WF-VAE; rerunning the same command resumes from DIR's newest checkpoint.

flags:
  --config NAME|FILE[:ARG]  a packaged config (below) or a config file (.py with get_config())
  --config.FIELD=VALUE      override one config field, e.g. --config.data.batch_size=16
  --workdir DIR             checkpoints, logs (metrics.jsonl, TensorBoard), samples, export
  --multihost               call jax.distributed.initialize() (one process per host)
  --debug                   show the traceback of an error
  -h, --help                this help (with --config NAME: that config's values)
"""
_HELP_FLAGS = ("-h", "--help", "-help", "--helpfull")


def _config_arg(argv: Sequence[str]) -> tuple[int, str, str] | None:
    """``(index, prefix, value)`` of the ``--config`` flag in ``argv`` (``--config X`` or
    ``--config=X``; ``prefix`` is what precedes the value in ``argv[index]``), or None."""
    for i, arg in enumerate(argv):
        for flag in ("--config", "-config"):
            if arg == flag and i + 1 < len(argv):
                return i + 1, "", argv[i + 1]
            if arg.startswith(flag + "="):
                return i, flag + "=", arg[len(flag) + 1 :]
    return None


def resolve_config(value: str) -> str:
    """``--config``'s value with a packaged config's name (``demo``, ``lc_vae:16``) replaced by
    its file; an existing file (or a value naming a ``.py`` file) is kept as it is.

    Raises:
      UserError: neither a file nor a packaged config's name.
    """
    from wfvae_jax import configs

    path, colon, arg = value.partition(":")
    if os.path.exists(path) or path.endswith(".py"):
        return value  # a missing .py file: the loader names it
    if path in configs.NAMES:
        return configs.config_path(path) + colon + arg
    close = difflib.get_close_matches(path, configs.NAMES, n=1, cutoff=0.5)
    guess = f"did you mean {close[0]}? " if close else ""
    raise UserError(
        f"--config: {value!r} is neither a config file nor a packaged config",
        hint=f"{guess}packaged configs: {', '.join(configs.NAMES)}; or a path to a .py file",
    )


def _with_config_resolved(argv: Sequence[str]) -> list[str]:
    argv = list(argv)
    found = _config_arg(argv)
    if found is not None:
        i, prefix, value = found
        argv[i] = prefix + resolve_config(value)
    return argv


def help_text(argv: Sequence[str] = ()) -> str:
    """The ``--help`` screen: flags, packaged configs and every config field with its value and
    its meaning (the trailing comments of ``wfvae_jax/configs/default.py``).

    The values are the default config's, or those of the ``--config`` in ``argv`` (with its
    overrides) when it loads.
    """
    from wfvae_jax import configs

    lines = [HELP, "packaged configs (--config NAME; wfvae_jax/configs/NAME.py):"]
    for name in configs.NAMES:
        lines += textwrap.wrap(
            configs.summary(name), 100, initial_indent=f"  {name:<11}", subsequent_indent=" " * 13
        )
    argv = [a for a in argv if a not in _HELP_FLAGS]
    source = "the default config"
    config = None
    found = _config_arg(argv)
    if found is not None:
        try:
            config = parse_flags([*argv, "--workdir", "."]).config
            source = f"--config {found[2]}"
        except UserError as e:
            source = f"the default config; --config {found[2]} does not load: {e}"
    if config is None:
        from wfvae_jax.configs import default

        config = default.get_config()
    docs = configs.field_docs()
    order = {name: i for i, name in enumerate(docs)}
    fields = sorted(configs.leaves(config.to_dict()), key=lambda f: order.get(f[0], len(order)))
    width = max(len(name) for name, _ in fields) + 2
    lines += ["", f"config fields (--config.FIELD=VALUE; values of {source}):"]
    for name, value in fields:
        text = repr(value if not isinstance(value, dict) else dict(value))
        head = f"  {name:<{width}}{text:<10}"
        meaning = docs.get(name, "")
        if len(head) + 2 + len(meaning) <= 100:
            lines.append(f"{head}  {meaning}".rstrip())
        else:
            indent = " " * (width + 4)
            lines += [head.rstrip()]
            lines += textwrap.wrap(meaning, 100, initial_indent=indent, subsequent_indent=indent)
    return "\n".join(lines)


def parse_flags(argv: Sequence[str]) -> Any:
    """Parses ``argv`` (``--config NAME|FILE[:ARG]``, ``--workdir``, ``--multihost``,
    ``--config.FIELD=VALUE``) into a fresh absl ``FlagValues``: ``.config`` is the loaded
    ``ConfigDict`` with the overrides applied.

    Raises:
      UserError: a bad or missing flag, an unknown config name or field, a config file that does
        not load.
    """
    from absl import flags
    from ml_collections import config_flags

    original, argv = argv, _with_config_resolved(argv)
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "Training config: a packaged config's name or a file.", flag_values=fv,
        sys_argv=[PROG, *argv],
    )  # fmt: skip
    flags.DEFINE_string("workdir", None, "Checkpoints, logs, samples, export.", flag_values=fv)
    flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize().", flag_values=fv)
    usage = USAGE
    try:
        fv([PROG, *argv])
        if fv["config"].value is not None:
            fv.config.to_dict()  # a config file that failed to load raises here
    except (flags.Error, AttributeError, KeyError) as e:
        unknown = _unknown_override(argv)
        if unknown is not None:
            raise unknown from None
        if isinstance(e, flags.UnrecognizedFlagError):
            raise UserError(f"unknown flag --{e.flagname}", hint=usage) from None
        msg = str(e).strip()
        if isinstance(e, (AttributeError, KeyError)):
            msg = msg.strip("'\"")
        if "Traceback" in msg:  # the config file's get_config raised: keep its last line
            msg = f"--config: {msg.splitlines()[-1]}"
        raise UserError(msg.splitlines()[0], hint=usage) from None
    except ImportError as e:  # the config file imports something that is not there
        found = _config_arg(original)
        raise UserError(
            f"--config: cannot load {found[2] if found else ''!r}: {e}",
            hint="a config file imports the packaged configs as wfvae_jax.configs (e.g. "
            "from wfvae_jax.configs import default)",
        ) from None
    except OSError as e:  # the config file does not exist or does not load
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        raise UserError(
            f"--config: cannot load {fv['config'].config_filename!r}: {lines[-1]}", hint=usage
        ) from None
    for name in ("config", "workdir"):
        if fv[name].value is None:
            raise UserError(f"--{name} is required", hint=usage)
    return fv


def _unknown_override(argv: Sequence[str]) -> UserError | None:
    """A UserError for the first ``--config.FIELD`` that the default config does not define."""
    from wfvae_jax.train.config_check import default_keys

    known = default_keys()
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        name = arg.split("=", 1)[0][len("--config.") :]
        if name in known or name.startswith("model.overrides."):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        guess = f"; did you mean --config.{close[0]}?" if close else ""
        return UserError(
            f"unknown config field {name}{guess}",
            hint="wfvae train --help lists every field with its meaning",
        )
    return None


def resume_command(argv: Sequence[str]) -> str:
    """The command that resumes this run (the same one)."""
    prog = "wfvae train" if os.path.basename(sys.argv[0]).startswith("wfvae") else PROG
    return f"{prog} {shlex.join(argv)}"


def main(argv: Sequence[str]) -> int:
    """Runs training; returns the exit status (0 done, 1 stopped by a NaN or a disk fault,
    130 Ctrl-C). Raises UserError for user mistakes (``commands.errors.run`` prints them)."""
    argv = list(argv)
    if any(a in _HELP_FLAGS for a in argv):
        print(help_text(argv))
        return 0
    started = time.perf_counter()
    fv = parse_flags(argv)
    config = fv.config
    workdir = os.path.abspath(fv.workdir)
    from wfvae_jax.train import checkpointing

    checkpointing.check_writable(workdir)  # before jax starts, as well as in the loop
    import jax

    if fv.multihost:
        # Reads the coordinator address, process count and id from the cluster environment
        # (TPU pods, SLURM, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
        from wfvae_jax.inference import multihost

        multihost.initialize()
    from wfvae_jax.train import config_check

    config_check.check_config(
        config, num_devices=jax.device_count(), num_processes=jax.process_count()
    )
    # Log lines start once the config is known to be good (an error is then the only line).
    from wfvae_jax.train import progress

    progress.configure_logging()
    if config.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "xla_cache"))
    # The mesh ("data", "fsdp") and the per-process data shard are built in train_and_evaluate:
    # each process reads shard jax.process_index() of jax.process_count().
    logging.info(
        "process %d/%d, %d local / %d global devices (%s)",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices()[0].platform,
    )

    # ====== model & state | train step | checkpoint/resume | loop ======
    # wfvae_jax.train.loop.train_and_evaluate, in the same order: TrainState and AdamW
    # (state.py); jitted generator/discriminator steps sharded over the mesh (step.py, mesh.py);
    # restore DIR's newest orbax checkpoint, else config.init_from (checkpointing.py); then the
    # loop: alternate steps, log, evaluate held-out PSNR + PNG strips, checkpoint, export.
    from wfvae_jax.train.loop import NonFiniteLossError, TrainingInterrupted, train_and_evaluate

    try:
        history = train_and_evaluate(config, workdir)
    except KeyboardInterrupt as e:  # TrainingInterrupted in the loop, else while building
        if debug_enabled():
            raise
        from wfvae_jax.io import checkpoint as layout

        if isinstance(e, TrainingInterrupted):
            at, last, path = f" at step {e.step}", e.last_good, e.path
        else:
            directory = layout.checkpoints_dir(workdir)
            done = checkpointing.complete_steps(directory)
            at, last = "", done[-1] if done else None
            path = None if last is None else os.path.join(directory, str(last))
        if last is None:
            where = "no checkpoint was saved yet; rerunning starts at step 0"
        else:
            where = f"resume from the checkpoint of step {last} ({path})"
        print(
            f"error: interrupted (Ctrl-C){at}\nhint: {where} with: {resume_command(argv)}",
            file=sys.stderr,
        )
        return 130
    except (NonFiniteLossError, checkpointing.CheckpointWriteError) as e:
        if debug_enabled():
            raise
        hint = getattr(e, "hint", None)
        print(f"error: {e}" + (f"\nhint: {hint}" if hint else ""), file=sys.stderr)
        return 1
    if jax.process_index() == 0:
        text = progress.summary(history, workdir, time.perf_counter() - started)
        print(text, flush=True)
    return 0


def cli() -> None:
    """Console entry point: ``main(sys.argv[1:])`` under :func:`wfvae_jax.commands.errors.run`."""
    run(main)


if __name__ == "__main__":
    cli()
