"""Preemption (issue 25): SIGTERM/SIGINT save the current step and exit; a second signal exits at
once; the grace period bounds the exit; a resumed run equals an uninterrupted one.

The loop tests use tests/test_train.py's tiny model with ``build_train_steps`` memoised, so the
module compiles the train steps once. Subprocess tests (a real ``train.py``, two coordinated
processes) are ``slow``.
"""

from __future__ import annotations

import filecmp
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import flax
import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import wfvae_jax
from tests import test_encode_dataset as ed
from tests import test_train_faults as train_faults
from tests.test_train import tiny_config
from wfvae_jax.data import LatentSource
from wfvae_jax.data import latents as fmt
from wfvae_jax.data.video_source import VideoFiles
from wfvae_jax.encode_dataset import encode_dataset
from wfvae_jax.encode_dataset import writer as ed_writer
from wfvae_jax.io import checkpoint as layout
from wfvae_jax.train import checkpointing, loop, preemption
from wfvae_jax.train.checkpointing import RunCheckpoints
from wfvae_jax.train.preemption import Preempted, Preemption

# test_encode_dataset's module fixtures: the tiny model, its input folder, an uninterrupted run.
model, video_dir, reference = ed.model, ed.video_dir, ed.reference
SPEC, OPTIONS = ed.SPEC, ed.OPTIONS
# test_train_faults' fixtures: memoised train steps (shared compiled set) and a private video copy.
cached_steps, videos = train_faults.cached_steps, train_faults.videos
quiet = pytest.mark.filterwarnings("ignore:VideoFolderSource")


class _HardExit(BaseException):
    pass


@pytest.fixture
def hard_exit(monkeypatch):
    """``os._exit`` replaced by raising ``_HardExit(status)``; the statuses are recorded."""
    codes: list[int] = []

    def fake(status):
        codes.append(status)
        raise _HardExit(status)

    monkeypatch.setattr(preemption, "_hard_exit", fake)
    return codes


class _FakeCheckpoints:
    directory = "/ckpts"

    def __init__(self):
        self.waited = 0

    def wait(self):
        self.waited += 1


# ---- the handler logic (no training) ------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_stops_after_the_step_and_exits_with_one_line(signum, hard_exit, capsys):
    before = signal.getsignal(signum)
    ckpt = _FakeCheckpoints()
    with Preemption(30.0, multiprocess=False) as p:
        assert not p.reached(1)
        os.kill(os.getpid(), signum)
        assert p.reached(2)
        with pytest.raises(Preempted) as e:
            p.exit(2, ckpt)
    assert signal.getsignal(signum) is before  # handlers restored
    assert e.value.code == 128 + signum and e.value.step == 2 and ckpt.waited == 1
    name = signal.Signals(signum).name
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0] == e.value.message
    assert err[0].startswith(f"{name}: saved the checkpoint of step 2 (/ckpts/2) ")
    assert " s after the signal; resume with: " in err[0]
    assert not hard_exit


def test_second_signal_exits_at_once(hard_exit, capsys):
    with Preemption(30.0, multiprocess=False) as p:
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(_HardExit):
            os.kill(os.getpid(), signal.SIGINT)
    assert hard_exit == [130]
    assert capsys.readouterr().err.startswith("second SIGINT: exiting at once;")
    assert p.signum == signal.SIGTERM


def test_grace_period_bounds_the_exit(monkeypatch, capsys):
    codes: list[int] = []
    monkeypatch.setattr(preemption, "_hard_exit", codes.append)  # from the watchdog thread
    with Preemption(0.2, multiprocess=False):
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not codes and time.monotonic() < deadline:
            time.sleep(0.02)
    assert codes == [143]
    err = capsys.readouterr().err
    assert "SIGTERM: the step did not finish within the grace period of 0.2 s" in err


def test_no_signal_no_stop():
    with Preemption(30.0, multiprocess=False) as p:
        assert not any(p.reached(s) for s in range(1, 5))


# ---- in the train loop --------------------------------------------------------------------


def _config(videos: str, num_steps: int):
    c = tiny_config()
    c.data.train_dir = videos
    c.eval.files = []
    c.num_steps = num_steps
    c.checkpoint_every = 100
    c.export = False
    return c


def signal_at_batch(monkeypatch, n: int, signum: int = signal.SIGTERM) -> None:
    """Sends ``signum`` to this process while the loop places batch ``n`` (0-based), i.e. while
    step ``n`` runs."""
    real = loop.mesh_lib.global_batch
    calls = {"n": 0}

    def place(batch, sharding):
        if calls["n"] == n:
            os.kill(os.getpid(), signum)
        calls["n"] += 1
        return real(batch, sharding)

    monkeypatch.setattr(loop.mesh_lib, "global_batch", place)


