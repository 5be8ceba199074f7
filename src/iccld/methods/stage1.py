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
from ..uda.ema import copy_model
from ..uda.feature_distance import feature_distance
from ..models.multires import SegOutput
from ..uda.mic import masked_consistency_loss
from .base import SOURCE, TARGET, Method, StepOutput, switch
from .self_training import MICConfig, SelfTraining, SelfTrainingConfig


@dataclass
class FDConfig:
    """FD's ``method:`` field, stage 1's own: listed among Stage1Config's bases between MIC's fields
    and the self-training ones, so that the saved key order is ..., blur, fd_weight, mic_weight, ...
    (dataclass fields follow the bases in reverse order)."""

    # DAFormer's ImageNet feature distance on thing classes; 0 = off (DAFormer: 0.005)
    fd_weight: float = switch(0.0)

    def validate(self) -> None:
        super().validate()  # type: ignore[misc]  (a mixin: the next class in Stage1Config's MRO)
        if self.fd_weight < 0:
            raise ConfigError(f"method.fd_weight: must be >= 0 (0 = off), got {self.fd_weight}")


@dataclass
class Stage1Config(MICConfig, FDConfig, SelfTrainingConfig):
    """Self-training (pseudo-labels, mix, augmentation), FD and MIC: every field is declared by one
    of the bases."""


class Stage1(Method):
    name = "stage1"
    Config = Stage1Config
    streams = (SOURCE, TARGET)

    def __init__(self, model: nn.Module, cfg: Stage1Config):
        super().__init__(model, cfg)
        self.self_training = SelfTraining.from_config(cfg)
        self.fd_weight = cfg.fd_weight
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

    def training_losses(self, batch: dict, step: int, generator: torch.Generator) -> StepOutput:
        st = self.self_training
        x_s, y_s = batch["source"]["image"], batch["source"]["label"]
        x_t = batch["target"]["image"]
        out_s, features = self.source_logits(x_s, generator)
        losses = {"seg": self.seg_loss(out_s, y_s)}
        if features is not None:
            losses["fd"] = self.fd_loss(x_s, y_s, features)
        self.release(losses, "seg", "fd")  # the source graph, before the mixed batch's forward
        with torch.no_grad(), st.teacher(self.ema_model, self.model):
            target = st.pseudo_labels(self.segment(self.ema_model, x_t), batch["target"].get("pl_valid"))
        mixed = st.mixed(x_s, y_s, x_t, target, generator)
        losses["mix"] = self.seg_loss(self.forward_train(self.model, mixed.image, generator), mixed.label,
                                      mixed.weight)
        self.release(losses, "mix")
        if st.mic:  # after the mix's draws, so the mix is the same with MIC on or off
            out_k = self.forward_train(self.model, st.masked_target(x_t, generator), generator)
            losses["mic"] = st.mic_weight * self.seg_loss(out_k, target.label, target.weight,
                                                          loss=masked_consistency_loss)
        return StepOutput(losses, logged={"pl_weight": target.confidence()})
