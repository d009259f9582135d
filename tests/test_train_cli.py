"""The training front door: `wfvae train` with packaged configs from any directory and from an
installed package, `--help`, and what a run prints with and without a terminal."""

import json
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from wfvae_jax import configs
from wfvae_jax.commands import train as train_cmd
from wfvae_jax.commands.errors import run
from wfvae_jax.configs import default
from wfvae_jax.train import progress, writers

REPO = pathlib.Path(__file__).resolve().parents[1]
VIDEOS = REPO / "tests" / "data" / "videos"
HELD_OUT = VIDEOS / "tree_excerpt.avi"
# A config file of one's own, built on a packaged one: two steps of a tiny WF-VAE at 32x32.
TINY_CONFIG = """
from wfvae_jax.configs import cpu_small


def get_config():
    c = cpu_small.get_config()
    c.model.overrides.update(dict(
        base_channels=8, encoder_energy_flow_hidden_size=8, decoder_energy_flow_hidden_size=8,
        latent_dim=4, encoder_num_resblocks=1, decoder_num_resblocks=1, use_attention=False))
    c.data.num_frames, c.data.resolution = 5, 32
    c.eval.num_frames, c.eval.resolution, c.eval.every_steps = 5, 32, 2
    c.num_steps, c.log_every, c.checkpoint_every = 2, 2, 2
    c.loss.disc_num_layers, c.disc_ndf = 2, 4
    c.compilation_cache = False
    return c
"""


def _squash(text: str) -> str:
    return " ".join(text.split())


def test_every_default_field_has_one_meaning():
    """--help's meanings are default.py's trailing comments: one per field, none stale."""
    fields = [name for name, _ in configs.leaves(default.get_config().to_dict())]
    docs = configs.field_docs()
    groups = {name.rsplit(".", 1)[0] for name in fields if "." in name}
    assert set(fields) <= set(docs) and set(docs) - set(fields) <= groups
    assert all(docs[name] for name in fields)
    assert docs["data.num_frames"].startswith("frames per training clip")


def test_help_lists_flags_configs_and_every_field(capsys):
    assert train_cmd.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: wfvae train --config NAME|FILE --workdir DIR")
    for flag in ("--config NAME|FILE[:ARG]", "--config.FIELD=VALUE", "--workdir DIR", "--debug"):
        assert flag in out
    for name in configs.NAMES:
        assert re.search(rf"^  {name} +\S", out, re.M), name
    flat = _squash(out)
    for name, value in configs.leaves(default.get_config().to_dict()):
        line = re.search(rf"^  {re.escape(name)} +(.*)$", out, re.M)
        assert line and line.group(1).startswith(repr(value)), name
        assert _squash(configs.field_docs()[name]) in flat, name
    # With a config (and overrides): that config's values.
    assert train_cmd.main(["--config", "demo", "--config.log_every=7", "-h"]) == 0
    out = capsys.readouterr().out
    assert "values of --config demo" in out
    assert re.search(r"^  num_steps +6000\b", out, re.M)
    assert re.search(r"^  log_every +7\b", out, re.M)
    assert re.search(r"^  model.overrides +\{'base_channels': 12", out, re.M)


def test_packaged_configs_load_by_name_anywhere_and_match_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    for name in configs.NAMES:
        arg = f"{name}:16,keep75" if name == "lc_vae" else name
        config = train_cmd.parse_flags(["--config", arg, "--workdir", "w"]).config
        # Packaged configs name no data: the user does.
        assert config.data.train_dir == "" and config.eval.files == (), name
        checkout = str(REPO / "configs" / f"{name}.py") + arg[len(name) :]
        same = train_cmd.parse_flags([f"--config={checkout}", "--workdir", "w"]).config
        if name == "cpu_small":  # the checkout's cpu_small adds the shared clips
            assert same.data.train_dir.endswith(os.path.join("shared", "videos"))
            assert same.eval.files[0].endswith("carphone_pristine.mp4")
            same.data.train_dir, same.data.exclude, same.eval.files = "", (), ()
        assert same.to_dict() == config.to_dict(), name
    lc = train_cmd.parse_flags(["--config=lc_vae:16,keep75", "--workdir", "w"]).config
    assert lc.model.overrides.latent_dim == 16 and lc.model.lc.keep_ratio == 0.75
    demo = train_cmd.parse_flags(["--config", "demo", "--workdir", "w"]).config
    assert demo.loss.disc_start == demo.num_steps  # no GAN: every step trains the generator
    # eval.files takes one path per flag.
    files = ["--config.eval.files=/a.mp4", "--config.eval.files=/b.mp4"]
    config = train_cmd.parse_flags(["--config", "demo", "--workdir", "w", *files]).config
    assert config.eval.files == ("/a.mp4", "/b.mp4")


