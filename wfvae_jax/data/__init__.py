"""Training data: video sources, per-example transforms and the grain input pipeline; the reader
of encoded latent datasets (``LatentSource``, ``python -m wfvae_jax.encode_dataset``)."""

from wfvae_jax.data.latents import LatentSource, SampleLatent
from wfvae_jax.data.pipeline import make_video_dataset
from wfvae_jax.data.sources import (
    TfdsVideoSource,
    VideoFolderSource,
    build_video_index,
    find_videos,
    window_span,
)
from wfvae_jax.data.transforms import LongEnough, SampleClip

__all__ = [
    "LatentSource",
    "LongEnough",
    "SampleClip",
    "SampleLatent",
    "TfdsVideoSource",
    "VideoFolderSource",
    "build_video_index",
    "find_videos",
    "make_video_dataset",
    "window_span",
]
