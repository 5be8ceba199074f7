"""UDA building blocks: EMA model, ClassMix, pseudo-labels, strong augmentation, DAFormer's
feature distance, MIC's masked image consistency.

Small functions on tensors with no I/O; each module documents where it follows DAFormer and where
it deliberately differs.
"""

from .augment import IMAGENET_MEAN, IMAGENET_STD, strong_augment
from .classmix import classmix_masks, mix
from .ema import copy_model, ema_decay, ema_update
from .feature_distance import THING_CLASSES, downscale_label_ratio, feature_distance
from .mic import block_mask, mask_image, masked_consistency_loss
from .pseudo_label import pseudo_labels

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "THING_CLASSES", "block_mask", "classmix_masks", "copy_model",
    "downscale_label_ratio", "ema_decay", "ema_update", "feature_distance", "mask_image",
    "masked_consistency_loss", "mix", "pseudo_labels", "strong_augment",
]
