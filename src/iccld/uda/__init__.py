"""UDA building blocks: EMA model, ClassMix, pseudo-labels, strong augmentation.

Small functions on tensors with no I/O; each module documents where it follows DAFormer and where
it deliberately differs.
"""

from .augment import IMAGENET_MEAN, IMAGENET_STD, strong_augment
from .classmix import classmix_masks, mix
from .ema import copy_model, ema_decay, ema_update
from .pseudo_label import pseudo_labels

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "classmix_masks", "copy_model", "ema_decay", "ema_update",
    "mix", "pseudo_labels", "strong_augment",
]
