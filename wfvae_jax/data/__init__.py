"""Training data: video sources, per-example transforms and the grain input pipeline; the reader
of encoded latent datasets (``LatentSource``, ``wfvae encode-dataset``).

Names are loaded on first access, so ``from wfvae_jax.data.sources import find_videos`` (used by
evaluation) does not import grain, which only the training install (``pip install .[train]``) has.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "LatentSource": "latents",
    "SampleLatent": "latents",
    "make_video_dataset": "pipeline",
    "TfdsVideoSource": "sources",
    "VideoFolderSource": "sources",
    "build_video_index": "sources",
    "find_videos": "sources",
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
