"""D, the decoder: a SegFormer/DAFormer-style all-MLP fusion head.

Every input (the latent z and, with the inter-coder connection, each skip feature of E) is projected
by a 1x1 conv ("MLP") to ``channels``, upsampled to stride 4 of the input image, concatenated, fused
(1x1 conv, GroupNorm, ReLU), and classified; the logits are upsampled bilinearly to the input size.

[ours] GroupNorm instead of SegFormer's BatchNorm in the fusion layer: it behaves the same in train
and eval mode, keeps no running statistics that a frozen decoder could still change in stage 2, and
works with batch size 1 (``norm="batch"`` gives SegFormer's BatchNorm back).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .latent_head import norm_layer, resize_to


class FusionDecoder(nn.Module):
    """D(z, skips) -> logits.

    Args:
        latent_channels: Cz, channels of z.
        skip_channels: channels of each skip feature, in the order they are passed to ``forward``;
            empty for the ablation without the inter-coder connection (then D has no skip
            parameters at all and sees z alone).
        channels: width of the projections and the fusion layer.
        num_classes: number of output classes.
        dropout: channel dropout before the classifier (SegFormer: 0.1).
        fuse_stride: stride (w.r.t. the input image) at which the features are fused.
        norm: the fusion layer's normalisation, "group" or "batch" (SegFormer's).
    """

    def __init__(self, latent_channels: int, skip_channels: list[int], channels: int, num_classes: int,
                 dropout: float = 0.1, fuse_stride: int = 4, norm: str = "group") -> None:
        super().__init__()
        self.latent_proj = nn.Conv2d(latent_channels, channels, 1)
        self.skip_projs = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in skip_channels)
        n_inputs = 1 + len(skip_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(n_inputs * channels, channels, 1, bias=False),
            norm_layer(norm, channels),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.fuse_stride = fuse_stride

    @property
    def num_skips(self) -> int:
        return len(self.skip_projs)

    def features(self, z: torch.Tensor, skips: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """The fused features of z (B, Cz, h, w) and ``num_skips`` skip features for an output of
        ``size``: (B, channels, ceil(H/fuse_stride), ceil(W/fuse_stride))."""
        if len(skips) != self.num_skips:
            raise ValueError(f"decoder was built for {self.num_skips} skip features, got {len(skips)}")
        fine = (math.ceil(size[0] / self.fuse_stride), math.ceil(size[1] / self.fuse_stride))
        feats = [resize_to(self.latent_proj(z), fine)]  # (B, channels, H/4, W/4)
        feats += [resize_to(proj(f), fine) for proj, f in zip(self.skip_projs, skips)]
        return self.fuse(torch.cat(feats, dim=1))  # (B, channels, H/4, W/4)

    def classify(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Fused features (B, channels, H/4, W/4) -> logits (B, num_classes, *size)."""
        logits = self.classifier(self.dropout(x))  # (B, num_classes, H/4, W/4)
        return resize_to(logits, tuple(size))  # (B, num_classes, H, W)

    def forward(self, z: torch.Tensor, skips: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """z (B, Cz, h, w) and ``num_skips`` skip features -> logits (B, num_classes, *size)."""
        return self.classify(self.features(z, skips, size), size)
