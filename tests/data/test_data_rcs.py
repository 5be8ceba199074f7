"""Rare class sampling: the probability formula, candidate images, crop retries, reproducibility."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from iccld.data.gta5 import GTA5Dataset
from iccld.data.prepare import prepare_dataset
from iccld.data.rcs import RareClassDataset, load_class_stats, rcs_probabilities
from iccld.data.transforms import TrainTransform
from iccld.errors import DataError


def test_probabilities_follow_the_formula():
    freqs = [0.7, 0.2, 0.09, 0.01]
    for t in (0.01, 0.1, 1.0):
        weights = [math.exp((1 - f) / t) for f in freqs]
        expected = [w / sum(weights) for w in weights]
        assert np.allclose(rcs_probabilities(freqs, t), expected, rtol=1e-12)
    sharp, flat = rcs_probabilities(freqs, 0.01), rcs_probabilities(freqs, 1.0)
    assert sharp[-1] > flat[-1] and sharp[0] < flat[0]  # lower T favours the rarest class more
    assert np.argsort(sharp).tolist() == [0, 1, 2, 3]
    assert rcs_probabilities([0.5, 0.5], 0.01).tolist() == [0.5, 0.5]
    with pytest.raises(ValueError):
        rcs_probabilities(freqs, 0.0)


def _write_gta(root, labels):
    """GTA5-layout dataset whose prepared labels are ``labels`` (train ids)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, label in enumerate(labels, start=1):
        Image.fromarray(np.zeros(label.shape + (3,), np.uint8)).save(root / "images" / f"{i:05d}.png")
        Image.fromarray(np.zeros(label.shape, np.uint8)).save(root / "labels" / f"{i:05d}.png")  # raw: unused
        Image.fromarray(label.astype(np.uint8)).save(root / "labels" / f"{i:05d}_labelTrainIds.png")


@pytest.fixture
def rare_root(tmp_path):
    """4 images 40x40: road everywhere; image 2 has 100 px of bus (15), image 3 has 30 px of bus
    and image 4 has 400 px of train (16), in a corner, so most 20x20 crops miss them."""
    labels = [np.zeros((40, 40), np.uint8) for _ in range(4)]
    labels[1][:10, :10] = 15
    labels[2][:3, :10] = 15
    labels[3][:20, :20] = 16
    root = tmp_path / "gta"
    _write_gta(root, labels)
    prepare_dataset("gta5", root, workers=1, progress=False)  # the stats from the existing files
    return root


def test_stats_class_frequencies_and_candidates(rare_root):
    stats = load_class_stats(rare_root)
    ds = GTA5Dataset(rare_root, TrainTransform(None, (20, 20), 1.0, False))
    rcs = RareClassDataset(ds, stats, temperature=0.1, min_pixels=50, min_crop_ratio=0.5)
    total = 4 * 1600
    assert rcs.class_freqs == pytest.approx({0: (total - 530) / total, 15: 130 / total, 16: 400 / total})
    assert rcs.classes == [0, 15, 16] and rcs.dropped_classes == []
    assert rcs.samples_with_class[15].tolist() == [1]  # image 3 has only 30 px < min_pixels
    assert rcs.samples_with_class[16].tolist() == [3]
    expected = rcs_probabilities([(total - 530) / total, 130 / total, 400 / total], 0.1)
    assert np.allclose(rcs.probabilities, expected)
    rng = np.random.default_rng(0)
    draws = [rcs.choose(rng) for _ in range(3000)]
    share = np.bincount([c for c, _ in draws], minlength=17)[[0, 15, 16]] / len(draws)
    assert np.allclose(share, expected, atol=0.03)
    assert {i for c, i in draws if c == 15} == {1}
    # with a threshold no image of class 15 reaches, class 15 is dropped and the rest renormalised
    strict = RareClassDataset(ds, stats, temperature=0.1, min_pixels=150, min_crop_ratio=0.5)
    assert strict.classes == [0, 16] and strict.dropped_classes == [15]
    assert np.isclose(strict.probabilities.sum(), 1.0)


def test_crop_is_redrawn_until_it_holds_the_rare_class(tmp_path):
    # classes 15, 16, 17 each fill the central 10x10 of one 40x40 image; a random 20x20 crop
    # holds all 100 pixels only when both offsets fall in 5..15 (27 % of crops)
    labels = [np.zeros((40, 40), np.uint8) for _ in range(4)]
    for label, c in zip(labels[1:], (15, 16, 17), strict=True):
        label[15:25, 15:25] = c
    root = tmp_path / "gta"
    _write_gta(root, labels)
    prepare_dataset("gta5", root, workers=1, progress=False)
    ds = GTA5Dataset(root, TrainTransform(None, (20, 20), 1.0, False))
    stats = load_class_stats(root)
    with_retry = RareClassDataset(ds, stats, temperature=0.01, min_pixels=100, min_crop_ratio=1.0)
    without = RareClassDataset(ds, stats, temperature=0.01, min_pixels=100, min_crop_ratio=0.0)
    hits_retry = hits_without = 0
    for seed in range(40):
        c, _ = with_retry.choose(np.random.default_rng(seed))
        assert c in (15, 16, 17)
        hits_retry += int((with_retry[(0, seed)]["label"] == c).sum() >= 100)
        hits_without += int((without[(0, seed)]["label"] == c).sum() >= 100)
    assert hits_retry >= 34 and hits_without <= 20  # expected about 38 and 11


def test_keys_are_reproducible_and_the_seed_decides(rare_root):
    ds = GTA5Dataset(rare_root, TrainTransform(None, (20, 20), 0.75, True))
    rcs = RareClassDataset(ds, load_class_stats(rare_root), temperature=0.5, min_pixels=50)
    assert len(rcs) == 4
    a, b = rcs[(0, 77)], rcs[(3, 77)]  # the index is not used, as in DAFormer
    assert torch.equal(a["label"], b["label"]) and a["name"] == b["name"]
    names = {rcs[(0, s)]["name"] for s in range(30)}
    assert len(names) > 1
    assert torch.equal(rcs[5 % 4]["label"], rcs[(1, 1)]["label"])


def test_stats_problems_are_data_errors(rare_root, tmp_path):
    ds = GTA5Dataset(rare_root, TrainTransform(None, (20, 20), 1.0, False))
    (rare_root / "sample_class_stats.json").write_text("{not json")
    with pytest.raises(DataError, match="sample_class_stats.json: unreadable class statistics"):
        load_class_stats(rare_root, "iccld prepare gta5 --root R")
    (rare_root / "sample_class_stats.json").write_text(json.dumps([{"file": "elsewhere/x.png", "0": 5}]))
    with pytest.raises(DataError, match="none of its entries names a label of this dataset"):
        RareClassDataset(ds, load_class_stats(rare_root), temperature=0.01)
    stats = [{"file": "labels/00001_labelTrainIds.png", "0": 10}]
    with pytest.raises(DataError, match="no image holds 3000 pixels of any class"):
        RareClassDataset(ds, stats, temperature=0.01, min_pixels=3000)
    # DAFormer-style absolute paths still match by file name
    daformer = [{"file": "data/gta/labels/00004_labelTrainIds.png", "16": 400, "0": 1200}]
    rcs = RareClassDataset(ds, daformer, temperature=0.01, min_pixels=300)
    assert rcs.classes == [0, 16] and rcs.num_unmatched == 3
