"""DAFormer's thing-class ImageNet feature distance (FD), as small tensor functions.

DAFormer (Hoyer et al., CVPR 2022, Sec. 3.4) keeps the encoder's features of *source* images close
to those of a frozen copy of the ImageNet-initialised encoder, so that training on synthetic data
does not erase what ImageNet taught about objects. As DAFormer does it:

* the features are the encoder's last (bottleneck) stage, (B, C, h, w), e.g. MiT-B5's
  (B, 512, H/32, W/32); the ImageNet copy runs without gradients in eval mode;
* the distance is the L2 norm over channels at every feature pixel, averaged over the pixels whose
  downsampled label is a *thing* class (THING_CLASSES), times the weight (lambda_FD = 0.005);
* the label (B, H, W) is brought to (h, w) by :func:`downscale_label_ratio`: per block of
  ``s x s`` pixels (``s = W // w``) the class with the largest share of the block's pixels (ignored
  pixels count as a class of their own), kept only when that share is at least ``min_ratio`` (0.75)
  and it is not the ignore class; other blocks become 255 and are never thing pixels.

One difference [ours]: with no thing pixel in the batch, DAFormer's mean over an empty set is NaN
(harmless there: nothing in the graph reaches a weight). Here it is an exact zero that still depends
on ``features``, so a finite-loss check never trips over it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..data.labels import IGNORE_INDEX, NUM_CLASSES

# Cityscapes train ids of the thing classes: traffic light, traffic sign, person, rider, car, truck,
# bus, train, motorcycle, bicycle (DAFormer's imnet_feature_dist_classes)
THING_CLASSES: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)


@torch.no_grad()
def downscale_label_ratio(label: torch.Tensor, scale: int, min_ratio: float = 0.75,
                          num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(B, H, W) labels -> (B, H // scale, W // scale): the majority class of each ``scale x scale``
    block if it covers at least ``min_ratio`` of the block, else ``ignore_index``.

    Ignored pixels take part as one more class: a block mostly ignored is ignored, and ignored pixels
    lower every other class's share. Ties go to the lower class id.
    """
    if label.ndim != 3:
        raise ValueError(f"label must be (B, H, W), got shape {tuple(label.shape)}")
    if scale < 1 or label.shape[1] < scale or label.shape[2] < scale:
        raise ValueError(f"scale {scale} does not fit a label of {tuple(label.shape[1:])}")
    if scale == 1:
        return label.clone()
    classes = label.long().clone()
    classes[classes == ignore_index] = num_classes  # the ignore class, last
    bad = (classes < 0) | (classes > num_classes)
    if bad.any():
        raise ValueError(f"label value {int(label[bad][0])} is not a class 0..{num_classes - 1} or {ignore_index}")
    one_hot = F.one_hot(classes, num_classes + 1).permute(0, 3, 1, 2).float()  # (B, C + 1, H, W)
    share = F.avg_pool2d(one_hot, kernel_size=scale)  # (B, C + 1, H // s, W // s)
    ratio, out = share.max(dim=1)  # (B, h, w) each
    out[(out == num_classes) | (ratio < min_ratio)] = ignore_index
    return out


def feature_distance(features: torch.Tensor, imagenet_features: torch.Tensor, label: torch.Tensor,
                     weight: float, classes: Sequence[int] | None = THING_CLASSES, min_ratio: float = 0.75,
                     num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``weight`` x the mean L2 distance between ``features`` and ``imagenet_features`` over the
    feature pixels whose downsampled label is one of ``classes`` (None: over every pixel).

    Args:
        features: (B, C, h, w) the trained encoder's features of the source images.
        imagenet_features: (B, C, h, w) the frozen ImageNet encoder's features of the same images
            (detached here: the loss never moves the frozen copy).
        label: (B, H, W) source labels in train ids, 255 = ignore, with ``W // w`` = ``H // h`` the
            feature stride.
        weight: lambda_FD (DAFormer 0.005).

    Returns a scalar tensor (float32) with gradients into ``features``.
    """
    if features.shape != imagenet_features.shape or features.ndim != 4:
        raise ValueError(f"features {tuple(features.shape)} and imagenet_features "
                         f"{tuple(imagenet_features.shape)} must be the same (B, C, h, w)")
    diff = features.float() - imagenet_features.detach().float()
    distance = torch.linalg.vector_norm(diff, ord=2, dim=1)  # (B, h, w)
    if classes is None:
        return weight * distance.mean()
    h, w = features.shape[-2:]
    scale = label.shape[-1] // w
    if label.ndim != 3 or label.shape[0] != features.shape[0] or scale < 1 or label.shape[-2] // scale != h \
            or label.shape[-1] // scale != w:
        raise ValueError(f"label {tuple(label.shape)} does not cover features of {h}x{w} at one integer stride")
    small = downscale_label_ratio(label, scale, min_ratio, num_classes, ignore_index)  # (B, h, w)
    things = torch.isin(small, torch.as_tensor(list(classes), device=small.device))  # (B, h, w)
    if not things.any():  # [ours] zero instead of DAFormer's NaN, see the module docstring
        return distance.sum() * 0.0
    return weight * distance[things].mean()
