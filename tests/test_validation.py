"""Bad input gets a clear ValueError, never silent truncation."""

import numpy as np
import pytest

import wfvae_jax
from wfvae_jax.api import nearest_valid_num_frames


@pytest.mark.parametrize(
    "shape,match",
    [
        ((9, 32, 32, 3), "add a batch axis"),
        ((1, 3, 9, 32, 32), "channels-first"),
        ((1, 9, 32, 32, 4), "3 channels"),
        ((1, 8, 32, 32, 3), "nearest valid T is 9"),
        ((1, 11, 32, 32, 3), "nearest valid T is 9"),
        ((1, 12, 32, 32, 3), "nearest valid T is 13"),
        ((1, 9, 30, 32, 3), "multiples of 8"),
        ((1, 9, 32, 36, 3), "multiples of 8"),
    ],
)
def test_bad_video_shapes(tiny, shape, match):
    params, config, _ = tiny
    with pytest.raises(ValueError, match=match):
        wfvae_jax.encode(params, np.zeros(shape, np.float32), config)


def test_non_finite_values(tiny):
    params, config, _ = tiny
    x = np.zeros((1, 5, 16, 16, 3), np.float32)
    x[0, 2, 3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        wfvae_jax.encode(params, x, config)
    z = np.zeros((1, 2, 2, 2, config.latent_dim), np.float32)
    z[..., 0] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        wfvae_jax.decode(params, z, config)


def test_latent_channel_mismatch(tiny):
    params, config, _ = tiny
    with pytest.raises(ValueError, match="latent_dim is 8"):
        wfvae_jax.decode(params, np.zeros((1, 2, 2, 2, 4), np.float32), config)


def test_nearest_valid_num_frames():
    assert [nearest_valid_num_frames(t) for t in (0, 1, 2, 3, 4, 5, 33, 34, 35)] == [
        1,
        1,
        1,
        1,
        5,
        5,
        33,
        33,
        33,
    ]
