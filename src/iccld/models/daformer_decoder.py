"""D as DAFormer's context-aware fusion head (``model.decoder: daformer``).

DAFormer (Hoyer et al., CVPR 2022, its config ``daformer_sepaspp_mitb5``) embeds each of E's four
levels by a linear layer to 256 channels (here a 1x1 conv with bias, the same map and the same
parameters), upsamples the embeddings bilinearly to stride 4 (``align_corners=False``),
concatenates them and fuses them with a depthwise separable ASPP:

- four parallel branches at dilations 1, 6, 12 and 18, each to 256 channels: dilation 1 is a 1x1
  conv; the others a depthwise 3x3 conv at that dilation then a pointwise 1x1 conv;
- no image-pooling branch (``pool=False``);
- a 3x3 conv from the concatenated branches (4 x 256) back to 256 channels;
- every conv of the fusion without bias and followed by BatchNorm and ReLU (the depthwise ones too);

then channel dropout 0.1 and a 1x1 classifier (with bias) at stride 4; the logits are upsampled
bilinearly to the input size. Initialisation follows DAFormer's (mmcv's): the fusion's convs
Kaiming-normal (fan-out, ReLU), the classifier normal with std 0.01 and zero bias, the embeddings
PyTorch's default (that of its ``nn.Linear``).

[ours] The latent z (z0 on the direct path, z0_hat on the diffusion path) joins as one more input,
embedded like a level and concatenated after the levels, so the ASPP reads ``(levels + 1) x
channels`` channels. Built without it (``latent_channels=0``) on MiT's four levels, this module is
DAFormer's head. Without the inter-coder connection it fuses z alone.

BatchNorm as DAFormer has it (``norm="batch"``, the default), unlike the ``segformer`` decoder's
GroupNorm: a frozen D keeps its statistics because stage 2 holds its frozen parts in eval mode.
BatchNorm's running statistics are gathered on source and mixed batches; an EMA teacher that predicts
with them can be unsure of every target pixel, so that no pseudo-label passes the confidence
threshold. DAFormer's teacher normalises the target batch by itself instead (``method.teacher_norm:
batch``, what the paper-scale configs use). [ours] ``norm="group"`` puts GroupNorm in every
BatchNorm's place (the same parameters, no running statistics); measured, it recovers only part of
the loss (docs/benchmarks.md, "D's decoder").
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .latent_head import norm_layer, resize_to

# DAFormer's ASPP dilations
DILATIONS = (1, 6, 12, 18)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1,
                 groups: int = 1, norm: str = "batch") -> nn.Sequential:
    """conv (no bias, "same" padding) -> BatchNorm (or ``norm``) -> ReLU, initialised as mmcv's ConvModule."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                     dilation=dilation, groups=groups, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, norm_layer(norm, out_channels), nn.ReLU(inplace=True))


class SeparableASPP(nn.Module):
    """DAFormer's fusion: a depthwise separable ASPP without image pooling, then a 3x3 bottleneck.

    (B, in_channels, h, w) -> (B, channels, h, w).
    """

    def __init__(self, in_channels: int, channels: int, dilations: tuple[int, ...] = DILATIONS,
                 norm: str = "batch") -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            conv_bn_relu(in_channels, channels, 1, norm=norm) if d == 1 else nn.Sequential(
                conv_bn_relu(in_channels, in_channels, 3, dilation=d, groups=in_channels, norm=norm),  # depthwise
                conv_bn_relu(in_channels, channels, 1, norm=norm),  # pointwise
            )
            for d in dilations)
        self.bottleneck = conv_bn_relu(len(dilations) * channels, channels, 3, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([branch(x) for branch in self.branches], dim=1))


class DAFormerDecoder(nn.Module):
    """D(z, skips) -> logits, DAFormer's head with the latent as one more input.

    Args:
        latent_channels: Cz, channels of z; 0 builds the head without the latent input (DAFormer's
            own head), whose ``forward`` then takes ``z=None``.
        skip_channels: channels of each skip feature (E's levels), in the order they are passed to
            ``forward``; empty for the ablation without the inter-coder connection.
        channels: width of the embeddings and of the fusion (DAFormer: 256 for both).
        num_classes: number of output classes.
        dropout: channel dropout before the classifier (DAFormer: 0.1).
        dilations: the ASPP's dilations.
        fuse_stride: stride (w.r.t. the input image) at which the inputs are fused.
        norm: the fusion's normalisation, "batch" (DAFormer's) or "group".
    """

    def __init__(self, latent_channels: int, skip_channels: list[int], channels: int, num_classes: int,
                 dropout: float = 0.1, dilations: tuple[int, ...] = DILATIONS, fuse_stride: int = 4,
                 norm: str = "batch") -> None:
        super().__init__()
        if latent_channels < 0:
            raise ValueError(f"latent_channels: must be >= 0, got {latent_channels}")
        if latent_channels == 0 and not skip_channels:
            raise ValueError("decoder: without the latent input it needs at least one skip feature")
        # the same names as the segformer decoder's layers
        self.skip_projs = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in skip_channels)
        self.latent_proj = nn.Conv2d(latent_channels, channels, 1) if latent_channels else None
        n_inputs = len(skip_channels) + (1 if latent_channels else 0)
        self.fuse = SeparableASPP(n_inputs * channels, channels, tuple(dilations), norm)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)
        self.fuse_stride = fuse_stride

    @property
    def num_skips(self) -> int:
        return len(self.skip_projs)

    def features(self, z: torch.Tensor | None, skips: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """The fused features of z (B, Cz, h, w), or None without the latent input, and ``num_skips``
        skip features for an output of ``size``: (B, channels, ceil(H/fuse_stride), ceil(W/fuse_stride))."""
        if len(skips) != self.num_skips:
            raise ValueError(f"decoder was built for {self.num_skips} skip features, got {len(skips)}")
        if (z is None) != (self.latent_proj is None):
            raise ValueError("decoder: z must be given exactly when the decoder has a latent input")
        fine = (math.ceil(size[0] / self.fuse_stride), math.ceil(size[1] / self.fuse_stride))
        feats = [resize_to(proj(f), fine) for proj, f in zip(self.skip_projs, skips)]  # each (B, channels, H/4, W/4)
        if z is not None:
            feats.append(resize_to(self.latent_proj(z), fine))
        return self.fuse(torch.cat(feats, dim=1))  # (B, channels, H/4, W/4)

    def classify(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Fused features (B, channels, H/4, W/4) -> logits (B, num_classes, *size)."""
        logits = self.classifier(self.dropout(x))  # (B, num_classes, H/4, W/4)
        return resize_to(logits, tuple(size))  # (B, num_classes, H, W)

    def forward(self, z: torch.Tensor | None, skips: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """z (B, Cz, h, w) (None without the latent input) and ``num_skips`` skip features -> logits
        (B, num_classes, *size)."""
        return self.classify(self.features(z, skips, size), size)