def load_state(workdir: str, step: int):
    manager = checkpointing.make_manager(workdir, read_only=True)
    args = ocp.args.Composite(state=ocp.args.StandardRestore())
    state = manager.restore(step, args=args)["state"]
    manager.close()
    return jax.tree.map(np.asarray, state)


@pytest.mark.slow  # compiles the tiny model's train steps (minutes on a loaded 2-core machine)
@quiet
def test_sigterm_saves_the_step_and_the_rerun_equals_an_uninterrupted_run(
    videos, cached_steps, monkeypatch, capsys, tmp_path
):
    full = loop.train_and_evaluate(_config(videos, 5), str(tmp_path / "full"))

    workdir = str(tmp_path / "cut")
    with monkeypatch.context() as m:
        signal_at_batch(m, 2)
        with pytest.raises(Preempted) as e:
            loop.train_and_evaluate(_config(videos, 5), workdir)
    ckpts = layout.checkpoints_dir(workdir)
    assert (e.value.code, e.value.step, e.value.path) == (143, 3, f"{ckpts}/3")
    assert checkpointing.complete_steps(ckpts) == [3]
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("SIGTERM: saved")]
    assert len(err) == 1 and f"step 3 ({ckpts}/3)" in err[0]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    rest = loop.train_and_evaluate(_config(videos, 5), workdir)
    assert sorted(rest["losses"]) == [3, 4]
    for s in (3, 4):  # bit-identical losses and final state
        assert rest["losses"][s] == full["losses"][s]
    a, b = load_state(str(tmp_path / "full"), 5), load_state(workdir, 5)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


# ---- an incomplete or corrupt latest checkpoint -------------------------------------------


@flax.struct.dataclass
class _State:
    """The two fields :class:`RunCheckpoints` reads of a TrainState (``step``) plus params."""

    step: jax.Array
    params: dict


def _iterator():
    loader = grain.DataLoader(
        data_source=list(range(100)),
        sampler=grain.samplers.IndexSampler(
            100, shard_options=grain.sharding.NoSharding(), shuffle=False, num_epochs=None
        ),
        operations=[],
    )
    return iter(loader)


def _state(step: int) -> _State:
    return _State(step=jnp.int32(step), params={"w": jnp.arange(3000.0) * step})


def _truncate(step_dir):
    for f in (step_dir / "state").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _no_metadata(step_dir):
    (step_dir / "state" / "_METADATA").unlink()
    (step_dir / "_CHECKPOINT_METADATA").unlink()


def _half_written(step_dir):  # storage without atomic rename: the state item never arrived
    shutil.rmtree(step_dir / "state")


def _bad_meta(step_dir):
    (step_dir / "meta" / "metadata").write_text('{"step": 4, "conf')


def _bad_data(step_dir):
    (step_dir / "data" / "process_0-of-1.json").write_text("")


@pytest.mark.parametrize("damage", [_truncate, _no_metadata, _half_written, _bad_meta, _bad_data])
def test_corrupt_latest_checkpoint_is_skipped_and_named(damage, tmp_path, caplog):
    workdir = str(tmp_path)
    it = _iterator()
    with RunCheckpoints(workdir) as ckpt:
        for step in (2, 4):
            next(it)
            ckpt.save(_state(step), it, {})
    ckpts = tmp_path / "checkpoints"
    damage(ckpts / "4")

    ckpt = RunCheckpoints(workdir)
    with caplog.at_level(logging.WARNING):
        assert ckpt.choose_resume_step(_state(0)) == 2
    assert ckpt.latest_step() == 2
    (record,) = [r for r in caplog.records if "skipping the checkpoint" in r.getMessage()]
    assert record.getMessage().startswith(
        f"skipping the checkpoint of step 4 ({ckpts}/4): it does not restore: "
    )
    assert record.getMessage().endswith(f"; moved to {ckpts}/4.corrupt")
    assert sorted(os.listdir(ckpts)) == ["2", "4.corrupt"]
    it = _iterator()
    state = ckpt.restore_latest(_state(0), it)
    assert int(state.step) == 2 and next(it) == 1  # step 2's state and data position
    np.testing.assert_array_equal(state.params["w"], np.arange(3000.0) * 2)
    ckpt.save(_state(4), it, {})  # step 4 is written again, not skipped as "already saved"
    ckpt.close()
    assert checkpointing.complete_steps(str(ckpts)) == [2, 4]


def test_no_restorable_checkpoint_starts_fresh(tmp_path):
    it = _iterator()
    with RunCheckpoints(str(tmp_path)) as ckpt:
        ckpt.save(_state(2), it, {})
    _half_written(tmp_path / "checkpoints" / "2")
    with RunCheckpoints(str(tmp_path)) as ckpt:
        assert ckpt.choose_resume_step(_state(0)) is None
        assert ckpt.latest_step() is None


