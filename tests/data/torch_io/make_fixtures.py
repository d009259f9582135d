"""Regenerate the torch_io test fixtures. NEEDS torch (and numpy); the tests never run this.

The project venv has no torch on purpose (wfvae_jax.io.torch_files reads checkpoints without it), so
run this once in a separate venv:

    python3 -m venv /work/torchvenv
    /work/torchvenv/bin/pip install torch==2.13.0 numpy
    /work/torchvenv/bin/python tests/data/torch_io/make_fixtures.py

For every ``NAME.{ckpt,pt,pth}`` it writes ``NAME.npz`` holding every tensor of the saved tree
under its path (keys joined with "/"), as numpy arrays produced by torch itself
(``tensor.contiguous().numpy()``; bfloat16 as ``tensor.float()``, the widening torch_io applies).
Values are seeded, so reruns give the same arrays (the zip bytes may differ by serialization id).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent


class TinyGenerator(nn.Module):
    """Parameter names shaped like WF-VAE's (encoder/decoder, a frozen wavelet conv)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.conv_in = nn.Conv3d(3, 4, 1)
        self.encoder.norm_out = nn.GroupNorm(2, 4)
        self.encoder.wavelet_transform_in = nn.Module()
        self.encoder.wavelet_transform_in.h_conv = nn.Conv3d(1, 1, 2, bias=False)
        # Like causalvideovae/model/modules/wavelet.py: fixed filters, not trained.
        self.encoder.wavelet_transform_in.h_conv.requires_grad_(False)
        self.decoder = nn.Module()
        self.decoder.conv_out = nn.Conv3d(4, 3, 1)


class TinyDiscriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(3, 2, 2), nn.BatchNorm2d(2))


class FakeDDP(nn.Module):
    """Stands in for DistributedDataParallel: parameter names gain a ``module.`` prefix."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.contiguous().numpy().copy()


def flatten(obj, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = to_numpy(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}/{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}/{i}" if prefix else str(i)))
    return out


def save(obj, name: str) -> None:
    torch.save(obj, HERE / name)
    np.savez_compressed(HERE / (Path(name).stem + ".npz"), **flatten(obj))


def one_training_step(gen: nn.Module, disc: nn.Module):
    gen_opt = torch.optim.AdamW([p for p in gen.parameters() if p.requires_grad], lr=1e-4)
    disc_opt = torch.optim.AdamW(disc.parameters(), lr=1e-4)
    x = torch.randn(1, 3, 1, 4, 4)
    loss = gen.decoder.conv_out(gen.encoder.norm_out(gen.encoder.conv_in(x))).square().mean()
    loss.backward()
    gen_opt.step()
    disc.main(torch.randn(2, 3, 4, 4)).mean().backward()
    disc_opt.step()
    return gen_opt, disc_opt


def make_training_checkpoints() -> None:
    gen, disc = TinyGenerator(), TinyDiscriminator()
    ddp_gen = FakeDDP(gen)
    gen_opt, disc_opt = one_training_step(gen, disc)
    # causalvideovae/model/ema_model.py: shadow = clones of the DDP model's trainable params.
    # Scaled so a test can tell EMA weights from gen_model weights.
    ema_shadow = {
        name: (0.5 * p.data).clone() for name, p in ddp_gen.named_parameters() if p.requires_grad
    }
    # train_ddp.py save_checkpoint layout (note the reference's "dics_model" spelling).
    common = {
        "epoch": 1,
        "current_step": 7,
        "optimizer_state": {
            "gen_optimizer": gen_opt.state_dict(),
            "disc_optimizer": disc_opt.state_dict(),
        },
        "state_dict": {"gen_model": gen.state_dict(), "dics_model": disc.state_dict()},
        "scaler_state": torch.amp.GradScaler("cpu").state_dict(),
        "sampler_state": {"epoch": 1, "seed": 42, "current_index": 3},
    }
    save({**common, "ema_state_dict": ema_shadow}, "train_ema.ckpt")
    # Trained without --ema: ema_state_dict is {}; drop the bulky optimizer state.
    no_ema = {k: v for k, v in common.items() if k != "optimizer_state"}
    save({**no_ema, "ema_state_dict": {}}, "train_no_ema.ckpt")


def make_dtypes_and_views() -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    bf = torch.randn(3, 5).to(torch.bfloat16)
    obj = {
        "float16": torch.randn(2, 3).half(),
        "bfloat16": bf,
        "bfloat16_transposed": bf.t(),  # non-contiguous bf16 view
        "float64": torch.randn(3, dtype=torch.float64),
        "int64": torch.tensor([-3, 0, 2**40]),
        "int32": torch.tensor([[1, -2]], dtype=torch.int32),
        "uint8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "base": base,
        "transposed": base.t(),  # stride (1, 6)
        "sliced": base[1:3, ::2],  # storage offset 6, stride (6, 2); shares base's storage
        "expanded": torch.arange(3.0).expand(4, 3),  # stride (0, 1)
        "conv_weight": nn.Conv3d(2, 3, (3, 1, 2)).weight.data.permute(0, 2, 3, 4, 1),
        "parameter": nn.Parameter(torch.randn(2, 2)),
    }
    save(obj, "dtypes_views.pt")


def make_torchvision_style() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    model.train()
    model(torch.randn(2, 3, 5, 5))  # running stats and num_batches_tracked change
    save(model.state_dict(), "torchvision_style.pth")


def make_metadata_tree() -> None:
    obj = {
        "size": torch.Size([2, 3]),
        "dtype": torch.bfloat16,
        "bytes": b"\x00\xffab",
        "set": {1, 2},
        "complex": 1 + 2j,
        "tuple": (1, "a", None, 2.5),
        "tensor": torch.ones(2),
    }
    save(obj, "metadata_tree.pt")


def make_refused() -> None:
    # A pickled nn.Module references torch.nn.modules.linear.Linear: must be refused.
    torch.save(nn.Linear(2, 1), HERE / "whole_module.pt")
    torch.save(
        {"w": torch.ones(2)}, HERE / "legacy_format.pt", _use_new_zipfile_serialization=False
    )


def main() -> None:
    torch.manual_seed(0)
    make_training_checkpoints()
    make_dtypes_and_views()
    make_torchvision_style()
    make_metadata_tree()
    make_refused()
    for f in sorted(HERE.iterdir()):
        print(f"{f.stat().st_size:7d}  {f.name}")


if __name__ == "__main__":
    main()
