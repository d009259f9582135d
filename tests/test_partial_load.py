"""load_pretrained(path, part=...): only one half of the weights is read, it equals that half of
the full load, and encode / decode on it give bit-identical results (direct, Causal Cache chunks,
and the auto rule); params without the half a call needs are a clear error."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

import wfvae_jax
from wfvae_jax.inference import api
from wfvae_jax.io.checkpoint import (
    CONFIG_NAME,
    is_orbax_export,
    load_model,
    load_pretrained,
    save_pretrained,
)

VIDEO_SHAPE = (1, 9, 16, 16, 3)  # T = 1 + 2 * 4: two latent frames after the first


@pytest.fixture(scope="module")
def export(tiny, tmp_path_factory):
    """An EXPORT of the reference tiny checkpoint: (path, full params as loaded, config)."""
    params, config, _ = tiny
    path = tmp_path_factory.mktemp("export")
    save_pretrained(path, params, config)
    full, loaded_config = load_pretrained(path)
    assert loaded_config == config
    return path, full, config


@pytest.fixture(scope="module")
def video():
    return np.random.default_rng(0).uniform(-1, 1, VIDEO_SHAPE).astype(np.float32)


def _assert_trees_identical(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype == np.float32 and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_part_equals_that_subtree_of_the_full_load(export, tiny, part):
    path, full, config = export
    params, loaded_config = load_pretrained(path, part=part)
    assert loaded_config == config
    assert list(params) == [part]
    # On the device already: host numpy would be copied to the device at every jitted call.
    device = jax.local_devices()[0]
    for leaf in jax.tree.leaves(params) + jax.tree.leaves(full):
        assert isinstance(leaf, jax.Array) and leaf.devices() == {device}
    _assert_trees_identical(params[part], full[part])
    _assert_trees_identical(params[part], tiny[0][part])  # and the weights that were saved
    via_model, _, _ = load_model(checkpoint=path, part=part)
    _assert_trees_identical(via_model, params)


@pytest.mark.parametrize("bad", ["enc", "both", "Encoder", ""])
def test_bad_part_is_a_value_error_naming_the_choices(export, bad):
    path = export[0]
    msg = r"part must be None \(both\), 'encoder' or 'decoder'"
    with pytest.raises(ValueError, match=msg):
        load_pretrained(path, part=bad)
    with pytest.raises(ValueError, match=msg):
        load_model(checkpoint=path, part=bad)


def test_part_checks_only_its_half_against_the_config(export, tmp_path):
    """A config.json whose decoder differs from the stored one: the encoder still loads, the
    decoder (stored but not in the config, or in the config but not stored) does not."""
    path, full, config = export
    cases = ((config.decoder_num_resblocks + 1, "not stored"), (1, "stored arrays not in"))
    for resblocks, what in cases:
        other = dataclasses.replace(config, decoder_num_resblocks=resblocks)
        d = tmp_path / f"r{resblocks}"
        save_pretrained(d, full, config)
        (d / CONFIG_NAME).write_text(json.dumps(other.to_dict()))
        enc, _ = load_pretrained(d, part="encoder")
        _assert_trees_identical(enc["encoder"], full["encoder"])
        with pytest.raises(ValueError, match=f"do not match.*{what}"):
            load_pretrained(d, part="decoder")
        with pytest.raises(ValueError, match="do not match"):
            load_pretrained(d)


@pytest.fixture
def small_auto_chunk(monkeypatch):
    """AUTO_CHUNK_PIXELS of one 4-frame chunk at 16x16, so the auto rule chunks the tiny clip."""
    monkeypatch.setattr(api, "AUTO_CHUNK_PIXELS", 4 * 16 * 16)


# The fast tier runs the auto chunk (the same program as t_chunk=4 / 1); direct and explicit
# chunks in the slow tier.
def slow(value):
    return pytest.param(value, marks=pytest.mark.slow)


@pytest.mark.parametrize("t_chunk", [slow(0), slow(4), None])
def test_encode_with_encoder_only_equals_full(export, video, small_auto_chunk, t_chunk):
    path, full, config = export
    enc, _ = load_pretrained(path, part="encoder")
    if t_chunk is None:
        assert api.auto_t_chunk(config, *VIDEO_SHAPE[1:4]) == 4  # auto really chunks
    a = wfvae_jax.encode(full, video, config, t_chunk=t_chunk)
    b = wfvae_jax.encode(enc, video, config, t_chunk=t_chunk)
    np.testing.assert_array_equal(np.asarray(a.mean), np.asarray(b.mean))
    np.testing.assert_array_equal(np.asarray(a.logvar), np.asarray(b.logvar))


@pytest.mark.parametrize("t_chunk", [slow(0), slow(1), None])
def test_decode_with_decoder_only_equals_full(export, video, small_auto_chunk, t_chunk):
    path, full, config = export
    dec, _ = load_pretrained(path, part="decoder")
    z = np.asarray(wfvae_jax.encode(full, video, config, t_chunk=0).mode())
    if t_chunk is None:
        assert api._auto_decode_chunk(z, config)() == 1  # auto really chunks
    a = wfvae_jax.decode(full, z, config, t_chunk=t_chunk)
    b = wfvae_jax.decode(dec, z, config, t_chunk=t_chunk)
    assert a.shape == VIDEO_SHAPE
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_missing_half_is_a_clear_error(export, video):
    path, _, config = export
    enc, _ = load_pretrained(path, part="encoder")
    dec, _ = load_pretrained(path, part="decoder")
    z = np.zeros((1, 3, 2, 2, config.latent_dim), np.float32)
    only_enc = r"these params hold only the encoder; load with part=None or part='decoder'"
    only_dec = r"these params hold only the decoder; load with part=None or part='encoder'"
    for t_chunk in (0, 1, None):
        with pytest.raises(ValueError, match=only_enc):
            wfvae_jax.decode(enc, z, config, t_chunk=t_chunk)
    for t_chunk in (0, 4, None):
        with pytest.raises(ValueError, match=only_dec):
            wfvae_jax.encode(dec, video, config, t_chunk=t_chunk)
    with pytest.raises(ValueError, match=only_enc):
        wfvae_jax.reconstruct(enc, video, config)
    with pytest.raises(ValueError, match=only_enc):
        api.lower_decode(enc, z, config)
    with pytest.raises(ValueError, match=r"hold no encoder \(keys \['params'\]\)"):
        wfvae_jax.encode({"params": enc}, video, config)


def test_encode_dataset_loads_only_the_encoder(export, monkeypatch, tmp_path):
    """``wfvae encode-dataset`` asks for the encoder alone, and encoder-only params name the same
    encoding as full params (a run resumed with either is the same dataset)."""
    from tests.conftest import DATA
    from wfvae_jax import encode_dataset as ed
    from wfvae_jax.commands.encode_dataset import main as encode_dataset_main
    from wfvae_jax.data.video_source import VideoFiles

    path, full, config = export
    parts = []

    class Loaded(Exception):
        pass

    def fake_load(p, part=None):
        parts.append(part)
        raise Loaded

    monkeypatch.setattr("wfvae_jax.io.checkpoint.load_pretrained", fake_load)
    out_args = ["--out", str(tmp_path / "o"), "--num_frames", "9", "--resolution", "16"]
    in_args = ["--checkpoint", str(path), "--videos", str(DATA / "videos")]
    with pytest.raises(Loaded):
        encode_dataset_main([*in_args, *out_args])
    assert parts == ["encoder"]

    enc, _ = load_pretrained(path, part="encoder")
    inputs = VideoFiles(str(DATA / "videos"))
    spec = ed.ClipSpec(num_frames=9, resolution=(16, 16), frame_stride=1, clips_per_video=1)
    options = ed.EncodeOptions(worker_count=0, progress=False)
    assert ed.spec_dict(enc, config, inputs, spec, options) == ed.spec_dict(
        full, config, inputs, spec, options
    )
    changed = dict(full, encoder=jax.tree.map(lambda a: a * 1.01, full["encoder"]))
    assert ed.spec_dict(changed, config, inputs, spec, options) != ed.spec_dict(
        enc, config, inputs, spec, options
    )


# ---- the EXPORT's arrays: one .npy per leaf, memory-mapped ----------------------------------


def _mapped_file(address: int) -> str | None:
    """The file whose memory mapping holds ``address`` (``/proc/self/maps``), or None."""
    for line in open("/proc/self/maps"):
        fields = line.split()
        lo, hi = (int(v, 16) for v in fields[0].split("-"))
        if lo <= address < hi:
            return fields[5] if len(fields) > 5 else None
    return None


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="aliasing the file is CPU's")
def test_loaded_arrays_are_the_export_files_mapped(export, tiny):
    """Each leaf is its own .npy file (the tree path), holding the saved values, and the loaded
    jax.Array's buffer lies in a mapping of that file: nothing copied onto the heap."""
    path, _, _ = export
    params, _ = load_pretrained(path, part="decoder")
    flat = jax.tree_util.tree_leaves_with_path(params)
    stored = sorted(p.relative_to(path / "params").as_posix() for p in path.rglob("*.npy"))
    expect = lambda tree: sorted(  # noqa: E731
        "/".join(k.key for k in kp) + ".npy" for kp, _ in jax.tree_util.tree_leaves_with_path(tree)
    )
    assert stored == expect(tiny[0])
    for kp, leaf in flat:
        f = path / "params" / ("/".join(k.key for k in kp) + ".npy")
        np.testing.assert_array_equal(np.load(f), np.asarray(leaf))
        assert _mapped_file(leaf.unsafe_buffer_pointer()) == str(f)


