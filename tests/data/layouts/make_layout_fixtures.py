"""Writes the checkpoint-layout fixtures of tests/test_checkpoint_layouts.py. NEEDS torch and the
reference checkout (PKU-YuanGroup/WF-VAE @ d858bee); the tests never run this:

    /work/torchvenv/bin/python tests/data/layouts/make_layout_fixtures.py /work/ref/WF-VAE

A 4x WF-VAE with 2 base channels (35k parameters) built by the reference's ``WFVAEModel``, seed 0,
every 1-D parameter perturbed by N(0, 0.1^2) so that none sits at a trivial value:

* ``sharded/``: the reference's own ``save_pretrained(max_shard_size="40KB")`` (diffusers):
  ``config.json``, ``diffusion_pytorch_model-0000k-of-0000n.safetensors`` and
  ``diffusion_pytorch_model.safetensors.index.json``; float32, the expected values of the others.
* ``vae_prefix_fp16.ckpt``: ``torch.save`` of the full state dict as float16 with every key under
  ``vae.`` (a VAE saved inside a larger model).
* ``ae_prefix_bf16.pt``: ``torch.save({"ema_state_dict": ...})`` of the trainable parameters as
  bfloat16 under ``module.ae.`` (DDP + a wrapper; ``module.`` is removed as the reference does).
* ``torch_sums.json``: for each of the two torch files, every tensor's float64 sum as torch
  computes it, an independent check of the torch-free reader.
* ``wfvae_888_tiny_shapes.json``: names and shapes of ``shared/parity/wfvae_888_tiny``'s state
  dict (pass its directory as a second argument), for config inference without the 1 MB file.
"""

import json
import shutil
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, sys.argv[1])
from causalvideovae.model.vae.modeling_wfvae import WFVAEModel  # noqa: E402

torch.manual_seed(0)
model = WFVAEModel(
    latent_dim=2,
    base_channels=2,
    encoder_num_resblocks=1,
    decoder_num_resblocks=1,
    encoder_energy_flow_hidden_size=2,
    decoder_energy_flow_hidden_size=2,
    norm_type="layernorm",
    t_interpolation="trilinear",
    connect_res_layer_num=1,
)
gen = torch.Generator().manual_seed(1)
with torch.no_grad():
    for p in model.parameters():
        if p.ndim == 1:
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
shutil.rmtree(HERE / "sharded", ignore_errors=True)
model.save_pretrained(HERE / "sharded", max_shard_size="40KB", safe_serialization=True)

sd = model.state_dict()
trainable = {n for n, p in model.named_parameters() if p.requires_grad}
fp16 = {"vae." + k: v.half() for k, v in sd.items()}
bf16 = {"module.ae." + k: v.bfloat16() for k, v in sd.items() if k in trainable}
torch.save(fp16, HERE / "vae_prefix_fp16.ckpt")
torch.save({"ema_state_dict": bf16, "epoch": 3}, HERE / "ae_prefix_bf16.pt")
sums = {
    "vae_prefix_fp16.ckpt": {k: v.double().sum().item() for k, v in fp16.items()},
    "ae_prefix_bf16.pt": {k: v.double().sum().item() for k, v in bf16.items()},
}
(HERE / "torch_sums.json").write_text(json.dumps(sums, indent=1, sort_keys=True))

if len(sys.argv) > 2:
    from safetensors.numpy import load_file

    shared = load_file(Path(sys.argv[2]) / "diffusion_pytorch_model.safetensors")
    shapes = {k: list(v.shape) for k, v in sorted(shared.items())}
    (HERE / "wfvae_888_tiny_shapes.json").write_text(json.dumps(shapes, indent=0))
