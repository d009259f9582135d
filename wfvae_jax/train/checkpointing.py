"""Training checkpoints: an orbax ``CheckpointManager`` over ``WORKDIR/checkpoints``.

The layout's names live in :mod:`wfvae_jax.io.checkpoint` (the one owner of on-disk layouts), which
also reads these checkpoints for evaluation (``load_train_checkpoint``).

Each checkpoint ``WORKDIR/checkpoints/<step>/`` holds three items:
  ``state/``  the whole :class:`~wfvae_jax.train.state.TrainState` (params, EMA params, both
              AdamW states, discriminator params and BatchNorm statistics, step, rng), saved from
              its (possibly sharded) arrays and restored straight into the target shardings;
  ``data/``   every process's grain iterator state (``process_<i>-of-<n>.json``), so a resumed
              run continues the same data order;
  ``meta/``   JSON: the step, the run's config (for humans and for ``init_from``) and the
              data manifest (``"data"``: the sorted training files with their frame counts, the
              data seed and ``worker_count``), which a resumed run compares with the folder as it
              is now (``wfvae_jax.train.loop``).
Stage II/III initialisation from an earlier run reads ``state`` only (:func:`load_generator`).

Disk faults. :func:`check_writable` probes the workdir before anything is built. A checkpoint
write that fails (ENOSPC, EIO, permissions; orbax writes in background threads, so the failure
surfaces at the next save or wait) raises :class:`CheckpointWriteError` naming the step, the path
and the last good checkpoint, after letting orbax's remaining threads finish, so the process ends
without their shutdown tracebacks. Orbax's own ERROR log records (one per failed thread, with a
traceback each) are held back while :class:`RunCheckpoints` is open, unless ``--debug`` /
``WFVAE_DEBUG=1``; the error raised carries the cause.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
import threading
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from wfvae_jax.errors import UserError, debug_enabled
from wfvae_jax.io import checkpoint as layout
from wfvae_jax.io.torch_files import is_torch_file
from wfvae_jax.train.state import TrainState

logger = logging.getLogger(__name__)


class CheckpointWriteError(RuntimeError):
    """Writing a checkpoint failed (disk full, I/O error, permissions); training stopped.

    Attributes: ``step`` (the checkpoint that failed), ``path`` (its directory), ``last_good``
    (the newest complete checkpoint's step, or None), ``hint``.
    """

    def __init__(self, message: str, *, step: int, path: str, last_good: int | None, hint: str):
        super().__init__(message)
        self.step, self.path, self.last_good, self.hint = step, path, last_good, hint


def check_writable(workdir: str) -> None:
    """Creates ``workdir`` if needed and writes (then removes) a probe file in it.

    Raises:
      UserError: the directory cannot be created or written (read-only file system, no
        permission, a path under a regular file, disk full), naming it and the reason.
    """
    try:
        os.makedirs(workdir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe_", dir=workdir)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.remove(probe)
    except OSError as e:
        raise UserError(
            f"cannot write to the workdir {workdir}: {_reason(e)}",
            hint="pass a writable --workdir (checkpoints, logs and samples go there)",
        ) from e


def make_manager(
    workdir: str, *, max_to_keep: int = 3, read_only: bool = False, async_save: bool = True
) -> ocp.CheckpointManager:
    """The run's manager; ``max_to_keep`` newest checkpoints are kept (older ones deleted).

    ``read_only`` opens another run's checkpoints without creating or deleting anything.
    ``async_save`` (orbax's asynchronous checkpointing, the default): ``save`` returns once the
    arrays are copied to host memory and the files are written by background threads while
    training goes on; False writes them before ``save`` returns
    (benchmarks/checkpoint_stall.py measures both).
    """
    directory = layout.checkpoints_dir(workdir)
    if read_only:  # create=False and no save: nothing is created or deleted
        options = ocp.CheckpointManagerOptions(create=False)
    else:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save
        )
    return ocp.CheckpointManager(directory, options=options, item_names=layout.WORKDIR_ITEMS)


class _HoldOrbaxErrors(logging.Filter):
    """Drops orbax's ERROR records (each failed background thread logs one with a traceback);
    counts them. The exception that reaches the train loop carries the cause."""

    def __init__(self) -> None:
        super().__init__()
        self.held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname:
            self.held += 1
            return False
        return True


class RunCheckpoints:
    """The run's checkpoints (an orbax ``CheckpointManager``) with disk-fault handling.

    Use :meth:`save`, :meth:`wait` (raise a background failure now), :meth:`close` (or a
    ``with`` block); :meth:`abort` after any other failure. Raises
    :class:`CheckpointWriteError` from ``save`` / ``wait`` / ``close`` when a write failed; the
    manager is then shut down.
    """

    def __init__(self, workdir: str, *, max_to_keep: int = 3, async_save: bool = True):
        self.manager = make_manager(workdir, max_to_keep=max_to_keep, async_save=async_save)
        self.directory = layout.checkpoints_dir(workdir)
        self.pending: int | None = None  # step of a save that may still be writing
        self._resume: tuple[int, TrainState] | None = None  # choose_resume_step's
        self._filter = None if debug_enabled() else _HoldOrbaxErrors()
        if self._filter is not None:
            logging.getLogger("absl").addFilter(self._filter)

    def __enter__(self) -> RunCheckpoints:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def read_meta(self, step: int) -> dict[str, Any]:
        """The ``meta`` item of checkpoint ``step``."""
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def save(
        self, state: TrainState, data_iterator: grain.DataLoaderIterator, meta: dict[str, Any]
    ) -> None:
        """Saves a checkpoint at ``state.step`` (a no-op if that step is already saved).

        Callers must only pass a state they have checked to be finite: a checkpoint is never
        overwritten, and the newest one is what a restart resumes from.
        """
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data=grain.checkpoint.CheckpointSave(data_iterator),
                    meta=ocp.args.JsonSave(dict(meta, step=step)),
                ),
            )
        except Exception as e:  # orbax/tensorstore raise OSError, ValueError, RuntimeError
            raise self._failed(e, step) from e
        self.pending = step

    def wait(self) -> None:
        """Blocks until the pending save is on disk; raises its failure."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise self._failed(e, self.pending) from e
        self.pending = None

    def close(self) -> None:
        """Waits for the pending save, then closes the manager."""
        try:
            self.wait()
            self.manager.close()
        finally:
            self._unfilter()

    def abort(self) -> None:
        """Shuts down after a failure: lets orbax's threads end (quietly), closes."""
        for t in threading.enumerate():
            if t is not threading.current_thread() and type(t).__module__.startswith("orbax"):
                threading.Thread.join(t, 120)
        try:
            self.manager.close()
        except Exception:  # the failure being reported already says what went wrong
            pass
        self._unfilter()

    def last_good_message(self) -> str:
        latest = complete_steps(self.directory)
        where = "no checkpoint was saved yet" if not latest else f"step {latest[-1]}"
        return f"the last good checkpoint is {where} in {self.directory}"

    def _unfilter(self) -> None:
        if self._filter is not None:
            logging.getLogger("absl").removeFilter(self._filter)
            self._filter = None

    def _failed(self, e: Exception, step: int | None) -> CheckpointWriteError:
        held_by = self._filter
        self.abort()  # every orbax thread has ended: what is on disk now is final
        held = held_by.held if held_by is not None else 0
        complete = complete_steps(self.directory)
        if self.pending is not None and self.pending not in complete:
            step = self.pending  # an earlier background write is what failed
        last = complete[-1] if complete else None
        path = os.path.join(self.directory, str(step))
        where = "no checkpoint was saved yet" if last is None else f"step {last}"
        quiet = f" ({held} orbax error records held back; --debug shows them)" if held else ""
        resume = "starts again from step 0" if last is None else f"resumes from step {last}"
        return CheckpointWriteError(
            f"writing the checkpoint of step {step} to {path} failed: {_reason(e)}. Training "
            f"stopped; the last good checkpoint is {where} in {self.directory}{quiet}",
            step=step,
            path=path,
            last_good=last,
            hint=f"free disk space or fix the disk, then rerun the same command: it {resume}",
        )

    def choose_resume_step(self, target: TrainState) -> int | None:
        """The newest checkpoint that restores completely; older ones are not read.

        A checkpoint that fails to restore (a truncated or missing file, missing metadata, a
        step directory left half-written by storage without atomic rename) is skipped with a
        warning naming it and why, and renamed to ``<step>.corrupt`` (so that the run can save
        that step again; orbax and :func:`complete_steps` ignore the name). The state restored
        here is kept for :meth:`restore_latest`. Call it before anything reads the latest step.

        Args:
          target: a state or ``jax.ShapeDtypeStruct`` tree with shardings (see
            :func:`restore_latest`).
        Returns:
          the step resumed from, or None when no checkpoint restores (the run starts fresh).
        """
        self._resume = None
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                meta = self.read_meta(step)
                _check_data_item(self.directory, step)
                state = self.manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(target)))
                )["state"]
                if int(jax.device_get(state.step)) != step or meta.get("step") != step:
                    raise ValueError(f"it holds step {int(state.step)}, meta {meta.get('step')}")
            except Exception as e:  # orbax/tensorstore/json raise many kinds
                self._set_aside(step, e)
                continue
            self._resume = (step, state)
            return step
        return None

    def _set_aside(self, step: int, e: Exception) -> None:
        path = os.path.join(self.directory, str(step))
        aside = f"{path}.corrupt"
        n = 1
        while os.path.exists(aside):
            n += 1
            aside = f"{path}.corrupt{n}"
        logger.warning(
            "skipping the checkpoint of step %d (%s): it does not restore: %s; moved to %s",
            step,
            path,
            _reason(e),
            aside,
        )
        if jax.process_index() == 0:
            os.rename(path, aside)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"wfvae_set_aside_{step}")
        self.manager.reload()

    def restore_latest(
        self, target: TrainState, data_iterator: grain.DataLoaderIterator | None
    ) -> TrainState | None:
        """:func:`restore_latest` on this run's manager; after :meth:`choose_resume_step`, the
        state it restored (and ``data_iterator``'s position from the same step)."""
        if self._resume is None:
            return restore_latest(self.manager, target, data_iterator)
        step, state = self._resume
        self._resume = None
        if data_iterator is not None:
            items = {"data": grain.checkpoint.CheckpointRestore(data_iterator)}
            self.manager.restore(step, args=ocp.args.Composite(**items))
        return state


