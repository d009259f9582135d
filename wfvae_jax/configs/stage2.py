"""WF-VAE training, stage II (paper Table 7 / Sec. 4.1): 49 frames at half the frame rate.

Command (starts from stage I's newest checkpoint: generator, EMA and generator optimizer carry
over; the discriminator and its optimizer are fresh, the step counter restarts at 0):
    wfvae train --config stage2 --workdir runs/stage2 \
        --config.init_from=runs/stage1 --config.data.train_dir=/data/train_videos \
        --config.eval.files=/data/val/a.mp4 \
        --config.lpips.weights=lpips_vgg_backbone.safetensors

Expected result: held-out PSNR dips briefly when the fresh discriminator starts, then recovers
and improves on stage I, with steadier motion on long clips. Not run at scale here.

Values and sources: Table 7 stage II (200k steps, 49 frames, otherwise stage I's values);
Sec. 4.1 "refresh the discriminator, increase the number of frames to 49, and reduce the FPS by
half" -> data.frame_stride 2 (the reference's ``--sample_rate``: every 2nd decoded frame).
"""

from wfvae_jax.configs import stage1


def get_config():
    """Stage I with 49 frames at frame_stride 2, 200k steps, initialised from stage I."""
    config = stage1.get_config()
    config.num_steps = 200_000
    config.data.num_frames = 49
    config.data.frame_stride = 2
    config.init_from = ""  # set to stage I's workdir
    return config
