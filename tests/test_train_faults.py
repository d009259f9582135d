"""Training under faults: data that changes (mid-run and between runs), disk faults, Ctrl-C, and
config errors caught before anything is built (issues 13 and 14).

The loop tests use tests/test_train.py's tiny model; ``build_train_steps`` is memoised per
StepConfig here, so the module compiles the train steps once.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading

import ml_collections
import numpy as np
import pytest

from tests.test_train import VIDEOS, tiny_config
from wfvae_jax.commands import train as cli
from wfvae_jax.commands.errors import run
from wfvae_jax.data import VideoFolderSource, make_video_dataset
from wfvae_jax.errors import UserError
from wfvae_jax.io import checkpoint as layout
from wfvae_jax.train import checkpointing, config_check, loop
from wfvae_jax.train.checkpointing import CheckpointWriteError
from wfvae_jax.train.data import data_changes, resumed_data_seed
from wfvae_jax.train.step import build_train_steps

quiet = pytest.mark.filterwarnings("ignore:VideoFolderSource")
_STEPS: dict = {}


@pytest.fixture
def cached_steps(monkeypatch):
    """``build_train_steps`` memoised: every run of this module reuses one compiled set."""

    def build(cfg, mesh, parallelism="gspmd"):
        key = (cfg, parallelism)
        if key not in _STEPS:
            _STEPS[key] = build_train_steps(cfg, mesh, parallelism)
        return _STEPS[key]

    monkeypatch.setattr(loop, "build_train_steps", build)


@pytest.fixture
def videos(tmp_path) -> str:
    """A private copy of tests/data/videos (5 clips) that a test may change."""
    root = tmp_path / "videos"
    shutil.copytree(VIDEOS, root)
    return str(root)


def _config(videos: str, num_steps: int):
    c = tiny_config()
    c.data.train_dir = videos
    c.eval.files = []
    c.num_steps = num_steps
    c.export = False
    return c


# ---- data that changes -------------------------------------------------------------------


@quiet
def test_file_deleted_mid_run_is_replaced_by_the_next_readable_record(videos):
    source = VideoFolderSource(videos, min_frames=5)
    kw = dict(num_frames=5, resolution=32, batch_size=2, seed=3)
    before = [next(it) for it in [make_video_dataset(source, **kw)] for _ in range(5)]
    keys = np.concatenate([b["key"] for b in before])
    assert (np.concatenate([b["skipped_key"] for b in before]) == -1).all()
    gone = int(keys[1])
    os.remove(source.paths[gone])
    corrupt = next(int(k) for k in keys if int(k) not in (gone, (gone + 1) % len(source)))
    with open(source.paths[corrupt], "wb") as f:
        f.write(b"\0" * 1000)
    after = [next(it) for it in [make_video_dataset(source, **kw)] for _ in range(5)]
    n = len(source)
    for b0, b1 in zip(before, after, strict=True):
        for i, key in enumerate(b0["key"]):
            key, got, skipped = int(key), int(b1["key"][i]), int(b1["skipped_key"][i])
            if key in (gone, corrupt):
                # Replaced by the next readable key (drawn with the failed record's rng).
                assert skipped == key and got == next(
                    (key + j) % n for j in range(1, n) if (key + j) % n not in (gone, corrupt)
                )
            else:
                assert (got, skipped) == (key, -1)
                np.testing.assert_array_equal(b1["video"][i], b0["video"][i])
    # The loop counts them as the scan counts bad files.
    loop._count_failed_reads(source, np.asarray([gone, -1, corrupt, gone]))
    assert source.skipped_counts["unreadable"] == 2
    assert source.skipped[source.paths[gone]] == "unreadable during training: file deleted"


@quiet
def test_data_changes_name_a_few_files_then_a_count(videos):
    base = dict(min_frames=5, config_seed=0, worker_count=0, processes=1)
    old = {**base, "videos": [["a.mp4", 20], ["b.mp4", 20], ["c.mp4", 9]]}
    new = {**base, "videos": [["b.mp4", 20], ["c.mp4", 12]] + [[f"n{i}.mp4", 9] for i in range(5)]}
    assert data_changes(old, old) == []
    assert data_changes(old, new) == [
        "5 video(s) added (n0.mp4, n1.mp4, n2.mp4 and 2 more)",
        "1 removed or now unusable (a.mp4)",
        "1 with another frame count (c.mp4)",
    ]
    assert data_changes(old, {**old, "worker_count": 2}) == ["data.worker_count 0 -> 2"]
    assert resumed_data_seed(0, 4) == resumed_data_seed(0, 4) != resumed_data_seed(0, 6)


@pytest.mark.slow  # four short runs; the first run of this module also compiles the steps
@quiet
def test_folder_changes_during_and_between_runs(videos, cached_steps, monkeypatch):
    workdir = os.path.join(os.path.dirname(videos), "run")
    config = _config(videos, 4)
    deleted = os.path.join(videos, "bikes_0120.mp4")
    real_source = loop._train_source

    def delete_after_scan(cfg, wd):
        source = real_source(cfg, wd)
        if os.path.exists(deleted):
            os.remove(deleted)
        return source

    monkeypatch.setattr(loop, "_train_source", delete_after_scan)
    # 4 steps x 2 clips over 5 videos: the deleted one is drawn; training goes on and counts it.
    first = loop.train_and_evaluate(config, workdir)
    assert sorted(first["losses"]) == [0, 1, 2, 3]
    assert first["skipped"] == {deleted: "unreadable during training: file deleted"}
    monkeypatch.setattr(loop, "_train_source", real_source)

    # Resuming over the changed folder: one clear error naming the file and the flag.
    shutil.copy(os.path.join(videos, "bikes_0000.mp4"), os.path.join(videos, "new_clip.mp4"))
    config.num_steps = 6
    with pytest.raises(UserError) as e:
        loop.train_and_evaluate(config, workdir)
    msg = str(e.value)
    assert "changed since the checkpoint of step 4" in msg
    assert "1 video(s) added (new_clip.mp4)" in msg
    assert "1 removed or now unusable (bikes_0120.mp4)" in msg
    assert "--config.data.allow_data_change=True" in e.value.hint
    assert checkpointing.make_manager(workdir, read_only=True).all_steps() == [2, 4]

    # Accepting the change: continues from step 4 with the new files and a new order.
    config.data.allow_data_change = True
    second = loop.train_and_evaluate(config, workdir)
    assert sorted(second["losses"]) == [4, 5]
    with checkpointing.RunCheckpoints(workdir) as ckpt:
        meta = ckpt.read_meta(6)["data"]
    assert meta["seed"] == resumed_data_seed(config.seed, 4)
    assert "new_clip.mp4" in dict(map(tuple, meta["videos"]))
    # The checkpoint now records the new files: a later resume needs no flag.
    config.data.allow_data_change = False
    config.num_steps = 8
    third = loop.train_and_evaluate(config, workdir)
    assert sorted(third["losses"]) == [6, 7]


# ---- disk faults -------------------------------------------------------------------------


def _never_build(*args, **kwargs):
    raise AssertionError("the model was built before the workdir was checked")


def test_unwritable_workdir_is_an_error_before_anything_is_built(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "build_train_steps", _never_build)
    monkeypatch.setattr(loop, "_load_lpips", _never_build)
    config = _config(str(VIDEOS), 2)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=r"cannot write to the workdir .*a_file/run: \[Errno 20"):
        loop.train_and_evaluate(config, str(blocker / "run"))
    # A read-only directory: chmod does not stop root, so the probe's write is patched too.
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:
        real = checkpointing.tempfile.mkstemp

        def refuse(*a, **k):
            if k.get("dir") == str(ro):
                raise OSError(errno.EROFS, "Read-only file system", str(ro))
            return real(*a, **k)

        monkeypatch.setattr(checkpointing.tempfile, "mkstemp", refuse)
    with pytest.raises(UserError, match=r"cannot write to the workdir .*readonly: \[Errno (13|30)"):
        loop.train_and_evaluate(config, str(ro))
    ro.chmod(0o700)


def test_failed_checkpoint_write_stops_with_one_message(videos, cached_steps, monkeypatch, caplog):
    from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler

    workdir = os.path.join(os.path.dirname(videos), "run")
    real = handler.JsonCheckpointHandler._save_fn

    async def disk_full(self, item, directory):
        if item.get("step", 0) >= 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(directory / "metadata"))
        return await real(self, item, directory)

    monkeypatch.setattr(handler.JsonCheckpointHandler, "_save_fn", disk_full)
    config = _config(videos, 6)
    with pytest.raises(CheckpointWriteError) as e:
        loop.train_and_evaluate(config, workdir)
    ckpts = layout.checkpoints_dir(workdir)
    assert str(e.value).startswith(
        f"writing the checkpoint of step 4 to {ckpts}/4 failed: [Errno 28 ENOSPC] No space left "
        f"on device. Training stopped; the last good checkpoint is step 2 in {ckpts} ("
    )
    assert str(e.value).endswith(" orbax error records held back; --debug shows them)")
    assert e.value.hint.endswith("rerun the same command: it resumes from step 2")
    assert (e.value.step, e.value.last_good) == (4, 2)
    # No orbax thread is left to die at interpreter exit, and nothing of orbax was logged.
    assert not [t for t in threading.enumerate() if type(t).__module__.startswith("orbax")]
    assert not [r for r in caplog.records if "orbax" in r.pathname and r.levelname == "ERROR"]
    # The last good checkpoint is kept and resumes.
    assert checkpointing.complete_steps(ckpts) == [2]
    monkeypatch.setattr(handler.JsonCheckpointHandler, "_save_fn", real)
    config.num_steps = 4
    assert sorted(loop.train_and_evaluate(config, workdir)["losses"]) == [2, 3]


# ---- Ctrl-C and the command line ---------------------------------------------------------


def test_ctrl_c_finishes_the_checkpoint_and_names_it(videos, cached_steps, monkeypatch):
    workdir = os.path.join(os.path.dirname(videos), "run")
    real = loop.mesh_lib.global_batch
    calls = {"n": 0}

    def interrupt_at_step_3(batch, sharding):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(batch, sharding)

    monkeypatch.setattr(loop.mesh_lib, "global_batch", interrupt_at_step_3)
    with pytest.raises(loop.TrainingInterrupted) as e:
        loop.train_and_evaluate(_config(videos, 6), workdir)
    ckpts = layout.checkpoints_dir(workdir)
    assert (e.value.step, e.value.last_good, e.value.path) == (3, 2, f"{ckpts}/2")
    assert checkpointing.complete_steps(ckpts) == [2]


def _cli(argv, capsys, *, only_errors: bool = False) -> tuple[int, str]:
    """Exit status and the error/hint lines (log lines left out) of ``train.py ARGV``;
    ``only_errors``: nothing else may have been printed (no log line, no traceback)."""
    with pytest.raises(SystemExit) as e:
        run(cli.main, argv)
    err = capsys.readouterr().err
    lines = "".join(f"{x}\n" for x in err.splitlines() if x.startswith(("error:", "hint:")))
    assert not only_errors or lines == err, err
    return e.value.code, lines


def test_cli_messages(tmp_path, monkeypatch, capsys):
    """What train.py prints for Ctrl-C, a disk fault and config mistakes (nothing is built)."""
    monkeypatch.setattr(loop, "build_train_steps", _never_build)
    workdir = str(tmp_path / "w")
    base = ["--config", "configs/cpu_small.py", "--workdir", workdir]
    base += [f"--config.data.train_dir={VIDEOS}", "--config.eval.every_steps=0"]

    def interrupted(config, wd):
        raise loop.TrainingInterrupted(3, 2, os.path.join(wd, "checkpoints"))

    monkeypatch.setattr(loop, "train_and_evaluate", interrupted)
    code, err = _cli(base, capsys)
    assert code == 130
    assert err.splitlines() == [
        "error: interrupted (Ctrl-C) at step 3",
        f"hint: resume from the checkpoint of step 2 ({workdir}/checkpoints/2) with: "
        f"python train.py {' '.join(base)}",
    ]

    def disk_full(config, wd):
        raise CheckpointWriteError("writing ... failed", step=4, path="p", last_good=2, hint="h")

    monkeypatch.setattr(loop, "train_and_evaluate", disk_full)
    assert _cli(base, capsys) == (1, "error: writing ... failed\nhint: h\n")
    monkeypatch.setattr(loop, "train_and_evaluate", _never_build)
    cases = {
        "--config.data.num_frames=32": "error: data.num_frames=32 is not a valid frame count: "
        "this model (temporal_downsample 4) takes 1 + 4k frames; nearest valid is 33\n"
        "hint: --config.data.num_frames=33",
        "--config.data.num_framez=9": "error: unknown config field data.num_framez; did you mean "
        "--config.data.num_frames?",
        "--config.data.resolution=100": "error: data.resolution=100 must be a positive multiple "
        "of 8 (the model downsamples by 8); nearest valid is 96",
        "--config.data.batch_size=0": "error: data.batch_size must be an integer >= 1, got 0",
        "--config.init_from=/no/such/run": "error: init_from='/no/such/run' does not exist",
        "--config.model.name=WF-VAE-X": "error: model.name='WF-VAE-X' is not a WF-VAE config; "
        "did you mean 'WF-VAE-S'?",
        "--config.data.crop=side": "error: data.crop must be one of ('random', 'center'), got "
        "'side'",
        "--config.optim.learning_rate=-1.0": "error: optim: learning_rate must be > 0, got -1.0",
    }
    for flag, expected in cases.items():
        code, err = _cli([*base, flag], capsys, only_errors=True)
        assert code == 2 and err.startswith(expected + "\n"), (flag, err)
    code, err = _cli(["--config", "configs/nope.py", "--workdir", workdir], capsys)
    assert code == 2 and err.startswith(
        "error: --config: cannot load 'configs/nope.py': [Errno 2] No such file or directory"
    )
    assert not os.path.exists("/no/such/run")
    # --debug shows the traceback instead.
    with pytest.raises(UserError, match="nearest valid is 33"):
        run(cli.main, [*base, "--config.data.num_frames=32", "--debug"])


def test_config_check_uses_the_models_frame_rule_and_the_devices(tmp_path):
    config = _config(str(VIDEOS), 2)
    config.model.name = "OpenSoraPlan-v1.5-WF-VAE-M-888-32Chn"  # temporal_downsample 8
    config.model.overrides = ml_collections.ConfigDict()
    config.data.num_frames = 20
    with pytest.raises(UserError, match="takes 1 \\+ 8k frames; nearest valid is 17") as e:
        config_check.check_config(config)
    assert e.value.hint == "--config.data.num_frames=17"
    config.data.num_frames = 17
    config_check.check_config(config)
    config.data.batch_size = 6
    with pytest.raises(UserError, match="divisible by the 4 devices.*nearest valid is 8"):
        config_check.check_config(config, num_devices=4)
    config.model.overrides = ml_collections.ConfigDict({"latent_dimm": 4})
    with pytest.raises(UserError, match="did you mean model.overrides.latent_dim"):
        config_check.check_config(config)
    config.model.overrides = ml_collections.ConfigDict()
    config.data.resolution = 70
    with pytest.raises(UserError, match=r"data.resolution=70 must be .*nearest valid is 72"):
        config_check.check_config(config)


def test_init_from_typo_is_an_error_and_creates_nothing(tmp_path):
    missing = tmp_path / "stage1_typo"
    with pytest.raises(UserError, match="does not exist"):
        checkpointing.load_generator(str(missing), None)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="neither a training workdir with a checkpoint"):
        checkpointing.check_init_from(str(empty))
    assert os.listdir(empty) == []


# ---- encode_dataset: the same rules ------------------------------------------------------


def test_encode_dataset_names_the_changed_inputs(videos, tmp_path):
    from tests.conftest import TINY
    from wfvae_jax.data.video_source import VideoFiles
    from wfvae_jax.encode_dataset import ClipSpec, EncodeOptions, encode_dataset
    from wfvae_jax.io.convert import load_reference

    for name in ("sub", "bikes_0120.mp4", "tree_excerpt.avi"):
        path = os.path.join(videos, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    params, config = load_reference(TINY)
    spec = ClipSpec(num_frames=5, resolution=(16, 16), frame_stride=1, clips_per_video=1)
    options = EncodeOptions(videos_per_shard=1, worker_count=0, progress=False)
    out = str(tmp_path / "latents")
    encode_dataset(params, config, VideoFiles(videos), out, spec, options)
    shutil.copy(os.path.join(videos, "bikes_0000.mp4"), os.path.join(videos, "added.mp4"))
    os.remove(os.path.join(videos, "bikes_0000.mp4"))
    with pytest.raises(ValueError) as e:
        encode_dataset(params, config, VideoFiles(videos), out, spec, options)
    assert str(e.value) == (
        f"the videos under --videos changed since {out} was encoded: 1 added (added.mp4); "
        "1 removed (bikes_0000.mp4); pass --overwrite to encode the folder as it is now (all "
        "shards are redone), or use a new --out"
    )
