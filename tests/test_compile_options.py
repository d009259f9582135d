"""wfvae_jax.core.compile_options: the CPU compiler options reach the model's top-level compiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import wfvae_jax
from wfvae_jax.core import compile_options
from wfvae_jax.inference import api

YNN = (
    '"__ynn_fusion"'  # an instruction's backend_config kind (names in metadata may say ynn_fusion)
)


@pytest.fixture(scope="module")
def tiny():
    config = wfvae_jax.get_config("tiny")
    return config, wfvae_jax.init_params(config, jax.random.key(0))


def test_cpu_options_only_on_cpu():
    assert compile_options.options("cpu") == {"xla_cpu_experimental_ynn_fusion_type": ""}
    assert compile_options.options("gpu") == {} and compile_options.options("tpu") == {}
    extra = compile_options.CPU_MEMORY_SCHEDULER
    assert compile_options.options("cpu", extra) == {**compile_options.CPU, **extra}
    assert compile_options.options("gpu", extra) == {}


@pytest.mark.parametrize("t_chunk", [0, pytest.param(4, marks=pytest.mark.slow)])
def test_encode_compiles_without_ynn_fusions(tiny, t_chunk):
    config, params = tiny
    x = jnp.zeros((1, 9, 32, 32, 3), jnp.float32)
    ours = api.lower_encode(params, x, config, t_chunk=t_chunk).compile().as_text()
    # The same computation under a plain outer jit gets XLA's defaults: YNNPACK fusions.
    plain = jax.jit(lambda p, v: wfvae_jax.encode(p, v, config, t_chunk=t_chunk).mean)
    default = plain.lower(params, x).compile().as_text()
    assert YNN in default  # the option has something to turn off in this jaxlib
    assert YNN not in ours


@pytest.mark.slow  # another ~20 s compile; the encoder case above checks the same option path
def test_decode_compiles_without_ynn_fusions(tiny):
    config, params = tiny
    z = jnp.zeros((1, 3, 4, 4, config.latent_dim), jnp.float32)
    assert YNN not in api.lower_decode(params, z, config, t_chunk=0).compile().as_text()


def test_under_outer_jit_and_eagerly_agree(tiny):
    """Nested (outer jax.jit: no options allowed there) and top-level calls give one function."""
    config, params = tiny
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 9, 32, 32, 3)), jnp.float32)
    eager = wfvae_jax.encode(params, x, config, t_chunk=0).mean
    nested = jax.jit(lambda p, v: wfvae_jax.encode(p, v, config, t_chunk=0).mean)(params, x)
    np.testing.assert_allclose(np.asarray(eager), np.asarray(nested), atol=1e-5)
