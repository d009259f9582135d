"""Every checkpoint layout (wfvae_jax.io.checkpoint) and the convert command's handling of them.

Fixtures in tests/data/layouts were written by the reference's own WFVAEModel and real torch
(make_layout_fixtures.py): a diffusers-sharded release, a float16 ``.ckpt`` with a ``vae.`` key
prefix, a bfloat16 EMA ``.pt`` under ``module.ae.``, and torch's own float64 sums of each tensor.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import wfvae_jax
from wfvae_jax.commands.convert import cli
from wfvae_jax.io import checkpoint
from wfvae_jax.io.checkpoint import Layout, detect_layout, locate_reference, reference_weights
from wfvae_jax.io.convert import load_reference, params_to_torch_state_dict

from .conftest import DATA, SHARED, TINY

LAYOUTS = DATA / "layouts"
SHARDED = LAYOUTS / "sharded"


@pytest.fixture(scope="module")
def reference_fp32() -> dict[str, np.ndarray]:
    """The fixtures' float32 weights, read with the safetensors library (not our reader)."""
    from safetensors.numpy import load_file

    out = {}
    for shard in sorted(SHARDED.glob("*-of-*.safetensors")):
        out.update(load_file(str(shard)))
    return out


def _converted(src, **kw) -> dict[str, np.ndarray]:
    params, _ = load_reference(src, **kw)
    return params_to_torch_state_dict(params)


# ---- layouts -------------------------------------------------------------------------------


def test_detect_layout(tmp_path, tiny):
    params, config, _ = tiny
    checkpoint.save_pretrained(tmp_path / "export", params, config)
    (tmp_path / "run" / checkpoint.WORKDIR_CHECKPOINTS).mkdir(parents=True)
    assert detect_layout(tmp_path / "export") is Layout.EXPORT
    assert detect_layout(tmp_path / "run") is Layout.WORKDIR
    assert detect_layout(TINY) is Layout.REFERENCE
    assert detect_layout(LAYOUTS / "vae_prefix_fp16.ckpt") is Layout.REFERENCE
    with pytest.raises(FileNotFoundError, match="does not exist"):
        detect_layout(tmp_path / "nothing")
    with pytest.raises(ValueError, match="already a wfvae_jax checkpoint"):
        locate_reference(tmp_path / "export")
    with pytest.raises(ValueError, match="training workdir"):
        locate_reference(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="wfvae convert"):
        wfvae_jax.load_pretrained(TINY)


def test_reference_directory_weights(tmp_path):
    # Release layouts: the safetensors file (vectors.safetensors is not weights), the index.
    assert reference_weights(TINY).name == "diffusion_pytorch_model.safetensors"
    assert reference_weights(SHARDED).name == "diffusion_pytorch_model.safetensors.index.json"
    # config.json + one torch file, as the reference's from_pretrained takes a *.ckpt.
    d = tmp_path / "ckpt_dir"
    d.mkdir()
    shutil.copy(SHARDED / "config.json", d)
    shutil.copy(LAYOUTS / "vae_prefix_fp16.ckpt", d / "merged.ckpt")
    files = locate_reference(d)
    assert files == (d / "merged.ckpt", d / "config.json")
    # Several candidates: an error naming them, never a silent pick.
    shutil.copy(LAYOUTS / "ae_prefix_bf16.pt", d / "other.pt")
    with pytest.raises(ValueError, match=r"2 candidate weight files \['merged.ckpt', 'other.pt'\]"):
        locate_reference(d)
    (d / "merged.ckpt").unlink()
    (d / "other.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"no weights in .*found \['config.json'\]"):
        locate_reference(d)


def test_workdir_loader_reads_what_train_writes(tmp_path, tiny):
    """A workdir written through train/checkpointing.make_manager (the layout's one writer)."""
    import jax
    import orbax.checkpoint as ocp

    from wfvae_jax.train.checkpointing import make_manager

    params, config, _ = tiny
    ema = jax.tree.map(lambda a: a + 1.0, params)
    with make_manager(tmp_path) as manager:
        manager.save(
            7,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave({"params": params, "ema_params": ema, "step": 7}),
                meta=ocp.args.JsonSave({"model": config.to_dict(), "step": 7}),
            ),
        )
    got, got_config = checkpoint.load_train_checkpoint(tmp_path)
    assert got_config == config
    for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _, _, description = checkpoint.load_model(checkpoint=tmp_path, use_ema=False)
    assert "(step 7, raw)" in description
    with pytest.raises(FileNotFoundError, match="no checkpoint for step 3"):
        checkpoint.load_train_checkpoint(tmp_path, step=3)
    assert checkpoint.load_model_lc_settings(workdir=tmp_path) is None  # meta has no run config


