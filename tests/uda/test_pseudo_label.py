"""Pseudo-labels: argmax labels and DAFormer's per-image confident-pixel share as weight."""

import pytest
import torch

from iccld.uda.pseudo_label import pseudo_labels


def _logits_with(confident: torch.Tensor, labels: torch.Tensor, num_classes: int = 4) -> torch.Tensor:
    """Logits whose softmax puts 0.99 (confident) or 0.6 (not) on ``labels``."""
    top = torch.where(confident, 0.99, 0.6)  # (B, H, W)
    rest = (1.0 - top) / (num_classes - 1)
    probs = rest[:, None].repeat(1, num_classes, 1, 1)
    probs.scatter_(1, labels[:, None], top[:, None])
    return probs.log()


def test_labels_are_argmax_and_weight_is_share_of_confident_pixels():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (2, 5, 6), generator=g)
    confident = torch.zeros(2, 5, 6, dtype=torch.bool)
    confident[0].view(-1)[:7] = True  # 7 of 30 pixels
    confident[1] = True  # all 30
    out_labels, weight = pseudo_labels(_logits_with(confident, labels), threshold=0.968)
    assert out_labels.dtype == torch.long and torch.equal(out_labels, labels)
    assert weight.dtype == torch.float32 and weight.shape == (2, 5, 6)
    torch.testing.assert_close(weight[0], torch.full((5, 6), 7 / 30))
    torch.testing.assert_close(weight[1], torch.ones(5, 6))


def test_threshold_is_inclusive_like_daformer():
    logits = torch.zeros(1, 2, 1, 2)  # every pixel 0.5 / 0.5
    _, weight = pseudo_labels(logits, threshold=0.5)
    torch.testing.assert_close(weight, torch.ones(1, 1, 2))
    _, weight = pseudo_labels(logits, threshold=0.51)
    torch.testing.assert_close(weight, torch.zeros(1, 1, 2))


def test_border_rows_get_zero_weight_and_still_count_in_the_share():
    labels = torch.zeros(1, 8, 3, dtype=torch.long)
    confident = torch.zeros(1, 8, 3, dtype=torch.bool)
    confident[0, :2] = True  # 6 of 24 confident, all in the cropped top rows
    _, weight = pseudo_labels(_logits_with(confident, labels), 0.968, crop_top=2, crop_bottom=3)
    expected = torch.full((8, 3), 6 / 24)
    expected[:2] = 0.0
    expected[5:] = 0.0
    torch.testing.assert_close(weight[0], expected)


def test_crop_larger_than_image_zeroes_everything_and_bad_input_raises():
    _, weight = pseudo_labels(torch.randn(1, 3, 4, 4), 0.5, crop_bottom=10)
    assert float(weight.abs().sum()) == 0.0
    with pytest.raises(ValueError):
        pseudo_labels(torch.randn(3, 4, 4), 0.5)
    with pytest.raises(ValueError):
        pseudo_labels(torch.randn(1, 3, 4, 4), 0.5, crop_top=-1)
