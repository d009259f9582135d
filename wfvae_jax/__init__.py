"""wfvae_jax: WF-VAE (wavelet-driven energy-flow video VAE, arXiv 2411.17459) in JAX/Flax.

Public API::

    params, config = wfvae_jax.load_pretrained("converted_dir")
    posterior = wfvae_jax.encode(params, video, config)          # video (B, T, H, W, 3) in [-1, 1]
    video_hat = wfvae_jax.decode(params, posterior.mode(), config)
    video_hat = wfvae_jax.reconstruct(params, video, config)  # encode, mode, decode
    z = wfvae_jax.normalize_latents(posterior.sample(key), config)  # diffusion-ready latents
    video = wfvae_jax.decode(params, wfvae_jax.denormalize_latents(z, config), config)
    # Long clips run in Causal Cache chunks on their own (wfvae_jax.auto_t_chunk, same result);
    # t_chunk=0 forces the whole clip at once, t_chunk=16 picks the chunk.

Importing the package needs only the inference install (``pip install .``): training, evaluation
and analysis modules are imported by the commands that use them.
"""

from wfvae_jax.core import config
from wfvae_jax.core.config import WFVAEConfig, get_config
from wfvae_jax.core.latents import denormalize_latents, normalize_latents
from wfvae_jax.core.model import WFVAE, init_params
from wfvae_jax.core.posterior import DiagonalGaussian
from wfvae_jax.inference.api import (
    auto_t_chunk,
    decode,
    encode,
    nearest_valid_num_frames,
    parse_dtype,
    reconstruct,
    validate_video,
)
from wfvae_jax.io.checkpoint import load_pretrained, save_pretrained

__all__ = [
    "DiagonalGaussian",
    "WFVAE",
    "WFVAEConfig",
    "auto_t_chunk",
    "config",
    "decode",
    "denormalize_latents",
    "encode",
    "get_config",
    "init_params",
    "load_pretrained",
    "nearest_valid_num_frames",
    "normalize_latents",
    "parse_dtype",
    "reconstruct",
    "save_pretrained",
    "validate_video",
]
__version__ = "0.1.0"
