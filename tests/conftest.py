"""Shared test fixtures. Float32 with 'highest' matmul precision so GPUs do not use TF32."""

import os
import pathlib

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")

DATA = pathlib.Path(__file__).parent / "data"
TINY = DATA / "wfvae_tiny"
SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def tiny():
    """(params, config, vectors) of the reference tiny parity checkpoint; vectors are NCTHW."""
    from safetensors.numpy import load_file

    from wfvae_jax.convert import load_reference

    params, config = load_reference(TINY)
    return params, config, load_file(os.fspath(TINY / "vectors.safetensors"))
