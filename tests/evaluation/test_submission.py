"""`iccld predict --format submission`: names, encoding and the zip the Cityscapes/ACDC servers take."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.fixtures import make_acdc, make_cityscapes
from iccld.cli import main
from iccld.data.labels import CITYSCAPES_ID_TO_TRAINID
from iccld.evaluation.submission import encode, trainid_to_labelid
from iccld.io import build_model_from_config, save_pretrained
from iccld.presets import preset


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("model") / "iccld"
    save_pretrained(build_model_from_config(preset("cpu")), out)
    return out


def test_train_ids_become_cityscapes_label_ids():
    label = np.array([[0, 1, 2], [10, 13, 18], [255, 5, 9]], dtype=np.uint8)
    assert encode(label, "label_ids").tolist() == [[7, 8, 11], [23, 26, 33], [0, 17, 22]]
    assert encode(label, "train_ids").tolist() == label.tolist()
    table = trainid_to_labelid()
    assert all(table[train] == label_id for label_id, train in CITYSCAPES_ID_TO_TRAINID.items())


def _predict(model_dir: Path, images: list[Path], out: Path, *extra: str) -> int:
    return main(["predict", *map(str, images), "--checkpoint", str(model_dir), "--out", str(out),
                 "--steps", "1", *extra])


def test_cityscapes_submission_holds_label_ids_named_like_the_inputs(model_dir, tmp_path, capsys):
    root = make_cityscapes(tmp_path / "cityscapes", ("test",), 3, (64, 32))
    images = sorted((root / "leftImg8bit" / "test").rglob("*_leftImg8bit.png"))
    out = tmp_path / "sub"
    assert _predict(model_dir, images, out, "--format", "submission") == 0
    err = capsys.readouterr().err
    assert "the Cityscapes server scores all 1525 test images" in err and "submission.zip" in err
    names = sorted(p.name for p in images)
    assert sorted(p.name for p in (out / "labelIds").iterdir()) == names
    with zipfile.ZipFile(out / "submission.zip") as zf:
        assert sorted(zf.namelist()) == names  # at the top level of the archive
        inside = np.asarray(Image.open(zf.open(names[0])))
    # the same prediction as --format images, re-encoded from train ids to label ids
    assert _predict(model_dir, images, tmp_path / "plain") == 0
    trainid = np.asarray(Image.open(tmp_path / "plain" / f"{images[0].stem}_trainid.png"))
    written = np.asarray(Image.open(out / "labelIds" / images[0].name))
    assert written.shape == (32, 64) and written.dtype == np.uint8
    assert np.array_equal(written, trainid_to_labelid()[trainid]) and np.array_equal(inside, written)
    assert set(np.unique(written)) <= set(CITYSCAPES_ID_TO_TRAINID)
    # an existing submission is kept unless asked
    assert _predict(model_dir, images, out, "--format", "submission") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _predict(model_dir, images, out, "--format", "submission", "--overwrite") == 0


def test_acdc_submission_holds_train_ids(model_dir, tmp_path):
    root = make_acdc(tmp_path / "acdc", conditions=("fog", "night"), splits=("test",), size=(48, 32))
    images = sorted((root / "rgb_anon").rglob("*/test/*/*_rgb_anon.png"))
    assert len(images) == 4
    out = tmp_path / "sub"
    assert _predict(model_dir, images, out, "--format", "submission") == 0
    assert _predict(model_dir, images, tmp_path / "plain") == 0
    with zipfile.ZipFile(out / "submission.zip") as zf:
        assert sorted(zf.namelist()) == sorted(p.name for p in images)
    for image in images:
        written = np.asarray(Image.open(out / "labelTrainIds" / image.name))
        trainid = np.asarray(Image.open(tmp_path / "plain" / f"{image.stem}_trainid.png"))
        assert np.array_equal(written, trainid) and written.max() < 19


def test_submission_inputs_must_be_one_benchmarks_test_images(model_dir, tmp_path, capsys):
    city = make_cityscapes(tmp_path / "cs", ("test",), 1, (64, 32))
    acdc = make_acdc(tmp_path / "acdc", conditions=("snow",), splits=("test",), n=1, size=(48, 32))
    both = [next(city.rglob("*_leftImg8bit.png")), next(acdc.rglob("*/test/*/*_rgb_anon.png"))]
    assert _predict(model_dir, both, tmp_path / "s", "--format", "submission") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a Cityscapes" in err
    assert _predict(model_dir, both[1:], tmp_path / "s", "--format", "submission", "--benchmark", "cityscapes") == 2
    assert "not named *_leftImg8bit.png" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
