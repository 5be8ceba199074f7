"""data.pl_margins: HRDA's pseudo-label margins, masked on the whole target image before the crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iccld.config import load_config, to_dict
from iccld.data.transforms import TrainTransform, denormalize
from iccld.errors import ConfigError
from iccld.methods.self_training import SelfTraining
from iccld.training.trainer import Trainer

from conftest import CONFIGS, tiny_overrides

MARGINS = (3, 7, 4, 6)  # top, bottom, left, right


def _position_image(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.dstack([ys, xs, np.zeros_like(ys)]).astype(np.uint8)


def test_the_mask_is_the_whole_images_margins_cropped_and_flipped_with_it():
    """Each crop's pl_valid is 1 exactly where the pixel under it lies inside the image's margins
    (read back from a position-coded image), for crops at the border and inside, flipped or not;
    the image and label are those of the same transform without margins (no extra draw)."""
    h, w = 40, 60
    image = _position_image(h, w)
    plain = TrainTransform(None, (24, 20), cat_max_ratio=1.0, flip=True)
    masked = TrainTransform(None, (24, 20), cat_max_ratio=1.0, flip=True, pl_margins=MARGINS)
    seen = set()
    for seed in range(20):
        img, lab, valid = masked(image, None, np.random.default_rng(seed))
        ref_img, ref_lab = plain(image, None, np.random.default_rng(seed))
        assert torch.equal(img, ref_img) and torch.equal(lab, ref_lab)
        assert valid.shape == (24, 20) and valid.dtype == torch.float32
        pix = denormalize(img).round().permute(1, 2, 0).numpy().astype(np.int64)
        ys, xs = pix[..., 0], pix[..., 1]
        inside = (ys >= MARGINS[0]) & (ys < h - MARGINS[1]) & (xs >= MARGINS[2]) & (xs < w - MARGINS[3])
        assert np.array_equal(valid.numpy(), inside.astype(np.float32))
        seen.add((bool(inside.all()), bool(xs[0, 0] > xs[0, -1])))
    assert {(True, False), (False, False), (False, True)} <= seen  # inner and border crops, flips


def test_padding_is_outside_the_pseudo_label_region():
    image = np.full((10, 12, 3), 100, np.uint8)
    img, lab, valid = TrainTransform(None, (16, 20), flip=False, pl_margins=(1, 2, 0, 3))(
        image, None, np.random.default_rng(0))
    expected = torch.zeros(16, 20)
    expected[1:8, 0:9] = 1
    assert torch.equal(valid, expected)


def test_pseudo_label_weight_is_zero_outside_the_region_and_unchanged_inside():
    st = SelfTraining(pseudo_threshold=0.5, pl_crop=(0, 0), mix="none", augment={})
    logits = torch.zeros(2, 3, 4, 5)
    logits[:, 1] = 5.0  # confident everywhere: weight 1
    valid = torch.ones(2, 4, 5)
    valid[0, :, :2] = 0
    out = st.pseudo_labels(logits, valid)
    assert torch.equal(out.weight, valid) and (out.label == 1).all()
    assert torch.equal(st.pseudo_labels(logits).weight, torch.ones(2, 4, 5))
    assert out.confidence() == 1.0  # the logged share is the confident share, not the region's


def test_the_target_batch_carries_the_region_and_the_config_checks_it(tiny_benchmark, tmp_path):
    overrides = tiny_overrides(tiny_benchmark) + ["data.pl_margins=[4,16,8,8]", "trainer.batch_size=2"]
    config = load_config(CONFIGS / "synthetic" / "stage1.yaml", overrides)
    batch = Trainer(config, tmp_path / "run", progress=False).data.first_batch()
    valid = batch["target"]["pl_valid"]
    assert valid.shape == (2, 64, 64) and 0 < valid.mean() < 1  # 128x64 images: rows 4..47 count
    assert (valid[:, :4] == 0).all() and (valid[:, 48:] == 0).all()
    assert "pl_valid" not in batch["source"]
    assert "pl_margins" not in to_dict(load_config(CONFIGS / "synthetic" / "stage1.yaml"))["data"]  # a switch
    with pytest.raises(ConfigError, match=r"data.pl_margins: expected \[top, bottom, left, right\] >= 0"):
        load_config(None, ["data.pl_margins=[30,240,30]"])


@pytest.mark.parametrize("benchmark", ["gta5_cityscapes", "synthia_cityscapes"])
def test_hrda_configs_use_hrdas_margins_on_the_image_not_rows_of_the_crop(benchmark):
    for name in ("hrda_stage1", "hrda_stage1_mic", "hrda_stage2", "hrda_stage2_mic"):
        cfg = load_config(CONFIGS / benchmark / f"{name}.yaml")
        assert cfg.data.pl_margins == [30, 240, 30, 30], name
        assert (cfg.method.pl_crop_top, cfg.method.pl_crop_bottom) == (0, 0), name
