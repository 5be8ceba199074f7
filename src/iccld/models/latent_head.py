"""The latent head: E's two deepest feature levels -> the image latent z0.

[ours] The stride-16 and stride-32 MiT features are projected (1x1), resized to the latent grid
(ceil(H/s), ceil(W/s)), concatenated, fused by a 3x3 conv and projected to Cz channels. By default
every latent vector is then normalised over its Cz channels (zero mean, unit variance, no affine):
the diffusion noise schedule assumes a latent of roughly unit scale, and a latent learnt freely in
stage 1 drifts in scale. A per-pixel norm (unlike a per-image GroupNorm) does not depend on the
crop, so sliding-window and whole-image inference see the same z0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_count(channels: int, max_groups: int = 32) -> int:
    """The largest group count <= ``max_groups`` that divides ``channels`` (for GroupNorm)."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


NORMS = ("batch", "group")  # the decoders' normalisation layers (model.decoder_norm)


def norm_layer(norm: str, channels: int) -> nn.Module:
    """BatchNorm, or GroupNorm with the most groups (<= 32) that divide ``channels``."""
    if norm not in NORMS:
        raise ValueError(f"norm: one of {NORMS}, got {norm!r}")
    return nn.BatchNorm2d(channels) if norm == "batch" else nn.GroupNorm(group_count(channels), channels)


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) to (B, C, *size); a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class LatentHead(nn.Module):
    """Maps the two deepest encoder features to z0 (B, Cz, ceil(H/s), ceil(W/s)).

    Args:
        in_channels: channels of the (stride-16, stride-32) features.
        latent_channels: Cz.
        hidden_channels: width of the fusion conv.
        normalize: normalise every latent vector over its channels (see the module docstring).
    """

    def __init__(self, in_channels: tuple[int, int], latent_channels: int, hidden_channels: int,
                 normalize: bool = True) -> None:
        super().__init__()
        self.proj_deep = nn.Conv2d(in_channels[0], hidden_channels, 1)
        self.proj_deepest = nn.Conv2d(in_channels[1], hidden_channels, 1)
        self.fuse = nn.Sequential(
            nn.Conv2d(2 * hidden_channels, hidden_channels, 3, padding=1, bias=False),
            nn.GroupNorm(group_count(hidden_channels), hidden_channels),
            nn.GELU(),
            nn.Conv2d(hidden_channels, latent_channels, 1),
        )
        self.normalize = normalize
        self.eps = 1e-5

    def forward(self, f_deep: torch.Tensor, f_deepest: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``f_deep`` (B, C3, H/16, W/16), ``f_deepest`` (B, C4, H/32, W/32) -> z0 (B, Cz, *size)."""
        a = resize_to(self.proj_deep(f_deep), size)  # (B, hidden, *size)
        b = resize_to(self.proj_deepest(f_deepest), size)  # (B, hidden, *size)
        z = self.fuse(torch.cat([a, b], dim=1))  # (B, Cz, *size)
        if self.normalize:
            mean = z.mean(dim=1, keepdim=True)
            var = z.var(dim=1, keepdim=True, unbiased=False)
            z = (z - mean) * torch.rsqrt(var + self.eps)
        return z
