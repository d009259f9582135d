"""What a training run shows: one progress bar, short lines above it, a summary at the end.

On a terminal (stderr is a TTY) the run is one tqdm bar whose label says what it is doing
(``held-out eval``, ``compiling (first step)``, ``train``) with steps/s and the ETA once the
first steps are compiled; every ``log_every`` steps a short metric line and after every held-out
evaluation an eval line print above the bar (log records go through tqdm's
``logging_redirect_tqdm``, so they never share the bar's line). Without a terminal (CI, nohup, a
pipe) there is no bar: the same lines are plain log lines. The full metrics of every logged step
go to TensorBoard and ``WORKDIR/metrics.jsonl`` (:mod:`wfvae_jax.train.writers`), not to the
terminal. :func:`summary` is the one screen printed at the end.

The loop (:mod:`wfvae_jax.train.loop`) calls :class:`Progress`; the training command
(:mod:`wfvae_jax.commands.train`) calls :func:`configure_logging` and :func:`summary`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

COMPILING = "compiling (first step)"
EVALUATING = "held-out eval"
TRAINING = "train"
# The metrics of the short line: (metric, label); the rest is in TensorBoard and the JSON log.
SHORT_METRICS = (
    ("train/total_loss", "loss"),
    ("train/rec_loss", "rec"),
    ("train/kl_loss", "kl"),
    ("train/wl_loss", "wl"),
    ("train/disc_loss", "disc"),
)
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(message)s"
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


def interactive() -> bool:
    """Whether stderr is a terminal (a progress bar), else plain lines."""
    return sys.stderr.isatty()


class _TerminalFormatter(logging.Formatter):
    """``HH:MM:SS message`` (the level only from WARNING up): short lines above the bar."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname}: {text}"


def configure_logging(is_interactive: bool | None = None) -> None:
    """INFO log lines on stderr: ``HH:MM:SS message`` on a terminal, else ``date time LEVEL
    message``. Handlers other than ``logging``'s default one (e.g. a test's) are left alone."""
    is_interactive = interactive() if is_interactive is None else is_interactive
    if is_interactive:
        formatter = _TerminalFormatter("%(asctime)s %(message)s", datefmt="%H:%M:%S")
    else:
        formatter = logging.Formatter(PLAIN_FORMAT)
    logging.basicConfig(level=logging.INFO)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    # Importing orbax logs once, which makes `logging` install its default root handler first:
    # give that one our format too.
    for handler in root.handlers:
        if handler.formatter is None or handler.formatter._fmt == logging.BASIC_FORMAT:
            handler.setFormatter(formatter)
    logging.getLogger("absl").setLevel(logging.WARNING)


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (``?`` for NaN/inf)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def short_line(step: int, total: int, means: Mapping[str, float], rate: float, eta: float) -> str:
    """``step 20/500  loss 4026  rec 3995  kl 1.2e+03  ...  2.63 steps/s  ETA 0:03:02``."""
    parts = [f"step {step}/{total}"]
    parts += [f"{label} {means[k]:.4g}" for k, label in SHORT_METRICS if k in means]
    if math.isfinite(rate):  # NaN until the first steps after compiling are timed
        parts.append(f"{rate:.3g} steps/s")
    if math.isfinite(eta):
        parts.append(f"ETA {format_duration(eta)}")
    return "  ".join(parts)


def eval_line(step: int, results: Mapping[str, float], png: str) -> str:
    """``eval step 50: held-out PSNR 14.83 dB, SSIM 0.412 (EMA weights); raw 14.10 dB, 0.398 ->
    samples/step_0000050.png`` (the PNG relative to WORKDIR)."""
    r, nan = results, float("nan")
    shown = os.path.join(*png.split(os.sep)[-2:]) if png else ""
    return (
        f"eval step {step}: held-out PSNR {r['eval/psnr_ema']:.2f} dB, SSIM "
        f"{r.get('eval/ssim_ema', nan):.3f} (EMA weights); raw {r['eval/psnr_raw']:.2f} dB, "
        f"{r.get('eval/ssim_raw', nan):.3f} -> {shown}"
    )


