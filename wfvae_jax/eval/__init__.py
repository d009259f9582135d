"""Reconstruction evaluation (``python eval.py``): clips, model loading, metrics, reports.

Modules: :mod:`.clips` (which frames of which videos), :mod:`.pipeline` (``wfvae_jax.reconstruct``
and scores; direct vs Causal Cache), :mod:`.report` (metrics.json, metrics.md, mp4s, PNG strips),
:mod:`.cli` (the command line). The model (a converted checkpoint or a training workdir) is
loaded by :mod:`wfvae_jax.io.checkpoint`.
"""

from wfvae_jax.eval.clips import EvalClip, FolderClips, TfdsClips
from wfvae_jax.eval.pipeline import EvalOptions, evaluate
from wfvae_jax.eval.report import format_markdown
from wfvae_jax.io.checkpoint import load_model, load_train_checkpoint

__all__ = [
    "EvalClip",
    "EvalOptions",
    "FolderClips",
    "TfdsClips",
    "evaluate",
    "format_markdown",
    "load_model",
    "load_train_checkpoint",
]
