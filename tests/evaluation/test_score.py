"""score_folders on tiny PNG folders: pairing by normalised name, values, and every error path."""

import numpy as np
import pytest
import torch
from PIL import Image

from iccld.errors import DataError
from iccld.evaluation.metrics import ConfusionMatrix
from iccld.evaluation.score import normalized_stem, score_folders


def _png(path, array, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(array, dtype=np.uint8), mode="L")
    if mode == "P":
        img = img.convert("P")
    img.save(path)


def _folders(tmp_path):
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 19, (6, 8)) for _ in range(2)]
    gts[0][0] = 255
    preds = [np.where(rng.random((6, 8)) < 0.7, g, rng.integers(0, 19, (6, 8))) for g in gts]
    preds[1][0, 0] = 255
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for i, (g, p) in enumerate(zip(gts, preds)):
        name = f"city_{i:06d}_000019"
        _png(gt_dir / "city" / f"{name}_gtFine_labelTrainIds.png", g)
        _png(gt_dir / "city" / f"{name}_gtFine_labelIds.png", g)  # skipped
        Image.new("RGB", (8, 6)).save(gt_dir / "city" / f"{name}_gtFine_color.png")  # skipped
        _png(pred_dir / f"{name}_leftImg8bit.png", p)
        Image.new("RGB", (8, 6)).save(pred_dir / f"{name}_leftImg8bit_color.png")  # skipped
    return pred_dir, gt_dir, preds, gts


def test_normalized_stem(tmp_path):
    from pathlib import Path
    assert normalized_stem(Path("a_000001_gtFine_labelTrainIds.png")) == "a_000001"
    assert normalized_stem(Path("a_000001_leftImg8bit.png")) == "a_000001"
    assert normalized_stem(Path("00001_labelTrainIds.png")) == "00001"
    assert normalized_stem(Path("x_trainid.png")) == "x"
    assert normalized_stem(Path("plain.png")) == "plain"


def test_scores_equal_a_confusion_matrix_over_all_pairs(tmp_path):
    pred_dir, gt_dir, preds, gts = _folders(tmp_path)
    result = score_folders(pred_dir, gt_dir, subsets=True)
    cm = ConfusionMatrix()
    for p, g in zip(preds, gts):
        cm.update(torch.from_numpy(p), torch.from_numpy(g))
    expected = cm.summary({"miou16": (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18),
                           "miou13": (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)})
    assert result["num_images"] == 2
    for key in ("miou", "miou16", "miou13", "pixel_accuracy"):
        assert result[key] == pytest.approx(expected[key])
    assert result["per_class"] == pytest.approx(expected["per_class"])
    assert 30 < result["pixel_accuracy"] < 100  # 70 % kept plus lucky draws, minus one 255
    assert "miou16" not in score_folders(pred_dir, gt_dir)


def test_hand_computed_single_image_and_palette_png(tmp_path):
    _png(tmp_path / "gt" / "a_labelTrainIds.png", [[0, 0, 1, 255]])
    _png(tmp_path / "pred" / "a.png", [[0, 1, 1, 5]], mode="P")
    result = score_folders(tmp_path / "pred", tmp_path / "gt")
    assert result["per_class"]["road"] == pytest.approx(50.0)  # 1 / (2 + 1 - 1)
    assert result["per_class"]["sidewalk"] == pytest.approx(50.0)  # 1 / (1 + 2 - 1)
    assert result["per_class"]["car"] is None
    assert result["miou"] == pytest.approx(50.0)
    assert result["pixel_accuracy"] == pytest.approx(200 / 3)


def test_size_mismatch_names_both_files(tmp_path):
    _png(tmp_path / "gt" / "a_labelTrainIds.png", np.zeros((4, 4)))
    _png(tmp_path / "pred" / "a.png", np.zeros((4, 5)))
    with pytest.raises(DataError, match=r"a\.png.*a_labelTrainIds\.png"):
        score_folders(tmp_path / "pred", tmp_path / "gt")


def test_unpaired_files_are_listed_with_counts(tmp_path):
    for name in ("a", "b", "c"):
        _png(tmp_path / "gt" / f"{name}_labelTrainIds.png", np.zeros((2, 2)))
    _png(tmp_path / "pred" / "a.png", np.zeros((2, 2)))
    _png(tmp_path / "pred" / "zzz.png", np.zeros((2, 2)))
    with pytest.raises(DataError) as err:
        score_folders(tmp_path / "pred", tmp_path / "gt")
    message = str(err.value)
    assert "2 in" in message and "b_labelTrainIds.png" in message and "c_labelTrainIds.png" in message
    assert "1 in" in message and "zzz.png" in message
    assert "\n" not in message


def test_empty_or_missing_folders(tmp_path):
    (tmp_path / "pred").mkdir()
    _png(tmp_path / "gt" / "a_labelTrainIds.png", np.zeros((2, 2)))
    with pytest.raises(DataError, match="no label PNG"):
        score_folders(tmp_path / "pred", tmp_path / "gt")
    with pytest.raises(DataError, match="does not exist"):
        score_folders(tmp_path / "nowhere", tmp_path / "gt")


def test_only_unconverted_cityscapes_labels_hint_at_prepare(tmp_path):
    _png(tmp_path / "gt" / "a_gtFine_labelIds.png", np.full((2, 2), 26))
    _png(tmp_path / "pred" / "a.png", np.zeros((2, 2)))
    with pytest.raises(DataError, match="iccld prepare"):
        score_folders(tmp_path / "pred", tmp_path / "gt")


def test_invalid_values_and_colour_predictions(tmp_path):
    _png(tmp_path / "gt" / "a_labelTrainIds.png", [[0, 26]])
    _png(tmp_path / "pred" / "a.png", [[0, 1]])
    with pytest.raises(DataError, match=r"a_labelTrainIds\.png.*\[26\]"):
        score_folders(tmp_path / "pred", tmp_path / "gt")
    _png(tmp_path / "gt" / "a_labelTrainIds.png", [[0, 1]])
    _png(tmp_path / "pred" / "a.png", [[0, 19]])
    with pytest.raises(DataError, match=r"a\.png.*\[19\]"):
        score_folders(tmp_path / "pred", tmp_path / "gt")
    Image.new("RGB", (2, 1)).save(tmp_path / "pred" / "a.png")
    with pytest.raises(DataError, match="mode RGB"):
        score_folders(tmp_path / "pred", tmp_path / "gt")
    (tmp_path / "pred" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read"):
        score_folders(tmp_path / "pred", tmp_path / "gt")


def test_duplicate_names_after_normalising(tmp_path):
    _png(tmp_path / "gt" / "a_labelTrainIds.png", np.zeros((2, 2)))
    _png(tmp_path / "pred" / "a.png", np.zeros((2, 2)))
    _png(tmp_path / "pred" / "sub" / "a_leftImg8bit.png", np.zeros((2, 2)))
    with pytest.raises(DataError, match="both pair"):
        score_folders(tmp_path / "pred", tmp_path / "gt")
