"""Preemption (issue 25): SIGTERM/SIGINT save the current step and exit; a second signal exits at
once; the grace period bounds the exit; a resumed run equals an uninterrupted one.

The loop tests use tests/test_train.py's tiny model with ``build_train_steps`` memoised, so the
module compiles the train steps once. Subprocess tests (a real ``train.py``, two coordinated
processes) are ``slow``.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.test_train import VIDEOS, tiny_config
from wfvae_jax.io import checkpoint as layout
from wfvae_jax.train import checkpointing, loop, preemption
from wfvae_jax.train.preemption import Preempted, Preemption
from wfvae_jax.train.step import build_train_steps

quiet = pytest.mark.filterwarnings("ignore:VideoFolderSource")
_STEPS: dict = {}


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


@pytest.fixture
def cached_steps(monkeypatch):
    def build(cfg, mesh, parallelism="gspmd"):
        key = (cfg, parallelism)
        if key not in _STEPS:
            _STEPS[key] = build_train_steps(cfg, mesh, parallelism)
        return _STEPS[key]

    monkeypatch.setattr(loop, "build_train_steps", build)


@pytest.fixture
def videos(tmp_path) -> str:
    root = tmp_path / "videos"
    shutil.copytree(VIDEOS, root)
    return str(root)


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
