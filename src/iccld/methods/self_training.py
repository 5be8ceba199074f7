"""Self-training on the unlabelled target, the part stage 1 and stage 2 share (each holds one
:class:`SelfTraining`; neither inherits it from the other):

- pseudo-labels: the EMA model's argmax on the target image with DAFormer's confidence weight
  (:func:`~iccld.uda.pseudo_label.pseudo_labels`; which logits, direct or diffusion path, is the
  stage's choice);
- the mixed batch: ClassMix of source classes onto the target image, its labels from the source
  label and the pseudo-labels, then strong augmentation (:mod:`iccld.uda.classmix`, :mod:`~iccld.uda.augment`);
- the masked target (MIC, optional): the target image, colour-augmented on its own, with random
  blocks hidden, against the pseudo-labels of the whole image (:mod:`iccld.uda.mic`).

A stage draws them from the step's ``generator`` in this order (mix, then masked target), so the
mix is the same with MIC on or off. The settings are the ``method:`` fields of
:class:`SelfTrainingConfig` (every self-training method) and :class:`MICConfig` (a method that
offers MIC), flat in the section as every method's are.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..errors import ConfigError
from ..uda.augment import strong_augment
from ..uda.classmix import classmix_masks, mix
from ..uda.ema import batch_statistics_like
from ..uda.mic import mask_image, masked_consistency_loss
from ..uda.pseudo_label import pseudo_labels
from .base import MethodConfig, one_of, switch


@dataclass
class SelfTrainingConfig(MethodConfig):
    """The ``method:`` fields of a method that trains on pseudo-labelled, mixed target images."""

    pseudo_threshold: float = 0.968
    pl_crop_top: int = 15  # rows of the target crop left out of the pseudo-label loss
    pl_crop_bottom: int = 120
    # how the EMA model's BatchNorm layers normalise when it makes pseudo-labels: "running" (its
    # running statistics, eval mode) | "batch" (the target batch's own statistics wherever the model
    # trains in batch mode, as DAFormer's train-mode teacher; docs/benchmarks.md, "D's decoder")
    teacher_norm: str = switch("running")
    mix: str = "class"  # class (ClassMix) | none
    color_jitter_strength: float = 0.2
    color_jitter_p: float = 0.2  # as DAFormer: jitter is *skipped* with this probability
    blur: bool = True

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.pseudo_threshold <= 1:
            raise ConfigError(f"method.pseudo_threshold: must be in [0, 1], got {self.pseudo_threshold}")
        one_of("method.mix", self.mix, ("class", "none"))
        one_of("method.teacher_norm", self.teacher_norm, ("running", "batch"))


@dataclass
class MICConfig:
    """MIC's ``method:`` fields, for a method that offers it: a config class lists it *first* among
    its bases, so that these keys come after the method's other self-training keys (dataclass fields
    follow the bases in reverse order), where saved config.yaml files have them."""

    # masked image consistency (MIC); 0 = off (MIC: 1.0, 64 px blocks hidden with p = 0.7 at 512x512)
    mic_weight: float = switch(0.0)
    mic_block_size: int = switch(64)
    mic_ratio: float = switch(0.7)

    def validate(self) -> None:
        super().validate()  # type: ignore[misc]  (a mixin: the next class in the method config's MRO)
        if self.mic_weight < 0:
            raise ConfigError(f"method.mic_weight: must be >= 0 (0 = off), got {self.mic_weight}")
        if self.mic_block_size < 1:
            raise ConfigError(f"method.mic_block_size: must be >= 1 pixel, got {self.mic_block_size}")
        if not 0 <= self.mic_ratio <= 1:
            raise ConfigError(f"method.mic_ratio: must be in [0, 1], got {self.mic_ratio}")


class PseudoLabels(NamedTuple):
    """The target's pseudo-labels (B, H, W) long and their confidence weight (B, H, W) float32."""

    label: torch.Tensor
    weight: torch.Tensor

    def confidence(self) -> float:
        """The mean over images of the confident share (the weight before the crop): "pl_weight"."""
        return float(self.weight.amax(dim=(1, 2)).mean())


class Mixed(NamedTuple):
    """The mixed batch: image (B, 3, H, W), label (B, H, W), per-pixel weight (B, H, W)."""

    image: torch.Tensor
    label: torch.Tensor
    weight: torch.Tensor


