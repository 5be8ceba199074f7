"""`iccld prepare`: train-id PNGs checked pixel by pixel against the published maps, class
statistics, skipping/overwriting, every error case and the CLI entry point."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from iccld.cli import main
from iccld.data.commands import prepare_command
from iccld.data.prepare import prepare_dataset
from iccld.errors import ConfigError, DataError

from .fixtures import encode_png16, make_cityscapes, make_gta5, make_synthia, write_palette_png

# The published maps, written out again here (docs/reference.md section 11) so the test does not
# reuse the package's tables.
CITYSCAPES = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
              25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
SYNTHIA = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12,
           8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}
REPO = Path(__file__).resolve().parents[2]


def _expected(raw: np.ndarray, mapping: dict) -> np.ndarray:
    out = np.empty(raw.shape[:2], dtype=np.uint8)
    for y in range(raw.shape[0]):
        for x in range(raw.shape[1]):
            out[y, x] = mapping.get(int(raw[y, x]) if raw.ndim == 2 else tuple(int(v) for v in raw[y, x]), 255)
    return out


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _digest(root: Path, pattern: str) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob(pattern))}


def _check_stats(root: Path, prepared: list[Path]) -> None:
    entries = json.loads((root / "sample_class_stats.json").read_text())
    assert [e["file"] for e in entries] == [p.relative_to(root).as_posix() for p in prepared]
    for entry, path in zip(entries, prepared, strict=True):
        counts = np.bincount(_pixels(path).ravel(), minlength=256)
        expected = {str(c): int(counts[c]) for c in range(19) if counts[c]}
        assert {k: v for k, v in entry.items() if k != "file"} == expected


def test_gta5_labels_follow_the_published_map(tmp_path):
    root = make_gta5(tmp_path / "gta5", 3, (40, 24))
    originals = _digest(root / "labels", "*.png")
    summary = prepare_dataset("gta5", root, workers=2, progress=False)
    assert summary["labels"] == 3 and summary["converted"] == 3
    assert _digest(root / "labels", "?????.png") == originals  # originals untouched
    prepared = sorted((root / "labels").glob("*_labelTrainIds.png"))
    assert [p.name for p in prepared] == ["00001_labelTrainIds.png", "00002_labelTrainIds.png",
                                          "00003_labelTrainIds.png"]
    for path in prepared:
        raw = _pixels(root / "labels" / path.name.replace("_labelTrainIds", ""))  # palette indices
        assert np.array_equal(_pixels(path), _expected(raw, CITYSCAPES))
    assert len(np.unique(_pixels(prepared[0]))) > 5
    _check_stats(root, prepared)


def test_synthia_labels_follow_the_published_map(tmp_path):
    root = make_synthia(tmp_path / "synthia", 2, (32, 24))
    prepare_dataset("synthia", root, workers=1, progress=False)
    prepared = sorted((root / "GT" / "LABELS").glob("*_labelTrainIds.png"))
    assert len(prepared) == 2
    for path in prepared:
        source = root / "GT" / "LABELS" / path.name.replace("_labelTrainIds", "")
        first_channel = np.frombuffer(_decode16(source), dtype=">u2").reshape(24, 32, 3)[..., 0]
        assert np.array_equal(_pixels(path), _expected(first_channel, SYNTHIA))
    _check_stats(root, prepared)


def _decode16(path: Path) -> bytes:
    """Raw big-endian samples of a 16-bit PNG, unfiltered by the test itself, so the check does
    not lean on the package's reader."""
    import struct
    import zlib

    data = path.read_bytes()
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, _, colour_type = header[:4]
    bpp = 6 if colour_type == 2 else 2
    stride = width * bpp
    raw = zlib.decompress(idat)
    out, prev = bytearray(), bytearray(stride)
    for y in range(height):
        kind, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = row[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            paeth = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            row[i] = (row[i] + (0, a, b, (a + b) // 2, paeth)[kind]) & 0xFF
        out += row
        prev = row
    return bytes(out)


def test_cityscapes_labels_of_every_split_follow_the_published_map(tmp_path):
    root = make_cityscapes(tmp_path / "cs", ("train", "val"), 2, (32, 16))
    summary = prepare_dataset("cityscapes", root, workers=2, progress=False)
    assert summary["labels"] == 4
    prepared = sorted((root / "gtFine").rglob("*_gtFine_labelTrainIds.png"))
    assert len(prepared) == 4
    for path in prepared:
        raw = _pixels(path.with_name(path.name.replace("labelTrainIds", "labelIds")))
        assert np.array_equal(_pixels(path), _expected(raw, CITYSCAPES))
    entries = json.loads((root / "sample_class_stats.json").read_text())
    assert {e["file"].split("/")[1] for e in entries} == {"train", "val"}


def test_folder_rgb_labels_follow_the_camvid_spec(tmp_path):
    spec_path = REPO / "configs" / "datasets" / "camvid.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    colours = {tuple(c["value"]): c["train_id"] for c in spec["classes"]}
    assert len(colours) == 32
    root = tmp_path / "camvid"
    rng = np.random.default_rng(0)
    palette = np.asarray(list(colours), dtype=np.uint8)
    for name in ("0001TP_006690", "Seq05VD_f00000"):
        (root / spec["images"]).mkdir(parents=True, exist_ok=True)
        (root / spec["labels"]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(root / spec["images"] / f"{name}.png")
        Image.fromarray(palette[rng.integers(0, 32, (12, 16))]).save(root / spec["labels"] / f"{name}_L.png")
    prepare_dataset("folder", root, workers=1, spec=str(spec_path), progress=False)
    for name in ("0001TP_006690", "Seq05VD_f00000"):
        raw = _pixels(root / spec["labels"] / f"{name}_L.png")
        assert np.array_equal(_pixels(root / spec["labels"] / f"{name}_labelTrainIds.png"), _expected(raw, colours))
    # a colour CamVid does not have
    bad = np.zeros((12, 16, 3), np.uint8)
    bad[3, 4] = (1, 2, 3)
    Image.fromarray(bad).save(root / spec["labels"] / "0001TP_006690_L.png")
    with pytest.raises(DataError, match=r"0001TP_006690_L.png: label colour \(1, 2, 3\) is not mapped"):
        prepare_dataset("folder", root, workers=1, spec=str(spec_path), overwrite=True, progress=False)


def test_existing_prepared_files_are_kept_unless_overwrite(tmp_path):
    root = make_gta5(tmp_path / "gta5", 2, (16, 16))
    prepare_dataset("gta5", root, workers=1, progress=False)
    again = prepare_dataset("gta5", root, workers=1, progress=False)
    assert again["existing"] == 2 and again["converted"] == 0  # stats up to date: nothing to do
    target = root / "labels" / "00001_labelTrainIds.png"
    Image.fromarray(np.full((16, 16), 3, np.uint8)).save(target)  # someone's own edit
    (root / "sample_class_stats.json").unlink()
    summary = prepare_dataset("gta5", root, workers=1, progress=False)
    assert summary["existing"] == 2 and (_pixels(target) == 3).all()
    entries = json.loads((root / "sample_class_stats.json").read_text())
    assert entries[0] == {"file": "labels/00001_labelTrainIds.png", "3": 256}
    summary = prepare_dataset("gta5", root, workers=1, overwrite=True, progress=False)
    assert summary["converted"] == 2
    raw = _pixels(root / "labels" / "00001.png")
    assert np.array_equal(_pixels(target), _expected(raw, CITYSCAPES))


@pytest.mark.parametrize("kind, value", [("gta5", 40), ("synthia", 23), ("synthia", 300), ("cityscapes", 34)])
def test_unmapped_label_value_names_file_and_value(tmp_path, kind, value):
    raw = np.full((8, 8), 7, np.uint16)
    raw[5, 6] = value
    if kind == "gta5":
        root = make_gta5(tmp_path / kind, 2, (8, 8))
        write_palette_png(root / "labels" / "00002.png", raw)
        bad = root / "labels" / "00002.png"
    elif kind == "synthia":
        root = make_synthia(tmp_path / kind, 2, (8, 8))
        bad = root / "GT" / "LABELS" / "0000001.png"
        bad.write_bytes(encode_png16(np.dstack([raw, raw * 0 + 999, raw * 0])))  # 300 needs the high byte
    else:
        root = make_cityscapes(tmp_path / kind, ("val",), 2, (8, 8))
        bad = next((root / "gtFine" / "val").rglob("*_labelIds.png"))
        Image.fromarray(raw.astype(np.uint8)).save(bad)
    with pytest.raises(DataError, match=rf"{bad.name}: label value {value} is not mapped"):
        prepare_dataset(kind, root, workers=2, progress=False)


def test_layout_errors_name_the_path_and_what_was_expected(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: dataset root not found"):
        prepare_dataset("gta5", tmp_path / "nowhere", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty/labels: folder not found \(expected ROOT/images/NNNNN.png"):
        prepare_dataset("gta5", tmp_path / "empty", progress=False)
    with pytest.raises(DataError, match=r"empty/GT/LABELS: folder not found"):
        prepare_dataset("synthia", tmp_path / "empty", progress=False)
    with pytest.raises(DataError, match=r"empty/gtFine: folder not found"):
        prepare_dataset("cityscapes", tmp_path / "empty", progress=False)
    (tmp_path / "empty" / "labels").mkdir()
    with pytest.raises(DataError, match=r"empty/labels: no label PNGs found"):
        prepare_dataset("gta5", tmp_path / "empty", progress=False)
    with pytest.raises(ConfigError, match="--spec is required"):
        prepare_dataset("folder", tmp_path / "empty", progress=False)
    with pytest.raises(ConfigError, match="'mnist' is not one of"):
        prepare_dataset("mnist", tmp_path / "empty", progress=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_unreadable_label_is_a_data_error_naming_the_file(tmp_path, workers):
    root = make_gta5(tmp_path / "gta5", 3, (16, 16))
    (root / "labels" / "00002.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"labels/00002.png: cannot read image"):
        prepare_dataset("gta5", root, workers=workers, progress=False)


def _args(**kw) -> argparse.Namespace:
    base = dict(kind="gta5", root=None, spec=None, workers=1, overwrite=False, out=None, seed=0,
                num_source=5, num_target=4, num_val=3, num_test=2, size="256x128")
    return argparse.Namespace(**{**base, **kw})


def test_prepare_command_and_cli(tmp_path, capsys, monkeypatch):
    root = make_gta5(tmp_path / "gta5", 2, (16, 16))
    assert prepare_command(_args(root=str(root))) == 0
    assert "2 labels (2 converted" in capsys.readouterr().out
    assert main(["prepare", "gta5", "--root", str(root), "--workers", "1"]) == 0
    assert "already prepared" in capsys.readouterr().out
    assert main(["prepare", "cityscapes", "--root", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("iccld prepare: error:") and "missing: dataset root not found" in err
    assert len(err.splitlines()) == 1
    with pytest.raises(ConfigError, match="--root is required"):
        prepare_command(_args())

    import iccld.data.synthetic as synthetic

    calls = []
    monkeypatch.setattr(synthetic, "generate", lambda **kw: calls.append(kw) or {"status": "generated"})
    assert prepare_command(_args(kind="synthetic", out=str(tmp_path / "bench"), size="96x48", workers=2)) == 0
    assert calls == [dict(out=str(tmp_path / "bench"), seed=0, num_source=5, num_target=4, num_val=3, num_test=2,
                          size=(96, 48), workers=2)]
    with pytest.raises(ConfigError, match="--size: expected WIDTHxHEIGHT"):
        prepare_command(_args(kind="synthetic", out="x", size="96by48"))
    with pytest.raises(ConfigError, match="--out is required"):
        prepare_command(_args(kind="synthetic"))
