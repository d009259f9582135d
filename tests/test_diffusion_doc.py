"""docs/diffusion.md runs: every ```python block, section by section in one namespace, on the
converted tiny checkpoint (the blocks assert their own claims: chunked and direct gradients
agree, vmap equals the batched call, sharded equals one device). The quoted error messages are
the library's. The data-mesh section also runs on 2 simulated CPU devices (a subprocess: the
device count is fixed when JAX starts). Sections that compile for minutes are slow-marked."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import wfvae_jax

REPO = pathlib.Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "diffusion.md"
SETUP = "Setup: a model whose config holds latent statistics"
NORMALISATION = "Latent normalisation"
MESH = "A batch sharded on a data mesh"
# Stand-ins for what `wfvae latent-stats --write_config` writes into the tiny checkpoint.
SCALE = tuple(float(v) for v in np.linspace(0.5, 2.0, 8))
SHIFT = tuple(float(v) for v in np.linspace(-0.4, 0.3, 8))


def doc_sections(path: pathlib.Path = DOC) -> dict[str, str]:
    """``{"## heading": python source}``: the ```python blocks of each section, joined."""
    out: dict[str, str] = {}
    heading = ""
    for block in re.split(r"^(## .*)$", path.read_text(), flags=re.M):
        if block.startswith("## "):
            heading = block[3:].strip()
            continue
        code = re.findall(r"^```python\n(.*?)^```", block, flags=re.M | re.S)
        if code:
            out[heading] = "\n".join(code)
    return out


def quoted_errors(path: pathlib.Path = DOC) -> list[str]:
    """The indented ``ValueError: ...`` quotes of the doc, each joined into one line."""
    quotes = re.findall(r"^    (ValueError: .*?)\n\n", path.read_text(), flags=re.M | re.S)
    return [" ".join(q.split()) for q in quotes]


def write_checkpoint(root: pathlib.Path, params, config) -> None:
    """``root/out/wfvae_tiny``: the tiny model with per-channel latent statistics."""
    wfvae_jax.save_pretrained(
        root / "out" / "wfvae_tiny", params, config.replace(scale=SCALE, shift=SHIFT)
    )


def run_sections(names: list[str], namespace: dict, cwd: pathlib.Path) -> None:
    sections = doc_sections()
    here = os.getcwd()
    os.chdir(cwd)
    try:
        for name in names:
            exec(compile(sections[name], f"{DOC.name}: {name}", "exec"), namespace)
    finally:
        os.chdir(here)


SECTIONS = list(doc_sections())
# Sections whose programs take minutes to compile for CPU (the gradient of chunked decoding is
# the largest: ~1 min alone on an idle 2-core machine); the others compile in seconds.
SLOW = {
    "Decode inside a loss under `jax.grad`, direct and chunked",
    "bfloat16",
    MESH,
    "`jax.vmap`",
}


@pytest.fixture(scope="module")
def doc_namespace(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusion_doc")
    write_checkpoint(root, tiny[0], tiny[1])
    namespace: dict = {"__name__": "diffusion_doc"}
    # Every later section uses the setup's model and video and the normalisation's posterior.
    run_sections([SETUP, NORMALISATION], namespace, root)
    return namespace, root


def test_doc_has_the_sections():
    assert SECTIONS[0] == SETUP
    for name in (
        NORMALISATION,
        "Encode inside your own `jit`, next to a model step",
        "Decode inside a loss under `jax.grad`, direct and chunked",
        "bfloat16",
        MESH,
        "`jax.vmap`",
    ):
        assert name in SECTIONS


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in SECTIONS[1:]]
)
def test_section_runs(doc_namespace, name):
    namespace, root = doc_namespace
    run_sections([name], namespace, root)


def test_quoted_errors_are_the_library_messages(tiny):
    params, config = tiny[0], tiny[1]  # the placeholder scale/shift of the reference
    quotes = quoted_errors()
    assert len(quotes) == 2
    with pytest.raises(ValueError) as e:
        wfvae_jax.normalize_latents(np.zeros((1, 3, 4, 4, 8), np.float32), config)
    assert quotes[0] == f"ValueError: {e.value}"
    with pytest.raises(ValueError) as e:
        wfvae_jax.encode(params, np.zeros((9, 32, 32, 3), np.float32), config)
    assert quotes[1] == f"ValueError: {e.value}"


@pytest.mark.slow
def test_mesh_section_on_two_devices(tiny, tmp_path):
    write_checkpoint(tmp_path, tiny[0], tiny[1])
    child = textwrap.dedent(
        f"""
        import jax
        from tests.test_diffusion_doc import MESH, NORMALISATION, SETUP, run_sections
        import pathlib
        assert jax.device_count() == 2
        ns = {{}}
        run_sections([SETUP, NORMALISATION, MESH], ns, pathlib.Path({str(tmp_path)!r}))
        assert len(ns["z_sharded"].sharding.device_set) == 2
        print("ok")
        """
    )
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        PYTHONPATH=str(REPO),
        JAX_PLATFORMS="cpu",
    )
    out = subprocess.run(
        [sys.executable, "-c", child], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