def _errors(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        run(train_cmd.main, argv)
    return e.value.code, capsys.readouterr().err


def test_missing_data_paths_and_bad_names_are_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["--config", "cpu_small", "--workdir", str(tmp_path / "w")]
    assert _errors(base, capsys) == (
        2,
        "error: data.train_dir is not set: name the folder of training videos\n"
        "hint: --config.data.train_dir=/path/to/videos\n",
    )
    code, err = _errors([*base, f"--config.data.train_dir={VIDEOS}"], capsys)
    assert code == 2 and err.startswith("error: eval.files is empty but eval.every_steps > 0")
    assert "hint: --config.eval.files=/data/val/a.mp4" in err and len(err.splitlines()) == 2
    code, err = _errors(["--config", "demoo", "--workdir", "w"], capsys)
    assert code == 2 and err.splitlines() == [
        "error: --config: 'demoo' is neither a config file nor a packaged config",
        f"hint: did you mean demo? packaged configs: {', '.join(configs.NAMES)}; or a path to a "
        ".py file",
    ]
    # A config file that imports the checkout's `configs` package from elsewhere: one line.
    (tmp_path / "old.py").write_text("from configs_elsewhere import default\n")
    code, err = _errors(["--config", "old.py", "--workdir", "w"], capsys)
    assert code == 2 and err.startswith(
        "error: --config: cannot load 'old.py': No module named 'configs_elsewhere'\n"
        "hint: a config file imports the packaged configs as wfvae_jax.configs"
    )


def test_wfvae_train_from_another_directory(tmp_path):
    """The console script's code path (`wfvae_jax.commands.cli:main`) with a packaged config,
    from a directory without configs/: the config loads and its checks run."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    main = "from wfvae_jax.commands.cli import main; main()"
    argv = ["train", "--config", "cpu_small", "--workdir", "w", "--config.data.num_frames=8"]
    argv += [f"--config.data.train_dir={VIDEOS}"]
    proc = subprocess.run(
        [sys.executable, "-c", main, *argv], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: data.num_frames=8 is not a valid frame count"), (
        proc.stderr
    )
    assert "hint: --config.data.num_frames=9" in proc.stderr


def test_progress_without_a_terminal_prints_plain_lines(caplog, capsys):
    caplog.set_level(logging.INFO)
    means = {"train/total_loss": 12.5, "train/rec_loss": 3.0, "train/g_loss": 0.25}
    results = {"eval/psnr_ema": 10.0, "eval/ssim_ema": 0.5, "eval/psnr_raw": 9.0}
    results["eval/ssim_raw"] = 0.25
    bar = progress.Progress(4, 0, bar=False)
    bar.set_phase(progress.EVALUATING)
    bar.evaluated(0, results, "/w/samples/step_0.png")
    bar.update(1)
    bar.update(2)
    bar.running(2)
    bar.metrics(2, means, rate=float("nan"))
    bar.update(4)
    bar.metrics(4, means, rate=2.0)
    bar.close()
    lines = [r.getMessage() for r in caplog.records if r.name == progress.__name__]
    assert lines[0] == "compiling (first step) ..."
    assert lines[1] == (
        "eval step 0: held-out PSNR 10.00 dB, SSIM 0.500 (EMA weights); raw 9.00 dB, 0.250 -> "
        "samples/step_0.png"
    )
    assert re.fullmatch(r"compiled; first steps done in \d+ s", lines[2])
    assert lines[3] == "step 2/4  loss 12.5  rec 3"  # not timed yet: no rate, no ETA
    assert lines[4] == "step 4/4  loss 12.5  rec 3  2 steps/s  ETA 0:00:00"
    assert len(lines) == 5 and capsys.readouterr().err == ""  # no bar


def test_progress_on_a_terminal_writes_lines_above_one_bar(capsys):
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)  # the console handler logging_redirect replaces
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        bar = progress.Progress(10, 0, bar=True)
        assert progress.COMPILING in capsys.readouterr().err
        bar.update(2)
        bar.running(2)
        bar.update(6)
        bar.metrics(6, {"train/total_loss": 1.0}, rate=3.0)
        bar.close()
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    err = capsys.readouterr().err
    line = next(x for x in err.split("\n") if "step 6/10" in x)
    assert line.split("\r")[-1].startswith("step 6/10  loss 1  3 steps/s  ETA")  # its own line
    final = err.rstrip("\n").split("\n")[-1].split("\r")[-1]
    assert final.startswith("train:  60%|") and "steps/s, ETA" in final


def test_summary_reports_the_best_held_out_step(tmp_path):
    log = writers.JsonLinesWriter(str(tmp_path / writers.METRICS_LOG))
    log.write_scalars(50, {"eval/psnr_ema": 20.0, "eval/ssim_ema": 0.7, "eval/psnr_raw": 19.0})
    log.write_scalars(100, {"train/total_loss": float("nan")})
    log.write_scalars(100, {"eval/psnr_ema": 19.5, "eval/ssim_ema": 0.72, "eval/psnr_raw": 19.0})
    log.close()
    records = [json.loads(x) for x in (tmp_path / writers.METRICS_LOG).read_text().splitlines()]
    assert records[1]["train/total_loss"] is None and records[0]["step"] == 50
    history = {
        "start": 40,
        "step": 100,
        "steps_per_sec": 1.5,
        "export": str(tmp_path / "export"),
        "samples": [str(tmp_path / "samples" / "step_0000100.png")],
    }
    text = progress.summary(history, str(tmp_path), 125.0)
    assert text.splitlines()[:2] == [
        "done: step 100 (60 this run) in 0:02:05, 1.5 steps/s",
        "best held-out PSNR 20.00 dB, SSIM 0.700 (EMA weights) at step 50; last 19.50 dB at "
        "step 100",
    ]
    assert f"export:  {tmp_path}/export" in text and f"samples: {tmp_path}/samples/" in text


def _install(tmp_path: pathlib.Path) -> pathlib.Path:
    """A non-editable install of this checkout's package into ``tmp_path/site``."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "wfvae_jax", src / "wfvae_jax", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
    # The build backend of this environment first; else pip's isolated build (fetches setuptools).
    for isolation in (["--no-build-isolation"], []):
        proc = subprocess.run([*pip, *isolation, str(src)], capture_output=True, text=True)
        if proc.returncode == 0:
            return site
    pytest.skip(f"cannot build the package here: {proc.stderr.strip().splitlines()[-1]}")


@pytest.mark.slow
def test_installed_package_trains_from_another_directory_with_plain_lines(tmp_path):
    """`wfvae train` of a non-editable install, run from elsewhere without a terminal: two
    steps, plain log lines (no bar), the summary, the JSON log and the export."""
    site = _install(tmp_path)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    (cwd / "tiny.py").write_text(TINY_CONFIG)
    env = dict(os.environ, PYTHONPATH=str(site))
    wfvae = [sys.executable, str(site / "bin" / "wfvae")]
    where = subprocess.run(
        [sys.executable, "-c", "import wfvae_jax; print(wfvae_jax.__file__)"],
        cwd=cwd, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(site))
    help_out = subprocess.run(
        [*wfvae, "train", "--help"], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert help_out.returncode == 0 and "cpu_small" in help_out.stdout
    argv = ["train", "--config", "tiny.py", "--workdir", "run", f"--config.data.train_dir={VIDEOS}"]
    argv += [f"--config.eval.files={HELD_OUT}"]
    proc = subprocess.run(
        [*wfvae, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    assert "\r" not in err and "%|" not in err  # no progress bar without a terminal
    assert re.search(r"INFO compiling \(first step\) \.\.\.$", err, re.M)
    assert re.search(r"INFO eval step 0: held-out PSNR [\d.]+ dB, SSIM [\d.]+ \(EMA", err, re.M)
    assert re.search(r"INFO step 2/2  loss \S+  rec \S+", err, re.M)
    assert "[2] train/" not in err  # the full metrics go to the JSON log and TensorBoard
    out = proc.stdout.splitlines()
    assert out[0].startswith("done: step 2 (2 this run) in ")
    assert re.match(r"best held-out PSNR [\d.]+ dB, SSIM [\d.]+ \(EMA weights\) at step", out[1])
    workdir = cwd / "run"
    assert f"export:  {workdir}/export" in proc.stdout
    assert (workdir / "export" / "config.json").is_file()
    records = [json.loads(x) for x in (workdir / writers.METRICS_LOG).read_text().splitlines()]
    assert {r["step"] for r in records if "train/total_loss" in r} == {2}
    assert [r["step"] for r in records if "eval/psnr_ema" in r] == [0, 2]


def test_demo_config_checks_and_exports_a_few_megabytes():
    import jax

    from wfvae_jax.core.model import init_params
    from wfvae_jax.train import config_check

    config = train_cmd.parse_flags(["--config", "demo", "--workdir", "w"]).config
    config.data.train_dir, config.eval.files = str(VIDEOS), (str(HELD_OUT),)
    model = config_check.check_config(config)
    shapes = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
    num_params = sum(x.size for x in jax.tree.leaves(shapes))
    assert num_params == 1_333_048  # a float32 export of 5.3 MB
