"""Shared defaults of every WF-VAE training config (Flax-examples pattern: others override these).

Every field has its meaning as a trailing comment on its line: ``wfvae train --help`` prints those
comments (:func:`wfvae_jax.configs.field_docs`), so this file is the one place a field is
described. Values and their sources:
  * optimizer: AdamW, beta 0.9/0.999, fixed lr 1e-5 (paper Sec. 4.1 and Table 7); weight decay
    1e-4 and eps 1e-8 (reference ``train_ddp.py`` defaults / PyTorch AdamW);
  * EMA decay 0.999 (Table 7); batch 8 in total (Table 7); 256x256, 25 frames (Table 7, stage I);
  * loss: lambda_lpips 1.0, lambda_WL 0.1, lambda_KL 1e-6 (Table 7); L1 pixel loss (Sec. 4.1);
    lambda_adv = adaptive weight x 0.5 and 4-layer discriminator (``train_ddp.py`` defaults);
    GAN on from step 0 (Sec. 4.1 "initiate GAN training from the start";
    ``examples/train_ddp.sh`` passes ``--disc_start 0``);
  * model: WF-VAE-L with 16 latent channels, the model of ``examples/train_ddp.sh``.
Loss reductions follow the reference (see ``wfvae_jax.losses.vae_loss``): the L1 + LPIPS term is a
sum over pixels divided by B*T frames, KL and WL sums divided by B.
Data paths (``data.train_dir``, ``eval.files``) are empty: they always come from the user.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The defaults; every field is documented inline."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # seed of the initial weights, data order and latent samples
    c.num_steps = 800_000  # step to train to (generator + discriminator steps; Table 7)
    c.log_every = 50  # steps between metric lines (terminal, TensorBoard, JSON log)
    c.checkpoint_every = 5_000  # steps between checkpoints (train_ddp.sh --save_ckpt_step)
    c.keep_checkpoints = 3  # newest checkpoints kept in WORKDIR/checkpoints
    c.preemption_grace_s = 25.0  # SIGTERM/SIGINT: seconds to save the current step and exit
    c.export = True  # write the EMA weights to WORKDIR/export at the end
    c.init_from = ""  # start from a previous stage's WORKDIR or a converted checkpoint
    c.compute_dtype = "float32"  # or "bfloat16": bf16 convolutions, float32 params/optimizer
    c.compilation_cache = True  # persistent XLA cache in WORKDIR/xla_cache (faster restarts)

    c.model = ml_collections.ConfigDict()
    c.model.name = "WF-VAE-L-16Chn"  # a wfvae_jax.get_config name (WF-VAE-S/M/L, tiny, ...)
    c.model.overrides = ml_collections.ConfigDict()  # WFVAEConfig fields to change
    # LC-VAE latent compression in the forward pass (wfvae_jax.lc; the lc_vae config).
    c.model.lc = ml_collections.ConfigDict()
    c.model.lc.enabled = False  # compress the latent (LC-VAE) during training
    c.model.lc.mask = "fixed"  # the subband mask, one of wfvae_jax.lc.MASK_KINDS
    c.model.lc.keep_ratio = 0.5  # fraction of latent subband channels kept
    c.model.lc.levels = 2  # temporal Haar levels after the 3D Haar (LC-VAE: 2)
    c.model.lc.scale = "exact"  # or "reference": LC-VAE's 0.3536 / 0.7071 literals
    c.model.lc.time_mode = "causal"  # WF-VAE latents: 1 + k frames, frame 0 the image frame

    c.data = ml_collections.ConfigDict()
    c.data.train_dir = ""  # folder of training videos, searched recursively (required)
    c.data.exclude = ()  # file names never trained on (besides eval.files)
    c.data.num_frames = 25  # frames per training clip: 1 + 4k (Table 7 stage I)
    c.data.resolution = 256  # crop size in pixels, int or (height, width), multiple of 8
    c.data.frame_stride = 1  # take every n-th decoded frame (train_ddp.sh --sample_rate)
    c.data.batch_size = 8  # clips per step, global over all devices and hosts (Table 7)
    c.data.crop = "random"  # "random" or "center" crop of the short-side-resized frames
    c.data.worker_count = 0  # grain worker processes per host (0: decode in this process)
    c.data.cache_dir = ""  # video index cache; "" = WORKDIR/cache
    # Resume after the training files changed (added, removed, other frame counts, another
    # worker_count): True continues with the files as they are, the data order restarting at a
    # new shuffle seeded by (seed, step); False stops with an error naming the changes.
    c.data.allow_data_change = False  # resume when the training files changed (else an error)

    c.eval = ml_collections.ConfigDict()
    c.eval.files = ()  # held-out videos, never trained on (needed if every_steps > 0)
    c.eval.num_frames = 25  # frames per held-out clip: 1 + 4k
    c.eval.resolution = 256  # held-out center crop size in pixels
    c.eval.frame_stride = 1  # take every n-th decoded frame of the held-out videos
    c.eval.clips_per_video = 2  # held-out clips cut from each video
    c.eval.batch_size = 1  # held-out clips per reconstruction call
    c.eval.every_steps = 1_000  # steps between held-out PSNR/SSIM (--eval_steps); 0 = off
    c.eval.num_png_clips = 2  # clips shown in WORKDIR/samples/step_*.png

    c.loss = ml_collections.ConfigDict()  # wfvae_jax.losses.LossConfig fields
    c.loss.disc_start = 0  # first step that trains the discriminator and uses the GAN loss
    c.loss.disc_weight = 0.5  # lambda_adv factor on the adaptive GAN weight (train_ddp.py)
    c.loss.disc_factor = 1.0  # GAN loss factor once disc_start is reached
    c.loss.disc_num_layers = 4  # layers of the 3D PatchGAN discriminator
    c.loss.disc_loss = "hinge"  # discriminator loss: "hinge" or "vanilla"
    c.loss.kl_weight = 1e-6  # lambda_KL (Table 7)
    c.loss.perceptual_weight = 1.0  # lambda_lpips (Table 7; needs lpips.weights when > 0)
    c.loss.wavelet_weight = 0.1  # lambda_WL, the wavelet-coefficient loss (Table 7)
    c.loss.loss_type = "l1"  # pixel reconstruction loss: "l1" or "l2" (Sec. 4.1: l1)
    c.loss.logvar_init = 0.0  # initial learned log-variance of the reconstruction loss
    c.disc_ndf = 64  # discriminator width (reference NLayerDiscriminator3D ndf)

    c.lpips = ml_collections.ConfigDict()
    c.lpips.net = "vgg"  # LPIPS backbone, "vgg" (the reference loss) or "alex"
    c.lpips.weights = ""  # converted backbone .safetensors (see docs/training.md)

    c.optim = ml_collections.ConfigDict()  # wfvae_jax.train.state.OptimConfig fields
    c.optim.learning_rate = 1e-5  # AdamW learning rate, constant (Table 7)
    c.optim.b1 = 0.9  # AdamW beta1
    c.optim.b2 = 0.999  # AdamW beta2
    c.optim.eps = 1e-8  # AdamW epsilon
    c.optim.weight_decay = 1e-4  # AdamW decoupled weight decay
    c.optim.grad_clip_norm = 0.0  # clip gradients to this global norm; 0 = off (as the reference)
    c.ema_decay = 0.999  # decay of the EMA weights evaluated and exported (Table 7)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.fsdp = 1  # >1: shard params/optimizer state over this many devices
    c.mesh.parallelism = "gspmd"  # or "shard_map": reference DDP semantics, explicit pmean
    return c
