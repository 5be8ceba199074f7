"""Mapillary Vistas v1.2 and BDD100K: download layouts, `iccld prepare`'s checks and conversion, the
datasets, and the keep-ratio resize their evaluation configs use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CONFIGS
from iccld.cli import main
from iccld.config import load_config
from iccld.data.bdd100k import BDD100KDataset
from iccld.data.build import build_val_dataset
from iccld.data.mapillary import MapillaryDataset
from iccld.data.prepare import prepare_dataset
from iccld.data.transforms import EvalTransform, TrainTransform, fit_size
from iccld.errors import DataError

from .fixtures import MAPILLARY_NAMES, make_bdd100k, make_mapillary, write_vistas_label

# a few v1.2 class indices and the train ids the DG literature's mapping gives them
KNOWN = {13: 0,    # construction--flat--road -> road
         24: 0,    # marking--general -> road
         41: 0,    # object--manhole -> road
         2: 1,     # construction--barrier--curb -> sidewalk
         15: 1,    # construction--flat--sidewalk
         45: 5, 47: 5,  # pole, utility pole -> pole
         50: 7,    # traffic sign (front) -> traffic sign
         49: 255,  # traffic sign (back) -> ignore
         27: 10,   # sky
         20: 12, 21: 12, 22: 12,  # bicyclist, motorcyclist, other rider -> rider
         55: 13,   # car
         58: 16,   # on rails -> train
         52: 18,   # bicycle
         23: 255,  # marking--crosswalk-zebra -> ignore
         7: 255,   # bike lane -> ignore
         63: 255, 64: 255,  # car mount, ego vehicle
         65: 255}  # unlabeled


def test_mapillary_prepare_converts_palette_labels_to_train_ids(tmp_path, capsys):
    root = make_mapillary(tmp_path / "mapillary")
    # one validation label written by hand: a row of blocks of known classes
    label = root / "validation" / "labels" / f"{MAPILLARY_NAMES[0]}.png"
    width = 8 * len(KNOWN)
    ids = np.repeat(np.repeat(np.asarray([list(KNOWN)], dtype=np.uint8), 8, axis=1), 60, axis=0)
    write_vistas_label(label, ids)
    Image.new("RGB", (width, 60)).save(root / "validation" / "images" / f"{MAPILLARY_NAMES[0]}.jpg")
    with Image.open(label) as im:  # a palette PNG whose colours are not the indices
        assert im.mode == "P" and im.getpalette()[3 * 13: 3 * 14] == [128, 64, 128]

    assert main(["prepare", "mapillary", "--root", str(root), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "mapillary training: 2 images, 2 labels (the full download has 18000: partial?)" in out
    assert "mapillary validation: 3 images, 3 labels (the full download has 2000: partial?)" in out
    assert "mapillary testing: 1 images, 0 labels (the full download has 5000: partial?)" in out
    assert "5 labels (5 converted, 0 already prepared, 0 checked)" in out

    prepared = np.asarray(Image.open(label.with_name(f"{MAPILLARY_NAMES[0]}_labelTrainIds.png")))
    assert prepared.shape == (60, width)
    assert prepared[0, ::8].tolist() == list(KNOWN.values())
    assert np.array_equal(np.asarray(Image.open(label)), ids)  # the original is left as it was
    stats = {e["file"]: e for e in json.loads((root / "sample_class_stats.json").read_text())}
    entry = stats[f"validation/labels/{MAPILLARY_NAMES[0]}_labelTrainIds.png"]
    assert entry == {"file": entry["file"], "0": 3 * 8 * 60, "1": 2 * 8 * 60, "5": 2 * 8 * 60, "7": 8 * 60,
                     "10": 8 * 60, "12": 3 * 8 * 60, "13": 8 * 60, "16": 8 * 60, "18": 8 * 60}

    val = MapillaryDataset(root, "val")
    assert [s.name for s in val.samples] == sorted(MAPILLARY_NAMES[:3])
    sample = val[[s.name for s in val.samples].index(MAPILLARY_NAMES[0])]
    assert sample["label"][0, ::8].tolist() == list(KNOWN.values())
    assert len(MapillaryDataset(root, "test", labelled=False)) == 1
    with pytest.raises(DataError, match="label file not found"):
        MapillaryDataset(root, "test")


def test_mapillary_layout_problems_are_one_line(tmp_path, capsys):
    root = make_mapillary(tmp_path / "m1", splits=(("validation", 2),))
    (root / "validation" / "images" / "notes.txt").write_text("x")
    assert main(["prepare", "mapillary", "--root", str(root), "--workers", "1"]) == 0
    assert ("mapillary validation: 2 images, 2 labels (the full download has 2000: partial?); "
            "1 other file ignored (e.g. validation/images/notes.txt)") in capsys.readouterr().out

    root = make_mapillary(tmp_path / "m2", splits=(("validation", 3),))
    next((root / "validation" / "images").glob("*.jpg")).unlink()
    assert main(["prepare", "mapillary", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "labels/" in err and ".png: label without an image" in err

    root = make_mapillary(tmp_path / "m3", splits=(("validation", 3),))
    next((root / "validation" / "labels").glob("*.png")).unlink()
    with pytest.raises(DataError, match=r"\.jpg: no label \(expected .*; 1 of 3 images in .* have none\)"):
        prepare_dataset("mapillary", root, workers=1, progress=False)

    root = make_mapillary(tmp_path / "m4", splits=(("validation", 1),), classes=(13, 66))  # 66: a v2.0 index
    with pytest.raises(DataError, match=r"label value 66 is not mapped \(expected a Mapillary Vistas v1.2 class index"):
        prepare_dataset("mapillary", root, workers=1, progress=False)

    root = make_mapillary(tmp_path / "m5", splits=(("validation", 1),), labels="v2.0/labels")
    with pytest.raises(DataError, match="Vistas v2.0 labels \\(124 classes\\) are not supported"):
        prepare_dataset("mapillary", root, workers=1, progress=False)
    with pytest.raises(DataError, match="no training/images, validation/images or testing/images"):
        prepare_dataset("mapillary", tmp_path / "m5" / "validation", workers=1, progress=False)


def test_mapillary_v2_download_uses_its_v12_labels(tmp_path):
    root = make_mapillary(tmp_path / "vistas2", splits=(("validation", 2),), labels="v1.2/labels")
    s = prepare_dataset("mapillary", root, workers=1, progress=False)
    assert s["converted"] == 2
    assert s["layout"] == ["validation: 2 images, 2 labels (the full download has 2000: partial?)"]
    val = MapillaryDataset(root, "val")
    assert all("validation/v1.2/labels" in s.label.as_posix() for s in val.samples)


@pytest.mark.parametrize("layout", ["current", "older"])
def test_bdd100k_both_layouts_are_checked_in_place(layout, tmp_path, capsys):
    root = make_bdd100k(tmp_path / "bdd100k", layout)
    before = {p: p.read_bytes() for p in root.rglob("*.png")}
    assert main(["prepare", "bdd100k", "--root", str(root), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "bdd100k train: 2 images, 2 labels (the full download has 7000: partial?)" in out
    assert "bdd100k val: 3 images, 3 labels (the full download has 1000: partial?)" in out
    assert "bdd100k test: 1 images, 0 labels (the full download has 2000: partial?)" in out
    assert "5 labels (0 converted, 0 already prepared, 5 checked)" in out
    assert {p: p.read_bytes() for p in root.rglob("*.png")} == before  # nothing written beside them
    assert not list(root.rglob("*_labelTrainIds.png"))

    val = BDD100KDataset(root, "val")
    assert len(val) == 3 and all("_" not in s.name and len(s.name) == 17 for s in val.samples)
    expected = np.asarray(Image.open(val.samples[1].label)).astype(np.int64)
    assert np.array_equal(val[1]["label"].numpy(), expected) and set(np.unique(expected)) - set(range(19)) == {255}
    stats = json.loads((root / "sample_class_stats.json").read_text())
    first = next(e for e in stats if e["file"] == Path(val.samples[1].label).relative_to(root).as_posix())
    counts = np.bincount(expected.ravel(), minlength=256)
    assert {k: v for k, v in first.items() if k != "file"} == {str(c): int(n) for c, n in enumerate(counts[:19]) if n}
    # the folder the archives unpack into may be given as well
    assert len(BDD100KDataset(tmp_path, "val")) == 3
    assert len(BDD100KDataset(root, "test", labelled=False)) == 1


def test_bdd100k_bad_labels_and_layouts_name_the_file(tmp_path, capsys):
    root = make_bdd100k(tmp_path / "bdd100k", splits=(("val", 2),))
    label = sorted((root / "labels" / "sem_seg" / "masks" / "val").glob("*.png"))[0]
    values = np.asarray(Image.open(label)).copy()
    values[3, 5] = 19
    Image.fromarray(values).save(label)
    with pytest.raises(DataError, match=rf"{label.name}: label value 19 is not a train id"):
        prepare_dataset("bdd100k", root, workers=1, progress=False)
    label.unlink()
    with pytest.raises(DataError, match=r"no label \(expected .*masks/val/.*\.png; 1 of 2 images"):
        prepare_dataset("bdd100k", root, workers=1, progress=False)
    assert main(["prepare", "bdd100k", "--root", str(tmp_path / "nothing-here")]) == 2
    assert main(["prepare", "bdd100k", "--root", str(root / "labels")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "dataset root not found" in err[0]
    assert "neither images/10k/ nor seg/images/ found" in err[1]
    with pytest.raises(DataError, match="BDD100K split 'validation' is not one of train, val, test"):
        BDD100KDataset(root, "validation")


def test_keep_ratio_resizes_by_one_factor(tmp_path):
    # mmseg's Resize(scale=(1024, 512), keep_ratio=True)
    assert fit_size(4000, 3000, (1024, 512), True) == (683, 512)
    assert fit_size(3000, 4000, (1024, 512), True) == (512, 683)  # portrait: same bounds, turned
    assert fit_size(1280, 720, (1024, 512), True) == (910, 512)
    assert fit_size(5000, 1000, (1024, 512), True) == (1024, 205)  # very wide: the long side binds
    assert fit_size(4000, 3000, (1024, 512), False) == (1024, 512)
    image = np.zeros((80, 60, 3), dtype=np.uint8)  # portrait 60x80
    x, label = EvalTransform((96, 48), keep_ratio=True)(image, np.zeros((80, 60), dtype=np.uint8))
    assert tuple(x.shape) == (3, 64, 48) and tuple(label.shape) == (80, 60)
    x, label = TrainTransform((96, 48), (32, 32), keep_ratio=True)(image, np.zeros((80, 60), dtype=np.uint8),
                                                                   np.random.default_rng(0))
    assert tuple(x.shape) == (3, 32, 32)

    # the evaluation configs build the val split with it
    root = make_mapillary(tmp_path / "mapillary", splits=(("validation", 3),))
    prepare_dataset("mapillary", root, workers=1, progress=False)
    config = load_config(CONFIGS / "generalisation" / "mapillary.yaml",
                         [f"data.val.root={root}", "data.val.resize=[96,48]"])
    val = build_val_dataset(config.data)
    shapes = {s.name: tuple(val[i]["image"].shape[1:]) for i, s in enumerate(val.samples)}
    # 80x60 -> 64x48, 60x80 -> 48x64, 96x54 -> 85x48 (H, W below)
    assert shapes == {MAPILLARY_NAMES[0]: (48, 64), MAPILLARY_NAMES[1]: (64, 48), MAPILLARY_NAMES[2]: (48, 85)}
    bdd = load_config(CONFIGS / "generalisation" / "bdd100k.yaml")
    assert (bdd.data.val.kind, bdd.data.val.split, bdd.data.val.keep_ratio) == ("bdd100k", "val", True)
    # keep_ratio without a resize is the native size, as with a stretching resize
    native = load_config(CONFIGS / "generalisation" / "bdd100k.yaml", ["data.val.resize=null"])
    assert native.data.val.resize is None and EvalTransform(None, keep_ratio=True).resize is None
