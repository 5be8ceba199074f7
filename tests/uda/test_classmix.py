"""ClassMix: whole classes, half of them, never ignore, image and label kept aligned."""

import math

import pytest
import torch

from iccld.uda.classmix import classmix_masks, mix


def _labels() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 7, (3, 12, 16), generator=g)  # (B, H, W)
    labels[0, :3] = 255
    labels[1] = torch.where(labels[1] < 3, labels[1], torch.full_like(labels[1], 255))  # 3 classes
    labels[2] = 255  # nothing labelled
    return labels


def test_masks_select_half_of_each_samples_classes_whole():
    labels = _labels()
    masks = classmix_masks(labels, torch.Generator().manual_seed(0))
    assert masks.shape == labels.shape and masks.dtype == torch.bool
    for label, mask in zip(labels, masks):
        present = set(torch.unique(label).tolist()) - {255}
        chosen = set(torch.unique(label[mask]).tolist())
        assert 255 not in chosen
        assert chosen <= present
        assert len(chosen) == math.ceil(len(present) / 2)
        for c in present:  # a class is pasted whole or not at all
            assert bool(mask[label == c].all()) == (c in chosen)
    assert not masks[2].any()  # an all-ignore label pastes nothing


def test_single_class_is_always_pasted():
    labels = torch.full((1, 4, 4), 255)
    labels[0, 1:3, 1:3] = 5
    masks = classmix_masks(labels, torch.Generator().manual_seed(3))
    assert torch.equal(masks[0], labels[0] == 5)


def test_masks_are_deterministic_given_the_generator_and_vary_with_it():
    labels = _labels()
    a = classmix_masks(labels, torch.Generator().manual_seed(7))
    b = classmix_masks(labels, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    choices = {tuple(torch.unique(labels[0][m]).tolist())
               for m in (classmix_masks(labels, torch.Generator().manual_seed(s))[0] for s in range(20))}
    assert len(choices) > 1


def test_mixed_image_label_and_weight_come_from_the_same_domain():
    labels = _labels()
    batch, height, width = labels.shape
    source_label = labels.clone()
    pseudo = torch.randint(0, 19, (batch, height, width), generator=torch.Generator().manual_seed(2))
    # Each image encodes its own label and domain: source pixels 1000 + label, target -1000 - label.
    source_img = (1000.0 + source_label.float())[:, None].expand(-1, 3, -1, -1).clone()
    target_img = (-1000.0 - pseudo.float())[:, None].expand(-1, 3, -1, -1).clone()
    source_w = torch.ones(batch, height, width)
    target_w = torch.full((batch, height, width), 0.25)

    mask = classmix_masks(source_label, torch.Generator().manual_seed(0))
    img = mix(mask, source_img, target_img)
    lbl = mix(mask, source_label, pseudo)
    w = mix(mask, source_w, target_w)

    from_source = img[:, 0] > 0
    assert torch.equal(from_source, mask)
    assert torch.equal(img[:, 0], img[:, 1]) and torch.equal(img[:, 0], img[:, 2])
    decoded = torch.where(from_source, img[:, 0] - 1000.0, -img[:, 0] - 1000.0).long()
    assert torch.equal(decoded, lbl)
    assert torch.equal(w, torch.where(mask, 1.0, 0.25))
    assert mask.any() and (~mask).any()


def test_mix_rejects_mismatched_shapes():
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError):
        mix(mask, torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError):
        mix(mask, torch.zeros(2, 3, 5, 4), torch.zeros(2, 3, 5, 4))
    with pytest.raises(ValueError):
        classmix_masks(torch.zeros(4, 4, dtype=torch.long), torch.Generator())
