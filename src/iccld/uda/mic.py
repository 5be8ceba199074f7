"""Masked image consistency (MIC, Hoyer et al., CVPR 2023), as small tensor functions.

MIC trains the network to segment a target image of which random patches are hidden, against the
EMA model's pseudo-labels of the *whole* image, so that it learns to use context. As MIC does it:

* the mask has one random draw per block of ``block_size x block_size`` pixels: a block is kept when
  u > ``ratio`` (u ~ U[0, 1)), so it is hidden with probability ``ratio`` (MIC: 64 px, 0.7 at 512x512
  crops); the block grid has ``round(H / block_size) x round(W / block_size)`` cells and is
  nearest-upsampled to (H, W);
* hidden pixels are set to 0 in the *normalised* image (the mean colour), by multiplying with the
  mask; MIC masks the target image after its own colour augmentation ("separatetrgaug");
* the loss is the pixel-wise cross-entropy of the masked image's prediction against the pseudo-labels
  of the unmasked image (from :func:`~iccld.uda.pseudo_label.pseudo_labels` on the EMA model's
  logits), weighted by their confidence weight, times lambda_MIC = 1.

All randomness comes from ``generator`` (one draw per block), so equal generator states give equal
masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.labels import IGNORE_INDEX


@torch.no_grad()
def block_mask(batch: int, size: tuple[int, int], block_size: int, ratio: float,
               generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 1, H, W) float mask of 1 (kept) and 0 (hidden), constant on each block."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    height, width = size
    grid = (max(1, round(height / block_size)), max(1, round(width / block_size)))
    u = torch.rand(batch, 1, *grid, generator=generator, device=generator.device)  # one draw per block
    keep = (u > ratio).float().to(device)  # (B, 1, gh, gw)
    return F.interpolate(keep, size=(height, width), mode="nearest")  # (B, 1, H, W)


def mask_image(x: torch.Tensor, block_size: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Normalised images (B, 3, H, W) with random blocks set to 0; returns a new tensor."""
    if x.ndim != 4:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(x.shape)}")
    mask = block_mask(x.shape[0], tuple(x.shape[-2:]), block_size, ratio, generator, x.device)
    return x * mask.to(x.dtype)


def masked_consistency_loss(logits: torch.Tensor, pseudo_label: torch.Tensor,
                            weight: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX,
                            over: str = "labelled") -> torch.Tensor:
    """Cross-entropy of the masked image's logits against the unmasked image's pseudo-labels.

    Args:
        logits: (B, C, h, w) the model's prediction for the masked target image; bilinearly
            upsampled when (h, w) is not the label's size.
        pseudo_label: (B, H, W) the EMA model's labels of the unmasked image (255 = ignore).
        weight: (B, H, W) their confidence weight, or None for 1.

    Returns the sum of weighted per-pixel losses over the number of labelled pixels, or of all pixels
    with ``over="all"`` (as the methods' ``cross_entropy``: a weight below 1 scales the loss down
    instead of renormalising).
    """
    if logits.shape[-2:] != pseudo_label.shape[-2:]:
        logits = F.interpolate(logits.float(), size=pseudo_label.shape[-2:], mode="bilinear", align_corners=False)
    ce = F.cross_entropy(logits.float(), pseudo_label, ignore_index=ignore_index, reduction="none")  # (B, H, W)
    if weight is not None:
        ce = ce * weight
    if over == "all":
        return ce.sum() / pseudo_label.numel()
    return ce.sum() / (pseudo_label != ignore_index).sum().clamp_min(1)
