"""Train or fine-tune WF-VAE: ``python train.py --config configs/stage1.py --workdir DIR``.

Override any config field on the command line, e.g. ``--config.data.batch_size=16``. Rerunning
the same command resumes from DIR's newest checkpoint. Multi-host (TPU pods, GPU clusters): start
one process per host with the same command plus ``--multihost`` (see docs/training.md).
The logic lives in ``wfvae_jax.train`` so that tests can import it.
"""

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).")
flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard logs, samples and the export.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (one process per host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    # ============================== config ==============================
    config = FLAGS.config
    workdir = os.path.abspath(FLAGS.workdir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)

    # ============================ mesh & data ============================
    import jax

    if FLAGS.multihost:
        # Reads the coordinator address, process count and id from the cluster environment
        # (TPU pods, SLURM, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
        from wfvae_jax import multihost

        multihost.initialize()
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
    from wfvae_jax.train.loop import NonFiniteLossError, train_and_evaluate

    try:
        history = train_and_evaluate(config, workdir)
    except NonFiniteLossError as e:
        logging.error("%s", e)
        sys.exit(1)
    if history["eval"]:
        first, last = history["eval"][0], history["eval"][-1]
        logging.info(
            "held-out PSNR (EMA): %.2f dB at step %d -> %.2f dB at step %d",
            first["eval/psnr_ema"],
            first["step"],
            last["eval/psnr_ema"],
            last["step"],
        )


if __name__ == "__main__":
    app.run(main)
