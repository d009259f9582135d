"""Preemption: on SIGTERM or SIGINT, save the current step's checkpoint and exit.

Preemptible TPU and GPU machines (GCE/GKE, Slurm, Kubernetes) send SIGTERM about 30 s before
they kill the job. :class:`Preemption` turns the first SIGTERM or SIGINT into "finish this step,
save its full state (:class:`~wfvae_jax.train.checkpointing.RunCheckpoints`: params, EMA, both
optimizers, the discriminator, the data position, the RNG), print one line, exit"; a second
signal exits at once, without waiting for the save.

How the step to save is agreed on:
  * one process: the Python handler records the signal; the step that is running finishes and
    is saved;
  * several processes (``jax.distributed`` initialised): SIGTERM is left to JAX's preemption
    service (installed by ``jax.distributed.initialize``), which tells every process and picks
    the step all of them save (``multihost_utils.reached_preemption_sync_point``, called once
    per step by every process). SIGINT re-raises itself as SIGTERM so that it takes
    the same path. A process that never received the signal saves and exits with the others.

The grace period (``config.preemption_grace_s``, 25 s by default: the platforms' notice is
~30 s) bounds the time from the signal (one process; from the agreed step with several) to the
exit: if the step and its save have not finished by then, the process exits anyway and the newest
complete checkpoint stays the one a rerun resumes from (a half-written one is skipped,
:meth:`RunCheckpoints.choose_resume_step`). Python runs signal handlers between bytecodes, so the
clock starts when the main thread next runs Python code (at once, except inside a long XLA
compilation).

Exit status: 128 + the signal number (143 for SIGTERM, 130 for SIGINT), the shells' convention.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import jax
from jax.experimental import multihost_utils

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(SystemExit):
    """A job stopped after ``signal_name`` with its work saved (a training checkpoint, committed
    encode-dataset shards).

    A ``SystemExit`` with ``code`` 128 + the signal number: a command line exits with it, without
    a traceback. Attributes: ``signal_name`` (``"SIGTERM"``/``"SIGINT"``), ``message`` (the line
    printed), ``step`` and ``path`` (training: the step saved and its checkpoint directory; else
    None).
    """

    def __init__(
        self, signum: int, message: str, *, step: int | None = None, path: str | None = None
    ):
        super().__init__(128 + signum)
        self.signal_name = signal.Signals(signum).name
        self.message, self.step, self.path = message, step, path


def resume_command() -> str:
    """The command line this process was started with (rerunning it resumes)."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    argv[0] = os.path.basename(argv[0])
    return shlex.join(argv)