def complete_steps(directory: str) -> list[int]:
    """Steps with a finished checkpoint on disk (orbax writes ``<step>.orbax-checkpoint-tmp``
    and renames it to ``<step>`` when every item is written)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    steps = [n for n in names if n.isdigit() and os.path.isdir(os.path.join(directory, n))]
    return sorted(map(int, steps))


def _check_data_item(directory: str, step: int) -> None:
    """Raises unless this process's data-iterator state of checkpoint ``step`` is readable JSON
    (grain reads it only when a resumed run restores the iterator)."""
    name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    path = os.path.join(directory, str(step), layout.DATA_ITEM, name)
    if not os.path.exists(path):  # another process count: the data order check says so
        return
    with open(path) as f:
        json.load(f)


def _reason(e: BaseException) -> str:
    """``[Errno 28] No space left on device`` for the first OSError in ``e``'s chain, else the
    first line of ``e``."""
    seen, x = set(), e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, OSError) and x.errno is not None:
            name = errno.errorcode.get(x.errno, "")
            return f"[Errno {x.errno}{' ' + name if name else ''}] {x.strerror}"
        x = x.__cause__ or x.__context__
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def save(
    manager: ocp.CheckpointManager,
    state: TrainState,
    data_iterator: grain.DataLoaderIterator,
    meta: dict[str, Any],
) -> None:
    """Saves a checkpoint at ``state.step`` with a bare manager (a no-op if already saved);
    :meth:`RunCheckpoints.save` is the train loop's, with the disk-fault handling."""
    step = int(jax.device_get(state.step))
    if step in manager.all_steps():
        return
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iterator),
            meta=ocp.args.JsonSave(dict(meta, step=step)),
        ),
    )