# ---- encode-dataset -----------------------------------------------------------------------


def _signal_at_dispatch(monkeypatch, n: int) -> None:
    """SIGTERM to this process while the ``n``-th batch (1-based) is dispatched."""
    real_dispatch = ed_writer.Loop.dispatch

    def dispatch(self, b, real):
        real_dispatch(self, b, real)
        if self.stats["steps"] == n:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(ed_writer.Loop, "dispatch", dispatch)


@pytest.mark.slow  # three encodings of the test folder (each compiles the encoder)
def test_encode_dataset_sigterm_commits_finished_shards_and_resumes_identically(
    model, video_dir, reference, tmp_path, monkeypatch, capsys
):
    params, config = model
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _signal_at_dispatch(m, 5)  # batch 5 = shard 2's first record (batch size 1)
        with pytest.raises(Preempted) as e:
            encode_dataset(params, config, VideoFiles(video_dir), str(out), SPEC, OPTIONS)
    assert e.value.code == 143
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("SIGTERM")]
    assert err == [e.value.message]
    assert err[0].startswith(
        f"SIGTERM: stopped encoding: 2 of 4 shards are complete in {out} (the shard in progress "
        "was discarded); rerun the same command to finish: "
    )
    assert sorted(os.listdir(out)) == [
        ".wfvae_jax.lock",
        "latents-00000.array_record",
        "latents-00000.json",
        "latents-00001.array_record",
        "latents-00001.json",
        "manifest.json",
    ]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    summary = encode_dataset(params, config, VideoFiles(video_dir), str(out), SPEC, OPTIONS)
    assert (summary["shards_already_done"], summary["records_written"]) == (2, 3)
    ref = reference[0]
    for s in range(4):
        assert filecmp.cmp(out / fmt.shard_name(s), os.path.join(ref, fmt.shard_name(s)), False)
    assert LatentSource(out).manifest["shards"] == LatentSource(ref).manifest["shards"]
    assert sorted(os.listdir(out)) == sorted(os.listdir(ref))


# ---- two processes: only one receives SIGTERM ----------------------------------------------


