"""Data: the videos every command reads (``VideoSource``: a folder, a TFDS dataset) and the clips
a ``ClipSpec`` takes from them; the training input pipeline (grain sources, per-example
transforms); the reader of encoded latent datasets (``LatentSource``, ``wfvae encode-dataset``).

Names are loaded on first access, so ``from wfvae_jax.data.video_source import VideoFiles`` (used
by evaluation) does not import grain, which only the training install (``pip install .[train]``)
has.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "LatentSource": "latents",
    "SampleLatent": "latents",
    "make_video_dataset": "pipeline",
    "TfdsVideoSource": "tfds",
    "VideoFolderSource": "sources",
    "build_video_index": "sources",
    "VideoClips": "video_source",
    "VideoFiles": "video_source",
    "VideoSource": "video_source",
    "find_videos": "video_source",
    "window_span": "wfvae_jax.io.clip_spec",
    "LongEnough": "transforms",
    "SampleClip": "transforms",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = _LAZY[name] if "." in _LAZY[name] else f"wfvae_jax.data.{_LAZY[name]}"
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'wfvae_jax.data' has no attribute {name!r}")
