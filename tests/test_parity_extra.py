"""Parity with the PyTorch reference on architectures the shared tiny checkpoint does not cover.

The reference outputs in ``tests/data/parity_extra/<config>.safetensors`` were written by the
reference ``WFVAEModel`` (PKU-YuanGroup/WF-VAE @ d858bee, CPU, float32) through
``tests/data/parity_extra/make_vectors.py``. Its weights are not stored: both sides rebuild them
with :func:`reference_weights`, a NumPy-only recipe, from the parameter shapes and a seed.

Covered beyond ``test_parity.py`` (layernorm, latent 8, resblocks 2/2, connect 1, trilinear):
GroupNorm (per frame in ``ResnetBlock2D``, over (T, H, W) elsewhere), latent 4 and 16, encoder /
decoder resblocks 1 and 3, different encoder and decoder energy-flow widths,
``connect_res_layer_num`` 0 and 2, no attention, nearest time interpolation, and
T = 1, 5, 17, 21 at spatial sizes 8x8, 16x16, 24x40 and 40x24 (H x W).

The ``t8_*`` configs are the 8x8x8 variant (``L1_8X``; ``test_parity.py`` covers only the shared
``wfvae_888_tiny``): base widths 8, 24 and 32, latent 4 and 32, resblocks 1/3 and 3/1, energy
flow 8/16 and 16/24, ``connect_res_layer_num`` 0 and 2, no attention, nearest, GroupNorm, and
T = 1, 17, 25, 33, 41 at non-square sizes. For the ``TILED`` cases the generator also ran the
reference's own chunked inference (``enable_tiling`` with the given chunk sizes), stored as
``z_tiled``/``y_tiled``.

This module's top level needs only NumPy and pytest, so the generator can import it under a
PyTorch environment without JAX.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest

DATA = pathlib.Path(__file__).parent / "data" / "parity_extra"
TOL = 1e-4

# Constructor arguments shared by the reference ``WFVAEModel`` and our ``WFVAEConfig``, with the
# weight seed; small channel counts keep the reference run and the JAX compiles fast.
CONFIGS: dict[str, dict] = {
    # GroupNorm(32) needs every normalised width to be a multiple of 32.
    "groupnorm": dict(
        seed=101,
        latent_dim=8,
        base_channels=32,
        encoder_num_resblocks=2,
        decoder_num_resblocks=2,
        encoder_energy_flow_hidden_size=32,
        decoder_energy_flow_hidden_size=32,
        use_attention=True,
        norm_type="groupnorm",
        t_interpolation="trilinear",
        connect_res_layer_num=1,
    ),
    "latent16_connect2": dict(
        seed=102,
        latent_dim=16,
        base_channels=16,
        encoder_num_resblocks=1,
        decoder_num_resblocks=3,
        encoder_energy_flow_hidden_size=16,
        decoder_energy_flow_hidden_size=24,
        use_attention=True,
        norm_type="layernorm",
        t_interpolation="trilinear",
        connect_res_layer_num=2,
    ),
    "noattn_nearest_connect0": dict(
        seed=103,
        latent_dim=4,
        base_channels=16,
        encoder_num_resblocks=3,
        decoder_num_resblocks=1,
        encoder_energy_flow_hidden_size=16,
        decoder_energy_flow_hidden_size=16,
        use_attention=False,
        norm_type="layernorm",
        t_interpolation="nearest",
        connect_res_layer_num=0,
    ),
}

# The reference's 8x8x8 variant: level 1 halves/doubles time too (temporal_downsample 8).
L1_8X = dict(
    l1_dowmsample_block="Spatial2xTime2x3DDownsample",
    l1_downsample_wavelet="HaarWaveletTransform3D",
    l1_upsample_block="Spatial2xTime2x3DUpsample",
    l1_upsample_wavelet="InverseHaarWaveletTransform3D",
)
CONFIGS.update(
    {
        "t8_latent32_connect2": dict(
            seed=104,
            latent_dim=32,
            base_channels=24,
            encoder_num_resblocks=1,
            decoder_num_resblocks=3,
            encoder_energy_flow_hidden_size=16,
            decoder_energy_flow_hidden_size=24,
            use_attention=True,
            norm_type="layernorm",
            t_interpolation="trilinear",
            connect_res_layer_num=2,
            **L1_8X,
        ),
        "t8_noattn_nearest_connect0": dict(
            seed=105,
            latent_dim=4,
            base_channels=8,
            encoder_num_resblocks=3,
            decoder_num_resblocks=1,
            encoder_energy_flow_hidden_size=8,
            decoder_energy_flow_hidden_size=16,
            use_attention=False,
            norm_type="layernorm",
            t_interpolation="nearest",
            connect_res_layer_num=0,
            **L1_8X,
        ),
        "t8_groupnorm": dict(
            seed=106,
            latent_dim=8,
            base_channels=32,
            encoder_num_resblocks=2,
            decoder_num_resblocks=2,
            encoder_energy_flow_hidden_size=32,
            decoder_energy_flow_hidden_size=32,
            use_attention=True,
            norm_type="groupnorm",
            t_interpolation="trilinear",
            connect_res_layer_num=1,
            **L1_8X,
        ),
    }
)

# Per config: case name -> (T, H, W) of a B=1 input drawn U(-1, 1) (see make_input).
CASES: dict[str, dict[str, tuple[int, int, int]]] = {
    # Several frames, so GroupNorm over (T, H, W) differs from GroupNorm per frame; H != W.
    "groupnorm": {"t5_24x40": (5, 24, 40)},
    "latent16_connect2": {"t17_16x16": (17, 16, 16)},
    # T = 1 takes the image path (no time interpolation); 8x8 gives a 1x1 latent.
    "noattn_nearest_connect0": {"t21_8x8": (21, 8, 8), "t1_40x24": (1, 40, 24)},
    "t8_latent32_connect2": {"t25_16x24": (25, 16, 24), "t41_8x16": (41, 8, 16)},
    "t8_noattn_nearest_connect0": {
        "t17_24x16": (17, 24, 16),
        "t1_16x8": (1, 16, 8),
        "t33_8x8": (33, 8, 8),
    },
    "t8_groupnorm": {"t17_8x16": (17, 8, 16)},
}

# Cases whose reference chunked outputs are stored: (encoder t_chunk in video frames, decoder
# t_chunk in latent frames). The reference's own ``tile_decode`` is exact only when no chunk but
# the last ends one latent frame before the end ((t_latent - 1) % t_chunk != 1, t_chunk >= 2);
# these chunks satisfy that and give decoder chunks that carry a lookahead frame.
TILED: dict[str, dict[str, tuple[int, int]]] = {
    "t8_latent32_connect2": {"t41_8x16": (16, 3)},
    "t8_noattn_nearest_connect0": {"t33_8x8": (8, 2)},
}

# Output tensors written per case (channels-first, as the reference returns them).
OUTPUTS = ("moments", "z", "enc_l1", "enc_l2", "y", "dec_l1", "dec_l2")


def model_kwargs(name: str) -> dict:
    """The constructor arguments of config ``name`` (without the seed)."""
    return {k: v for k, v in CONFIGS[name].items() if k != "seed"}


def reference_weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Deterministic random weights for a reference state dict (float32, PyTorch layout).

    Keys are visited in sorted order with one ``np.random.default_rng(seed)``: kernels (rank >= 2,
    ``(O, I, *k)``) are ``N(0, 1/fan_in)`` with ``fan_in = I * prod(k)``; 1-D ``*.weight`` (norm
    scales) ``N(1, 0.1^2)``; 1-D ``*.bias`` (norm and conv biases) ``N(0, 0.1^2)``. So no
    parameter sits at a trivial value and activations stay O(1) through the network.

    ``shapes`` must hold the learnable parameters only (not the reference's fixed Haar kernels);
    the generator takes them from the reference model, the test from ours, and the two key sets
    being equal is checked by the strict conversion.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        if len(shape) >= 2:
            w = rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
        elif key.endswith(".weight"):
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            w = 0.1 * rng.standard_normal(shape)
        out[key] = w.astype(np.float32)
    return out


def recipe_checksum(weights: dict[str, np.ndarray]) -> np.ndarray:
    """``[count, sum, sum of squares]`` of all weights (float64): detects a changed recipe."""
    flat = np.concatenate([np.ravel(weights[k]).astype(np.float64) for k in sorted(weights)])
    return np.array([flat.size, flat.sum(), np.square(flat).sum()])


def make_input(seed: int, t: int, h: int, w: int) -> np.ndarray:
    """A ``(1, 3, T, H, W)`` float32 video, uniform in [-1, 1] (reference NCTHW layout)."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (1, 3, t, h, w)).astype(np.float32)


