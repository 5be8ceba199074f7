"""Pseudo-labels for the target domain with DAFormer's scalar confidence weight.

The label is the argmax of the EMA model's softmax (``ema_model``, see :mod:`iccld.uda.ema`). The weight is one number per image, the share of
its pixels whose maximum probability reaches the threshold (``>=``, as DAFormer's ``ge``), broadcast
over the image. Two choices [ours]:

* the share is taken per image; DAFormer takes one share over the whole batch;
* ``crop_top`` / ``crop_bottom`` are rows of the tensor given, taken literally. DAFormer's 15 / 120
  are rows of a 512-pixel-high crop of 1024x512 Cityscapes (ego-car hood and the rectification
  border); a config with smaller crops scales them itself.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def pseudo_labels(logits: torch.Tensor, threshold: float, crop_top: int = 0,
                  crop_bottom: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels and their weight.

    Args:
        logits: (B, C, H, W) logits of the EMA model (any float dtype; softmax is taken in fp32).
        threshold: confidence a pixel needs to count as confident, in [0, 1].
        crop_top, crop_bottom: rows at the top / bottom whose weight is 0.

    Returns:
        labels (B, H, W) long, weight (B, H, W) float32.
    """
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, C, H, W), got shape {tuple(logits.shape)}")
    if crop_top < 0 or crop_bottom < 0:
        raise ValueError(f"crop rows must be >= 0, got top={crop_top} bottom={crop_bottom}")
    probs = torch.softmax(logits.float(), dim=1)  # (B, C, H, W)
    confidence, labels = probs.max(dim=1)  # (B, H, W) each
    share = (confidence >= threshold).float().mean(dim=(1, 2))  # (B,)
    weight = share[:, None, None].expand_as(confidence).clone()  # (B, H, W)
    height = weight.shape[1]
    if crop_top > 0:
        weight[:, :crop_top] = 0.0
    if crop_bottom > 0:
        weight[:, max(height - crop_bottom, 0):] = 0.0
    return labels, weight
