"""Hostile and careless inputs (issue: bounded work, confined reads, one writer per folder).

Each class of input gets a test that it ends in a clear error (a UserError/ValueError/OSError
with a hint where a command prints it) before any large allocation: forged checkpoint structure,
hostile config values, oversized frames, playlists/concat files, symlink escapes, FIFOs, and two
writers on one folder. Latent datasets (manifest traversal and duplicates, shard symlinks and
FIFOs): ``tests/test_hostile_latents.py``.
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

# Another process holding a folder's lock as FolderLock does (flock + a JSON record); plain
# Python, so that it starts in milliseconds rather than importing JAX.
_HOLDER = textwrap.dedent(
    """
    import datetime, fcntl, json, os, socket, sys, time
    os.makedirs(sys.argv[1], exist_ok=True)
    fd = os.open(os.path.join(sys.argv[1], sys.argv[2]), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": started,
              "command": "test holder"}
    os.write(fd, json.dumps(record).encode())
    print("locked", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture
def held(tmp_path):
    """A folder whose lock another process holds; yields (folder, process)."""
    folder = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(folder), LOCK_NAME], stdout=subprocess.PIPE, text=True
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


# ---- hostile config values -----------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("base_channels", "16", "must be an integer"),
        ("base_channels", None, "must be an integer"),
        ("base_channels", [16], "must be an integer"),
        ("base_channels", 16.0, "must be an integer"),
        ("base_channels", True, "must be an integer"),
        ("encoder_num_resblocks", 100_000, r"in \[1, 32\]"),
        ("connect_res_layer_num", 10**6, r"in \[0, 32\]"),
        ("latent_dim", -1, r"in \[1, 1024\]"),
        ("scale", [float("nan")] * 8, "finite"),
        ("shift", [float("inf")] * 8, "finite"),
        ("scale", "0.18", "list of numbers"),
        ("dropout", float("nan"), "dropout"),
        ("use_attention", "yes", "true or false"),
        ("norm_type", 3, "must be a string"),
    ],
)
def test_hostile_config_values_are_refused_by_field(field, value, match):
    from wfvae_jax.core.config import ConfigError, WFVAEConfig

    with pytest.raises(ConfigError, match=f"{field}.*{match}|{match}") as e:
        WFVAEConfig.from_dict({**WFVAEConfig().to_dict(), field: value})
    assert field in str(e.value) and e.value.hint


def _export_with_config(tmp_path, tiny, **fields):
    import wfvae_jax

    params, config, _ = tiny
    path = tmp_path / "export"
    wfvae_jax.save_pretrained(path, params, config)
    if fields:
        cfg = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**cfg, **fields}))
    return path


@pytest.mark.parametrize(
    "fields", [{"encoder_num_resblocks": 100_000}, {"connect_res_layer_num": 10**6}]
)
def test_hostile_export_config_fails_before_building(tmp_path, tiny, fields):
    import wfvae_jax
    from wfvae_jax.core.config import ConfigError

    path = _export_with_config(tmp_path, tiny, **fields)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=f"config.json: config field {next(iter(fields))}"):
        wfvae_jax.load_pretrained(path)
    assert time.perf_counter() - t0 < 2


def test_nan_scale_in_config_json_is_refused(tmp_path, tiny):
    import wfvae_jax
    from wfvae_jax.core.config import ConfigError

    path = _export_with_config(tmp_path, tiny)
    text = (path / "config.json").read_text()
    cfg = json.loads(text)
    cfg["scale"] = [float("nan")] * len(cfg["scale"])
    (path / "config.json").write_text(json.dumps(cfg))  # json writes NaN, as a forger would
    with pytest.raises(ConfigError, match="scale must hold finite numbers"):
        wfvae_jax.load_pretrained(path)


# ---- forged checkpoint structure -----------------------------------------------------------


def _forged_reference(tmp_path, extra: dict, config: bool):
    import shutil

    from safetensors.numpy import load_file, save_file

    from tests.conftest import TINY

    src = tmp_path / "forged"
    src.mkdir()
    sd = load_file(TINY / "diffusion_pytorch_model.safetensors")
    sd.update(extra)
    sd = {k: v for k, v in sd.items() if v is not None}
    save_file(sd, src / "diffusion_pytorch_model.safetensors")
    if config:
        shutil.copy(TINY / "config.json", src / "config.json")
    return src


