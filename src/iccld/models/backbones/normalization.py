"""Each backbone's input normalisation, applied on the way in.

Every image batch travels between the data pipeline and the networks in one normalisation, the
pipeline's: ImageNet mean/std on the 0..255 scale (``iccld.data.transforms.MEAN``/``STD``; networks
import no data code, so the values stand here too and a test keeps the two equal).
A backbone declares the normalisation its pretrained weights expect as ``input_mean`` and
``input_std`` (0..255 scale); :class:`InputNormalization` maps the pipeline's batch to it with one
per-channel scale and shift,

    x_own = (x * std_pipe + mean_pipe - mean_own) / std_own = x * (std_pipe / std_own) + (mean_pipe - mean_own) / std_own,

inside the backbone's ``forward``. So every path that feeds images to a network (training, evaluation,
predict, the demo, an exported or Hub model, the FD reference encoder) gives each backbone what its
weights were trained on, and the data pipeline never needs to know the backbone. For a backbone that
expects the pipeline's own normalisation (MiT, DINOv2, ResNet: ImageNet mean/std) nothing is applied
at all, so those networks compute exactly what they computed before this module existed.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
PIPELINE_MEAN, PIPELINE_STD = IMAGENET_MEAN, IMAGENET_STD  # what every backbone receives


class InputNormalization(nn.Module):
    """Pipeline-normalised (B, 3, H, W) -> the backbone's own normalisation (non-persistent buffers:
    state dicts do not change)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"input normalisation: 3 means and 3 positive stds expected, got {mean}, {std}")
        scale = [ps / s for ps, s in zip(PIPELINE_STD, std)]
        shift = [(pm - m) / s for pm, m, s in zip(PIPELINE_MEAN, mean, std)]
        self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


def input_normalization(mean: Sequence[float], std: Sequence[float]) -> nn.Module:
    """The module that takes the pipeline's normalisation to (``mean``, ``std``): the identity when
    they are the pipeline's own."""
    if tuple(mean) == tuple(PIPELINE_MEAN) and tuple(std) == tuple(PIPELINE_STD):
        return nn.Identity()
    return InputNormalization(mean, std)
