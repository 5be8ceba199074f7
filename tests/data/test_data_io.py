"""Image and label readers: every supported format, and DataError for anything unreadable."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from iccld.data.io import image_size, read_image, read_label, write_png
from iccld.errors import DataError

from .fixtures import encode_png16, write_palette_png


def test_read_image_returns_rgb_uint8(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(np.dstack([rgb, np.full((5, 7), 200, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)  # alpha dropped
    gray = read_image(tmp_path / "gray.png")
    assert gray.shape == (5, 7, 3) and gray.dtype == np.uint8
    assert np.array_equal(gray[..., 1], rgb[..., 0])


def test_palette_label_gives_indices_not_colours(tmp_path):
    ids = np.array([[7, 8, 26], [33, 0, 255]], dtype=np.uint8)
    write_palette_png(tmp_path / "gta.png", ids)
    assert Image.open(tmp_path / "gta.png").mode == "P"
    label = read_label(tmp_path / "gta.png")
    assert label.dtype == np.uint8 and np.array_equal(label, ids)


def test_sixteen_bit_rgb_label_gives_full_first_channel(tmp_path):
    rng = np.random.default_rng(1)
    label = rng.integers(0, 65536, (11, 9, 3)).astype(np.uint16)
    label[0, :4, 0] = [0, 255, 256, 65535]  # around the byte boundary
    (tmp_path / "syn.png").write_bytes(encode_png16(label))
    out = read_label(tmp_path / "syn.png")
    assert out.dtype == np.uint16 and out.shape == (11, 9)
    assert np.array_equal(out, label[..., 0])


def test_sixteen_bit_gray_and_eight_bit_gray(tmp_path):
    values = np.arange(30, dtype=np.uint16).reshape(5, 6) * 2000
    (tmp_path / "g16.png").write_bytes(encode_png16(values))
    assert np.array_equal(read_label(tmp_path / "g16.png"), values)
    ids = np.arange(30, dtype=np.uint8).reshape(5, 6)
    Image.fromarray(ids).save(tmp_path / "g8.png")
    assert np.array_equal(read_label(tmp_path / "g8.png"), ids)


def test_colour_label_is_refused_with_a_hint(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match=r"colour.png: cannot read image \(.*encoding: rgb"):
        read_label(tmp_path / "colour.png")


def test_write_png_round_trips_and_leaves_no_temporary_file(tmp_path):
    for name, array in [("l.png", np.arange(12, dtype=np.uint8).reshape(3, 4)),
                        ("i16.png", np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000),
                        ("rgb.png", np.arange(36, dtype=np.uint8).reshape(3, 4, 3))]:
        write_png(tmp_path / name, array)
        back = read_image(tmp_path / name) if array.ndim == 3 else read_label(tmp_path / name)
        assert np.array_equal(back, array) and back.dtype == array.dtype
    assert sorted(os.listdir(tmp_path)) == ["i16.png", "l.png", "rgb.png"]
    assert image_size(tmp_path / "l.png") == (4, 3)
    with pytest.raises(ValueError):
        write_png(tmp_path / "bad.png", np.zeros((2, 2), np.float32))


@pytest.mark.parametrize("reader", [read_image, read_label])
def test_missing_truncated_and_garbage_files_raise_data_error(tmp_path, reader):
    with pytest.raises(DataError, match=r"nope.png: cannot read image \("):
        reader(tmp_path / "nope.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 30, (40, 40), dtype=np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut.png: cannot read image \("):
        reader(tmp_path / "cut.png")
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"junk.png: cannot read image \("):
        reader(tmp_path / "junk.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty.png"):
        reader(tmp_path / "empty.png")
    with pytest.raises(DataError, match="cannot read image"):
        reader(tmp_path)  # a folder


def test_truncated_sixteen_bit_label_raises_data_error(tmp_path):
    data = encode_png16(np.ones((30, 30, 3), np.uint16) * 300)
    (tmp_path / "cut.png").write_bytes(data[:-30])
    with pytest.raises(DataError, match="cut.png"):
        read_label(tmp_path / "cut.png")