def test_saving_over_a_loaded_export_leaves_the_loaded_params(tmp_path, tiny):
    """save_pretrained replaces the files (never rewrites them in place): params mapped from the
    old export keep their values; a new load sees the new ones."""
    params, config, _ = tiny
    save_pretrained(tmp_path, params, config)
    old, _ = load_pretrained(tmp_path)
    plus_one = jax.tree.map(lambda a: np.asarray(a) + 1.0, params)
    save_pretrained(tmp_path, plus_one, config)
    new, _ = load_pretrained(tmp_path)
    _assert_trees_identical(old, params)
    _assert_trees_identical(new, plus_one)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_NAME, "params"]


def test_export_arrays_checked_against_the_config(tmp_path, tiny):
    params, config, _ = tiny
    save_pretrained(tmp_path, params, config)
    kernel = tmp_path / "params" / "decoder" / "conv_in" / "conv" / "kernel.npy"
    k = np.load(kernel)
    np.save(kernel, k[..., :-1])
    with pytest.raises(ValueError, match=r"do not match.*arrays of another shape or dtype \(first"
                       r": decoder/conv_in/conv/kernel.npy stored"):  # fmt: skip
        load_pretrained(tmp_path, part="decoder")
    load_pretrained(tmp_path, part="encoder")  # the other half is not looked at
    kernel.unlink()
    with pytest.raises(ValueError, match=r"arrays of the config's model not stored"):
        load_pretrained(tmp_path)
    kernel.write_bytes(b"not an array")
    with pytest.raises(ValueError, match=r"kernel.npy is not a plain .npy array"):
        load_pretrained(tmp_path)


def test_exports_in_the_older_orbax_layout_still_load(tmp_path, tiny):
    """Exports written before the .npy layout: params/ is an orbax StandardCheckpointer tree."""
    import orbax.checkpoint as ocp

    params, config, _ = tiny
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config.to_dict()))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp_path / "params", jax.tree.map(np.asarray, params))
    assert is_orbax_export(tmp_path)
    full, loaded_config = load_pretrained(tmp_path)
    assert loaded_config == config
    _assert_trees_identical(full, params)
    save_pretrained(tmp_path / "again", full, config)
    assert not is_orbax_export(tmp_path / "again")
    dec, _ = load_pretrained(tmp_path, part="decoder")
    _assert_trees_identical(dec["decoder"], params["decoder"])
