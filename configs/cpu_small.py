"""The packaged config ``cpu_small`` on this checkout's shared real clips (``../shared/videos``).

Command (10-20 minutes on 2 CPU cores, from the repository root):
    python train.py --config configs/cpu_small.py --workdir runs/cpu_small

Held out (never trained on): ``carphone_pristine.mp4`` is the evaluation video (2 clips of 9
frames, center 64x64 crop of the short-side-resized frames) and its re-encoded copy
``carphone_distorted.mp4`` is excluded from training too; training draws random 9-frame windows
and random 64x64 crops from bikes.mp4, bigbuckbunny.mp4 and tree.avi. Everything else, and the
expected result, is wfvae_jax/configs/cpu_small.py (``wfvae train --config cpu_small``, which
takes the data paths from the command line instead).
"""

import os

import ml_collections

from wfvae_jax.configs import cpu_small

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIDEOS = os.path.normpath(os.path.join(_REPO, "..", "shared", "videos"))


def get_config() -> ml_collections.ConfigDict:
    """``cpu_small`` with the shared clips as training and held-out data."""
    config = cpu_small.get_config()
    config.data.train_dir = VIDEOS
    config.data.exclude = ("carphone_distorted.mp4",)
    config.eval.files = (os.path.join(VIDEOS, "carphone_pristine.mp4"),)
    return config
