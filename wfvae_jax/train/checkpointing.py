"""Training checkpoints: an orbax ``CheckpointManager`` over ``WORKDIR/checkpoints``.

The layout's names live in :mod:`wfvae_jax.checkpoint` (the one owner of on-disk layouts), which
also reads these checkpoints for evaluation (``load_train_checkpoint``).

Each checkpoint ``WORKDIR/checkpoints/<step>/`` holds three items:
  ``state/``  the whole :class:`~wfvae_jax.train.state.TrainState` (params, EMA params, both
              AdamW states, discriminator params and BatchNorm statistics, step, rng), saved from
              its (possibly sharded) arrays and restored straight into the target shardings;
  ``data/``   every process's grain iterator state (``process_<i>-of-<n>.json``), so a resumed
              run continues the same data order;
  ``meta/``   JSON: the step and the run's config (for humans and for ``init_from``).
Stage II/III initialisation from an earlier run reads ``state`` only (:func:`load_generator`).
"""

from __future__ import annotations

from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from wfvae_jax import checkpoint as layout
from wfvae_jax.train.state import TrainState


def make_manager(workdir: str, *, max_to_keep: int = 3) -> ocp.CheckpointManager:
    """The run's manager; ``max_to_keep`` newest checkpoints are kept (older ones deleted)."""
    directory = layout.checkpoints_dir(workdir)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(directory, options=options, item_names=layout.WORKDIR_ITEMS)


def save(
    manager: ocp.CheckpointManager,
    state: TrainState,
    data_iterator: grain.DataLoaderIterator,
    meta: dict[str, Any],
) -> None:
    """Saves a checkpoint at ``state.step`` (a no-op if that step is already saved).

    Callers must only pass a state they have checked to be finite: a checkpoint is never
    overwritten, and the newest one is what a restart resumes from.
    """
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
      data_iterator: the freshly built iterator; its position is set to the saved one.
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


def load_generator(path: str, target: TrainState) -> tuple[Any, Any, Any]:
    """``(params, ema_params, opt_state)`` of the newest checkpoint of another run's workdir.

    Used to start stage II from stage I (and III from II): the generator and its optimizer carry
    over, the discriminator is fresh (paper Sec. 4.1: "we refresh the discriminator").
    Raises:
      FileNotFoundError: ``path`` holds no checkpoint.
    """
    manager = make_manager(path)
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {layout.checkpoints_dir(path)}")
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
