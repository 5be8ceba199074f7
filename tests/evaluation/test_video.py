"""Videos in ``iccld predict``: the overlay keeps frames, rate and size; --frames PNGs are what image
predict gives; --smooth; truncated and corrupt files; GIF; a missing PyAV."""

from __future__ import annotations

import importlib.util
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iccld.cli import main
from iccld.data.synthetic import panning_clip
from iccld.io import build_model_from_config, save_pretrained
from iccld.presets import preset

requires_av = pytest.mark.skipif(importlib.util.find_spec("av") is None, reason="needs PyAV (iccld[video])")
SIZE = (64, 48)  # (W, H)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("model") / "iccld"
    save_pretrained(build_model_from_config(preset("cpu")), out)
    return out


def write_clip(path: Path, frames: int = 8, rate: int = 12, **clip) -> Path:
    """A panning synthetic street clip, encoded as the suffix of ``path`` says."""
    from iccld.evaluation.video import VideoWriter

    writer = VideoWriter(path.parent, path.suffix, *SIZE, Fraction(rate))
    for frame, _ in panning_clip(SIZE, frames, **clip):
        writer.write(frame)
    return writer.finish(path)


def read_video(path: Path) -> tuple[list[np.ndarray], Fraction, str]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, Fraction(stream.average_rate), stream.codec_context.name


def frame_labels(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("*_trainid.png"))]


def flicker(labels: list[np.ndarray]) -> float:
    """Mean share of pixels whose label changes between consecutive frames."""
    return float(np.mean([(a != b).mean() for a, b in zip(labels, labels[1:])]))


def predict(model_dir: Path, *args) -> int:
    return main(["predict", "--checkpoint", str(model_dir), *map(str, args)])


@requires_av
def test_overlay_keeps_frames_rate_and_size_and_frame_pngs_match_image_predict(model_dir, tmp_path):
    clip = write_clip(tmp_path / "street.mp4")
    inputs, _, _ = read_video(clip)
    out = tmp_path / "pred"
    assert predict(model_dir, clip, "--out", out, "--frames") == 0
    frames, rate, codec = read_video(out / "street_overlay.mp4")
    assert (len(frames), rate, codec, frames[0].shape) == (8, Fraction(12), "h264", (48, 64, 3))
    labels = frame_labels(out / "street_frames")
    assert len(labels) == 8 and labels[0].shape == (48, 64) and max(int(x.max()) for x in labels) < 19
    assert (out / "street_frames" / "street_000007_trainid.png").is_file()
    # frame 5 as an image (the diffusion path, the same noise draw): the same labels
    Image.fromarray(inputs[5]).save(tmp_path / "f5.png")
    assert predict(model_dir, tmp_path / "f5.png", "--out", tmp_path / "img") == 0
    assert np.array_equal(labels[5], np.asarray(Image.open(tmp_path / "img" / "f5_trainid.png")))
    # the overlay is the input blended with the label colours (up to H.264's loss)
    from iccld.evaluation.predict import overlay
    luma = np.array([0.299, 0.587, 0.114])  # H.264 halves the colour resolution; brightness stays
    error = np.abs((frames[5] - overlay(inputs[5], labels[5]).astype(float)) @ luma).mean()
    assert error < 4 and error < 0.25 * np.abs((frames[5] - inputs[5].astype(float)) @ luma).mean()
    # outputs are never replaced unless asked
    assert predict(model_dir, clip, "--out", out, "--frames") == 2
    assert predict(model_dir, clip, "--out", out, "--frames", "--overwrite") == 0


@requires_av
def test_smoothing_off_is_per_frame_prediction_and_on_reduces_flicker(model_dir, tmp_path):
    clip = write_clip(tmp_path / "pan.webm", pan=2, noise=8.0)
    inputs, _, _ = read_video(clip)
    for i, frame in enumerate(inputs):
        Image.fromarray(frame).save(tmp_path / f"f{i}.png")
    assert predict(model_dir, *(tmp_path / f"f{i}.png" for i in range(8)), "--out", tmp_path / "img",
                   "--direct") == 0
    per_image = [np.asarray(Image.open(tmp_path / "img" / f"f{i}_trainid.png")) for i in range(8)]
    assert predict(model_dir, clip, "--out", tmp_path / "off", "--frames", "--direct") == 0
    off = frame_labels(tmp_path / "off" / "pan_frames")
    assert len(off) == 8 and all(np.array_equal(a, b) for a, b in zip(off, per_image))
    assert predict(model_dir, clip, "--out", tmp_path / "on", "--frames", "--direct", "--smooth", "0.8") == 0
    on = frame_labels(tmp_path / "on" / "pan_frames")
    assert np.array_equal(on[0], off[0])  # the first frame is its own average
    assert flicker(off) > 0.05 and flicker(on) < 0.6 * flicker(off)


