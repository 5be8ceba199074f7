"""Stage 1: segmentation-based domain adaptation of E and D (paper Fig. 1, left).

Per iteration, with a source batch (x_s, y_s) and a target batch x_t:
1. cross-entropy on the source through the direct path D(E(x_s));
2. pseudo-labels on the target from ``ema_model``, weighted by the share of confident pixels;
3. ClassMix: paste half of the classes present in y_s onto x_t, strong augmentation on the result;
4. weighted cross-entropy on the mixed image;
   optional, off by default (docs/method.md, "MIC and FD"):
   - FD (``fd_weight`` > 0): DAFormer's thing-class distance between E's deepest source features and
     those of a frozen copy of E as built, before any training (ImageNet weights with ``model.pretrained``);
   - MIC (``mic_weight`` > 0): the target image, colour-augmented and with random blocks hidden,
     against the EMA model's pseudo-labels of the whole image, with their confidence weight;
5. (trainer) optimiser step on ``model``, then EMA update of ``ema_model``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..uda.augment import strong_augment
from ..uda.classmix import classmix_masks, mix
from ..uda.ema import copy_model
from ..uda.feature_distance import feature_distance
from ..uda.mic import mask_image, masked_consistency_loss
from ..uda.pseudo_label import pseudo_labels
from ..models.multires import SegOutput
from .base import SOURCE, TARGET, Method, MethodConfig, one_of, switch


@dataclass
class Stage1Config(MethodConfig):
    pseudo_threshold: float = 0.968
    pl_crop_top: int = 15  # rows of the target crop left out of the pseudo-label loss
    pl_crop_bottom: int = 120
    mix: str = "class"  # class (ClassMix) | none
    color_jitter_strength: float = 0.2
    color_jitter_p: float = 0.2  # as DAFormer: jitter is *skipped* with this probability
    blur: bool = True
    # DAFormer's ImageNet feature distance on thing classes; 0 = off (DAFormer: 0.005)
    fd_weight: float = switch(0.0)
    # masked image consistency (MIC); 0 = off (MIC: 1.0, 64 px blocks hidden with p = 0.7 at 512x512)
    mic_weight: float = switch(0.0)
    mic_block_size: int = switch(64)
    mic_ratio: float = switch(0.7)

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.pseudo_threshold <= 1:
            raise ConfigError(f"method.pseudo_threshold: must be in [0, 1], got {self.pseudo_threshold}")
        one_of("method.mix", self.mix, ("class", "none"))
        for key in ("fd_weight", "mic_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"method.{key}: must be >= 0 (0 = off), got {getattr(self, key)}")
        if self.mic_block_size < 1:
            raise ConfigError(f"method.mic_block_size: must be >= 1 pixel, got {self.mic_block_size}")
        if not 0 <= self.mic_ratio <= 1:
            raise ConfigError(f"method.mic_ratio: must be in [0, 1], got {self.mic_ratio}")


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
        self.fd_weight = cfg.fd_weight
        self.mic = dict(weight=cfg.mic_weight, block_size=cfg.mic_block_size, ratio=cfg.mic_ratio)
        if self.fd_weight > 0:
            # E as built, before any step: a constant, so no gradient, no EMA, not in the checkpoint
            # (which saves ``model`` and ``ema_model`` only); rebuilt the same way on resume (the
            # trainer seeds before building, and ``model.pretrained`` loads the same weights)
            self.imagenet_encoder = copy_model(model.encoder).eval()

    def train(self, mode: bool = True) -> "Stage1":
        super().train(mode)
        if self.fd_weight > 0:
            self.imagenet_encoder.eval()  # a fixed reference: dropout off, normalisation statistics fixed
        return self

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

    def source_logits(self, x_s: torch.Tensor, generator: torch.Generator | None = None
                      ) -> tuple[SegOutput, torch.Tensor | None]:
        """D(E(x_s)) (logits (B, C, H, W); with multi-resolution, fused and detail) and, with FD on,
        E's deepest features of E's first input (B, C_E, h/32, w/32): x_s, or with multi-resolution
        its context (HRDA's FD on the context features)."""
        if self.fd_weight <= 0:
            return self.forward_train(self.model, x_s, generator), None
        captured = []
        hook = self.model.encoder.register_forward_hook(lambda module, args, out: captured.append(out[-1]))
        try:
            out = self.forward_train(self.model, x_s, generator)
        finally:
            hook.remove()
        return out, captured[0]

    def fd_loss(self, x_s: torch.Tensor, y_s: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """fd_weight x the thing-class feature distance to the frozen initial encoder (a scalar); with
        multi-resolution both encoders see the context of x_s."""
        if getattr(self.model, "multires", None) is not None:
            x_s = self.model.multires.context_image(x_s)
        with torch.no_grad():
            reference = self.imagenet_encoder(x_s)[-1]  # (B, C_E, h/32, w/32)
        return feature_distance(features, reference, y_s, self.fd_weight)

    @torch.no_grad()
    def masked_target(self, x_t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """MIC's input: the target image (B, 3, H, W), colour-augmented on its own, with random blocks
        of ``mic_block_size`` pixels set to 0 (the mean colour) with probability ``mic_ratio``."""
        x = strong_augment(x_t, generator, **self.augment)
        return mask_image(x, self.mic["block_size"], self.mic["ratio"], generator)

    def training_losses(self, batch: dict, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        x_s, y_s = batch["source"]["image"], batch["source"]["label"]
        x_t = batch["target"]["image"]
        out_s, features = self.source_logits(x_s, generator)
        losses = {"seg": self.seg_loss(out_s, y_s)}
        if features is not None:
            losses["fd"] = self.fd_loss(x_s, y_s, features)
        self.release(losses, "seg", "fd")  # the source graph, before the mixed batch's forward
        pl, weight = self.target_pseudo_labels(x_t)
        x_m, y_m, w_m = self.mixed_batch(x_s, y_s, x_t, pl, weight, generator)
        losses["mix"] = self.seg_loss(self.forward_train(self.model, x_m, generator), y_m, w_m)
        self.release(losses, "mix")
        if self.mic["weight"] > 0:  # after the mix's draws, so the mix is the same with MIC on or off
            x_k = self.masked_target(x_t, generator)
            losses["mic"] = self.mic["weight"] * self.seg_loss(self.forward_train(self.model, x_k, generator), pl,
                                                               weight, loss=masked_consistency_loss)
        self.stats = {"pl_weight": float(weight.amax(dim=(1, 2)).mean())}
        return losses
