"""Running eps_theta, a ``diffusers.UNet2DModel`` on concat(z_t, z0), on any latent size.

It runs on the latent grid (stride 16 by default), so inputs are tiny (8 x 16 for a 128 x 256 crop)
and often odd-sized. :func:`run_denoiser` pads the input (replicate) to a multiple of the U-Net's
total downsampling factor and crops the output back, so any latent size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel


def downsample_factor(unet: UNet2DModel) -> int:
    """Spatial sizes must be a multiple of this: 2**(number of levels - 1)."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (replicate: works for any size, reflect needs pad < size) at the bottom and right to a
    multiple of ``multiple``: (B, C, h, w) -> (B, C, h', w').

    The pad runs whenever ``multiple`` > 1, also where it adds nothing: a branch on the size would
    be fixed to the example's size when the network is traced for ONNX with a dynamic input size."""
    if multiple == 1:
        return x
    h, w = x.shape[-2:]
    # the padded sizes written as multiple * ceil(size / multiple), a form in which the tracer can
    # prove that the U-Net's down- and upsampling give the skip connections' sizes back
    pad_h, pad_w = multiple * ((h + multiple - 1) // multiple) - h, multiple * ((w + multiple - 1) // multiple) - w
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The top-left (h, w) = ``size`` of x (B, C, h', w'), h' >= h, w' >= w, written as a pad by
    negative amounts: a slice would make the tracer check h <= h', which it cannot prove for a
    dynamic size, and fix the ONNX graph to the example's size."""
    return F.pad(x, (0, size[1] - x.shape[-1], 0, size[0] - x.shape[-2]))


def run_denoiser(unet: UNet2DModel, z_t: torch.Tensor, z0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Raw network output on concat(z_t, z0) at timesteps ``t`` (B,), for any latent size.

    z_t, z0: (B, Cz, h, w) -> output (B, Cz, h, w).
    """
    factor = downsample_factor(unet)
    x = pad_to(torch.cat([z_t, z0], dim=1), factor)  # (B, 2Cz, h', w')
    out = unet(x, t, return_dict=False)[0]  # (B, Cz, h', w')
    return crop_to(out, tuple(z_t.shape[-2:])) if factor > 1 else out


