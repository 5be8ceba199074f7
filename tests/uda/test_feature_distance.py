"""DAFormer's thing-class feature distance: the label downscaling rule and the masked mean distance,
against hand-computed values."""

import math

import pytest
import torch

from iccld.uda.feature_distance import THING_CLASSES, downscale_label_ratio, feature_distance


def _label() -> torch.Tensor:
    """Two 4x4 labels, blocks of 2x2 (values chosen per block):

    image 0: TL all car (13) | TR 3 person (11) + 1 road (0) -> 11 at share 0.75
             BL 2 sidewalk + 2 building -> share 0.5 < 0.75: 255 | BR 3 ignore + 1 light (6): ignore wins
    image 1: TL 1 ignore + 3 sign (7) -> 7 | TR all road (0) | BL all ignore | BR 2 bus (15) + 2 car (13)
    """
    a = torch.tensor([[13, 13, 11, 11],
                      [13, 13, 11, 0],
                      [1, 2, 255, 255],
                      [2, 1, 255, 6]])
    b = torch.tensor([[255, 7, 0, 0],
                      [7, 7, 0, 0],
                      [255, 255, 15, 13],
                      [255, 255, 13, 15]])
    return torch.stack([a, b])


def test_downscaling_keeps_a_block_majority_of_at_least_the_ratio():
    out = downscale_label_ratio(_label(), scale=2, min_ratio=0.75)
    expected = torch.tensor([[[13, 11], [255, 255]],
                             [[7, 0], [255, 255]]])  # the 2-2 blocks have a share of 0.5 < 0.75
    assert out.dtype == torch.long and torch.equal(out, expected)
    # a lower ratio keeps the half-half blocks; a tie goes to the lower id (1 before 2, 13 before 15)
    half = downscale_label_ratio(_label(), 2, min_ratio=0.5)
    assert half[0, 1, 0] == 1 and half[1, 1, 1] == 13 and half[0, 1, 1] == 255  # ignore still wins its block
    # scale 1 is the label itself
    assert torch.equal(downscale_label_ratio(_label(), 1), _label())
    with pytest.raises(ValueError, match="not a class"):
        downscale_label_ratio(torch.full((1, 4, 4), 40), 2)


def test_feature_distance_is_the_weighted_mean_l2_over_thing_pixels():
    label = _label()[:1]  # downscaled: [[13, 11], [255, 255]] -> things at (0, 0) and (0, 1)
    features = torch.zeros(1, 2, 2, 2)
    features[0, :, 0, 0] = torch.tensor([3.0, 4.0])  # distance 5 (car)
    features[0, :, 0, 1] = torch.tensor([1.0, 0.0])  # distance 1 (person)
    features[0, :, 1, 1] = torch.tensor([6.0, 8.0])  # distance 10, but an ignored block
    features.requires_grad_(True)
    imagenet = torch.zeros(1, 2, 2, 2)
    loss = feature_distance(features, imagenet, label, weight=0.005)
    assert loss.item() == pytest.approx(0.005 * (5 + 1) / 2)
    loss.backward()
    # gradients reach only the thing pixels: d|f|/df = f/|f|, times 0.005 / 2
    assert torch.allclose(features.grad[0, :, 0, 0], torch.tensor([0.6, 0.8]) * 0.0025)
    assert torch.count_nonzero(features.grad[0, :, 1]) == 0
    # every pixel when no classes are given: (5 + 1 + 0 + 10) / 4
    assert feature_distance(features, imagenet, label, 1.0, classes=None).item() == pytest.approx(4.0)


def test_feature_distance_is_zero_for_equal_features_and_never_moves_the_frozen_copy():
    torch.manual_seed(0)
    label = torch.full((2, 64, 64), 13)  # all car, at stride 16: 4x4 features
    features = torch.randn(2, 8, 4, 4, requires_grad=True)
    assert feature_distance(features, features.detach().clone(), label, 0.005).item() == 0.0
    imagenet = torch.randn(2, 8, 4, 4, requires_grad=True)
    loss = feature_distance(features, imagenet, label, 0.005)
    expected = 0.005 * (features - imagenet).norm(dim=1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert imagenet.grad is None and features.grad is not None


def test_no_thing_pixel_gives_an_exact_zero_that_keeps_the_graph():
    label = torch.zeros(1, 32, 32, dtype=torch.long)  # all road
    features = torch.randn(1, 4, 2, 2, requires_grad=True)
    loss = feature_distance(features, torch.randn(1, 4, 2, 2), label, 0.005)
    assert loss.item() == 0.0 and not math.isnan(loss.item()) and loss.requires_grad


def test_thing_classes_are_daformers_and_bad_shapes_are_refused():
    assert THING_CLASSES == (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
    with pytest.raises(ValueError, match="same"):
        feature_distance(torch.zeros(1, 4, 2, 2), torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 4, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match="integer stride"):
        feature_distance(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2), torch.zeros(1, 9, 4, dtype=torch.long), 1.0)
