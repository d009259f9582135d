"""WF-VAE training, stage I (paper Table 7 / Sec. 4.1): 25 frames, 256x256, 800k steps.

Command (8 accelerators, total batch 8 as the paper; the LPIPS weights step is in
docs/training.md):
    wfvae train --config stage1 --workdir runs/stage1 \
        --config.data.train_dir=/data/train_videos --config.eval.files=/data/val/a.mp4 \
        --config.lpips.weights=lpips_vgg_backbone.safetensors

Expected result: the paper trains 800k steps on 8 H100s; held-out PSNR (written every
``eval.every_steps`` to TensorBoard and WORKDIR/samples/) climbs for the whole stage; the final
WF-VAE-L reaches the Table 1/3 range (~35 dB PSNR on WebVid/Panda at 256x256, 33 frames) only
after all three stages. We have not run this config at scale.

Values and sources: every default of the default config (Table 7: lr 1e-5, batch 8, lambda_lpips
1.0, lambda_WL 0.1, lambda_KL 1e-6, 256x256, 25 frames, EMA 0.999, 800k steps; frame_stride 1 and
GAN from step 0 from examples/train_ddp.sh). Model: WF-VAE-L-16Chn (train_ddp.sh); use
``--config.model.name=WF-VAE-S`` etc. for the paper's other sizes, and ``--config.mesh.fsdp=N``
to shard WF-VAE-L's state over N devices.
"""

from wfvae_jax.configs import default


def get_config():
    """Stage I = the defaults."""
    config = default.get_config()
    config.num_steps = 800_000
    return config