class Progress:
    """The terminal view of one training call (process 0 only; a no-op where ``enabled`` is
    False).

    Args:
      total: the step the run trains to (``num_steps``).
      initial: the step it starts from (0, or the restored checkpoint's).
      enabled: False on every process but the first of a multi-host run.
      bar: a tqdm bar (True) or plain log lines (False); ``None``: :func:`interactive`.
    """

    def __init__(self, total: int, initial: int, *, enabled: bool = True, bar: bool | None = None):
        self.total, self.initial = total, initial
        self.enabled = enabled
        self.start_time = time.perf_counter()
        self.run_time: float | None = None  # when the first steps were compiled and ran
        self.run_step = initial
        self.phase = COMPILING
        self._bar: Any = None
        self._stack = contextlib.ExitStack()
        self._stop = threading.Event()
        if not enabled:
            return
        if not (interactive() if bar is None else bar):
            logger.info("%s ...", COMPILING)
        else:
            import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm.tqdm(
                total=total, initial=initial, desc=self.phase, unit="step", bar_format=BAR_FORMAT,
                dynamic_ncols=True, file=sys.stderr,
            )  # fmt: skip
            self._stack.enter_context(logging_redirect_tqdm())
            # Compiling and evaluating block the loop for minutes: keep the clock moving.
            ticker = threading.Thread(target=self._tick, name="progress-bar", daemon=True)
            ticker.start()
            self._stack.callback(ticker.join)
            self._stack.callback(self._stop.set)

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self._bar.refresh()

    def set_phase(self, phase: str) -> None:
        """Labels the bar with what the run does now (:data:`EVALUATING`, ...)."""
        self.phase = phase
        if self._bar is not None:
            self._bar.set_description_str(phase)

    def running(self, step: int) -> None:
        """The first steps of this call are compiled and done (their results are ready)."""
        self.run_time, self.run_step = time.perf_counter(), step
        if self.enabled and self._bar is None:
            logger.info("compiled; first steps done in %.0f s", self.run_time - self.start_time)
        self.set_phase(TRAINING)

    def rate(self, step: int) -> float:
        """Steps per second since :meth:`running` (evaluation and checkpoints included, so the
        ETA holds); NaN before."""
        if self.run_time is None or step <= self.run_step:
            return float("nan")
        return (step - self.run_step) / (time.perf_counter() - self.run_time)

    def update(self, step: int) -> None:
        """Moves the bar to ``step`` (steps/s and ETA once running)."""
        if self._bar is None:
            return
        self._bar.update(step - self._bar.n)
        rate = self.rate(step)
        if math.isfinite(rate):
            eta = format_duration((self.total - step) / rate)
            self._bar.set_postfix_str(f"{rate:.3g} steps/s, ETA {eta}", refresh=False)

    def metrics(self, step: int, means: Mapping[str, float], rate: float) -> None:
        """The short metric line of ``step`` (``rate``: the loop's steps/s)."""
        if not self.enabled:
            return
        wall_rate = self.rate(step)
        eta = (self.total - step) / wall_rate if wall_rate > 0 else float("nan")
        logger.info("%s", short_line(step, self.total, means, rate, eta))

    def evaluated(self, step: int, results: Mapping[str, float], png: str) -> None:
        """The eval line; the label goes back to what it was before :data:`EVALUATING`."""
        if self.enabled:
            logger.info("%s", eval_line(step, results, png))
        self.set_phase(TRAINING if self.run_time is not None else COMPILING)

    def close(self) -> None:
        """Removes the bar (idempotent); later log lines print as usual."""
        if self._bar is not None:
            self._stack.close()
            self._bar.close()
            self._bar = None


def _eval_records(history: Mapping[str, Any], workdir: str) -> list[dict]:
    """Every held-out evaluation of the run: ``WORKDIR/metrics.jsonl`` (all calls, resumes
    included), else this call's ``history["eval"]``."""
    from wfvae_jax.train.writers import METRICS_LOG

    path = os.path.join(workdir, METRICS_LOG)
    records = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill
                if "eval/psnr_ema" in record:
                    records.append(record)
    return records or list(history.get("eval", []))


def summary(history: Mapping[str, Any], workdir: str, wall_seconds: float) -> str:
    """The one screen printed when training ends: steps, wall time, the best held-out PSNR/SSIM
    (EMA weights) and its step, and where the export, the samples and the logs are.

    ``history``: :func:`wfvae_jax.train.loop.train_and_evaluate`'s result.
    """
    start, step = history.get("start", 0), history.get("step", 0)
    rate = history.get("steps_per_sec", float("nan"))
    lines = [
        f"done: step {step} ({step - start} this run) in {format_duration(wall_seconds)}"
        + (f", {rate:.3g} steps/s" if isinstance(rate, float) and math.isfinite(rate) else "")
    ]
    evals = _eval_records(history, workdir)
    if evals:
        best = max(evals, key=lambda r: r["eval/psnr_ema"])
        last = evals[-1]
        ssim = best.get("eval/ssim_ema")
        lines.append(
            f"best held-out PSNR {best['eval/psnr_ema']:.2f} dB"
            + (f", SSIM {ssim:.3f}" if ssim is not None else "")
            + f" (EMA weights) at step {best['step']}; last {last['eval/psnr_ema']:.2f} dB at "
            f"step {last['step']}"
        )
    else:
        lines.append("no held-out evaluation (eval.every_steps = 0)")
    if history.get("export"):
        export = history["export"]
        lines.append(f"export:  {export}  (wfvae reconstruct --checkpoint {export} --input VIDEO)")
    samples = history.get("samples") or []
    if samples:
        lines.append(f"samples: {os.path.dirname(samples[-1])}/  (newest {samples[-1]})")
    from wfvae_jax.train.writers import METRICS_LOG

    log = os.path.join(workdir, METRICS_LOG)
    lines.append(f"logs:    {log}; tensorboard --logdir {workdir}")
    return "\n".join(lines)
