"""Bad input gets a clear ValueError, never silent truncation."""

import numpy as np
import pytest

import wfvae_jax
from wfvae_jax.inference.api import nearest_valid_num_frames


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


@pytest.mark.parametrize(
    "t,nearest", [(5, 1), (8, 9), (12, 9), (13, 9), (14, 17), (21, 17), (36, 33)]
)
def test_8x_frame_count_names_nearest(tiny888, t, nearest):
    params, config, _ = tiny888
    msg = f"T = 1 \\+ 8k frames, got T={t}; nearest valid T is {nearest}"
    with pytest.raises(ValueError, match=msg):
        wfvae_jax.encode(params, np.zeros((1, t, 16, 16, 3), np.float32), config)
    assert config.nearest_num_frames(t) == nearest and config.is_valid_num_frames(nearest)


def test_uint8_and_out_of_range_video(tiny):
    params, config, _ = tiny
    frames = np.full((1, 5, 16, 16, 3), 200, np.uint8)
    with pytest.raises(ValueError, match=r"dtype uint8.*x / 127\.5 - 1"):
        wfvae_jax.encode(params, frames, config)
    with pytest.raises(ValueError, match=r"max 200.*x / 127\.5 - 1"):
        wfvae_jax.encode(params, frames.astype(np.float32), config)
    x = np.zeros((1, 5, 16, 16, 3), np.float32)
    x[0, 3, 2, 1, 0] = -1.5
    with pytest.raises(ValueError, match=r"must be in \[-1, 1\], got min -1\.5"):
        wfvae_jax.encode(params, x, config)


def test_video_range_tolerance(tiny):
    import jax.numpy as jnp

    from wfvae_jax.inference.api import VIDEO_RANGE_TOL, validate_video

    x = np.zeros((1, 5, 16, 16, 3), np.float32)
    x[..., 0] = 1 + VIDEO_RANGE_TOL / 2  # resampling overshoot is admitted
    x[..., 1] = -1 - VIDEO_RANGE_TOL / 2
    validate_video(x)
    validate_video(jnp.asarray(x))  # device arrays are checked too
    x[0, 0, 0, 0, 2] = 1 + 2 * VIDEO_RANGE_TOL
    for arr in (x, jnp.asarray(x), jnp.asarray(x, jnp.bfloat16)):
        with pytest.raises(ValueError, match="must be in"):
            validate_video(arr)