@pytest.mark.slow  # two coordinated train.py processes, twice
def test_two_processes_one_sigterm_both_save_the_same_step(tmp_path):
    from tests import test_multihost as mh

    child = str(mh.REPO / "tests" / "multihost_train_child.py")
    workdir = tmp_path / "run"
    cmd = [sys.executable, child, "--config", child, "--workdir", str(workdir), "--multihost"]
    port = mh._free_port()
    envs = [mh._env(tmp_path, 1, (port, i, 2)) for i in range(2)]
    procs = [
        subprocess.Popen(
            [*cmd, "--config.num_steps=400"],
            env=e,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        for e in envs
    ]
    lines: list[str] = []
    reached = threading.Event()

    def read() -> None:  # process 0 logs "step N/400" every step (log_every=1)
        for line in procs[0].stderr:
            lines.append(line.rstrip("\n"))
            if "step 3/400" in line:
                reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert reached.wait(1800), "\n".join(lines[-30:])
        procs[1].send_signal(signal.SIGTERM)  # process 0 is not signalled
        codes = [p.wait(120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    reader.join(10)
    assert codes == [143, 143], "\n".join(lines[-30:])
    ckpts = layout.checkpoints_dir(str(workdir))
    step = checkpointing.complete_steps(ckpts)[-1]  # also periodic ones (checkpoint_every=2)
    assert step > 3  # signalled after step 3 was logged
    saved = [x for x in lines if x.startswith("SIGTERM: saved")]
    assert len(saved) == 1 and saved[0].startswith(
        f"SIGTERM: saved the checkpoint of step {step} ({ckpts}/{step}) "
    )

    # Both processes resume from that step.
    mh._run([sys.executable, child, "--config", child, "--workdir", str(workdir),
             f"--config.num_steps={step + 1}"], tmp_path, devices=1, processes=2)  # fmt: skip
    history = json.loads((workdir / "history.json").read_text())["losses"]
    assert sorted(history) == [str(step)]


# ---- resume on another topology ------------------------------------------------------------

_TOPOLOGY_CHILD = """
import sys
import grain, jax, numpy as np
from tests.test_train import tiny_config
from wfvae_jax.inference.sharding import make_mesh
from wfvae_jax.train import loop, mesh as mesh_lib
from wfvae_jax.train.checkpointing import RunCheckpoints
from wfvae_jax.train.step import abstract_state

mode, workdir, fsdp = sys.argv[1], sys.argv[2], int(sys.argv[3])
mesh = make_mesh(fsdp=fsdp)
abstract = abstract_state(loop.step_config(tiny_config()))
shardings = mesh_lib.state_shardings(mesh, abstract)
sampler = grain.samplers.IndexSampler(
    100, shard_options=grain.sharding.NoSharding(), shuffle=False, num_epochs=None)
loader = grain.DataLoader(data_source=list(range(100)), operations=[], sampler=sampler)
it = iter(loader)
rng = np.random.default_rng(0)
def fill(s):
    if np.issubdtype(s.dtype, np.floating):
        return rng.standard_normal(s.shape).astype(s.dtype)
    return np.full(s.shape, 2, s.dtype)
host = jax.tree.map(fill, abstract)
if mode == "save":
    state = jax.tree.map(jax.device_put, host, shardings)
    next(it); next(it)
    with RunCheckpoints(workdir) as ckpt:
        ckpt.save(state, it, {})
else:
    target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          abstract, shardings)
    ckpt = RunCheckpoints(workdir)
    assert ckpt.choose_resume_step(target) == 2
    state = ckpt.restore_latest(target, it)
    ckpt.close()
    assert next(it) == 2
    leaves = jax.tree.leaves(state)
    assert all(x.sharding == sh for x, sh in zip(leaves, jax.tree.leaves(shardings)))
    pairs = zip(leaves, jax.tree.leaves(host))
    diff = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in pairs)
    print("MAXDIFF", diff, "SHARDED", sum(not x.sharding.is_fully_replicated for x in leaves))
"""


def _topology(tmp_path, mode: str, workdir, devices: int, fsdp: int) -> str:
    from tests import test_multihost as mh

    env = mh._env(tmp_path, devices, None)
    r = subprocess.run(
        [sys.executable, "-c", _TOPOLOGY_CHILD, mode, str(workdir), str(fsdp)],
        env=env, cwd=str(mh.REPO), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.slow  # one child process per topology
@pytest.mark.parametrize(
    ("saved", "resumed"),
    [((4, 1), (2, 1)), ((4, 1), (1, 1)), ((2, 1), (1, 1)), ((4, 1), (4, 4)), ((4, 4), (4, 1)),
     ((4, 4), (2, 2))],
    ids=lambda t: f"{t[0]}dev-fsdp{t[1]}",
)  # fmt: skip
def test_checkpoint_restores_bit_identically_on_another_topology(tmp_path, saved, resumed):
    """(devices, fsdp) -> (devices, fsdp): the state comes back bit-identical, in the new
    shardings, with the data position."""
    workdir = tmp_path / "run"
    _topology(tmp_path, "save", workdir, *saved)
    out = _topology(tmp_path, "restore", workdir, *resumed).split()
    assert out[:2] == ["MAXDIFF", "0.0"]
    assert (int(out[3]) > 0) == (resumed[1] > 1)  # FSDP shards the large arrays


_ENCODE_CHILD = """
import os, signal, sys
from wfvae_jax.commands import encode_dataset
from wfvae_jax.commands.errors import run
from wfvae_jax.data import latents

write, count = latents.ShardWriter.write, {"n": 0}

def write_then_signal(self, record):
    write(self, record)
    count["n"] += 1
    if count["n"] == int(os.environ["SIGTERM_AT_RECORD"]):
        os.kill(os.getpid(), signal.SIGTERM)

latents.ShardWriter.write = write_then_signal
run(encode_dataset.main, sys.argv[1:])
"""


@pytest.mark.slow  # a 2-device child process, then the rest in this process
def test_encode_dataset_begun_on_mesh_data2_finishes_on_one_device(
    model, video_dir, reference, tmp_path
):
    from tests import test_multihost as mh

    params, config = model
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    wfvae_jax.save_pretrained(ckpt, params, config)
    env = dict(mh._env(tmp_path, 2, None), SIGTERM_AT_RECORD="1")
    cmd = [
        sys.executable, "-c", _ENCODE_CHILD, "--checkpoint", str(ckpt), "--videos", video_dir,
        "--out", str(out), "--num_frames", "9", "--resolution", "32x48", "--clips_per_video",
        "2", "--videos_per_shard", "2", "--no_progress", "--worker_count", "0",
        "--mesh", "data=2",
    ]  # fmt: skip
    r = subprocess.run(cmd, env=env, cwd=str(mh.REPO), capture_output=True, text=True,
                       timeout=900)  # fmt: skip
    assert r.returncode == 143, r.stderr[-3000:]
    assert "SIGTERM: stopped encoding: 2 of 4 shards are complete" in r.stderr
    assert not any(f.endswith(".tmp") for f in os.listdir(out))

    summary = encode_dataset(params, config, VideoFiles(video_dir), str(out), SPEC, OPTIONS)
    assert summary["shards_already_done"] == 2
    ref = reference[0]
    for s in range(4):
        assert filecmp.cmp(out / fmt.shard_name(s), os.path.join(ref, fmt.shard_name(s)), False)
    assert sorted(os.listdir(out)) == sorted(os.listdir(ref))
