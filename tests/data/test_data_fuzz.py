"""Fuzz: corrupted PNG bytes fed to every loader give a DataError, never another exception."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from iccld.data.cityscapes import CityscapesDataset
from iccld.data.folder import FolderDataset
from iccld.data.gta5 import GTA5Dataset
from iccld.data.io import read_image, read_label
from iccld.data.prepare import prepare_dataset
from iccld.data.synthia import SynthiaDataset
from iccld.errors import DataError

from .fixtures import make_cityscapes, make_gta5, make_synthia

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

corruptions = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.floats(0.0, 1.0), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("random"), st.binary(max_size=64)),
)


def corrupt(data: bytes, how: tuple) -> bytes:
    kind = how[0]
    if kind == "truncate":
        # keep at most len - 40 bytes: past IEND (12), the CRC (4) and zlib's Adler-32 (4), this
        # cuts at least 20 bytes of compressed pixels, so the image is incomplete
        return data[: int(how[1] * (len(data) - 40))]
    if kind == "flip":
        out = bytearray(data)
        for where, mask in how[1]:
            out[min(int(where * len(out)), len(out) - 1)] ^= mask
        return bytes(out)
    if kind == "insert":
        at = int(how[1] * len(data))
        return data[:at] + how[2] + data[at:]
    return b"\x89PNG\r\n\x1a\n" + how[1]


def _load_or_data_error(load, how) -> None:
    try:
        load()
    except DataError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    # a flip in an unchecked byte, or an insertion after IEND, can leave a readable file
    assert how[0] in ("flip", "insert"), f"{how[0]} corruption was read without an error"


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fuzz")
    roots = {"gta5": make_gta5(base / "gta5", 1, (24, 16)), "synthia": make_synthia(base / "synthia", 1, (24, 16)),
             "cityscapes": make_cityscapes(base / "cs", ("train",), 1, (24, 16))}
    for kind, root in roots.items():
        prepare_dataset(kind, root, workers=1, progress=False)
    folder = base / "folder"
    (folder / "img").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(folder / "img" / "a.png")
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(folder / "img" / "a_L.png")
    (base / "spec.yaml").write_text("images: img\nlabels: img\nlabel_suffix: _L.png\nencoding: rgb\n"
                                    "classes:\n  - {value: [0, 0, 0], train_id: 0}\n")
    prepare_dataset("folder", folder, workers=1, spec=str(base / "spec.yaml"), progress=False)
    roots["folder"] = folder
    roots["spec"] = base / "spec.yaml"
    return roots


def _files(roots: dict[str, Path]) -> dict[str, list[Path]]:
    """For each loader, the files a corruption may hit."""
    g, s, c, f = roots["gta5"], roots["synthia"], roots["cityscapes"], roots["folder"]
    return {
        "gta5": [g / "images" / "00001.png", g / "labels" / "00001_labelTrainIds.png"],
        "synthia": [s / "RGB" / "0000000.png", s / "GT" / "LABELS" / "0000000_labelTrainIds.png"],
        "cityscapes": [next(c.rglob("*_leftImg8bit.png")), next(c.rglob("*_gtFine_labelTrainIds.png"))],
        "folder": [f / "img" / "a.png", f / "img" / "a_labelTrainIds.png"],
    }


@FUZZ
@given(how=corruptions, raw=st.sampled_from(["gta5_label", "synthia_label", "image"]))
def test_readers_raise_data_error_on_corrupt_bytes(roots, tmp_path, how, raw):
    source = {"gta5_label": roots["gta5"] / "labels" / "00001.png",
              "synthia_label": roots["synthia"] / "GT" / "LABELS" / "0000000.png",
              "image": roots["gta5"] / "images" / "00001.png"}[raw]
    target = tmp_path / "bad.png"
    target.write_bytes(corrupt(source.read_bytes(), how))
    _load_or_data_error(lambda: read_image(target) if raw == "image" else read_label(target), how)


@pytest.mark.parametrize("loader", ["gta5", "synthia", "cityscapes", "folder"])
def test_dataset_loaders_raise_data_error_on_corrupt_bytes(roots, loader):
    datasets = {"gta5": lambda: GTA5Dataset(roots["gta5"]), "synthia": lambda: SynthiaDataset(roots["synthia"]),
                "cityscapes": lambda: CityscapesDataset(roots["cityscapes"], "train"),
                "folder": lambda: FolderDataset(roots["folder"], roots["spec"])}
    dataset = datasets[loader]()
    files = _files(roots)[loader]

    @FUZZ
    @given(how=corruptions, which=st.integers(0, 1))
    def check(how, which):
        path = files[which]
        backup = path.with_name(path.name + ".orig")
        shutil.copyfile(path, backup)
        try:
            path.write_bytes(corrupt(backup.read_bytes(), how))
            _load_or_data_error(lambda: dataset[0], how)
        finally:
            shutil.move(backup, path)

    check()
