"""WF-VAE training, stage III (paper Table 7 / Sec. 4.1): lambda_lpips lowered to 0.1.

Command (starts from stage II; fresh discriminator again):
    wfvae train --config stage3 --workdir runs/stage3 \
        --config.init_from=runs/stage2 --config.data.train_dir=/data/train_videos \
        --config.eval.files=/data/val/a.mp4 \
        --config.lpips.weights=lpips_vgg_backbone.safetensors
Without ``lpips.weights`` it stops at once with a message saying how to convert the VGG16
weights (or to set ``--config.loss.perceptual_weight=0``).

Expected result: the paper reports that a large lambda_lpips hurts video stability; with 0.1 the
PSNR rises a little further and flicker drops. The exported EMA weights (WORKDIR/export) are the
final model. Not run at scale here.

Values and sources: Table 7 stage III (200k steps, LPIPS weight 0.1, the rest as stage II:
49 frames, frame_stride 2); Sec. 4.1 "refresh the discriminator once more and set lambda_lpips to
0.1".
"""

from wfvae_jax.configs import stage2


def get_config():
    """Stage II with perceptual_weight 0.1, initialised from stage II."""
    config = stage2.get_config()
    config.loss.perceptual_weight = 0.1
    config.init_from = ""  # set to stage II's workdir
    return config
