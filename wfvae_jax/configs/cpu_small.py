"""A small WF-VAE trained on CPU: the end-to-end check of the training system.

Command (10-20 minutes for 500 steps on 2 CPU cores):
    wfvae train --config cpu_small --workdir runs/cpu_small \
        --config.data.train_dir=VIDEOS --config.eval.files=VIDEOS/held_out.mp4

The packaged config names no data: ``data.train_dir`` (a folder of videos, searched recursively)
and ``eval.files`` (held-out videos, left out of training) come from the command line. From a
source checkout, ``python train.py --config configs/cpu_small.py --workdir DIR`` is this config on
the shared real clips (``../shared/videos``, held out: ``carphone_pristine.mp4`` and its
re-encoded copy ``carphone_distorted.mp4``).

Expected result: held-out PSNR (EMA and raw weights) rises clearly from the evaluation at step 0
to the last one. Measured on a 2-core CPU shared with five other jobs (docs/training.md, "A
measured CPU run"): EMA PSNR 9.95 dB at step 0 -> 14.83 dB at step 500 (this config), 16.21 dB
at step 1000 after resuming with ``--config.num_steps=1000``; 0.9 steps/s on average, about 20
minutes for 500 steps including ~6 minutes of compilation (less on an idle machine, and restarts
reuse WORKDIR/xla_cache). PNG strips (input / EMA reconstruction / |error| x4) are written to
WORKDIR/samples/ every 50 steps and the final EMA weights to WORKDIR/export
(``wfvae_jax.load_pretrained``).

Values and where they come from (everything else is the default config, i.e. the paper):
  * model "tiny" (base_channels 16, energy flow 16, latent 8, layernorm: the shared parity
    checkpoint's architecture), 64x64, 9 frames, batch 1, disc_ndf 16 with 3 layers: sized for
    CPU, not from the paper;
  * learning rate 2e-4 instead of the paper's 1e-5: 1e-5 is tuned for 800k steps at 256x256 and
    barely moves a from-scratch model in a few hundred steps;
  * EMA decay 0.99 instead of 0.999: with ~200 generator steps a 0.999 average would still be
    ~80% the random initialisation;
  * loss.perceptual_weight 0: no VGG weights needed (stage III-style LPIPS would need
    lpips.weights, see docs/training.md);
  * GAN from step 0 as the paper (disc_start 0): every odd step trains the discriminator.
"""

import ml_collections

from wfvae_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    """The CPU-sized config (data paths empty: set them on the command line)."""
    config = default.get_config()
    config.num_steps = 500
    config.log_every = 10
    config.checkpoint_every = 50
    config.model.name = "tiny"

    config.data.num_frames = 9
    config.data.resolution = 64
    config.data.batch_size = 1

    config.eval.num_frames = 9
    config.eval.resolution = 64
    config.eval.clips_per_video = 2
    config.eval.batch_size = 2
    config.eval.every_steps = 50

    config.optim.learning_rate = 2e-4
    config.ema_decay = 0.99
    config.loss.perceptual_weight = 0.0
    config.loss.disc_num_layers = 3
    config.disc_ndf = 16
    return config