def restore_latest(
    manager: ocp.CheckpointManager,
    target: TrainState,
    data_iterator: grain.DataLoaderIterator | None,
) -> TrainState | None:
    """Restores the newest checkpoint into ``target``'s shapes and shardings, or returns None.

    Args:
      target: a state, or a ``jax.ShapeDtypeStruct`` tree with shardings, of the same structure.
      data_iterator: the freshly built iterator; its position is set to the saved one (``None``:
        leave the iterator where it is, e.g. after the data changed).
    """
    step = manager.latest_step()
    if step is None:
        return None
    abstract = _abstract(target)
    items: dict[str, Any] = {"state": ocp.args.StandardRestore(abstract)}
    if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"]


def check_init_from(path: str) -> None:
    """Raises UserError unless ``path`` is a training workdir with a checkpoint or an export.

    Never creates anything (a mistyped path must not become an empty workdir).
    """
    if layout.is_export_dir(path) or is_torch_file(path):
        return
    hint = (
        "init_from takes an earlier stage's --workdir (with checkpoints/), a converted "
        "checkpoint directory (config.json + params/, wfvae convert) or a reference training "
        "checkpoint (.ckpt)"
    )
    if not os.path.exists(path):
        raise UserError(f"init_from={path!r} does not exist", hint=hint)
    if not complete_steps(layout.checkpoints_dir(path)):
        raise UserError(
            f"init_from={path!r} is neither a training workdir with a checkpoint nor a "
            "converted checkpoint",
            hint=hint,
        )


def load_generator(path: str, target: TrainState) -> tuple[Any, Any, Any]:
    """``(params, ema_params, opt_state)`` of the newest checkpoint of another run's workdir.

    Used to start stage II from stage I (and III from II): the generator and its optimizer carry
    over, the discriminator is fresh (paper Sec. 4.1: "we refresh the discriminator"). Opens
    ``path`` read-only: nothing is created there.
    Raises:
      UserError: ``path`` holds no checkpoint (:func:`check_init_from`).
    """
    check_init_from(path)
    manager = make_manager(path, read_only=True)
    step = manager.latest_step()
    abstract = _abstract(target)
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
    )["state"]
    manager.close()
    return restored.params, restored.ema_params, restored.opt_state


def _abstract(tree: Any) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )
