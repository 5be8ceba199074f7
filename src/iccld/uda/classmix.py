"""ClassMix (DACS/DAFormer): paste the pixels of half of a source image's classes onto a target image.

Differences from DAFormer's ``get_class_masks``, both deliberate [ours]:

* classes are drawn from *each sample's own* source label. DAFormer draws them from
  ``torch.unique(labels)`` of the whole batch, so a sample may paste nothing when the chosen
  classes happen to be absent from it (DAFormer issue 19);
* the ignore value 255 is never a candidate class. DAFormer's unique() includes it, so ignore
  regions of the source are sometimes pasted, carrying label 255 into the mixed image.

The number of classes pasted is ``ceil(n / 2)`` of the ``n`` present (DAFormer's
``(n + n % 2) / 2``), so at least one whenever the label has any valid pixel.
"""

from __future__ import annotations

import torch

from ..data.labels import IGNORE_INDEX


def classmix_masks(labels: torch.Tensor, generator: torch.Generator,
                   ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Per-sample ClassMix masks.

    Args:
        labels: (B, H, W) long source labels, ``ignore_index`` for unlabelled pixels.
        generator: the only source of randomness; its device is where the choice is drawn.
        ignore_index: never chosen as a class.

    Returns:
        (B, H, W) bool on ``labels.device``: True where the source pixel is pasted. A sample whose
        label is all ``ignore_index`` gets an all-False mask.
    """
    if labels.ndim != 3:
        raise ValueError(f"labels must be (B, H, W), got shape {tuple(labels.shape)}")
    masks = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    for i, label in enumerate(labels):  # label: (H, W)
        classes = torch.unique(label)
        classes = classes[classes != ignore_index]  # (n,)
        n = classes.numel()
        if n == 0:
            continue
        k = (n + 1) // 2
        chosen = torch.randperm(n, generator=generator, device=generator.device)[:k]
        masks[i] = torch.isin(label, classes[chosen.to(classes.device)])
    return masks


def mix(mask: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``source`` where ``mask`` is True, ``target`` elsewhere.

    Args:
        mask: (B, H, W) bool.
        source, target: both (B, C, H, W) (images) or both (B, H, W) (labels, weights).
    """
    if source.shape != target.shape:
        raise ValueError(f"source {tuple(source.shape)} and target {tuple(target.shape)} differ")
    if source.ndim == 4:
        if mask.shape != source.shape[:1] + source.shape[2:]:
            raise ValueError(f"mask {tuple(mask.shape)} does not fit images {tuple(source.shape)}")
        return torch.where(mask[:, None], source, target)  # (B, C, H, W)
    if source.ndim == 3:
        if mask.shape != source.shape:
            raise ValueError(f"mask {tuple(mask.shape)} does not fit {tuple(source.shape)}")
        return torch.where(mask, source, target)  # (B, H, W)
    raise ValueError(f"expected (B, C, H, W) or (B, H, W), got {tuple(source.shape)}")
