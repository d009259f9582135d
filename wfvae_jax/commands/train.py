"""The training command: ``python train.py`` / ``wfvae train`` ``--config FILE --workdir DIR``.

Flags (absl / ml_collections): ``--config configs/X.py[:ARG]`` (required), ``--workdir DIR``
(required), ``--multihost``, any ``--config.FIELD=VALUE`` override, ``--debug`` (tracebacks).

What a user sees (:mod:`wfvae_jax.commands.errors`):
  * a config or flag mistake, an unwritable workdir, training data that changed since the
    checkpoint: one ``error:`` line and a ``hint:`` line, exit 2, before anything is built;
  * a non-finite loss or a failed checkpoint write: one ``error:`` line naming the last good
    checkpoint, exit 1;
  * Ctrl-C: ``error: interrupted (Ctrl-C) at step N`` and a hint naming the checkpoint to resume
    from and the command that resumes, exit 130.
"""

from __future__ import annotations

import difflib
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from wfvae_jax.commands.errors import run
from wfvae_jax.errors import UserError, debug_enabled

PROG = "python train.py"
USAGE = "usage: wfvae train --config configs/X.py --workdir DIR [--config.FIELD=VALUE ...]"
HELP = f"""{USAGE} [--multihost] [--debug]
       (from a source checkout also: python train.py ...)

Train or fine-tune WF-VAE; rerunning the same command resumes from DIR's newest checkpoint.

  --config FILE[:ARG]     training config (configs/*.py); every field and its meaning is in
                          configs/default.py
  --config.FIELD=VALUE    override one config field, e.g. --config.data.batch_size=16
  --workdir DIR           checkpoints, logs, samples and the final export
  --multihost             call jax.distributed.initialize() (one process per host)
  --debug                 show the traceback of an error
"""


def _flags(argv: Sequence[str]) -> Any:
    """Parses ``argv`` into a fresh absl ``FlagValues``; raises UserError for a bad flag."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "Training config file (configs/*.py).", flag_values=fv,
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
    """A UserError for the first ``--config.FIELD`` that configs/default.py does not define."""
    from wfvae_jax.train.config_check import default_keys

    known = default_keys()
    if known is None:
        return None
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
            hint="every field is listed, with its meaning, in configs/default.py",
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
    if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv):
        print(HELP)
        return 0
    fv = _flags(argv)
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
    fmt = "%(asctime)s %(levelname)s %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt)
    # Importing orbax logs once, which makes `logging` install a default root handler first:
    # give that one our format too (other handlers, e.g. a test's, are left alone).
    logging.getLogger().setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        if handler.formatter is not None and handler.formatter._fmt == logging.BASIC_FORMAT:
            handler.setFormatter(logging.Formatter(fmt))
    logging.getLogger("absl").setLevel(logging.WARNING)
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
    if history["eval"]:
        first, last = history["eval"][0], history["eval"][-1]
        logging.info(
            "held-out PSNR (EMA): %.2f dB at step %d -> %.2f dB at step %d",
            first["eval/psnr_ema"],
            first["step"],
            last["eval/psnr_ema"],
            last["step"],
        )
    return 0


def cli() -> None:
    """Console entry point: ``main(sys.argv[1:])`` under :func:`wfvae_jax.commands.errors.run`."""
    run(main)


if __name__ == "__main__":
    cli()
