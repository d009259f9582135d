"""End-to-end reconstruct command on a real clip (random tiny weights: the pipeline only)."""

import json

import numpy as np
import pytest

from wfvae_jax import video_io
from wfvae_jax.convert import main as convert_main
from wfvae_jax.reconstruct import main, reconstruct

from .conftest import DATA, TINY

CLIP = DATA / "videos" / "bikes_0120.mp4"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    convert_main([str(TINY), str(out)])
    return out


def test_reconstruct_writes_outputs_and_consistent_metrics(converted, tmp_path):
    out = tmp_path / "rec.mp4"
    main(
        [
            "--checkpoint",
            str(converted),
            "--input",
            str(CLIP),
            "--output",
            str(out),
            "--num_frames",
            "9",
            "--resolution",
            "32",
            "--frame_stride",
            "2",
        ]
    )
    r = json.loads((tmp_path / "rec.json").read_text())
    assert r["shape"] == [1, 9, 32, 32, 3] and r["latent_shape"] == [1, 3, 4, 4, 8]
    assert (tmp_path / "rec.png").stat().st_size > 0
    written = video_io.read_video(out, None)
    assert written.shape == (9, 32, 32, 3)
    # PSNR from the JSON agrees with an independent numpy computation on the decoded clip
    # (the mp4 is lossy, so only loosely).
    x = video_io.read_video(CLIP, 9, 2, 0, 32)
    mse = np.mean(((x + 1) / 2 - (written + 1) / 2) ** 2)
    assert abs(-10 * np.log10(mse) - r["psnr"]) < 1.0
    assert len(r["psnr_per_frame"]) == 9


def test_reconstruct_rejects_bad_frame_count(converted, tmp_path):
    with pytest.raises(ValueError, match="nearest valid is 9"):
        reconstruct(str(converted), str(CLIP), str(tmp_path / "x.mp4"), num_frames=10)


def test_chunked_reconstruction_matches_direct(converted, tmp_path):
    a = reconstruct(str(converted), str(CLIP), str(tmp_path / "a.mp4"), 17, 32)
    b = reconstruct(str(converted), str(CLIP), str(tmp_path / "b.mp4"), 17, 32, t_chunk=8)
    assert abs(a["psnr"] - b["psnr"]) < 1e-4
