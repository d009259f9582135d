"""Tests for wfvae_jax.io.video against raw PyAV decodes, numpy block means and scikit-image."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest
from PIL import Image
from skimage.transform import resize as sk_resize

from wfvae_jax.commands import clip_args
from wfvae_jax.io import video as video_io
from wfvae_jax.io.video import (
    abs_error_frames,
    count_frames,
    crop_offsets,
    read_video,
    resized_size,
    save_strip_png,
    to_uint8,
    write_video,
)

DATA = os.path.join(os.path.dirname(__file__), "data", "videos")
BIKES = os.path.join(DATA, "bikes_0000.mp4")  # 20 frames, 160x68
TREE = os.path.join(DATA, "tree_excerpt.avi")  # 10 decodable frames, header says 62
SHARED_TREE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "videos", "tree.avi")


def raw_decode(path: str) -> np.ndarray:
    """Every frame via PyAV's PIL conversion, uint8 (T, H, W, 3): the independent reference."""
    with av.open(path) as container:
        return np.stack([np.asarray(f.to_image()) for f in container.decode(video=0)])


def block_mean(frames: np.ndarray, factor: int) -> np.ndarray:
    t, h, w, c = frames.shape
    blocks = frames.astype(np.float64).reshape(t, h // factor, factor, w // factor, factor, c)
    return blocks.mean(axis=(2, 4))


def test_read_video_matches_raw_decode_with_start_and_stride():
    raw = raw_decode(BIKES)
    assert raw.shape == (20, 68, 160, 3)
    got = read_video(BIKES, 5, frame_stride=3, start=2)
    assert got.dtype == np.float32 and got.shape == (5, 68, 160, 3)
    np.testing.assert_array_equal(got, raw[2:15:3].astype(np.float32) / 127.5 - 1.0)
    assert got.min() >= -1.0 and got.max() <= 1.0


def test_read_video_all_frames_to_the_end():
    raw = raw_decode(BIKES)
    got = read_video(BIKES, None, frame_stride=3, start=1)
    np.testing.assert_array_equal(to_uint8(got), raw[1::3])
    assert got.shape[0] == 7  # frames 1, 4, ..., 19


@pytest.mark.parametrize(
    ("resolution", "factor", "x0"),
    [((34, 80), 2, 0), ((17, 40), 4, 0), (34, 2, (80 - 34) // 2)],
)
def test_area_resize_is_block_mean_then_center_crop(resolution, factor, x0):
    raw = raw_decode(BIKES)[:3]
    got = read_video(BIKES, 3, resolution=resolution, resample="area")
    th, tw = (resolution, resolution) if isinstance(resolution, int) else resolution
    want = block_mean(raw, factor)[:, :th, x0 : x0 + tw] / 127.5 - 1.0
    assert got.shape == (3, th, tw, 3)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_bilinear_resize_is_antialiased():
    raw = raw_decode(BIKES)[:4]
    got = read_video(BIKES, 4, resolution=(17, 40))  # default: antialiased bilinear
    ref = sk_resize(raw / 127.5 - 1.0, (4, 17, 40, 3), order=1, anti_aliasing=True)
    naive = raw[:, ::4, ::4] / 127.5 - 1.0  # plain subsampling aliases
    ours_err = np.abs(got - ref).mean()
    assert ours_err < 0.01
    assert np.abs(naive - ref).mean() > 3 * ours_err


def test_resized_size_covers_target():
    # Square targets: torchvision Resize(int) -> (r, int(r * long / short)), as the reference.
    assert resized_size(272, 640, 128) == (128, int(128 * 640 / 272)) == (128, 301)
    assert resized_size(640, 272, 128) == (301, 128)
    assert resized_size(68, 160, (34, 80)) == (34, 80)
    assert resized_size(100, 100, (50, 80)) == (80, 80)
    assert resized_size(240, 320, (64, 100)) == (75, 100)
    assert resized_size(240, 320, (200, 100)) == (200, 266)


def test_center_crop_rounds_like_reference():
    # int(round(m / 2)) with half-to-even rounding: margins 1, 3, 5 -> 0, 2, 2.
    assert [crop_offsets((10 + m, 10), 10)[0] for m in (0, 1, 2, 3, 5)] == [0, 0, 1, 2, 2]


def test_random_crop_is_a_window_of_the_full_resize():
    full = read_video(BIKES, 2, resolution=(34, 80))
    for seed in range(3):
        got = read_video(BIKES, 2, resolution=34, crop="random", rng=np.random.default_rng(seed))
        y, x = crop_offsets((34, 80), 34, "random", np.random.default_rng(seed))
        np.testing.assert_array_equal(got, full[:, y : y + 34, x : x + 34])
    xs = {crop_offsets((34, 80), 34, "random", np.random.default_rng(s))[1] for s in range(8)}
    assert len(xs) > 1


def test_count_frames_ignores_header():
    with av.open(TREE) as container:
        header = container.streams.video[0].frames
    assert header == 62
    assert count_frames(TREE) == 10 == raw_decode(TREE).shape[0]
    assert count_frames(BIKES) == 20


@pytest.mark.skipif(not os.path.isfile(SHARED_TREE), reason="shared/videos/tree.avi not present")
def test_count_frames_full_tree_avi():
    assert count_frames(SHARED_TREE) == 68


def test_truncated_file_counts_only_decodable_frames(tmp_path):
    data = open(TREE, "rb").read()
    path = tmp_path / "cut.avi"
    path.write_bytes(data[: int(0.3 * len(data))])
    n = count_frames(path)
    assert 0 < n < 10
    got = to_uint8(read_video(path, n))
    # The cut falls inside the last frame's packet, which the decoder still turns into a
    # (damaged) frame; the frames before it are intact.
    np.testing.assert_array_equal(got[: n - 1], raw_decode(TREE)[: n - 1])
    with pytest.raises(ValueError, match=f"only {n} decodable frames"):
        read_video(path, n + 1)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4", 1)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(ValueError, match="junk.mp4.*Invalid data"):
        read_video(junk, 1)
    with pytest.raises(ValueError, match="junk.mp4"):
        count_frames(junk)
    with pytest.raises(ValueError, match="only 20 decodable frames"):
        read_video(BIKES, 8, frame_stride=3)
    with pytest.raises(ValueError, match="only 20 decodable frames"):
        read_video(BIKES, None, start=20)
    with pytest.raises(ValueError, match="rng"):
        read_video(BIKES, 1, resolution=16, crop="random")
    for kwargs in ({"frame_stride": 0}, {"start": -1}, {"crop": "left"}, {"resample": "x"}):
        with pytest.raises(ValueError):
            read_video(BIKES, 1, **kwargs)
    with pytest.raises(ValueError):
        read_video(BIKES, 0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def test_write_video_round_trip_odd_size(tmp_path):
    frames = raw_decode(BIKES)[:6, :33, :51]  # odd sizes: padded to 34 x 52
    path = tmp_path / "out.mp4"
    write_video(path, frames, fps=25)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 25
        decoder = {"libx264": "h264", "mpeg4": "mpeg4"}[video_io.encoder_name()]
        assert stream.codec_context.name == decoder
    back = raw_decode(str(path))
    assert back.shape == (6, 34, 52, 3)
    assert psnr(back[:, :33, :51], frames) > 30
    # float [-1, 1] input writes the same file content as the uint8 it maps to.
    path2 = tmp_path / "out_float.mp4"
    write_video(path2, frames.astype(np.float32) / 127.5 - 1.0, fps=25)
    np.testing.assert_array_equal(raw_decode(str(path2)), back)
    with pytest.raises(ValueError):
        write_video(tmp_path / "bad.mp4", frames[0], fps=25)


def test_save_strip_png_layout_and_pixels(tmp_path):
    a = read_video(BIKES, 11)
    b = read_video(BIKES, 11, start=1)
    err = abs_error_frames(a, b, gain=2.0)
    np.testing.assert_array_equal(
        err, np.clip(np.rint(np.abs(a - b) * 255.0), 0, 255).astype(np.uint8)
    )
    path = tmp_path / "strip.png"
    save_strip_png(path, [a, b, err], labels=None, num_samples=4, gap=2)
    img = np.asarray(Image.open(path))
    h, w = 68, 160
    assert img.shape == (3 * (h + 2) + 2, 4 * (w + 2) + 2, 3)
    for i, row in enumerate([to_uint8(a), to_uint8(b), err]):
        for j, t in enumerate([0, 3, 7, 10]):  # round(linspace(0, 10, 4))
            top, left = 2 + i * (h + 2), 2 + j * (w + 2)
            np.testing.assert_array_equal(img[top : top + h, left : left + w], row[t])

    save_strip_png(path, [a, b], labels=["input", "reconstruction"], num_samples=3)
    labelled = np.asarray(Image.open(path))
    margin = labelled.shape[1] - (3 * (w + 2) + 2)
    assert margin > 0 and labelled[:, :margin].max() > 0  # text drawn in the margin
    with pytest.raises(ValueError):
        save_strip_png(path, [a, b], labels=["one"])
    with pytest.raises(ValueError):
        save_strip_png(path, [a, a[:, :10]])


@pytest.mark.parametrize(
    ("name", "frames", "hw"),
    [
        ("bikes_0120.mp4", 20, (68, 160)),
        ("sub/bikes_0200.mov", 12, (68, 160)),
        ("sub/carphone_0000.mkv", 17, (72, 88)),
    ],
)
def test_other_clips(name, frames, hw):
    path = os.path.join(DATA, name)
    raw = raw_decode(path)
    assert count_frames(path) == frames == raw.shape[0]
    assert raw.shape[1:3] == hw
    np.testing.assert_array_equal(to_uint8(read_video(path, None)), raw)


def test_write_video_mpeg4_fallback(tmp_path, monkeypatch):
    from wfvae_jax.io import video_write

    monkeypatch.setattr(video_write, "encoder_name", lambda: "mpeg4")
    frames = raw_decode(BIKES)[:5]
    path = tmp_path / "fallback.mp4"
    write_video(path, frames, fps=29.97)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "mpeg4"
        assert abs(float(stream.average_rate) - 29.97) < 1e-3
    back = raw_decode(str(path))
    assert back.shape == frames.shape and psnr(back, frames) > 28


# ----------------------------------------------------------------------------- clip options


def test_parse_resolution_forms():
    assert video_io.parse_resolution("256") == 256
    assert video_io.parse_resolution(" 256x448 ") == (256, 448)
    assert video_io.parse_resolution("256X448") == (256, 448)
    assert video_io.parse_resolution("native") is None
    for bad in ("256x", "x448", "-8", "big", "256x448x3"):
        with pytest.raises(ValueError, match="S .short side., HxW"):
            video_io.parse_resolution(bad)
    for r in (256, (256, 448), None):
        assert video_io.parse_resolution(video_io.format_resolution(r)) == r


def test_clip_geometry_rules():
    g = video_io.clip_geometry
    # S: short side to S, centre S x S window of the reference's torchvision-style resize.
    c = g(272, 640, 256, "center", multiple=8)
    assert (c.resized, c.output, c.offset) == ((256, 602), (256, 256), (0, 173))
    assert c.kept == (1.0, 256 / 602) and "keeps 43% of the width" in c.describe()
    # HxW: cover-resize then crop.
    c = g(272, 640, (256, 448), "center", multiple=8)
    assert (c.resized, c.output, c.offset) == ((256, 602), (256, 448), (0, 77))
    # crop none: the whole frame, aspect kept, the long side rounded to a multiple of 8.
    n = g(272, 640, 256, "none", multiple=8)
    assert n.resized == n.output == (256, 600) and n.offset == (0, 0)
    assert g(720, 1280, 256, "none", multiple=8).output == (256, 456)  # 455.1 -> 456
    assert g(1280, 720, 256, "none", multiple=8).output == (456, 256)  # portrait
    assert "no crop" in n.describe()
    # HxW with crop none: exactly that size (the description gives the aspect change).
    s = g(272, 640, (256, 448), "none", multiple=8)
    assert s.output == s.resized == (256, 448) and "2.353 -> 1.750" in s.describe()
    # native: the decoded size cut (center) or rounded (none) to multiples of 8.
    assert g(68, 160, None, "center", multiple=8).output == (64, 160)
    assert g(68, 160, None, "center", multiple=8).resized == (68, 160)  # a crop, no resize
    assert g(68, 160, None, "none", multiple=8).output == (72, 160)
    assert g(68, 160, None, "center").output == (68, 160)  # multiple 1: unchanged
    with pytest.raises(ValueError, match="crop must be one of"):
        g(68, 160, 32, "left")


def test_read_video_crop_none_keeps_the_whole_frame():
    raw = raw_decode(BIKES)[:3]  # 68x160
    got = read_video(BIKES, 3, resolution=34, crop="none", resample="area", multiple=2)
    # short side 68 -> 34 is an exact 2x box filter; the long side 160 -> 80 (a multiple of 2)
    np.testing.assert_allclose(got, block_mean(raw, 2) / 127.5 - 1.0, atol=1e-5)
    native = read_video(BIKES, 2, resolution=None, crop="center", multiple=8)
    np.testing.assert_array_equal(to_uint8(native), raw[:2, 2:66])  # centred 64 of 68 rows


def test_clip_spec_validation_and_flags():
    import argparse

    from wfvae_jax.core.config import WFVAEConfig
    from wfvae_jax.errors import UserError

    with pytest.raises(ValueError, match="multiples of 8, got 100; nearest valid: 96 or 104"):
        video_io.ClipSpec(resolution=100)
    with pytest.raises(ValueError, match="got 4; nearest valid: 8"):
        video_io.ClipSpec(resolution=(4, 256))
    with pytest.raises(ValueError, match="frame_stride"):
        video_io.ClipSpec(frame_stride=0)
    with pytest.raises(UserError, match="nearest valid T is 33") as e:
        video_io.ClipSpec(num_frames=32).check_model(WFVAEConfig(), "--num_frames")
    assert e.value.hint == "pass --num_frames 33"

    parser = argparse.ArgumentParser()
    clip_args.add_clip_args(parser)
    spec = clip_args.clip_spec_from_args(
        parser.parse_args(["--num_frames", "9", "--resolution", "32x48", "--crop", "none"])
    )
    assert spec == video_io.ClipSpec(9, 1, 0, (32, 48), "none")
    assert spec.to_dict()["resolution"] == "32x48" and spec.span == 9
    for argv, msg, hint in (
        (["--resolution", "100"], "--resolution 100: sizes must be", "pass --resolution 96"),
        (["--resolution", "100x250"], "sizes must be", "pass --resolution 96x248"),
        (["--resolution", "wide"], "--resolution: resolution must be", "e.g. --resolution 256"),
    ):
        with pytest.raises(UserError, match=msg) as e:
            clip_args.clip_spec_from_args(parser.parse_args(argv))
        assert e.value.hint.startswith(hint)


def test_clip_spec_sampling_and_windows_in_one_pass():
    import dataclasses

    spec = video_io.ClipSpec(num_frames=5, frame_stride=2, resolution=32, clips_per_video=3)
    assert spec.window_starts(None) == [0, 10, 20] and spec.window_starts(20) == [0, 10]
    even = dataclasses.replace(spec, sampling="evenly_spaced")
    assert even.window_starts(20) == [0, 6, 11] and even.window_starts(8) == []
    with pytest.raises(ValueError, match="frame count"):
        even.window_starts(None)
    one = dataclasses.replace(spec, sampling="random", clips_per_video=1)
    draw = int(np.random.default_rng(3).integers(0, 20 - 9 + 1))
    assert one.window_starts(20, np.random.default_rng(3)) == [draw]
    # Overlapping windows cut in one pass equal one read_video per window.
    with av.open(BIKES) as container:
        w = video_io.cut_windows(container.decode(video=0), [0, 3, 6], 5, 2, 32)
    assert w.starts == [0, 3, 6] and w.counts == [5, 5, 5] and w.frames_seen == 15
    for start, clip in zip(w.starts, w.clips, strict=True):
        np.testing.assert_array_equal(clip, read_video(BIKES, 5, 2, start, 32))


def test_probe_video_and_clip_fps():
    info = video_io.probe_video(BIKES)
    assert (info.height, info.width) == (68, 160) and info.fps_known
    with av.open(BIKES) as c:
        assert info.fps == float(c.streams.video[0].average_rate)
    assert video_io.ClipSpec(frame_stride=3).fps(info) == info.fps / 3
    with pytest.raises(FileNotFoundError):
        video_io.probe_video(os.path.join(DATA, "missing.mp4"))