def _cl(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, 1, -1)  # NCTHW -> NTHWC


_PARAMS_CACHE: dict[str, tuple] = {}


def _params(name: str):
    """Converted recipe weights for config ``name`` -> (params, config, torch state dict)."""
    if name not in _PARAMS_CACHE:
        import jax

        from wfvae_jax.core.config import WFVAEConfig
        from wfvae_jax.core.model import init_params
        from wfvae_jax.io.convert import params_to_torch_state_dict, torch_state_dict_to_params

        config = WFVAEConfig(**model_kwargs(name))
        # Our parameter tree, in the reference's key names and layout, gives the key set/shapes.
        template = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
        zeros = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), template)
        shapes = {k: v.shape for k, v in params_to_torch_state_dict(zeros).items()}
        sd = reference_weights(shapes, CONFIGS[name]["seed"])
        _PARAMS_CACHE[name] = (torch_state_dict_to_params(sd, config), config, sd)
    return _PARAMS_CACHE[name]


def _vectors(name: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(DATA / f"{name}.safetensors"))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_recipe_reproduces_generator_weights(name):
    _, _, sd = _params(name)
    np.testing.assert_allclose(recipe_checksum(sd), _vectors(name)["recipe_checksum"], rtol=1e-9)


# The fast tier runs one architecture per temporal variant (GroupNorm at 4x, latent 32 with two
# connect layers at 8x); every other (config, clip) case is in the slow tier.
FAST_CASES = {("groupnorm", "t5_24x40"), ("t8_latent32_connect2", "t25_16x24")}