def forged_resblocks(n: int) -> dict:
    """Changes to the tiny state dict that make it claim ``n + 2`` encoder resblocks per level
    (empty arrays; the level-1 downsampler renumbered after them). ``None`` deletes a key."""
    import numpy as np
    from safetensors.numpy import load_file

    from tests.conftest import TINY

    sd = load_file(TINY / "diffusion_pytorch_model.safetensors")
    empty = np.zeros((0,), np.float32)
    extra: dict = {f"encoder.down1.{i}.conv1.weight": empty for i in range(3, n + 3)}
    extra |= {f"encoder.down2.{i}.conv1.conv.weight": empty for i in range(3, n + 3)}
    for leaf in ("weight", "bias"):
        extra[f"encoder.down1.3.conv.{leaf}"] = None
        extra[f"encoder.down1.{n + 3}.conv.{leaf}"] = sd[f"encoder.down1.3.conv.{leaf}"]
    return extra


def test_forged_resblock_keys_fail_fast_without_building(tmp_path):
    from wfvae_jax.io.convert import load_reference

    # 2,000 forged resblocks in both encoder levels, the downsampler moved behind them: the
    # names are consistent, and the inferred config is out of bounds.
    src = _forged_reference(tmp_path, forged_resblocks(2000), config=False)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"encoder_num_resblocks must be in \[1, 32\]"):
        load_reference(src)
    assert time.perf_counter() - t0 < 10


def test_conv_weight_of_the_wrong_rank_is_named(tmp_path):
    import numpy as np

    from wfvae_jax.io.convert import load_reference

    src = _forged_reference(
        tmp_path, {"decoder.conv_in.conv.weight": np.zeros((8, 8), np.float32)}, config=True
    )
    with pytest.raises(ValueError, match=r"decoder.conv_in.conv.weight: checkpoint rank 2"):
        load_reference(src)


# ---- confined reads: export arrays -----------------------------------------------------------

_NPY = "decoder/conv_in/conv/kernel.npy"


def test_export_array_symlink_out_of_the_folder_is_refused(tmp_path, tiny, monkeypatch):
    import wfvae_jax
    from wfvae_jax.io.confined import ConfinedFileError

    path = _export_with_config(tmp_path, tiny)
    target = path / "params" / _NPY
    outside = tmp_path / "outside.npy"
    os.replace(target, outside)
    os.symlink(outside, target)
    with pytest.raises(ConfinedFileError, match="outside") as e:
        wfvae_jax.load_pretrained(path)
    assert "allow_pickle" not in str(e.value) + e.value.hint and "WFVAE_ALLOW" in e.value.hint
    monkeypatch.setenv("WFVAE_ALLOW_EXTERNAL_LINKS", "1")
    wfvae_jax.load_pretrained(path)  # the explicit switch