def test_workdir_without_a_saved_step(tmp_path):
    """A workdir whose checkpoints/ holds no step yet (a run killed before its first save): no
    LC settings, and the loader names the empty directory."""
    (tmp_path / "checkpoints").mkdir()
    assert checkpoint.load_model_lc_settings(workdir=tmp_path) is None
    assert checkpoint.load_model_lc_settings(checkpoint=tmp_path) is None
    with pytest.raises(FileNotFoundError, match="no checkpoint saved in"):
        checkpoint.load_model(workdir=tmp_path)


# ---- formats the converter reads -------------------------------------------------------------


def test_sharded_safetensors_release_converts(reference_fp32):
    got = _converted(SHARDED)
    for k, v in got.items():
        np.testing.assert_array_equal(v, reference_fp32[k], err_msg=k)


@pytest.mark.parametrize(
    ("name", "dtype", "prefix", "trainable_only"),
    [
        ("vae_prefix_fp16.ckpt", np.float16, "vae.", False),
        ("ae_prefix_bf16.pt", ml_dtypes.bfloat16, "module.ae.", True),
    ],
)
def test_prefixed_half_precision_checkpoints_convert_to_float32(
    name, dtype, prefix, trainable_only, reference_fp32
):
    lines = []
    got = _converted(LAYOUTS / name, report=lines.append)
    text = "\n".join(lines)
    stripped = prefix.removeprefix("module.")  # the EMA rule removes "module." first
    assert f"stripped the key prefix {stripped!r}" in text
    assert f"weights stored as {np.dtype(dtype).name}; converted to float32" in text
    sums = json.loads((LAYOUTS / "torch_sums.json").read_text())[name]
    for k, v in got.items():
        assert v.dtype == np.float32
        # Our reading equals torch's rounding of the float32 original (round to nearest even)...
        want = reference_fp32[k].astype(dtype).astype(np.float32)
        np.testing.assert_array_equal(v, want, err_msg=k)
        # ... and torch's own sum of the stored tensor.
        np.testing.assert_allclose(v.astype(np.float64).sum(), sums[prefix + k], rtol=1e-12)
    if trainable_only:  # the EMA shadow holds no Haar kernels; nothing is missing without them
        assert not any("wavelet" in k for k in sums)


def test_common_prefixes_and_ignored_keys():
    from wfvae_jax.io.convert import strip_key_prefix

    sd = {"model.vae.encoder.a": 1, "model.vae.decoder.b": 2, "model.text.c": 3}
    assert strip_key_prefix(sd) == (
        {"encoder.a": 1, "decoder.b": 2},
        "model.vae.",
        ["model.text.c"],
    )
    assert strip_key_prefix({"encoder.a": 1}) == ({"encoder.a": 1}, "", [])
    with pytest.raises(ValueError, match="different prefixes"):
        strip_key_prefix({"vae.encoder.a": 1, "ae.decoder.b": 2})


