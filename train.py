"""Train or fine-tune WF-VAE: ``python train.py --config configs/stage1.py --workdir DIR``.

The same command as ``wfvae train``: ``--config`` also takes a packaged config's name
(``--config stage1``, ``--config demo``; ``python train.py --help`` lists them and every config
field). Override any config field on the command line, e.g. ``--config.data.batch_size=16``.
Rerunning the same command resumes from DIR's newest checkpoint. Multi-host (TPU pods, GPU
clusters): start one process per host with the same command plus ``--multihost`` (see
docs/training.md). ``--debug`` shows the traceback of an error. The command is
``wfvae_jax.commands.train``; the logic lives in ``wfvae_jax.train`` so that tests can import it.
"""

from wfvae_jax.commands.train import cli

if __name__ == "__main__":
    cli()