def _tiered(cases: list[tuple[str, str]]) -> list:
    return [c if c in FAST_CASES else pytest.param(*c, marks=pytest.mark.slow) for c in cases]


@pytest.mark.parametrize(
    "name,case", _tiered([(n, c) for n in sorted(CASES) for c in sorted(CASES[n])])
)
def test_parity_with_reference(name, case):
    import wfvae_jax

    params, config, _ = _params(name)
    vec = _vectors(name)
    t, h, w = CASES[name][case]
    x = vec[f"{case}/x"]
    # The stored input is the recipe's: the generator and this test agree on what they ran.
    np.testing.assert_array_equal(x, make_input(CONFIGS[name]["seed"], t, h, w))
    post, (l1, l2) = wfvae_jax.encode(params, _cl(x), config, return_taps=True)
    got = {
        "moments": np.concatenate([post.mean, post.logvar], -1),
        "z": post.mode(),
        "enc_l1": l1,
        "enc_l2": l2,
    }
    # Decode the reference's latent so encoder and decoder errors are measured separately.
    y, (dl1, dl2) = wfvae_jax.decode(params, _cl(vec[f"{case}/z"]), config, return_taps=True)
    got.update(y=y, dec_l1=dl1, dec_l2=dl2)
    errors = {}
    for out in OUTPUTS:
        ref = _cl(vec[f"{case}/{out}"])
        assert got[out].shape == ref.shape, (out, got[out].shape, ref.shape)
        errors[out] = float(np.abs(np.asarray(got[out], np.float32) - ref).max())
    bad = {k: v for k, v in errors.items() if not v <= TOL}
    assert not bad, f"{name}/{case}: max abs errors over {TOL}: {bad} (all: {errors})"


@pytest.mark.slow
@pytest.mark.parametrize("name,case", [(n, c) for n in sorted(TILED) for c in sorted(TILED[n])])
def test_chunked_matches_reference_chunked(name, case):
    """Our Causal Cache at the reference's chunk sizes == its ``enable_tiling`` outputs."""
    import wfvae_jax

    params, config, _ = _params(name)
    vec = _vectors(name)
    enc_chunk, dec_chunk = TILED[name][case]
    x = _cl(vec[f"{case}/x"])
    z = wfvae_jax.encode(params, x, config, t_chunk=enc_chunk).mean
    z_direct = wfvae_jax.encode(params, x, config).mean
    y = wfvae_jax.decode(params, _cl(vec[f"{case}/z"]), config, t_chunk=dec_chunk)
    y_direct = wfvae_jax.decode(params, _cl(vec[f"{case}/z"]), config)
    errors = {
        "z_tiled": float(np.abs(np.asarray(z) - _cl(vec[f"{case}/z_tiled"])).max()),
        "y_tiled": float(np.abs(np.asarray(y) - _cl(vec[f"{case}/y_tiled"])).max()),
    }
    assert all(v <= TOL for v in errors.values()), f"{name}/{case}: {errors}"
    # Chunked equals our own direct inference much more tightly than the cross-framework TOL.
    assert float(np.abs(z - z_direct).max()) <= 1e-5
    assert float(np.abs(y - y_direct).max()) <= 1e-5
