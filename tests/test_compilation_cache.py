"""The commands' persistent compilation cache (``wfvae_jax.commands.compilation_cache``)."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A command run from the command line (argv None) that compiles one jit and prints the cache dir.
PROG = """
import sys
from wfvae_jax.commands.errors import run
def main(argv):
    import jax, jax.numpy as jnp
    jax.jit(lambda x: x + 1)(jnp.ones(3)).block_until_ready()
    print("DIR", jax.config.jax_compilation_cache_dir)
    print("MIN", jax.config.jax_persistent_cache_min_compile_time_secs)
sys.argv = ["prog"] + sys.argv[1:]
run(main, None if "--explicit" not in sys.argv else [])
"""


def _run(tmp_path, *args, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "WFVAE_JAX_"))}
    base.update(PYTHONPATH=str(ROOT), HOME=str(tmp_path / "home"), **env)
    base.pop("XDG_CACHE_HOME", None)
    p = subprocess.run(
        [sys.executable, "-c", PROG, *args], env=base, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    return dict(line.split(" ", 1) for line in p.stdout.splitlines())


@pytest.mark.parametrize("where", ["default", "env"])
def test_commands_use_the_cache(tmp_path, where):
    env = {} if where == "default" else {"WFVAE_JAX_CACHE_DIR": str(tmp_path / "c")}
    want = tmp_path / ("home/.cache/wfvae_jax/xla" if where == "default" else "c")
    out = _run(tmp_path, **env)
    assert out["DIR"] == str(want) and want.is_dir()
    assert float(out["MIN"]) == 0.5


def test_opt_out_and_explicit_argv(tmp_path):
    assert _run(tmp_path, WFVAE_JAX_NO_CACHE="1")["DIR"] == "None"
    assert not (tmp_path / "home/.cache").exists()
    assert _run(tmp_path, "--explicit")["DIR"] == "None"  # run(main, argv): tests, other code
    # The user's own JAX setting wins.
    out = _run(tmp_path, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine"))
    assert out["DIR"] == str(tmp_path / "mine")
