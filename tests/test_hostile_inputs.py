"""Hostile and careless inputs (issue: bounded work, confined reads, one writer per folder).

Each class of input gets a test that it ends in a clear error (a UserError/ValueError/OSError
with a hint where a command prints it) before any large allocation: forged checkpoint structure,
hostile config values, oversized frames, playlists/concat files, manifest traversal and
duplicates, symlink escapes, FIFOs, and two writers on one folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from wfvae_jax.errors import UserError
from wfvae_jax.io import folder_lock
from wfvae_jax.io.folder_lock import LOCK_NAME, FolderLock, lock_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- one writer per folder ---------------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from wfvae_jax.io.folder_lock import FolderLock
    FolderLock(sys.argv[1], "test holder").acquire()
    print("locked", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture
def held(tmp_path):
    """A folder whose lock another process holds; yields (folder, process)."""
    folder = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield folder, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def test_second_writer_gets_one_line_naming_the_first(held):
    folder, proc = held
    t0 = time.perf_counter()
    with pytest.raises(UserError) as e:
        FolderLock(folder, "second").acquire()
    assert time.perf_counter() - t0 < 5  # refused at once, never waits
    msg = str(e.value)
    assert f"pid {proc.pid}" in msg and "test holder" in msg and "started 20" in msg
    assert "\n" not in msg and e.value.hint
    record = json.loads((folder / LOCK_NAME).read_text())
    assert record["pid"] == proc.pid


def test_lock_is_released_by_kill9_and_on_exit(held, tmp_path):
    folder, proc = held
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with lock_folder(folder, "after kill -9") as lock:  # the kernel dropped the dead one's lock
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            FolderLock(folder, "same process, second run").acquire()
    assert lock._fd is None
    FolderLock(folder, "released on exit").acquire().release()


def test_check_held_refuses_an_unlocked_folder(tmp_path, held):
    with pytest.raises(UserError, match="sees no lock"):
        FolderLock(tmp_path / "not_locked", "check").check_held()
    FolderLock(held[0], "check").check_held()  # locked by the other process: fine


def test_train_and_encode_dataset_refuse_a_locked_folder(held, tiny, monkeypatch):
    from tests.test_train import tiny_config
    from wfvae_jax.encode_dataset import ClipSpec, encode_dataset
    from wfvae_jax.train import loop

    def never(*a, **k):
        raise AssertionError("built something before taking the lock")

    monkeypatch.setattr(loop, "build_train_steps", never)
    monkeypatch.setattr(loop, "_train_source", never)
    folder, proc = held
    with pytest.raises(UserError, match=f"in use by test holder \\(pid {proc.pid}"):
        loop.train_and_evaluate(tiny_config(), str(folder))
    params, config, _ = tiny
    with pytest.raises(UserError, match=f"in use by test holder \\(pid {proc.pid}"):
        encode_dataset(params, config, None, folder, ClipSpec(num_frames=5, resolution=32))


def test_tmp_names_are_per_process_and_overwrite_keeps_user_files(tmp_path):
    from wfvae_jax.data import latents as fmt

    name = folder_lock.tmp_name(tmp_path / "latents-00000.array_record")
    assert name.endswith(f".{os.getpid()}.tmp") and name != fmt.shard_name(0) + ".tmp"
    mine = ["notes.tmp", "latents.txt", "my.json"]
    ours = [fmt.MANIFEST, fmt.shard_name(0), fmt.marker_name(0), os.path.basename(name)]
    for f in mine + ours + [fmt.MANIFEST + ".h.1.tmp"]:
        (tmp_path / f).write_text("x")
    assert fmt.remove_outputs(tmp_path) == len(ours) + 1
    assert sorted(os.listdir(tmp_path)) == sorted(mine)