class Preemption:
    """Signal handling for one training run; a context manager around the run.

    Use: ``with Preemption(grace_s) as p:`` then, once per step and in every process,
    ``if p.reached(step): ...save...; p.exit(step, ckpt)``.

    Args:
      grace_s: seconds from the signal to the exit at the latest (> 0).
      multiprocess: use JAX's preemption sync point (default: ``jax.process_count() > 1``).
    """

    def __init__(self, grace_s: float, *, multiprocess: bool | None = None):
        self.grace_s = float(grace_s)
        # True: JAX's preemption sync point; False: this process's signal; None: off.
        self.multiprocess: bool | None = (
            jax.process_count() > 1 if multiprocess is None else multiprocess
        )
        self.signum: int | None = None  # the first signal, once known
        self.received_at: float | None = None
        self.step: int | None = None  # the step being saved, once agreed
        self._previous: dict[int, Any] = {}
        self._watchdog: threading.Timer | None = None
        self._stopping = False

    # ---- installing ----

    def __enter__(self) -> Preemption:
        if threading.current_thread() is not threading.main_thread():
            logger.warning("training runs outside the main thread: SIGTERM/SIGINT do not save")
            return self
        if self.multiprocess:
            if not jax.config.jax_enable_preemption_service:
                # Without it no process could tell the others: stopping one would hang the rest.
                logger.warning("jax_enable_preemption_service is off: SIGTERM/SIGINT do not save")
                self.multiprocess = None
                return self
            # SIGTERM stays with JAX's preemption notifier; SIGINT is forwarded to it.
            self._install(signal.SIGINT, self._forward_to_jax)
        else:
            for s in SIGNALS:
                self._install(s, self._on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for s, handler in self._previous.items():
            # None: a handler installed outside Python (JAX's notifier), which cannot be put back.
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        self._previous = {}

    def requested(self) -> bool:
        """Whether this process received SIGTERM or SIGINT (not agreed with other processes:
        see :meth:`reached`)."""
        return self.signum is not None

    def _install(self, signum: int, handler: Any) -> None:
        previous = signal.signal(signum, handler)
        self._previous.setdefault(signum, previous)

    # ---- handlers (run in the main thread between bytecodes) ----

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None or self._stopping:
            self._exit_now(signum)
        self.signum, self.received_at = signum, time.monotonic()
        logger.warning(
            "%s received: finishing this step, saving, then exiting (within %.0f s; a second "
            "signal exits at once)",
            signal.Signals(signum).name,
            self.grace_s,
        )
        self._start_watchdog()

    def _forward_to_jax(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None or self._stopping:
            self._exit_now(signum)
        self.signum, self.received_at = signum, time.monotonic()
        signal.raise_signal(signal.SIGTERM)  # JAX's notifier tells every process

    def _exit_now(self, signum: int) -> None:
        step = "" if self.step is None else f" while saving the checkpoint of step {self.step}"
        print(
            f"second {signal.Signals(signum).name}{step}: exiting at once; a rerun resumes from "
            f"the newest complete checkpoint with: {resume_command()}",
            file=sys.stderr,
            flush=True,
        )
        _hard_exit(128 + signum)

    def _start_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Timer(self.grace_s, self._expired)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _expired(self) -> None:
        signum = self.signum or signal.SIGTERM
        what = "the step" if self.step is None else f"the checkpoint of step {self.step}"
        print(
            f"{signal.Signals(signum).name}: {what} did not finish within the grace period of "
            f"{self.grace_s:g} s (preemption_grace_s); exiting without it. A rerun resumes from "
            f"the newest complete checkpoint with: {resume_command()}",
            file=sys.stderr,
            flush=True,
        )
        _hard_exit(128 + signum)

    # ---- the loop's two calls ----

    def reached(self, step: int) -> bool:
        """Whether to save ``step`` (the step just finished) and stop. Call once per step, in
        every process (with several processes it is a collective decision)."""
        if self.multiprocess is None:
            return False
        if self.multiprocess:
            if not multihost_utils.reached_preemption_sync_point(step):
                return False
            # Every process, signalled or not: a second signal now exits at once.
            if self.signum is None:
                self.signum = signal.SIGTERM
            if self.received_at is None:
                self.received_at = time.monotonic()
            if threading.current_thread() is threading.main_thread():
                for s in SIGNALS:
                    self._install(s, self._on_signal)
            self._start_watchdog()
        elif self.signum is None:
            return False
        self.step = step
        return True

    def exit(self, step: int, ckpt: Any) -> None:
        """Waits for the checkpoint of ``step`` (already started with ``ckpt.save``), prints one
        line and raises :class:`Preempted`.

        Raises:
          CheckpointWriteError: the save failed (from ``ckpt.wait``).
          Preempted: always, otherwise.
        """
        self._stopping = True
        ckpt.wait()
        took = time.monotonic() - (self.received_at or time.monotonic())
        path = os.path.join(ckpt.directory, str(step))
        self.stop(
            f"saved the checkpoint of step {step} ({path}) {took:.1f} s after the signal; "
            f"resume with: {resume_command()}",
            step=step,
            path=path,
        )

    def stop(self, what: str, *, step: int | None = None, path: str | None = None) -> None:
        """Prints ``"<SIGNAL>: <what>"`` (process 0; the others log it) and raises
        :class:`Preempted`; call once the work is saved."""
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        signum = self.signum or signal.SIGTERM
        message = f"{signal.Signals(signum).name}: {what}"
        if jax.process_index() == 0:
            print(message, file=sys.stderr, flush=True)
        else:
            logger.info("%s", message)
        raise Preempted(signum, message, step=step, path=path)


def _hard_exit(status: int) -> None:
    """Ends the process now: no cleanup, no waiting for threads (a save may be half-written; a
    rerun skips it)."""
    os._exit(status)
