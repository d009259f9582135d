"""The ``wfvae`` command: each user mistake is one ``error:`` line (+ hint), exit 2, no traceback.

Commands run in-process through the dispatcher (``wfvae_jax.commands.cli.main``, which wraps them in
``commands.errors.run``), one through a real subprocess. Ctrl-C exits 130 (SIGINT status)
with one ``error:`` line.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

import wfvae_jax
from wfvae_jax.commands import cli
from wfvae_jax.commands.errors import run

from .conftest import DATA, TINY

VIDEOS = DATA / "videos"
SHORT = VIDEOS / "bikes_0000.mp4"  # 20 frames, 160x68
ROOT = DATA.parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from wfvae_jax.io.convert import load_reference

    params, config = load_reference(TINY)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    wfvae_jax.save_pretrained(path, params, config)
    return path


@pytest.fixture()
def not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_bytes(b"this is not a video\n" * 10)
    return path


def wfvae(capsys, *argv, code=2):
    """Runs ``wfvae ARGV``; checks the exit code, one ``error:`` line, no traceback; returns
    stderr."""
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == code, err
    assert "Traceback" not in err, err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err
    return err


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_reconstruct_user_errors(ckpt, tmp_path, not_a_video, capsys, monkeypatch):
    out = tmp_path / "o.mp4"
    base = ["reconstruct", "--checkpoint", ckpt, "--output", out]
    err = wfvae(capsys, *base, "--input", tmp_path / "missing.mp4")
    assert "video file not found" in err
    assert "cannot open video" in wfvae(capsys, *base, "--input", not_a_video)
    err = wfvae(capsys, *base, "--input", SHORT, "--num_frames", 33, "--resolution", 32)
    assert "only 20 decodable frames" in err and "hint: pass --num_frames 17 (or fewer)" in err
    err = wfvae(capsys, *base, "--input", SHORT, "--resolution", 100)
    assert "--resolution 100" in err and "hint: pass --resolution 96" in err
    err = wfvae(capsys, *base, "--input", SHORT, "--num_frames", 32, "--resolution", 32)
    assert "nearest valid T is 33" in err and "hint: pass --num_frames 33" in err
    err = wfvae(capsys, *base, "--input", SHORT, "--num_frames", 9, "--t_chunk", 6)
    assert "hint: pass --t_chunk 8" in err
    err = wfvae(capsys, "reconstruct", "--checkpoint", tmp_path, "--input", SHORT, "--output", out)
    assert "not a wfvae_jax checkpoint" in err
    monkeypatch.setattr(wfvae_jax, "load_pretrained", _interrupt)
    err = wfvae(capsys, *base, "--input", SHORT, code=130)
    assert "error: interrupted (Ctrl-C)" in err


def test_eval_user_errors(ckpt, tmp_path, capsys, monkeypatch):
    base = ["eval", "--checkpoint", ckpt, "--out", tmp_path, "--no_progress", "--no_fvd"]
    assert "is not a directory" in wfvae(capsys, *base, "--videos", tmp_path / "none")
    err = wfvae(capsys, *base, "--videos", VIDEOS, "--resolution", 100)
    assert "hint: pass --resolution 96" in err
    err = wfvae(capsys, *base, "--videos", VIDEOS, "--num_frames", 32, "--resolution", 32)
    assert "hint: pass --num_frames 33" in err
    err = wfvae(capsys, "eval", "--checkpoint", tmp_path, "--videos", VIDEOS)
    assert "not a wfvae_jax checkpoint" in err
    # Every clip too short: one error naming the skipped files.
    err = wfvae(capsys, *base, "--videos", VIDEOS, "--num_frames", 129, "--resolution", 32)
    assert "no usable clip" in err
    monkeypatch.setattr("wfvae_jax.io.checkpoint.load_pretrained", _interrupt)
    wfvae(capsys, *base, "--videos", VIDEOS, code=130)


def test_latent_stats_user_errors(ckpt, tmp_path, capsys, monkeypatch):
    base = ["latent-stats", "--checkpoint", ckpt, "--out", tmp_path / "s.json", "--no_progress"]
    err = wfvae(capsys, *base, "--videos", VIDEOS, "--resolution", 100)
    assert "hint: pass --resolution 96" in err
    err = wfvae(capsys, *base, "--videos", VIDEOS, "--num_frames", 32, "--resolution", 32)
    assert "hint: pass --num_frames 33" in err
    err = wfvae(capsys, "latent-stats", "--workdir", tmp_path, "--videos", VIDEOS, "--write_config")
    assert "--write_config needs --checkpoint" in err and "hint:" in err
    monkeypatch.setattr("wfvae_jax.io.checkpoint.load_pretrained", _interrupt)
    wfvae(capsys, *base, "--videos", VIDEOS, code=130)


def test_analyze_user_errors(ckpt, tmp_path, capsys, monkeypatch):
    base = ["analyze", "--checkpoint", ckpt, "--out", tmp_path]
    assert "is not a directory" in wfvae(capsys, *base, "--videos", tmp_path / "none")
    err = wfvae(capsys, *base, "--videos", VIDEOS, "--resolution", 40)  # needs multiples of 16
    assert "multiples of 16" in err and "hint: pass --resolution 32" in err
    err = wfvae(capsys, *base, "--videos", VIDEOS, "--num-frames", 32, "--resolution", 32)
    assert "warning: --num-frames is deprecated" in err and "pass --num_frames 33" in err
    monkeypatch.setattr(wfvae_jax, "load_pretrained", _interrupt)
    wfvae(capsys, *base, "--videos", VIDEOS, code=130)


def test_dispatcher_and_bench_errors(capsys, monkeypatch):
    assert "did you mean reconstruct?" in wfvae(capsys, "recon")
    assert "hint: one of: " in wfvae(capsys, "bench", "no_such_benchmark")
    monkeypatch.setitem(cli.COMMANDS, "future", ("wfvae_jax._no_such_module", "main", ""))
    assert "not available in this version" in wfvae(capsys, "future")
    # A missing optional dependency names the extra to install (grain: training only).
    monkeypatch.setitem(sys.modules, "grain", None)
    monkeypatch.delitem(sys.modules, "wfvae_jax.data.pipeline", raising=False)
    entry = ("wfvae_jax.data.pipeline", "make_video_dataset", "")
    monkeypatch.setitem(cli.COMMANDS, "needs-grain", entry)
    err = wfvae(capsys, "needs-grain")
    assert "needs the Python package 'grain'" in err and "pip install 'wfvae_jax[train]'" in err
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2 and "usage: wfvae COMMAND" in capsys.readouterr().out


def test_required_extra_is_checked_before_any_work(ckpt, tmp_path, capsys, monkeypatch):
    """`wfvae analyze` without matplotlib stops before it loads or encodes anything."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # find_spec: not installed

    def must_not_run(*args, **kwargs):
        raise AssertionError("the command started without its extra")

    monkeypatch.setattr(wfvae_jax, "load_pretrained", must_not_run)
    monkeypatch.setattr("wfvae_jax.io.checkpoint.load_pretrained", must_not_run)
    err = wfvae(capsys, "analyze", "--checkpoint", ckpt, "--videos", VIDEOS, "--out", tmp_path)
    assert "`wfvae analyze` needs the 'eval' extra; not installed: matplotlib" in err
    assert "hint: pip install 'wfvae_jax[eval]'" in err
    assert not list(tmp_path.iterdir())