def test_safetensors_shard_symlink_out_of_the_folder_is_refused(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    from wfvae_jax.io.confined import ConfinedFileError
    from wfvae_jax.io.safetensors_files import load_sharded_safetensors

    save_file({"w": np.ones(3, np.float32)}, tmp_path / "elsewhere.safetensors")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    os.symlink(tmp_path / "elsewhere.safetensors", folder / "model-00001.safetensors")
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": "model-00001.safetensors"}}))
    with pytest.raises(ConfinedFileError, match="safetensors shard .* outside"):
        load_sharded_safetensors(index)
    index.write_text(json.dumps({"weight_map": {"w": "../elsewhere.safetensors"}}))
    with pytest.raises(ValueError, match="outside its directory"):
        load_sharded_safetensors(index)


@pytest.mark.parametrize("kind", ["empty", "fifo", "pickle", "loop"])
def test_export_array_special_or_broken_files_get_one_clear_error(tmp_path, tiny, kind):
    import numpy as np

    import wfvae_jax
    from wfvae_jax.io.confined import ConfinedFileError

    path = _export_with_config(tmp_path, tiny)
    target = path / "params" / _NPY
    target.unlink()
    if kind == "empty":
        target.write_bytes(b"")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "pickle":
        np.save(target, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        os.symlink(target, target)
    want = {"empty": "empty", "fifo": "FIFO", "pickle": "not a plain", "loop": "cannot read"}
    t0 = time.perf_counter()
    with pytest.raises(ConfinedFileError, match=want[kind]) as e:
        wfvae_jax.load_pretrained(path)
    assert time.perf_counter() - t0 < 10  # a FIFO is never opened
    assert "allow_pickle" not in str(e.value) + e.value.hint


# ---- video inputs: playlists, concat lists, special files, sizes ------------------------------

VIDEO = os.path.join(REPO, "tests", "data", "videos", "bikes_0000.mp4")


def _playlists(tmp_path):
    import shutil

    other = tmp_path / "elsewhere" / "secret.mp4"
    other.parent.mkdir()
    shutil.copy(VIDEO, other)
    m3u8 = tmp_path / "list.m3u8"
    m3u8.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{other}\n#EXT-X-ENDLIST\n")
    concat = tmp_path / "concat.mp4"  # a text file named like a video
    concat.write_text(f"ffconcat version 1.0\nfile '{other}'\n")
    return {"HLS playlist": m3u8, "concat list": concat}


def test_playlists_and_concat_lists_are_refused_with_one_line(tmp_path):
    from wfvae_jax.io.decode import VideoFileError, open_video

    for what, path in _playlists(tmp_path).items():
        with pytest.raises(VideoFileError, match=f"refused to read .*{what}") as e:
            open_video(path)
        assert "\n" not in str(e.value) and e.value.hint
    with pytest.raises(VideoFileError, match="network URLs"):
        open_video("http://127.0.0.1:9/x.mp4")
    with open_video(VIDEO) as c:  # a plain video still opens
        assert c.streams.video


def test_special_paths_as_input_get_precise_messages(tmp_path):
    from wfvae_jax.io.decode import VideoFileError, open_video

    fifo = tmp_path / "fifo.mp4"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.mp4"
    os.symlink(loop, loop)
    dangling = tmp_path / "dangling.mp4"
    os.symlink(tmp_path / "gone.mp4", dangling)
    t0 = time.perf_counter()
    with pytest.raises(VideoFileError, match="is a FIFO, not a video file"):
        open_video(fifo)
    assert time.perf_counter() - t0 < 5  # never opened, so never blocks
    with pytest.raises(VideoFileError, match="symlink loop"):
        open_video(loop)
    with pytest.raises(VideoFileError, match="is a directory"):
        open_video(tmp_path)
    with pytest.raises(FileNotFoundError, match="a symlink to the missing .*gone.mp4"):
        open_video(dangling)


def test_frames_that_change_size_midway_are_a_clear_error(tmp_path):
    import fractions

    import av
    import numpy as np

    from wfvae_jax.io.decode import VideoFileError
    from wfvae_jax.io.windows import read_video

    path = tmp_path / "sizes.mkv"
    with av.open(str(path), "w") as out:
        s = out.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p"
        other = av.CodecContext.create("mjpeg", "w")
        other.width, other.height, other.pix_fmt = 128, 96, "yuvj420p"
        other.time_base = fractions.Fraction(1, 25)
        for i, (ctx, h, w) in enumerate([(s, 48, 64)] * 3 + [(other, 96, 128)] * 3):
            rgb = np.full((h, w, 3), 40 * i, np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p")
            frame.pts, frame.time_base = i, fractions.Fraction(1, 25)
            for p in ctx.encode(frame):
                p.stream = s
                out.mux(p)
    with pytest.raises(VideoFileError, match="frame 3 is 128x96 but the first frame is 64x48"):
        read_video(path, 5)
    assert read_video(path, 3).shape == (3, 48, 64, 3)  # the frames before the change


def test_pixel_budget_is_checked_before_allocation():
    from wfvae_jax.io.clip_spec import ClipSpec
    from wfvae_jax.io.frames import PixelBudgetError

    # bikes_0000.mp4 is 68x160 (H x W); native with multiple 8: 9 x 64 x 160 = 92,160 pixels.
    spec = ClipSpec(num_frames=9, resolution=None, max_pixels=90_000)
    match = r"9 x 64 x 160 = 92,160 .*\(--max_pixels 90000\)"
    with pytest.raises(PixelBudgetError, match=match) as e:
        spec.read(VIDEO)
    assert "--max_pixels 92160" in e.value.hint
    assert ClipSpec(num_frames=9, resolution=None, max_pixels=92_160).read(VIDEO).shape[0] == 9
    # A short side of 256 with crop none: 68x160 -> 256 x 600 per frame.
    spec = ClipSpec(num_frames=8, resolution=256, crop="none", max_pixels=1_000_000)
    with pytest.raises(PixelBudgetError, match=r"8 x 256 x 600"):
        spec.read(VIDEO)
    with pytest.raises(PixelBudgetError, match="a decoded frame of 1 x 68 x 160"):
        ClipSpec(num_frames=1, resolution=32, max_pixels=10_000).read(VIDEO)
    with pytest.raises(ValueError, match="max_pixels must be a positive int"):
        ClipSpec(max_pixels=0)
