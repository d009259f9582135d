"""Shared test fixtures. Float32 with 'highest' matmul precision so GPUs do not use TF32.

Compiled programs are shared across the whole run through JAX's persistent compilation cache:
every XLA executable that took at least ``XLA_CACHE_MIN_COMPILE_S`` to compile is stored in
``XLA_CACHE`` and reloaded instead of recompiled, by this process after its in-memory caches were
dropped (see ``_bounded_memory_maps``) and by every subprocess a test starts (they inherit
``JAX_COMPILATION_CACHE_DIR``). On this project's CPU a tiny-model encode compiles in ~10 s and
reloads in ~0.3 s. ``XLA_CACHE`` is a fresh temporary directory per run, so each run's timings
are honest; ``WFVAE_TEST_XLA_CACHE=DIR`` keeps it in DIR instead (CI shares one between the fast
and the slow tier; a developer can keep one across runs).
"""

import atexit
import os
import pathlib
import shutil
import tempfile

# Before jax is imported: subprocesses inherit the environment, this process reads it at import.
XLA_CACHE = os.environ.get("WFVAE_TEST_XLA_CACHE")
if not XLA_CACHE:
    XLA_CACHE = tempfile.mkdtemp(prefix="wfvae_jax_xla_")
    atexit.register(shutil.rmtree, XLA_CACHE, ignore_errors=True)
XLA_CACHE_MIN_COMPILE_S = 0.3
os.makedirs(XLA_CACHE, exist_ok=True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = XLA_CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = str(XLA_CACHE_MIN_COMPILE_S)

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
jax.config.update("jax_compilation_cache_dir", XLA_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", XLA_CACHE_MIN_COMPILE_S)

DATA = pathlib.Path(__file__).parent / "data"
TINY = DATA / "wfvae_tiny"
TINY_888 = DATA / "wfvae_888_tiny"  # the 8x8x8 (temporal_downsample 8) variant
SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"

_LOADED: dict[pathlib.Path, tuple] = {}


def load_tiny(path: pathlib.Path) -> tuple:
    """(params, config, vectors) of a reference parity checkpoint dir; vectors are NCTHW."""
    if path not in _LOADED:
        from safetensors.numpy import load_file

        from wfvae_jax.io.convert import load_reference

        params, config = load_reference(path)
        _LOADED[path] = (params, config, load_file(os.fspath(path / "vectors.safetensors")))
    return _LOADED[path]


@pytest.fixture(scope="session")
def tiny():
    """(params, config, vectors) of the reference tiny parity checkpoint (4x temporal)."""
    return load_tiny(TINY)


@pytest.fixture(scope="session")
def tiny888():
    """(params, config, vectors) of the reference 8x8x8 tiny parity checkpoint."""
    return load_tiny(TINY_888)


@pytest.fixture(scope="session")
def tiny_export(tiny, tmp_path_factory) -> pathlib.Path:
    """An EXPORT directory (``wfvae_jax.save_pretrained``) of the 4x tiny reference checkpoint,
    for tests of commands and loaders; treat it as read-only."""
    import wfvae_jax

    params, config, _ = tiny
    path = tmp_path_factory.mktemp("tiny_export") / "tiny"
    wfvae_jax.save_pretrained(path, params, config)
    return path


@pytest.fixture(scope="session", params=["4x", "8x"])
def tiny_any(request):
    """Both reference tiny checkpoints in turn: ``wfvae_tiny`` (4x) and ``wfvae_888_tiny`` (8x)."""
    return load_tiny(TINY if request.param == "4x" else TINY_888)


_CACHE_DIR_AT_START = jax.config.jax_compilation_cache_dir

# Every XLA:CPU executable keeps its JIT-compiled code in its own memory mappings (~300-1,400 per
# compiled model here), and jax's caches keep every executable of the session alive. The suite
# compiles thousands of functions in one process, which reaches the kernel's per-process limit
# on mappings (vm.max_map_count, 65,530 by default) after ~110 tests; LLVM's JIT then segfaults
# inside a compile (CI exit 139). Dropping jax's caches releases the executables of finished
# tests and unmaps them; nothing compiled is lost, because every executable is also in the
# persistent cache (``XLA_CACHE``), from which a later test reloads it instead of compiling.
_MAX_MAPS_BEFORE_CLEAR = 20_000
_CLEARS: list[str] = []


def _num_memory_maps() -> int:
    try:
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux: no such limit to stay under
        return 0


@pytest.fixture(autouse=True)
def _bounded_memory_maps(request):
    """Releases jax's in-memory executables after a test once the process holds many mappings."""
    yield
    if _num_memory_maps() > _MAX_MAPS_BEFORE_CLEAR:
        import gc

        jax.clear_caches()
        gc.collect()
        _CLEARS.append(request.node.nodeid)


def pytest_terminal_summary(terminalreporter):
    files = sum(1 for _ in pathlib.Path(XLA_CACHE).glob("*")) if os.path.isdir(XLA_CACHE) else 0
    terminalreporter.write_line(
        f"XLA cache: {XLA_CACHE} ({files} entries); in-memory executables released "
        f"{len(_CLEARS)} times at {_MAX_MAPS_BEFORE_CLEAR} memory mappings"
    )


@pytest.fixture(autouse=True)
def _no_persistent_cache_leak(request):
    """A test that turns on JAX's persistent compilation cache in this process (a command's
    main run in-process) must not leave it on for the tests after it."""
    yield
    if jax.config.jax_compilation_cache_dir != _CACHE_DIR_AT_START:
        import warnings

        from jax._src import compilation_cache

        warnings.warn(
            f"{request.node.nodeid} left jax_compilation_cache_dir="
            f"{jax.config.jax_compilation_cache_dir!r} (reset)",
            stacklevel=1,
        )
        jax.config.update("jax_compilation_cache_dir", _CACHE_DIR_AT_START)
        compilation_cache.reset_cache()
