"""Stage 1: segmentation-based domain adaptation of E and D (paper Fig. 1, left).

Per iteration, with a source batch (x_s, y_s) and a target batch x_t:
1. cross-entropy on the source through the direct path D(E(x_s));
2. pseudo-labels on the target from ``ema_model``, weighted by the share of confident pixels;
3. ClassMix: paste half of the classes present in y_s onto x_t, strong augmentation on the result;
4. weighted cross-entropy on the mixed image;
5. (trainer) optimiser step on ``model``, then EMA update of ``ema_model``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..uda.augment import strong_augment
from ..uda.classmix import classmix_masks, mix
from ..uda.pseudo_label import pseudo_labels
from .base import SOURCE, TARGET, Method, MethodConfig, cross_entropy, one_of


@dataclass
class Stage1Config(MethodConfig):
    pseudo_threshold: float = 0.968
    pl_crop_top: int = 15  # rows of the target crop left out of the pseudo-label loss
    pl_crop_bottom: int = 120
    mix: str = "class"  # class (ClassMix) | none
    color_jitter_strength: float = 0.2
    color_jitter_p: float = 0.2  # as DAFormer: jitter is *skipped* with this probability
    blur: bool = True

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.pseudo_threshold <= 1:
            raise ConfigError(f"method.pseudo_threshold: must be in [0, 1], got {self.pseudo_threshold}")
        one_of("method.mix", self.mix, ("class", "none"))


class Stage1(Method):
    name = "stage1"
    Config = Stage1Config
    streams = (SOURCE, TARGET)

    def __init__(self, model: nn.Module, cfg: Stage1Config):
        super().__init__(model, cfg)
        self.pseudo_threshold = cfg.pseudo_threshold
        self.pl_crop = (cfg.pl_crop_top, cfg.pl_crop_bottom)
        self.mix_mode = cfg.mix
        self.augment = dict(color_jitter_strength=cfg.color_jitter_strength,
                            color_jitter_p=cfg.color_jitter_p, blur=cfg.blur)

    @torch.no_grad()
    def target_pseudo_labels(self, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """EMA-model pseudo-labels (B, H, W) and their confidence weights (B, H, W)."""
        logits = self.segment(self.ema_model, x_t)
        return pseudo_labels(logits, self.pseudo_threshold, *self.pl_crop)

    @torch.no_grad()
    def mixed_batch(self, x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor, pl: torch.Tensor,
                    weight: torch.Tensor, generator: torch.Generator):
        """ClassMix of source onto target: image (B,3,H,W), label (B,H,W), weight (B,H,W)."""
        if self.mix_mode == "class":
            mask = classmix_masks(y_s, generator)  # (B, H, W) True = source pixel
        else:
            mask = torch.zeros_like(y_s, dtype=torch.bool)
        x_m = mix(mask, x_s, x_t)
        y_m = mix(mask, y_s, pl)
        w_m = mix(mask, torch.ones_like(weight), weight)
        x_m = strong_augment(x_m, generator, **self.augment)
        return x_m, y_m, w_m

    def training_losses(self, batch: dict, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        x_s, y_s = batch["source"]["image"], batch["source"]["label"]
        x_t = batch["target"]["image"]
        loss_src = cross_entropy(self.segment(self.model, x_s), y_s)
        pl, weight = self.target_pseudo_labels(x_t)
        x_m, y_m, w_m = self.mixed_batch(x_s, y_s, x_t, pl, weight, generator)
        loss_mix = cross_entropy(self.segment(self.model, x_m), y_m, w_m)
        self.stats = {"pl_weight": float(weight.amax(dim=(1, 2)).mean())}
        return {"seg": loss_src, "mix": loss_mix}
