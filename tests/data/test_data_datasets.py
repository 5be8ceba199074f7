"""Dataset families and build_dataset: the sample dict, keys, unlabelled use, errors, skip_bad."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from iccld.config import DataConfig, DatasetConfig
from iccld.data.build import build_dataset, build_source_dataset, build_val_dataset
from iccld.data.cityscapes import CityscapesDataset
from iccld.data.folder import FolderDataset, load_folder_spec
from iccld.data.gta5 import GTA5Dataset
from iccld.data.prepare import prepare_dataset
from iccld.data.rcs import RareClassDataset
from iccld.data.synthia import SynthiaDataset
from iccld.data.transforms import EvalTransform, TrainTransform, denormalize
from iccld.errors import ConfigError, DataError

from .fixtures import make_cityscapes, make_gta5

TRAIN = TrainTransform(None, (16, 16), cat_max_ratio=0.75, flip=True)


def _family(kind, root, transform=None, **kw):
    if kind == "gta5":
        return GTA5Dataset(root, transform, **kw)
    if kind == "synthia":
        return SynthiaDataset(root, transform, **kw)
    return CityscapesDataset(root, "train", transform, **kw)


def _prepared_label(kind, root, name):
    paths = {"gta5": root / "labels" / f"{name}_labelTrainIds.png",
             "synthia": root / "GT" / "LABELS" / f"{name}_labelTrainIds.png"}
    if kind == "cityscapes":
        return next(root.glob(f"gtFine/train/*/{name}_gtFine_labelTrainIds.png"))
    return paths[kind]


def _image_file(kind, root, name):
    return {"gta5": root / "images" / f"{name}.png", "synthia": root / "RGB" / f"{name}.png"}.get(
        kind) or next(root.glob(f"leftImg8bit/train/*/{name}_leftImg8bit.png"))


@pytest.mark.parametrize("kind", ["gta5", "synthia", "cityscapes"])
def test_samples_are_normalised_images_and_prepared_labels(prepared, kind):
    root = prepared[kind]
    ds = _family(kind, root)
    assert len(ds) == (4 if kind != "cityscapes" else 3)
    sample = ds[1]
    assert set(sample) == {"image", "label", "name"}
    image, label = sample["image"], sample["label"]
    h, w = (48, 64) if kind != "cityscapes" else (32, 64)
    assert image.shape == (3, h, w) and image.dtype == torch.float32
    assert label.shape == (h, w) and label.dtype == torch.int64
    expected_label = np.asarray(Image.open(_prepared_label(kind, root, sample["name"])))
    assert np.array_equal(label.numpy(), expected_label)
    raw = np.asarray(Image.open(_image_file(kind, root, sample["name"])))
    assert np.allclose(denormalize(image).permute(1, 2, 0).numpy(), raw, atol=1e-3)
    if kind == "cityscapes":
        assert sample["name"].split("_")[0] in ("aachen", "bochum", "zurich")
        assert len(CityscapesDataset(root, "val")) == 3


@pytest.mark.parametrize("kind", ["gta5", "synthia", "cityscapes"])
def test_keys_with_a_seed_are_reproducible(prepared, kind):
    ds = _family(kind, prepared[kind], TRAIN)
    a, b, c = ds[(2, 123)], ds[(2, 123)], ds[(2, 124)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    different = [not torch.equal(ds[(2, 123)]["image"], ds[(2, s)]["image"]) for s in range(124, 130)]
    assert any(different) and a["name"] == c["name"]
    assert torch.equal(ds[2]["image"], ds[2]["image"])  # an int key is deterministic
    assert torch.equal(ds[np.int64(2)]["label"], ds[(2, 2)]["label"])
    with pytest.raises(IndexError):
        ds[len(ds)]


@pytest.mark.parametrize("kind", ["gta5", "synthia", "cityscapes"])
def test_unlabelled_use_needs_no_prepared_files(prepared, kind):
    root = prepared[kind]
    for path in list(root.rglob("*labelTrainIds.png")):
        path.unlink()
    ds = _family(kind, root, TRAIN, labelled=False)
    sample = ds[(0, 1)]
    assert (sample["label"] == 255).all() and sample["image"].shape == (3, 16, 16)
    with pytest.raises(DataError, match=rf"prepared label not found .*; run `iccld prepare {kind} --root {root}`"):
        _family(kind, root)


def test_layout_errors_name_the_folder(tmp_path, prepared):
    with pytest.raises(DataError, match=r"nothing/images: folder not found"):
        GTA5Dataset(tmp_path / "nothing")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty/images: no .png images found"):
        GTA5Dataset(tmp_path / "empty")
    (tmp_path / "cs" / "leftImg8bit" / "val").mkdir(parents=True)
    with pytest.raises(DataError, match=r"cs/leftImg8bit/val: no \*_leftImg8bit.png images found"):
        CityscapesDataset(tmp_path / "cs", "val")
    with pytest.raises(DataError, match=r"leftImg8bit/test: folder not found"):
        CityscapesDataset(prepared["cityscapes"], "test")
    with pytest.raises(DataError, match="split 'training' is not one of train, val, test"):
        CityscapesDataset(prepared["cityscapes"], "training")
    root = prepared["gta5"]
    (root / "labels" / "00003.png").unlink()
    (root / "labels" / "00003_labelTrainIds.png").unlink()
    with pytest.raises(DataError, match=r"labels/00003.png: label file not found"):
        GTA5Dataset(root)


def test_size_mismatch_names_both_files(prepared):
    root = prepared["gta5"]
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "labels" / "00002_labelTrainIds.png")
    ds = GTA5Dataset(root)
    with pytest.raises(DataError, match=r"images/00002.png is 64x48 but its label .*labels/00002_labelTrainIds.png "
                                        r"is 10x10"):
        ds[1]


def test_label_that_is_not_train_ids_is_refused(prepared):
    root = prepared["gta5"]
    Image.fromarray(np.full((48, 64), 26, np.uint8)).save(root / "labels" / "00001_labelTrainIds.png")
    with pytest.raises(DataError, match=r"00001_labelTrainIds.png: value 26 is not a train id .*--overwrite"):
        GTA5Dataset(root)[0]


def test_skip_bad_replaces_and_counts_unreadable_pairs(prepared):
    root = prepared["gta5"]
    (root / "images" / "00002.png").write_bytes(b"broken")
    (root / "images" / "00003.png").write_bytes(b"")
    strict = GTA5Dataset(root, TRAIN)
    with pytest.raises(DataError, match=r"images/00002.png: cannot read image"):
        strict[(1, 0)]
    ds = GTA5Dataset(root, TRAIN, skip_bad=True)
    sample = ds[(1, 5)]
    assert sample["name"] == "00004" and sample["skipped"] == 2 and ds.num_skipped == 2
    again = ds[(1, 5)]
    assert torch.equal(again["image"], sample["image"]) and ds.num_skipped == 4
    assert ds[(0, 5)]["skipped"] == 0 and ds.num_skipped == 4
    for path in (root / "images").glob("*.png"):
        path.write_bytes(b"")
    with pytest.raises(DataError, match="no readable image/label pair left"):
        ds[0]


def test_folder_dataset_with_split_placeholders_and_id_encoding(tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text("images: img/{split}\nlabels: ann/{split}\nlabel_suffix: _ids.png\n"
                         "encoding: ids\nsplits: [train, val]\nunmapped: ignore\n"
                         "classes:\n  - {name: road, value: 1, train_id: 0}\n  - {name: car, value: 2, train_id: 13}\n")
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("a", "sub/b"):
            (root / "img" / split / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "ann" / split / name).parent.mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "img" / split / f"{name}.png")
            ids = rng.integers(0, 4, (12, 20)).astype(np.uint8)
            Image.fromarray(ids).save(root / "ann" / split / f"{name}_ids.png")
    with pytest.raises(DataError, match=r"prepared label not found .*iccld prepare folder --root .* --spec"):
        FolderDataset(root, spec_path, "train")
    summary = prepare_dataset("folder", root, workers=1, spec=str(spec_path), progress=False)
    assert summary["labels"] == 4
    ds = FolderDataset(root, spec_path, "val")
    assert [s.name for s in ds.samples] == ["a", "sub/b"]
    raw = np.asarray(Image.open(root / "ann" / "val" / "sub" / "b_ids.png"))
    expected = np.select([raw == 1, raw == 2], [0, 13], 255)  # 0 and 3 are not listed: ignore
    assert np.array_equal(ds[1]["label"].numpy(), expected)
    with pytest.raises(ConfigError, match=r"split 'test' is not one of the spec's splits"):
        FolderDataset(root, spec_path, "test")


def test_folder_dataset_with_train_id_labels_needs_no_conversion(tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text("images: images\nlabels: images\nimage_suffix: .jpg\nlabel_suffix: _gt.png\n"
                         "encoding: train_ids\n")
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "x.jpg")
    label = np.full((8, 8), 255, np.uint8)
    label[:4] = 18
    Image.fromarray(label).save(root / "images" / "x_gt.png")
    ds = FolderDataset(root, load_folder_spec(spec_path))
    assert len(ds) == 1 and np.array_equal(ds[0]["label"].numpy(), label)
    summary = prepare_dataset("folder", root, workers=1, spec=str(spec_path), progress=False)
    assert summary["checked"] == 1 and sorted(p.name for p in (root / "images").iterdir()) == ["x.jpg", "x_gt.png"]


@pytest.mark.parametrize("text, message", [
    ("images: a\n", "'labels' is required"),
    ("images: a\nlabels: b\nencoding: hsv\n", "encoding 'hsv' is not one of ids, rgb, train_ids"),
    ("images: a\nlabels: b\ncolour: 1\n", "unknown key 'colour'"),
    ("images: a\nlabels: b\nencoding: rgb\nclasses:\n  - {value: [1, 2], train_id: 0}\n", r"classes\[0\].value"),
    ("images: a\nlabels: b\nclasses:\n  - {value: 1, train_id: 19}\n", r"classes\[0\].train_id"),
    ("images: a\nlabels: b\nclasses:\n  - {value: 1, train_id: 0}\n  - {value: 1, train_id: 2}\n", "listed twice"),
    ("images: a\nlabels: b\n", "'classes' is required"),
    ("images: [a\n", "not a readable YAML spec"),
])
def test_spec_errors_name_the_spec_and_the_key(tmp_path, text, message):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"spec.yaml: .*{message}"):
        load_folder_spec(path)


def test_build_dataset_from_config(prepared, tmp_path):
    gta = DatasetConfig(kind="gta5", root=str(prepared["gta5"]), resize=[32, 24])
    ds = build_dataset(gta, train=True, crop_size=(16, 20), cat_max_ratio=0.75, flip=True)
    assert isinstance(ds.transform, TrainTransform) and ds[(0, 1)]["image"].shape == (3, 16, 20)
    val = build_dataset(DatasetConfig(kind="cityscapes", root=str(prepared["cityscapes"]), split="val",
                                      resize=[32, 16]), train=False)
    sample = val[0]
    assert isinstance(val.transform, EvalTransform)
    assert sample["image"].shape == (3, 16, 32) and sample["label"].shape == (32, 64)
    with pytest.raises(ConfigError, match="'kitti' is not one of gta5, synthia, cityscapes, acdc, darkzurich, mapillary, bdd100k, folder"):
        build_dataset(DatasetConfig(kind="kitti", root="x"), train=False)
    with pytest.raises(ConfigError, match="has no root"):
        build_dataset(DatasetConfig(kind="gta5", root=""), train=False)
    with pytest.raises(ConfigError, match="needs 'spec'"):
        build_dataset(DatasetConfig(kind="folder", root="x"), train=False)

    data = DataConfig(source=gta, target=DatasetConfig(kind="cityscapes", root=str(prepared["cityscapes"])),
                      val=DatasetConfig(kind="cityscapes", root=str(prepared["cityscapes"]), split="val"),
                      crop_size=[16, 16], rcs_min_pixels=20)
    source = build_source_dataset(data)
    assert isinstance(source, RareClassDataset) and source[(3, 9)]["label"].shape == (16, 16)
    data.rcs_temperature = 0.0
    assert isinstance(build_source_dataset(data), GTA5Dataset)
    target = build_dataset(data.target, train=True, crop_size=data.crop_size, labelled=False)
    assert (target[(0, 0)]["label"] == 255).all()
    assert build_val_dataset(data)[0]["label"].shape == (32, 64)


def test_rcs_without_statistics_says_which_command_writes_them(tmp_path):
    root = make_gta5(tmp_path / "g", 2, (16, 16))
    prepare_dataset("gta5", root, workers=1, progress=False)
    (root / "sample_class_stats.json").unlink()
    data = DataConfig(source=DatasetConfig(kind="gta5", root=str(root)), crop_size=[8, 8])
    with pytest.raises(DataError, match=rf"sample_class_stats.json: class statistics not found .*"
                                        rf"`iccld prepare gta5 --root {root}`"):
        build_source_dataset(data)


def test_dataloader_with_workers_collates_seeded_keys(prepared):
    ds = CityscapesDataset(make_cityscapes(prepared["cityscapes"].parent / "cs2", ("train",), 4, (32, 32)),
                           "train", TRAIN, labelled=False)
    keys = [(i % 4, 1000 + i) for i in range(4)]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=keys, num_workers=1)
    batches = list(loader)
    assert batches[0]["image"].shape == (2, 3, 16, 16) and batches[0]["label"].dtype == torch.int64
    assert torch.equal(batches[1]["image"][0], ds[keys[2]]["image"])
