"""The demo model: a WF-VAE small enough to train on a laptop CPU in about 2 hours.

Command (2 CPU cores; resumable, rerun the same command after a stop):
    wfvae train --config demo --workdir runs/demo \
        --config.data.train_dir=VIDEOS --config.eval.files=VIDEOS/held_out.mp4

``data.train_dir`` is a folder of real videos (searched recursively; at least 64x64 and 9
frames each) and ``eval.files`` the held-out videos, which are never trained on (repeat the flag
for more than one; add re-encoded copies of them to ``--config.data.exclude``). The packaged
config reads nothing outside the package. At the end WORKDIR/export holds the EMA weights
(``wfvae reconstruct --checkpoint WORKDIR/export ...``, ``wfvae_jax.load_pretrained``) and
WORKDIR/samples/ the held-out strips (input / EMA reconstruction / |error| x4).

Expected result: not yet measured. The target is at least 24 dB held-out PSNR at 64x64.

Values and why (everything else is the default config, i.e. the paper):
  * model "tiny" with base_channels and energy-flow width 12 (1.33M parameters, a 5.3 MB
    float32 export): the shared parity checkpoint's architecture, narrowed to export in a few MB;
  * 64x64, 9 frames, batch 1: one step costs well under a second on 2 cores;
  * 6000 steps, all generator steps (``loss.disc_start`` = num_steps, no GAN): a reconstruction
    demo gains PSNR from L1 + wavelet loss; the GAN's texture sharpening needs far longer runs and
    halves the generator steps (every other step would train the discriminator);
  * learning rate 5e-4 and EMA decay 0.999: a from-scratch model at this size tolerates a larger
    rate than the paper's 1e-5 (tuned for 800k steps at 256x256), and 6000 steps are enough for a
    0.999 average (time constant 1000 steps);
  * perceptual_weight 0: no VGG weights needed.
"""

import ml_collections

from wfvae_jax.configs import cpu_small

NUM_STEPS = 6000


def get_config() -> ml_collections.ConfigDict:
    """The demo config: ``cpu_small`` (64x64, 9 frames, batch 1, the evaluation settings), with a
    narrower model, a longer run without the GAN and the rates above (data paths empty: set them
    on the command line)."""
    config = cpu_small.get_config()
    config.num_steps = NUM_STEPS
    config.log_every = 50
    config.checkpoint_every = 500
    config.model.overrides.base_channels = 12
    config.model.overrides.encoder_energy_flow_hidden_size = 12
    config.model.overrides.decoder_energy_flow_hidden_size = 12
    config.eval.every_steps = 500
    config.optim.learning_rate = 5e-4
    config.ema_decay = 0.999
    config.loss.disc_start = NUM_STEPS
    return config
