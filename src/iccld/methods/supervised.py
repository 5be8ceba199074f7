"""The two supervised baselines: ``source_only`` (lower bound) and ``oracle`` (upper bound).

Both train E and D on the direct path D(E(x)), with no diffusion, one labelled domain each.
"""

from __future__ import annotations

import torch

from .base import LABELLED_TARGET, SOURCE, Method, MethodConfig


class SourceOnly(Method):
    """Stage 1 without any target term: cross-entropy on labelled source crops."""

    name = "source_only"
    Config = MethodConfig
    streams = (SOURCE,)
    domain = "source"  # the batch entry it trains on

    def training_losses(self, batch: dict, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        data = batch[self.domain]
        out = self.forward_train(self.model, data["image"], generator)  # logits (B, C, H, W)
        return {"seg": self.seg_loss(out, data["label"])}


class Oracle(SourceOnly):
    """Supervised on the labelled target train split: the target-supervised upper bound."""

    name = "oracle"
    streams = (LABELLED_TARGET,)
    domain = "target"
