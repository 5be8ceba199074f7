"""The stage-2 latent discriminator: a small convolutional patch discriminator.

[ours] As in AdvSeg/ADVENT, but on latents: it scores every patch of a latent map as source (1)
or target (0) and is trained with the least-squares GAN loss, so it outputs raw scores (no sigmoid).
Stride-2 convs use kernel 3 / padding 1, whose output size ceil(n/2) is never zero, so latents as
small as 1 x 1 work; the last layers keep the resolution (stride 1).
"""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """Input (B, in_channels, h, w) -> patch scores (B, out_channels, ceil(h/2**n), ceil(w/2**n)), n = num_downsamples.

    Args:
        in_channels: Cz for the latent critic (z0_hat at stride s); decoder_channels for the fused
            critic (``method.adversarial_input=fused``: D's fused features at stride 4).
        channels: width of the first layer; it doubles at every stride-2 layer.
        num_downsamples: number of stride-2 layers.
        negative_slope: of the LeakyReLU.
        out_channels: 1 (a source-vs-target score); 3 for stage 2's third-class critic
            (``method.adversarial_mixed=third``: one score per domain, source, mixed, target).
    """

    def __init__(self, in_channels: int, channels: int = 64, num_downsamples: int = 2,
                 negative_slope: float = 0.2, out_channels: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c_out = in_channels, channels
        for _ in range(num_downsamples):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.LeakyReLU(negative_slope, inplace=True)]
            c_in, c_out = c_out, c_out * 2
        layers += [nn.Conv2d(c_in, c_out, 3, stride=1, padding=1), nn.LeakyReLU(negative_slope, inplace=True)]
        layers += [nn.Conv2d(c_out, out_channels, 3, stride=1, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