def test_smoother_is_an_exponential_moving_average_of_probabilities():
    from iccld.evaluation.video import ProbabilitySmoother

    a, b = torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)
    smoother = ProbabilitySmoother(0.75)
    assert torch.allclose(smoother(a), a.softmax(1))
    assert torch.allclose(smoother(b), 0.75 * a.softmax(1) + 0.25 * b.softmax(1))


def truncate_mid_stream(clip: Path, to: Path) -> Path:
    """``clip`` cut at the start of the packet in the middle of the file (the index, at the front of
    our mp4s, stays whole)."""
    import av

    with av.open(str(clip)) as container:
        positions = sorted(p.pos for p in container.demux(video=0) if p.pos is not None and p.size)
    to.write_bytes(clip.read_bytes()[: positions[len(positions) // 2]])
    return to


@requires_av
def test_a_truncated_video_gives_one_line_and_keeps_the_frames_read(model_dir, tmp_path, capsys):
    cut = truncate_mid_stream(write_clip(tmp_path / "full.mp4", frames=12), tmp_path / "cut.mp4")
    out = tmp_path / "pred"
    capsys.readouterr()
    assert predict(model_dir, cut, "--out", out, "--frames", "--direct") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(cut) in err and "cut_overlay.partial.mp4" in err
    kept = frame_labels(out / "cut_frames")
    assert 1 <= len(kept) < 12
    assert not (out / "cut_overlay.mp4").exists() and not list(out.glob(".*.tmp"))
    frames, rate, _ = read_video(out / "cut_overlay.partial.mp4")  # finished: it plays
    assert len(frames) == len(kept) and rate == 12


@requires_av
def test_a_corrupt_video_gives_one_line_and_writes_nothing(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    capsys.readouterr()
    assert predict(model_dir, bad, "--out", tmp_path / "pred") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{bad}: cannot read video" in err
    assert not (tmp_path / "pred").exists()  # found before the model loads, before --out is made


@requires_av
def test_gif_input_gives_a_gif_overlay(model_dir, tmp_path):
    clip = write_clip(tmp_path / "anim.gif", frames=6, rate=10)  # GIF delays are 1/100 s: 10 fps is exact
    assert predict(model_dir, clip, "--out", tmp_path / "pred", "--frames", "--direct") == 0
    frames, rate, codec = read_video(tmp_path / "pred" / "anim_overlay.gif")
    assert (len(frames), rate, codec, frames[0].shape) == (6, Fraction(10), "gif", (48, 64, 3))
    assert len(frame_labels(tmp_path / "pred" / "anim_frames")) == 6


@requires_av
def test_videos_and_images_mixed_and_clashing_names(model_dir, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_clip(folder / "a.avi", frames=3)
    Image.fromarray(next(panning_clip(SIZE, 1))[0]).save(folder / "b.png")
    assert predict(model_dir, folder, "--out", tmp_path / "pred", "--direct") == 0
    assert "1 image and 1 video (3 frames)" in capsys.readouterr().err
    frames, rate, codec = read_video(tmp_path / "pred" / "a_overlay.avi")
    assert (len(frames), rate, codec) == (3, Fraction(12), "mpeg4")
    assert (tmp_path / "pred" / "b_trainid.png").is_file()
    write_clip(folder / "a.webm", frames=3)  # a.avi and a.webm would share a_frames/
    assert predict(model_dir, folder / "a.avi", folder / "a.webm", "--out", tmp_path / "two", "--frames") == 2
    assert "would both write" in capsys.readouterr().err


def test_video_flags_are_checked_before_the_model_loads(tmp_path, capsys):
    image, video = tmp_path / "x.png", tmp_path / "v.mp4"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(image)
    video.write_bytes(b"")
    missing = str(tmp_path / "no-model")  # a model would be loaded after the flags: never reached
    assert main(["predict", "--checkpoint", missing, str(image), "--out", str(tmp_path / "o"), "--smooth", "0.5"]) == 2
    assert "--smooth: apply to videos" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", missing, str(video), "--out", str(tmp_path / "o"), "--smooth", "1"]) == 2
    assert "--smooth: the weight of the past frames must be in [0, 1), got 1" in capsys.readouterr().err


def test_without_pyav_a_video_gives_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    assert main(["predict", "--checkpoint", str(tmp_path / "no-model"), str(video), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(video) in err and "iccld[video]" in err
