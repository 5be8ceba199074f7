"""MIC's block masking and masked-consistency loss: mask statistics, block alignment, zeros in the
normalised image, and the loss against hand-computed cross-entropies."""

import math

import pytest
import torch
import torch.nn.functional as F

from iccld.uda.mic import block_mask, mask_image, masked_consistency_loss
from iccld.uda.pseudo_label import pseudo_labels


def test_about_ratio_of_the_blocks_are_hidden():
    g = torch.Generator().manual_seed(0)
    mask = block_mask(8, (256, 256), block_size=16, ratio=0.7, generator=g)  # 8 x 256 = 2048 blocks
    assert mask.shape == (8, 1, 256, 256) and set(mask.unique().tolist()) <= {0.0, 1.0}
    hidden = 1.0 - mask.mean().item()
    assert abs(hidden - 0.7) < 0.04  # 4 standard deviations of a share of 2048 draws
    for ratio, expected in ((0.0, 1.0), (1.0, 0.0)):  # nothing / everything hidden
        assert block_mask(2, (64, 64), 16, ratio, torch.Generator().manual_seed(1)).mean().item() == expected


def test_blocks_are_aligned_to_the_block_grid():
    mask = block_mask(2, (96, 128), block_size=32, ratio=0.5, generator=torch.Generator().manual_seed(3))
    blocks = mask.view(2, 1, 3, 32, 4, 32)  # (B, 1, gh, 32, gw, 32)
    assert torch.equal(blocks.amin(dim=(3, 5)), blocks.amax(dim=(3, 5)))  # constant on every block
    per_block = blocks[:, :, :, 0, :, 0]
    assert 0 < per_block.mean() < 1  # both kinds occur
    # a size that is no multiple of the block: round(100 / 32) = 3 rows of blocks, nearest-upsampled
    odd = block_mask(1, (100, 70), 32, 0.5, torch.Generator().manual_seed(4))
    assert odd.shape == (1, 1, 100, 70)
    rows = odd[0, 0, :, 0]
    assert len(torch.unique_consecutive(rows)) <= 3


def test_masked_pixels_are_zero_in_the_normalised_image_and_the_rest_untouched():
    x = torch.randn(2, 3, 64, 64)
    masked = mask_image(x, 16, 0.7, torch.Generator().manual_seed(5))
    mask = block_mask(2, (64, 64), 16, 0.7, torch.Generator().manual_seed(5))  # the same draws
    keep = mask.bool().expand_as(x)
    assert torch.equal(masked[keep], x[keep]) and torch.count_nonzero(masked[~keep]) == 0
    assert (~keep).any()
    again = mask_image(x, 16, 0.7, torch.Generator().manual_seed(5))
    assert torch.equal(again, masked)
    with pytest.raises(ValueError, match="mask ratio"):
        mask_image(x, 16, 1.5, torch.Generator())


def test_loss_is_the_weighted_cross_entropy_on_a_hand_case():
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3.0), 0.0]]]])  # (1, 2, 1, 2)
    label = torch.tensor([[[1, 0]]])  # pixel a: p(1) = 3/4; pixel b: p(0) = 1/2
    unweighted = masked_consistency_loss(logits, label)
    assert unweighted.item() == pytest.approx((math.log(4 / 3) + math.log(2)) / 2)
    assert unweighted.item() == pytest.approx(F.cross_entropy(logits, label).item())
    weight = torch.tensor([[[0.5, 0.25]]])
    assert masked_consistency_loss(logits, label, weight).item() == pytest.approx(
        (0.5 * math.log(4 / 3) + 0.25 * math.log(2)) / 2)
    ignored = torch.tensor([[[1, 255]]])  # an ignored pixel counts in neither sum
    assert masked_consistency_loss(logits, ignored, weight).item() == pytest.approx(0.5 * math.log(4 / 3))


def test_loss_with_the_pseudo_label_helper_and_a_coarser_prediction():
    g = torch.Generator().manual_seed(6)
    teacher = torch.randn(2, 5, 8, 8, generator=g) * 4  # the EMA model on the unmasked image
    labels, weight = pseudo_labels(teacher, threshold=0.9, crop_top=1)
    student = torch.randn(2, 5, 4, 4, generator=g, requires_grad=True)  # prediction at half resolution
    loss = masked_consistency_loss(student, labels, weight)
    up = F.interpolate(student, size=(8, 8), mode="bilinear", align_corners=False)
    expected = (F.cross_entropy(up, labels, reduction="none") * weight).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    # the same as the methods' cross-entropy, so MIC's term is scaled like the mixed-image term
    from iccld.methods.base import cross_entropy

    assert loss.item() == pytest.approx(cross_entropy(up, labels, weight).item(), rel=1e-6)
