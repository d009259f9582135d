"""Tests for wfvae_jax.io.torch_files and its readers (torch_zip, restricted_pickle,
safetensors_files): torch-free, code-free checkpoint loading.

The torch fixtures in tests/data/torch_io were written by real torch (make_fixtures.py, run once
in a separate venv); next to each is an .npz with every tensor as torch itself converted it, so
these tests compare against torch's own reading of the files. Hostile and edge-case archives are
built here from raw pickle opcodes, without torch.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from wfvae_jax.io.restricted_pickle import NUMPY_ARRAY_GLOBALS, restricted_load
from wfvae_jax.io.torch_files import load_state_dict, select_generator_state_dict
from wfvae_jax.io.torch_zip import ALLOWED_GLOBALS, TorchDtype, load_torch_pickle
from wfvae_jax.io.weight_files import CheckpointError

from . import zip_bomb

DATA = Path(__file__).parent / "data" / "torch_io"


def _flatten(obj, prefix: str = "") -> dict[str, np.ndarray]:
    """Same path rule as make_fixtures.flatten: dict keys and list indices joined by '/'."""
    out: dict[str, np.ndarray] = {}
    if isinstance(obj, np.ndarray):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}/{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}/{i}" if prefix else str(i)))
    return out


def _expected(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / (Path(name).stem + ".npz")) as npz:
        return {k: npz[k] for k in npz.files}


def _assert_same_arrays(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for k, w in want.items():
        g = got[k]
        assert g.dtype == w.dtype, k
        assert g.shape == w.shape, k
        assert g.flags.c_contiguous, k
        np.testing.assert_array_equal(g, w, err_msg=k)


# --- real torch fixtures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "train_ema.ckpt",
        "train_no_ema.ckpt",
        "dtypes_views.pt",
        "torchvision_style.pth",
        "metadata_tree.pt",
    ],
)
def test_every_tensor_matches_torch(name):
    _assert_same_arrays(_flatten(load_torch_pickle(DATA / name)), _expected(name))


def test_training_checkpoint_non_tensor_values_kept():
    ckpt = load_torch_pickle(DATA / "train_ema.ckpt")
    assert ckpt["current_step"] == 7 and ckpt["epoch"] == 1
    assert ckpt["sampler_state"] == {"epoch": 1, "seed": 42, "current_index": 3}
    assert ckpt["scaler_state"]["scale"] == 65536.0
    group = ckpt["optimizer_state"]["gen_optimizer"]["param_groups"][0]
    assert group["betas"] == (0.9, 0.999) and group["lr"] == 1e-4
    assert set(ckpt["state_dict"]) == {"gen_model", "dics_model"}  # reference's spelling
    # Adam's step counter is a 0-d tensor; it must stay 0-d.
    assert ckpt["optimizer_state"]["gen_optimizer"]["state"][0]["step"].shape == ()


def test_load_state_dict_prefers_ema_and_strips_module_prefix():
    want = _expected("train_ema.ckpt")
    ema = {
        k.removeprefix("ema_state_dict/module."): v
        for k, v in want.items()
        if k.startswith("ema_state_dict/")
    }
    got = load_state_dict(DATA / "train_ema.ckpt")
    gen = _flatten(load_torch_pickle(DATA / "train_ema.ckpt"))
    # The EMA shadow holds trainable parameters only: the frozen wavelet filter, absent there,
    # comes from gen_model (torch_files.generator_entry).
    frozen = "encoder.wavelet_transform_in.h_conv.weight"
    assert frozen not in ema
    _assert_same_arrays(got, {**ema, frozen: gen[f"state_dict/gen_model/{frozen}"]})
    # make_fixtures scaled EMA by 0.5, so this shows the EMA copy (not gen_model) was taken.
    np.testing.assert_array_equal(
        got["decoder.conv_out.weight"], 0.5 * gen["state_dict/gen_model/decoder.conv_out.weight"]
    )


@pytest.mark.parametrize(
    ("name", "use_ema"),
    [("train_ema.ckpt", False), ("train_no_ema.ckpt", True), ("train_no_ema.ckpt", False)],
)
def test_load_state_dict_falls_back_to_gen_model(name, use_ema):
    prefix = "state_dict/gen_model/"
    want = {k.removeprefix(prefix): v for k, v in _expected(name).items() if k.startswith(prefix)}
    got = load_state_dict(DATA / name, use_ema=use_ema)
    _assert_same_arrays(got, want)
    assert "encoder.wavelet_transform_in.h_conv.weight" in got
    assert not any(k.startswith("main.") for k in got)  # discriminator excluded


def test_dtypes_and_views_against_numpy_identities():
    t = load_torch_pickle(DATA / "dtypes_views.pt")
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    np.testing.assert_array_equal(t["base"], base)
    np.testing.assert_array_equal(t["transposed"], base.T)
    np.testing.assert_array_equal(t["sliced"], base[1:3, ::2])
    np.testing.assert_array_equal(t["expanded"], np.tile(np.arange(3.0, dtype=np.float32), (4, 1)))
    assert t["float16"].dtype == np.float16
    # bfloat16 is widened to float32 without rounding: every value is a bfloat16 value.
    for k in ("bfloat16", "bfloat16_transposed"):
        assert t[k].dtype == np.float32
        np.testing.assert_array_equal(t[k], t[k].astype(ml_dtypes.bfloat16).astype(np.float32))
    np.testing.assert_array_equal(t["bfloat16_transposed"], t["bfloat16"].T)
    np.testing.assert_array_equal(t["int64"], [-3, 0, 2**40])
    assert t["scalar"].shape == () and t["scalar"] == 3.5
    assert t["empty"].shape == (0, 3)
    assert t["parameter"].shape == (2, 2)  # nn.Parameter -> its data


def test_torchvision_state_dict():
    raw = load_torch_pickle(DATA / "torchvision_style.pth")
    assert "_metadata" in raw.__dict__  # state_dict()'s attribute, restored via BUILD
    sd = load_state_dict(DATA / "torchvision_style.pth")
    assert type(sd) is dict and not hasattr(sd, "_metadata")
    _assert_same_arrays(sd, _expected("torchvision_style.pth"))
    assert sd["1.num_batches_tracked"].dtype == np.int64 and sd["1.num_batches_tracked"] == 1


def test_metadata_values():
    tree = load_torch_pickle(DATA / "metadata_tree.pt")
    assert tree["size"] == (2, 3) and type(tree["size"]) is tuple
    assert tree["dtype"] == TorchDtype("bfloat16", "bfloat16")
    assert tree["dtype"].numpy == np.dtype(ml_dtypes.bfloat16)
    assert tree["bytes"] == b"\x00\xffab"
    assert tree["set"] == {1, 2} and tree["complex"] == 1 + 2j
    assert tree["tuple"] == (1, "a", None, 2.5)
    with pytest.raises(ValueError, match="flat mapping"):
        load_state_dict(DATA / "metadata_tree.pt")


def test_pickled_module_is_refused():
    with pytest.raises(pickle.UnpicklingError, match=r"torch\.nn\.modules\.linear\.Linear"):
        load_torch_pickle(DATA / "whole_module.pt")


def test_legacy_format_is_refused():
    with pytest.raises(ValueError, match="legacy"):
        load_state_dict(DATA / "legacy_format.pt")


# --- selection rule (modeling_wfvae.py init_from_ckpt) --------------------------------------


def test_select_generator_state_dict_rules():
    a, b, c = np.zeros(1), np.ones(1), np.full(1, 2.0)
    # The reference uses str.replace, so every "module." goes, not only a leading one.
    got = select_generator_state_dict({"ema_state_dict": {"module.x.module.w": a}})
    assert list(got) == ["x.w"]
    ckpt = {"ema_state_dict": {"module.w": a}, "state_dict": {"w": b}}
    assert select_generator_state_dict(ckpt)["w"] is a
    assert select_generator_state_dict(ckpt, use_ema=False)["w"] is b
    assert select_generator_state_dict({"ema_state_dict": {}, "state_dict": {"w": b}})["w"] is b
    assert select_generator_state_dict({"state_dict": {"gen_model": {"w": c}}})["w"] is c
    assert select_generator_state_dict({"w": a})["w"] is a
    with pytest.raises(ValueError, match="mapping"):
        select_generator_state_dict([a])
    with pytest.raises(ValueError, match="step"):
        select_generator_state_dict({"w": a, "step": 3})


# --- errors -----------------------------------------------------------------------------------


def test_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_state_dict(tmp_path / "missing.ckpt")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ValueError, match=r"unknown checkpoint extension '\.txt'"):
        load_state_dict(tmp_path / "w.txt")
    (tmp_path / "release").mkdir()
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
        load_state_dict(tmp_path / "release")
    (tmp_path / "notzip.pt").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a zip archive"):
        load_state_dict(tmp_path / "notzip.pt")
    with zipfile.ZipFile(tmp_path / "other.pt", "w") as zf:
        zf.writestr("a/b.txt", "x")
    with pytest.raises(ValueError, match="data.pkl"):
        load_state_dict(tmp_path / "other.pt")


# --- hand-built pickles (no torch) -----------------------------------------------------------


def _str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)  # BININT


def _glob(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()  # GLOBAL


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _call(fn: bytes, *args: bytes) -> bytes:
    return fn + _tuple(*args) + b"R"  # REDUCE


def _dict(**items: bytes) -> bytes:
    return b"}(" + b"".join(_str(k) + v for k, v in items.items()) + b"u"  # SETITEMS


def _tensor(key: str, numel: int, offset: int, size, stride, storage="FloatStorage") -> bytes:
    pid = _tuple(_str("storage"), _glob("torch", storage), _str(key), _str("cpu"), _int(numel))
    return _call(
        _glob("torch._utils", "_rebuild_tensor_v2"),
        pid + b"Q",  # BINPERSID
        _int(offset),
        _tuple(*map(_int, size)),
        _tuple(*map(_int, stride)),
        b"\x89",  # False
        _call(_glob("collections", "OrderedDict")),
    )


def _pkl(body: bytes, proto: int = 2) -> bytes:
    return bytes([0x80, proto]) + body + b"."


def _torch_zip(path: Path, pkl: bytes, records=None, byteorder: str | None = "little") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        if byteorder is not None:
            zf.writestr("archive/byteorder", byteorder)
        for key, raw in (records or {}).items():
            zf.writestr(f"archive/data/{key}", raw)
    return path


def test_handbuilt_tensor_and_byteorder(tmp_path):
    values = np.array([1.5, -2.0, 3.25, 8.0, 0.5, -1.0], dtype=np.float32)
    pkl = _pkl(_dict(w=_tensor("0", 6, 1, (2, 2), (1, 2))))
    for byteorder, raw in (("little", values.astype("<f4")), ("big", values.astype(">f4"))):
        path = _torch_zip(tmp_path / f"{byteorder}.pt", pkl, {"0": raw.tobytes()}, byteorder)
        got = load_state_dict(path)["w"]
        np.testing.assert_array_equal(got, values[1:5].reshape(2, 2).T)
    # Files from torch < 2.1 carry no byteorder record; torch reads them as little-endian.
    path = _torch_zip(tmp_path / "old.pt", pkl, {"0": values.tobytes()}, None)
    np.testing.assert_array_equal(load_state_dict(path)["w"], values[1:5].reshape(2, 2).T)


@pytest.mark.parametrize(
    ("size", "stride", "offset", "numel", "nbytes", "match"),
    [
        ((10,), (1,), 0, 4, 16, "exceeds its storage"),
        ((2, 2), (1, 3), 0, 4, 16, "exceeds its storage"),
        ((2,), (1,), 3, 4, 16, "exceeds its storage"),
        ((4,), (1,), 0, 4, 8, "holds 8 bytes"),
    ],
)
def test_out_of_bounds_views_are_refused(tmp_path, size, stride, offset, numel, nbytes, match):
    pkl = _pkl(_dict(w=_tensor("0", numel, offset, size, stride)))
    path = _torch_zip(tmp_path / "bad.pt", pkl, {"0": b"\x00" * nbytes})
    with pytest.raises(pickle.UnpicklingError, match=match):
        load_torch_pickle(path)


def _payloads(marker: Path) -> list[tuple[str, bytes]]:
    m = str(marker)
    return [
        ("os.system", _pkl(_call(_glob("os", "system"), _str(f"touch '{m}'")))),
        ("posix.system", _pkl(_call(_glob("posix", "system"), _str(f"touch '{m}'")))),
        (
            "builtins.eval",  # protocol 4 STACK_GLOBAL instead of GLOBAL
            _pkl(
                _str("builtins")
                + _str("eval")
                + b"\x93"
                + _tuple(_str(f"open({m!r}, 'w')"))
                + b"R",
                4,
            ),
        ),
        ("builtins.open", _pkl(_call(_glob("__builtin__", "open"), _str(m), _str("w")))),
        (
            "os.system",  # hidden after a valid tensor, inside a nested dict
            _pkl(
                _dict(
                    w=_tensor("0", 1, 0, (1,), (1,)),
                    x=_dict(y=_call(_glob("os", "system"), _str(f"touch '{m}'"))),
                )
            ),
        ),
    ]


class _StockUnpickler(pickle.Unpickler):
    """The standard unpickler (imports and calls whatever the pickle names), given torch_zip's
    tensor stand-ins so that it gets past tensors without torch installed."""

    def find_class(self, module, name):
        allowed = ALLOWED_GLOBALS.get((module, name))
        return allowed if allowed is not None else super().find_class(module, name)

    def persistent_load(self, pid):
        return np.zeros(pid[4], np.float32)


@pytest.mark.parametrize("index", range(5))
def test_malicious_pickle_runs_nothing(tmp_path, index):
    control_marker, marker = tmp_path / "control", tmp_path / "marker"
    # Control: the stock unpickler really executes this payload, so the check below can fail.
    _, control = _payloads(control_marker)[index]
    try:
        _StockUnpickler(io.BytesIO(control)).load()
    except Exception:
        pass  # the payload's side effect happens before any later error
    assert control_marker.exists()

    refused, payload = _payloads(marker)[index]
    path = _torch_zip(tmp_path / "evil.pt", payload, {"0": b"\x00" * 4})
    with pytest.raises(pickle.UnpicklingError, match=f"refused global '{refused}'"):
        load_state_dict(path)
    assert not marker.exists()


def test_build_cannot_mutate_allowed_globals(tmp_path):
    before = dict(ALLOWED_GLOBALS)
    targets = [
        (_glob("torch._utils", "_rebuild_tensor_v2"), "fn"),
        (_glob("torch", "FloatStorage"), "dtype_str"),
        (_glob("torch", "float32"), "dtype_str"),
    ]
    for target, field in targets:
        # BUILD with (None, slotstate) setattr()s on the object; with a dict it fills __dict__.
        for state in (_tuple(b"N", _dict(**{field: _str("O")})), _dict(**{field: _str("O")})):
            path = _torch_zip(tmp_path / "build.pt", _pkl(target + state + b"b"))
            with pytest.raises(Exception):  # noqa: B017 - any refusal will do
                load_torch_pickle(path)
    assert dict(ALLOWED_GLOBALS) == before
    _assert_same_arrays(
        _flatten(load_torch_pickle(DATA / "dtypes_views.pt")), _expected("dtypes_views.pt")
    )


# --- safetensors ------------------------------------------------------------------------------


def test_safetensors_file_and_release_dir(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "encoder.conv_in.weight": rng.standard_normal((4, 3, 3, 3, 3)).astype(np.float32),
        "decoder.conv_out.bias": rng.standard_normal(3).astype(np.float16),
        "bf16": rng.standard_normal((2, 5)).astype(ml_dtypes.bfloat16),
        "count": np.array(5, dtype=np.int64),
    }
    release = tmp_path / "release"
    release.mkdir()
    (release / "config.json").write_text(json.dumps({"latent_dim": 4}))
    save_file(tensors, release / "diffusion_pytorch_model.safetensors")
    want = dict(tensors, bf16=tensors["bf16"].astype(np.float32))
    _assert_same_arrays(load_state_dict(release), want)
    _assert_same_arrays(load_state_dict(release / "diffusion_pytorch_model.safetensors"), want)


# --- bounded memory, zip bombs, truncated files ------------------------------------------------

ZIP_BOMB = Path(__file__).parent / "zip_bomb.py"


def _load_in_subprocess(path: Path) -> dict:
    """Loads ``path`` in a fresh process; its peak RSS (VmHWM) before and after the load, MiB."""
    out = subprocess.run(
        [sys.executable, str(ZIP_BOMB), "--load", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        cwd=Path(__file__).parents[1],
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_zip_bomb_is_refused_before_inflating(tmp_path):
    # ~2 MB on disk, one record that inflates to 2 GiB; the pickle declares the same 2 GiB tensor.
    bomb = zip_bomb.write_zip_bomb(tmp_path / "bomb.ckpt", 2 << 30)
    assert bomb.stat().st_size < 3 << 20
    with pytest.raises(ValueError, match="zip bomb"):
        load_torch_pickle(bomb)
    got = _load_in_subprocess(bomb)
    assert got["outcome"].startswith("CheckpointError") and "zip bomb" in got["outcome"]
    # Under 2x the file size (nothing is inflated); before the fix this peaked at ~4.3 GB.
    assert got["peak_rss_mib"] - got["peak_rss_mib_before_load"] < 2 * bomb.stat().st_size / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_honest_checkpoint_loads_in_about_its_own_size(tmp_path):
    path = zip_bomb.write_stored_checkpoint(tmp_path / "big.ckpt", 64 << 20)
    got = _load_in_subprocess(path)
    assert got["outcome"] == f"loaded {64 << 20:,} bytes"
    # One copy of the tensor plus a read piece; reading the record into bytes and then copying
    # it into the tensor (the old reader) needs twice the tensor.
    assert got["peak_rss_mib"] - got["peak_rss_mib_before_load"] < 1.5 * 64
    w = load_torch_pickle(path)["w"]
    np.testing.assert_array_equal(w[[0, 1, -1]], [0.0, 1.0, (1 << 24) - 1])


def test_stored_entry_whose_sizes_disagree_is_refused(tmp_path):
    pkl = zip_bomb.pickle_one_tensor(4)
    path = zip_bomb.write_zip(
        tmp_path / "lying.pt",
        [
            ("archive/data.pkl", pkl, 0, len(pkl), zlib.crc32(pkl)),
            ("archive/data/0", b"\0" * 16, 0, 1 << 30, 0),  # stored, declares 1 GiB, holds 16
        ],
    )
    with pytest.raises(CheckpointError, match="declares 1073741824 bytes but holds 16"):
        load_torch_pickle(path)


def test_record_shorter_than_its_tensor_is_refused_before_reading(tmp_path):
    pkl = zip_bomb.pickle_one_tensor(1000)
    raw = b"\0" * 16
    path = zip_bomb.write_zip(
        tmp_path / "short.pt",
        [
            ("archive/data.pkl", pkl, 0, len(pkl), zlib.crc32(pkl)),
            ("archive/data/0", raw, 0, len(raw), zlib.crc32(raw)),
        ],
    )
    with pytest.raises(CheckpointError, match="holds 16 bytes, needs 1000 x 4"):
        load_torch_pickle(path)


@pytest.mark.parametrize("cut", ["end", "crc"])
def test_truncated_or_corrupt_torch_file_names_it_and_suggests_a_download(tmp_path, cut):
    raw = bytearray((DATA / "train_ema.ckpt").read_bytes())
    if cut == "end":  # a download that stopped early: no zip directory at the end
        raw = raw[: len(raw) * 2 // 3]
    else:  # a flipped byte inside a tensor record: its CRC no longer matches
        with zipfile.ZipFile(DATA / "train_ema.ckpt") as zf:
            info = next(i for i in zf.infolist() if "/data/" in i.filename and i.file_size > 64)
        # The data follows the local header, whose name/extra lengths are at bytes 26..29
        # (torch pads the local extra field, so the central directory's lengths differ).
        name_len, extra_len = struct.unpack(
            "<HH", raw[info.header_offset + 26 : info.header_offset + 30]
        )
        raw[info.header_offset + 30 + name_len + extra_len + 8] ^= 0xFF
    path = tmp_path / "part.ckpt"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="incomplete download") as e:
        load_state_dict(path)
    assert str(path) in str(e.value)


def test_truncated_safetensors_is_a_clear_error_not_a_safetensors_error(tmp_path):
    from safetensors import SafetensorError

    save_file({"w": np.zeros(1000, np.float32)}, tmp_path / "w.safetensors")
    raw = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="incomplete download") as e:
        load_state_dict(tmp_path / "w.safetensors")
    assert not isinstance(e.value, SafetensorError)
    assert "w.safetensors" in str(e.value)


def test_restricted_load_reads_numpy_pickles_and_refuses_code():
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [3, "x"]}
    got = restricted_load(io.BytesIO(pickle.dumps(arrays)), NUMPY_ARRAY_GLOBALS)
    np.testing.assert_array_equal(got["a"], arrays["a"])
    assert got["b"][1] == "x"
    with pytest.raises(pickle.UnpicklingError, match="refused global 'builtins.print'"):
        restricted_load(io.BytesIO(pickle.dumps(print)), NUMPY_ARRAY_GLOBALS)
    # The torch allowlist does not admit numpy's reconstructor, nor the numpy one torch's.
    with pytest.raises(CheckpointError, match="_reconstruct"):
        restricted_load(io.BytesIO(pickle.dumps(arrays)), ALLOWED_GLOBALS)
