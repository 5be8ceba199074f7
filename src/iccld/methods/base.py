"""What every training objective shares: the trainable ``model``, its EMA copy, and the losses.

Naming: the paper calls the network that receives gradients the *teacher* and its exponential moving
average the *student*. Here they are ``model`` (gradients) and ``ema_model`` (EMA of ``model``); the
EMA model makes the pseudo-labels, as in DACS/DAFormer.

A method computes ``training_losses(batch, step, generator) -> {name: scalar tensor}``; the trainer
sums them, backpropagates and steps the optimiser, then calls ``after_step`` (EMA update). Methods
with a discriminator also expose ``discriminator_losses()`` for the trainer's second optimiser.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.labels import IGNORE_INDEX
from ..uda.ema import copy_model, ema_update


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel-wise cross-entropy, ignore index 255, optionally weighted per pixel.

    logits (B, C, H, W), labels (B, H, W), weight (B, H, W). The mean is over labelled pixels, so a
    weight below 1 scales the loss down (DAFormer's confidence weighting) instead of renormalising.
    """
    ce = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="none")
    valid = (labels != IGNORE_INDEX).float()
    if weight is not None:
        ce = ce * weight
    return ce.sum() / valid.sum().clamp_min(1.0)


class Method(nn.Module):
    """Owns ``model`` and ``ema_model``; subclasses define the losses."""

    #: which path evaluation uses by default: "direct" = D(z0), "diffusion" = D(sample(z0))
    inference_path = "direct"

    def __init__(self, model: nn.Module, ema_alpha: float = 0.999):
        super().__init__()
        self.model = model
        self.ema_model = copy_model(model)
        self.ema_alpha = ema_alpha
        self.stats: dict[str, float] = {}  # logged by the trainer, not optimised

    # what the trainer optimises ------------------------------------------------------------
    def trainable_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups of ``model`` that receive gradients, by name (see ICCLD.parameter_groups)."""
        groups = self.model.parameter_groups()
        return {k: [p for p in v if p.requires_grad] for k, v in groups.items()
                if any(p.requires_grad for p in v)}

    def lr_scale(self, group: str) -> float:
        """Extra factor on the learning rate of one parameter group (1 unless a method says otherwise)."""
        return 1.0

    def discriminator_parameters(self) -> Iterable[nn.Parameter]:
        return []

    # the step ----------------------------------------------------------------------------------
    def training_losses(self, batch: dict, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Named scalar losses; the trainer optimises their sum. Extra numbers go to ``self.stats``."""
        raise NotImplementedError

    def discriminator_losses(self) -> dict[str, torch.Tensor]:
        return {}

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        ema_update(self.ema_model, self.model, self.ema_alpha, step)

    def train(self, mode: bool = True) -> "Method":
        super().train(mode)
        self.ema_model.eval()  # the EMA model only ever predicts
        return self

    # direct segmentation path, shared by the baselines -------------------------------------------
    def segment(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """D(E(x)) at input resolution: (B, 3, H, W) -> logits (B, C, H, W)."""
        z0, skips = model.encode(images)
        return model.decode(z0, skips, images.shape[-2:])