class SelfTraining:
    """Pseudo-labels, the mixed batch and the masked target, from explicit settings.

    Args:
        pseudo_threshold: confidence a pixel needs to count in the pseudo-labels' weight.
        pl_crop: rows (top, bottom) of the target whose weight is 0.
        mix: "class" (ClassMix) or "none" (the mixed batch is the augmented target).
        augment: keyword arguments of :func:`~iccld.uda.augment.strong_augment`.
        mic_weight, mic_block_size, mic_ratio: MIC's weight (0 = off), block side and hidden share.
        ce_mean: what MIC's cross-entropy is averaged over (``cross_entropy``'s ``over``).
    """

    def __init__(self, *, pseudo_threshold: float, pl_crop: tuple[int, int], mix: str, augment: dict,
                 mic_weight: float = 0.0, mic_block_size: int = 64, mic_ratio: float = 0.7,
                 ce_mean: str = "labelled", teacher_norm: str = "running"):
        self.pseudo_threshold = pseudo_threshold
        self.teacher_norm = teacher_norm
        self.pl_crop = pl_crop
        self.mix_mode = mix
        self.augment = augment
        self.mic_weight, self.mic_block_size, self.mic_ratio = mic_weight, mic_block_size, mic_ratio
        self.ce_mean = ce_mean

    @classmethod
    def from_config(cls, cfg: SelfTrainingConfig) -> "SelfTraining":
        """From a method's section: a :class:`SelfTrainingConfig` with :class:`MICConfig`'s fields."""
        return cls(pseudo_threshold=cfg.pseudo_threshold, pl_crop=(cfg.pl_crop_top, cfg.pl_crop_bottom),
                   mix=cfg.mix, augment=dict(color_jitter_strength=cfg.color_jitter_strength,
                                             color_jitter_p=cfg.color_jitter_p, blur=cfg.blur),
                   mic_weight=cfg.mic_weight, mic_block_size=cfg.mic_block_size, mic_ratio=cfg.mic_ratio,
                   ce_mean=cfg.ce_mean, teacher_norm=cfg.teacher_norm)

    @property
    def mic(self) -> bool:
        """Whether MIC's term is on."""
        return self.mic_weight > 0

    def teacher(self, ema_model: nn.Module, model: nn.Module) -> contextlib.AbstractContextManager:
        """The block in which ``ema_model`` makes the pseudo-labels: as it is ("running"), or with
        the BatchNorm layers ``model`` trains normalising by the batch ("batch")."""
        return batch_statistics_like(ema_model, model) if self.teacher_norm == "batch" else contextlib.nullcontext()

    @torch.no_grad()
    def pseudo_labels(self, logits: torch.Tensor, valid: torch.Tensor | None = None) -> PseudoLabels:
        """Pseudo-labels from the EMA model's target logits (B, C, H, W); ``valid`` (B, H, W), the
        batch's ``pl_valid`` (data.pl_margins), zeroes the weight outside the pseudo-label region."""
        labels, weight = pseudo_labels(logits, self.pseudo_threshold, *self.pl_crop)
        return PseudoLabels(labels, weight if valid is None else weight * valid.to(weight.dtype))

    @torch.no_grad()
    def mixed(self, x_s: torch.Tensor, y_s: torch.Tensor, x_t: torch.Tensor, target: PseudoLabels,
              generator: torch.Generator) -> Mixed:
        """ClassMix of the source (x_s (B,3,H,W), y_s (B,H,W)) onto the target x_t and its pseudo-labels,
        then strong augmentation; the source pixels weigh 1, the target ones their confidence weight."""
        if self.mix_mode == "class":
            mask = classmix_masks(y_s, generator)  # (B, H, W) True = source pixel
        else:
            mask = torch.zeros_like(y_s, dtype=torch.bool)
        x_m = mix(mask, x_s, x_t)
        y_m = mix(mask, y_s, target.label)
        w_m = mix(mask, torch.ones_like(target.weight), target.weight)
        return Mixed(strong_augment(x_m, generator, **self.augment), y_m, w_m)

    @torch.no_grad()
    def masked_target(self, x_t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """MIC's input: the target image (B, 3, H, W), colour-augmented on its own, with random blocks
        of ``mic_block_size`` pixels set to 0 (the mean colour) with probability ``mic_ratio``."""
        x = strong_augment(x_t, generator, **self.augment)
        return mask_image(x, self.mic_block_size, self.mic_ratio, generator)

    def mic_loss(self, logits: torch.Tensor, target: PseudoLabels) -> torch.Tensor:
        """mic_weight x the cross-entropy of the masked target's logits against the pseudo-labels of
        the whole image, with their confidence weight (a scalar)."""
        return self.mic_weight * masked_consistency_loss(logits, target.label, target.weight, over=self.ce_mean)