def test_missing_shard_is_named(tmp_path):
    d = tmp_path / "sharded"
    shutil.copytree(SHARDED, d)
    shard = sorted(d.glob("*-of-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=rf"missing .*\['{shard.name}'\]"):
        load_reference(d)


# ---- the convert command -------------------------------------------------------------------


def _run_cli(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        cli([str(a) for a in argv])
    return e.value.code, capsys.readouterr().err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_cli_missing_path(tmp_path, capsys):
    code, err = _run_cli([tmp_path / "no_such.ckpt", tmp_path / "out"], capsys)
    assert code == 2
    assert "no_such.ckpt does not exist" in _one_error_line(err)


def test_cli_corrupt_file(tmp_path, capsys):
    raw = (LAYOUTS / "vae_prefix_fp16.ckpt").read_bytes()
    (tmp_path / "part.ckpt").write_bytes(raw[: len(raw) // 2])
    code, err = _run_cli([tmp_path / "part.ckpt", tmp_path / "out"], capsys)
    assert code == 2
    line = _one_error_line(err)
    assert "part.ckpt" in line and "incomplete download" in line
    assert not (tmp_path / "out").exists()


def test_cli_wrong_config(tmp_path, capsys):
    cfg = json.loads((TINY / "config.json").read_text()) | {"latent_dim": 4}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    code, err = _run_cli([TINY, tmp_path / "out", "--config", tmp_path / "cfg.json"], capsys)
    assert code == 2
    assert "latent_dim: 4 in the config, 8 in the weights" in _one_error_line(err)


def test_cli_refuses_existing_out_dir_unless_force(tmp_path, capsys):
    out = tmp_path / "out"
    assert _run_cli([LAYOUTS / "vae_prefix_fp16.ckpt", out], capsys)[0] == 0
    # latent_stats --write_config put measured statistics into the config: never lost silently.
    cfg = json.loads((out / "config.json").read_text())
    cfg["scale"], cfg["shift"] = [1.5, 2.5], [0.25, -0.5]
    (out / "config.json").write_text(json.dumps(cfg))
    code, err = _run_cli([LAYOUTS / "vae_prefix_fp16.ckpt", out], capsys)
    assert code == 2
    assert "exists and is not empty" in _one_error_line(err)
    assert "hint: choose another OUT_DIR, or pass --force" in err
    assert json.loads((out / "config.json").read_text())["scale"] == [1.5, 2.5]
    # --force replaces an earlier conversion...
    assert _run_cli([LAYOUTS / "vae_prefix_fp16.ckpt", out, "--force"], capsys)[0] == 0
    assert json.loads((out / "config.json").read_text())["scale"] == [0.18215] * 4
    # ... but never a directory that is not one.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, err = _run_cli([LAYOUTS / "vae_prefix_fp16.ckpt", other, "--force"], capsys)
    assert code == 2 and "replaces only an earlier conversion" in _one_error_line(err)
    assert (other / "notes.txt").read_text() == "mine"


def test_cli_ctrl_c_leaves_out_dir_untouched(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert _run_cli([LAYOUTS / "vae_prefix_fp16.ckpt", out], capsys)[0] == 0
    before = (out / "config.json").read_text()

    def interrupted_save(path, params, config):
        Path(path, "params").mkdir(parents=True)  # a half-written checkpoint
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_pretrained", interrupted_save)
    code, err = _run_cli([LAYOUTS / "vae_prefix_fp16.ckpt", out, "--force"], capsys)
    assert code == 130
    assert "interrupted" in err and "OUT_DIR was left as it was" in err
    assert "Traceback" not in err
    assert (out / "config.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial directory left


def test_cli_prints_the_inferred_config(tmp_path, capsys):
    code, err = _run_cli([LAYOUTS / "ae_prefix_bf16.pt", tmp_path / "out"], capsys)
    assert code == 0
    assert "config inferred from the weights" in err
    assert "base_channels=2 latent_dim=2 norm_type=layernorm use_attention=True" in err
    assert "warning: t_interpolation is not stored in the weights" in err
    assert "(override with --t_interpolation)" in err
    params, config = wfvae_jax.load_pretrained(tmp_path / "out")
    assert config.t_interpolation == "trilinear" and config.latent_dim == 2


def test_cli_as_a_subprocess_prints_one_error_line(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "wfvae_jax.commands.convert",
            str(tmp_path / "missing"),
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[1],
    )
    assert out.returncode == 2
    assert _one_error_line(out.stderr) == f"error: {tmp_path / 'missing'} does not exist"


def _wfvae_888_tiny() -> Path | None:
    for d in (DATA / "wfvae_888_tiny", SHARED / "parity" / "wfvae_888_tiny"):
        if (d / "diffusion_pytorch_model.safetensors").is_file():
            return d
    return None


@pytest.mark.skipif(_wfvae_888_tiny() is None, reason="needs the wfvae_888_tiny checkpoint")
def test_8x_checkpoint_converts_by_inference_as_with_its_config(tmp_path, capsys):
    """End to end: the reference's 8x8x8 checkpoint without its config.json converts to the same
    parameters and architecture as with it (the config.json route is checked against the
    reference's outputs by the parity tests)."""
    src = _wfvae_888_tiny()
    assert (
        _run_cli(
            [src / "diffusion_pytorch_model.safetensors", tmp_path / "inf", "--config", "infer"],
            capsys,
        )[0]
        == 0
    )
    assert _run_cli([src, tmp_path / "cfg"], capsys)[0] == 0
    p_inf, c_inf = wfvae_jax.load_pretrained(tmp_path / "inf")
    p_cfg, c_cfg = wfvae_jax.load_pretrained(tmp_path / "cfg")
    assert c_inf.temporal_downsample == 8
    # Only the latent statistics are not in the weights (the inferred config has placeholders).
    assert c_inf.replace(scale=c_cfg.scale, shift=c_cfg.shift) == c_cfg
    import jax

    for a, b in zip(jax.tree.leaves(p_inf), jax.tree.leaves(p_cfg), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
