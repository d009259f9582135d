"""Shared defaults of every WF-VAE training config (Flax-examples pattern: others override these).

Values and their sources:
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
"""

import ml_collections

SHARED_VIDEOS = "../shared/videos"


def get_config() -> ml_collections.ConfigDict:
    """The defaults; every field is documented inline."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_steps = 800_000  # Table 7, stage I
    c.log_every = 50
    c.checkpoint_every = 5_000  # train_ddp.sh --save_ckpt_step
    c.keep_checkpoints = 3
    # SIGTERM/SIGINT save the current step and exit within this many seconds (platforms give
    # ~30 s notice before killing a preempted job); wfvae_jax.train.preemption.
    c.preemption_grace_s = 25.0
    c.export = True  # write WORKDIR/export (EMA weights, wfvae_jax.load_pretrained) at the end
    c.init_from = ""  # a previous stage's WORKDIR or a converted checkpoint dir (fine-tuning)
    c.compute_dtype = "float32"  # or "bfloat16": bf16 convolutions, float32 params/optimizer
    c.compilation_cache = True  # persistent XLA cache in WORKDIR/xla_cache (faster restarts)

    c.model = ml_collections.ConfigDict()
    c.model.name = "WF-VAE-L-16Chn"  # a wfvae_jax.get_config name
    c.model.overrides = ml_collections.ConfigDict()  # WFVAEConfig fields to change
    # LC-VAE latent compression in the forward pass (wfvae_jax.lc; configs/lc_vae.py).
    c.model.lc = ml_collections.ConfigDict()
    c.model.lc.enabled = False
    c.model.lc.mask = "fixed"  # wfvae_jax.lc.MASK_KINDS
    c.model.lc.keep_ratio = 0.5
    c.model.lc.levels = 2  # temporal Haar levels after the 3D Haar (LC-VAE: 2)
    c.model.lc.scale = "exact"  # or "reference": LC-VAE's 0.3536 / 0.7071 literals
    c.model.lc.time_mode = "causal"  # WF-VAE latents: 1 + k frames, frame 0 the image frame

    c.data = ml_collections.ConfigDict()
    c.data.train_dir = ""  # folder of videos, searched recursively
    c.data.exclude = []  # file names never trained on (besides eval.files, always excluded)
    c.data.num_frames = 25
    c.data.resolution = 256
    c.data.frame_stride = 1  # train_ddp.sh --sample_rate 1
    c.data.batch_size = 8  # global, over all devices and hosts
    c.data.crop = "random"
    c.data.worker_count = 0  # grain worker processes per host
    c.data.cache_dir = ""  # video index cache; "" = WORKDIR/cache
    # Resume after the training files changed (added, removed, other frame counts, another
    # worker_count): True continues with the files as they are, the data order restarting at a
    # new shuffle seeded by (seed, step); False stops with an error naming the changes.
    c.data.allow_data_change = False

    c.eval = ml_collections.ConfigDict()
    c.eval.files = []  # held-out videos (never trained on)
    c.eval.num_frames = 25
    c.eval.resolution = 256
    c.eval.frame_stride = 1
    c.eval.clips_per_video = 2
    c.eval.batch_size = 1
    c.eval.every_steps = 1_000  # train_ddp.sh --eval_steps; 0 disables evaluation
    c.eval.num_png_clips = 2  # clips shown in WORKDIR/samples/step_*.png

    c.loss = ml_collections.ConfigDict()  # wfvae_jax.losses.LossConfig fields
    c.loss.disc_start = 0
    c.loss.disc_weight = 0.5
    c.loss.disc_factor = 1.0
    c.loss.disc_num_layers = 4
    c.loss.disc_loss = "hinge"
    c.loss.kl_weight = 1e-6
    c.loss.perceptual_weight = 1.0
    c.loss.wavelet_weight = 0.1
    c.loss.loss_type = "l1"
    c.loss.logvar_init = 0.0
    c.disc_ndf = 64  # discriminator width (reference NLayerDiscriminator3D ndf)

    c.lpips = ml_collections.ConfigDict()
    c.lpips.net = "vgg"  # the reference loss uses VGG16 LPIPS
    c.lpips.weights = ""  # converted backbone .safetensors (see docs/training.md)

    c.optim = ml_collections.ConfigDict()  # wfvae_jax.train.state.OptimConfig fields
    c.optim.learning_rate = 1e-5
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 1e-4
    c.optim.grad_clip_norm = 0.0  # 0 = off (the reference never clips)
    c.ema_decay = 0.999

    c.mesh = ml_collections.ConfigDict()
    c.mesh.fsdp = 1  # >1: shard params/optimizer state over this many devices (WF-VAE-L)
    c.mesh.parallelism = "gspmd"  # or "shard_map": reference DDP semantics, explicit pmean
    return c
