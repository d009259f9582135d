"""``train.py`` in a child process on fixed global batches, for tests/test_multihost.py.

Run as ``python tests/multihost_train_child.py --config tests/multihost_train_child.py
--workdir DIR [--multihost]``: this file is also the config (``get_config``: a tiny WF-VAE on
5 x 32 x 32 clips, 3 steps). The data iterator of ``wfvae_jax.train.loop`` is replaced by a grain
loader over fixed random global batches, of which each process reads its own rows (process
``p`` of ``P`` rows ``[p * B / P, (p + 1) * B / P)`` of every global batch), so a 1-process run
and a 2-process run see the same global batches. Process 0 writes the losses of every step to
``DIR/history.json``; the EMA weights are in ``DIR/export`` (``wfvae_jax.load_pretrained``).
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

GLOBAL_BATCH, NUM_STEPS, NUM_FRAMES, RESOLUTION = 2, 3, 5, 32


def get_config():
    from configs import default

    c = default.get_config()
    c.num_steps = NUM_STEPS
    c.model.name = "tiny"
    c.model.overrides.update(
        base_channels=8,
        encoder_energy_flow_hidden_size=8,
        decoder_energy_flow_hidden_size=8,
        latent_dim=4,
        encoder_num_resblocks=1,
        decoder_num_resblocks=1,
        use_attention=False,
    )
    c.data.num_frames, c.data.resolution, c.data.batch_size = NUM_FRAMES, RESOLUTION, GLOBAL_BATCH
    # Validated and indexed (the checkpoint's data manifest), but the batches are the fixed ones.
    c.data.train_dir = os.path.join(REPO, "tests", "data", "videos")
    c.eval.every_steps = 0
    c.loss.perceptual_weight = 0.0
    c.loss.disc_num_layers = 2
    c.disc_ndf = 4
    c.optim.learning_rate = 1e-3
    # EMA close to the parameters (0.999 would keep it within ~1e-6 of the initial weights, and
    # a comparison at 1e-6 would say little).
    c.ema_decay = 0.5
    c.log_every = 1
    c.checkpoint_every = 2
    c.compilation_cache = False
    return c


def global_batches():
    """``(NUM_STEPS, GLOBAL_BATCH, T, H, W, 3)`` float32 in [-1, 1], the same in every process."""
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (NUM_STEPS, GLOBAL_BATCH, NUM_FRAMES, RESOLUTION, RESOLUTION, 3)
    return rng.uniform(-1, 1, shape).astype(np.float32)


def _fixed_iterator(config, source, local_batch, seed):
    import grain
    import jax

    p = jax.process_index()
    rows = global_batches()[:, p * local_batch : (p + 1) * local_batch]
    records = [{"video": v} for v in rows.reshape(-1, *rows.shape[2:])]
    loader = grain.DataLoader(
        data_source=records,
        sampler=grain.samplers.IndexSampler(
            len(records), shard_options=grain.sharding.NoSharding(), shuffle=False, num_epochs=None
        ),
        operations=[grain.transforms.Batch(local_batch, drop_remainder=True)],
    )
    return iter(loader)


def _main():
    from wfvae_jax.commands import train as cli
    from wfvae_jax.train import loop

    run = loop.train_and_evaluate

    def train_and_record(config, workdir):
        import jax

        history = run(config, workdir)
        if jax.process_index() == 0:
            with open(os.path.join(workdir, "history.json"), "w") as f:
                json.dump({"losses": history["losses"], "export": history["export"]}, f)
        return history

    loop._train_iterator = _fixed_iterator
    loop.train_and_evaluate = train_and_record
    cli.cli()


if __name__ == "__main__":
    _main()