def test_extras_map_matches_pyproject_and_requirements():
    """commands/extras.py is the one map; pyproject.toml's extras and requirements.txt follow."""
    import re
    import tomllib

    from wfvae_jax.commands import extras

    def dist(requirement: str) -> str:
        return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["optional-dependencies"]
    assert set(declared) == {*extras.EXTRAS, "dev"}
    for extra, packages in extras.EXTRAS.items():
        assert {dist(r) for r in declared[extra]} == set(packages.values()), extra
    assert f"wfvae_jax[{','.join(extras.EXTRAS)}]" in declared["dev"]
    pinned = {
        dist(line)
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {d for pkgs in extras.EXTRAS.values() for d in pkgs.values()} <= pinned
    assert set(extras.COMMAND_EXTRAS) <= set(cli.COMMANDS)
    assert set(extras.COMMAND_EXTRAS.values()) <= set(extras.EXTRAS)
    assert extras.extra_for_package("matplotlib.pyplot") == "eval"
    assert extras.extra_for_package("grain") == "train"
    assert extras.extra_for_package("numpy") is None


@pytest.mark.parametrize("name", ["convert", "reconstruct", "eval", "train"])
def test_help_usage_names_wfvae(name, capsys, monkeypatch):
    """Each command's --help starts `usage: wfvae NAME`, however it was started."""
    import importlib

    monkeypatch.setattr(sys, "argv", [f"/somewhere/{name}.py"])  # as python -m / a script
    main = importlib.import_module(f"wfvae_jax.commands.{name}").main
    try:
        rc = main(["--help"])
    except SystemExit as e:
        rc = e.code
    assert rc == 0
    assert capsys.readouterr().out.startswith(f"usage: wfvae {name} ")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        cli.main(["reconstruct", "--checkpoint", str(tmp_path), "--input", "missing.mp4",
                  "--output", str(tmp_path / "o.mp4"), "--debug"])  # fmt: skip
    # A nested run inherits --debug (the dispatcher wraps commands that wrap themselves).
    with pytest.raises(ValueError, match="inner"):
        run(lambda argv: run(lambda a: (_ for _ in ()).throw(ValueError("inner")), []), ["--debug"])


def test_results_dict_exits_zero():
    with pytest.raises(SystemExit) as e:
        run(lambda argv: {"psnr": 1.0}, [])
    assert e.value.code == 0


def test_console_entry_point_subprocess(tmp_path):
    """``python -m wfvae_jax reconstruct`` with a missing file: exit 2, one line, no traceback."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    argv = [sys.executable, "-m", "wfvae_jax", "reconstruct", "--checkpoint", str(tmp_path)]
    argv += ["--input", str(tmp_path / "missing.mp4"), "--output", str(tmp_path / "o.mp4")]
    p = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    errors = [line for line in p.stderr.splitlines() if "error:" in line]
    assert errors == [f"error: video file not found: {tmp_path / 'missing.mp4'}"], p.stderr
    assert "Traceback" not in p.stderr


def test_missing_optional_package_is_a_user_error(capsys):
    def needs_matplotlib(argv):
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    with pytest.raises(SystemExit) as e:
        run(needs_matplotlib, [])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("error:") == 1
    assert "'matplotlib'" in err and "pip install 'wfvae_jax[eval]'" in err

    def internal(argv):  # not an optional package: a real bug, so the traceback stays
        raise ModuleNotFoundError("No module named 'wfvae_jax.nope'", name="wfvae_jax.nope")

    with pytest.raises(ModuleNotFoundError):
        run(internal, [])


def test_directory_and_truncated_input_are_one_error_with_a_hint(ckpt, tmp_path, capsys):
    base = ["reconstruct", "--checkpoint", ckpt, "--output", tmp_path / "o.mp4", "--input"]
    err = wfvae(capsys, *base, tmp_path)
    assert f"error: {tmp_path} is a directory, not a video file" in err
    assert "hint: pass one video file" in err and "not found" not in err
    data = SHORT.read_bytes()  # its moov index is written after the frames, as muxers do
    for keep in (0.5, 0.9):  # the cut falls in the frames, then in the index
        cut = tmp_path / f"cut_{keep}.mp4"
        cut.write_bytes(data[: int(len(data) * keep)])
        err = wfvae(capsys, *base, cut)
        assert f"cannot open video {cut}: the file is truncated" in err, err
        assert "hint: download or copy it again" in err and "Errno" not in err
    # Not an MP4 cut short but bytes FFmpeg cannot read: no errno, a hint what to check.
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 20)
    err = wfvae(capsys, *base, junk)
    assert "damaged, incomplete or not a video" in err and "Errno" not in err
    assert "hint: check it plays (ffprobe" in err


def test_analyze_checks_matplotlib_before_any_work(ckpt, tmp_path, capsys, monkeypatch):
    work = []
    monkeypatch.setattr(wfvae_jax, "load_pretrained", lambda *a, **k: work.append("load"))
    monkeypatch.setattr(wfvae_jax, "encode", lambda *a, **k: work.append("encode"))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    argv = ["analyze", "--checkpoint", ckpt, "--videos", VIDEOS, "--out", tmp_path]
    err = wfvae(capsys, *argv, "--num_frames", 9, "--resolution", 32)
    assert "'matplotlib'" in err and "hint: pip install 'wfvae_jax[eval]'" in err
    assert work == []  # nothing loaded, nothing encoded


@pytest.mark.parametrize(
    "name", ["analyze", "latent-stats", "encode-dataset"], ids=lambda n: n.replace("-", "_")
)
def test_help_usage_names_the_wfvae_command(name, capsys):
    main = importlib.import_module(f"wfvae_jax.commands.{name.replace('-', '_')}").main
    with pytest.raises(SystemExit) as e:
        main(["--help"])  # called directly: argparse's prog is not taken from sys.argv
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: wfvae {name} ")
