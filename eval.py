"""Evaluate a WF-VAE's reconstructions: PSNR, SSIM, LPIPS (AlexNet), FVD; direct vs Causal Cache.

    python eval.py --workdir RUN --videos VAL_DIR                  # latest checkpoint, EMA weights
    python eval.py --checkpoint CONVERTED --videos VAL_DIR --out OUT \
        --lpips_weights alexnet-owt-7be5be79.pth --causal_cache

Defaults follow the paper's Table 1 (33 frames, 256x256). See docs/eval.md and
``python eval.py --help``; the logic lives in ``wfvae_jax.eval`` (also ``wfvae eval``).
"""

from wfvae_jax.commands.errors import run
from wfvae_jax.commands.eval import main

if __name__ == "__main__":
    run(main)
