"""eps_theta, the denoising U-Net: a ``diffusers.UNet2DModel`` on concat(z_t, z0).

It runs on the latent grid (stride 16 by default), so inputs are tiny (8 x 16 for a 128 x 256 crop)
and often odd-sized. :func:`run_denoiser` pads the input (replicate) to a multiple of the U-Net's
total downsampling factor and crops the output back, so any latent size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from ..errors import ConfigError
from .latent_head import group_count


def build_denoiser(latent_channels: int, channels: list[int], layers_per_block: int,
                   mid_attention: bool = True, attention_head_dim: int = 8,
                   zero_output: bool = False, mid_block: bool = True) -> UNet2DModel:
    """A U-Net with in_channels = 2*Cz (z_t and the condition z0) and out_channels = Cz.

    Args:
        latent_channels: Cz.
        channels: output channels of each resolution level; level i runs at 1/2**i of the latent grid.
        layers_per_block: ResNet blocks per level (the up path has one more, as in diffusers).
        mid_attention: self-attention in the middle block (off for the CPU preset).
        mid_block: keep the middle block (two ResNet blocks, optionally with attention, at the
            lowest resolution). Off for the CPU preset, where each block costs fixed per-op overhead.
        zero_output: zero-initialise the output convolution, so the network starts at output 0
            (used with the residual parameterisation, see ICCLD.denoise).
    """
    if not channels:
        raise ConfigError("model.unet_channels: needs at least one level, e.g. [128, 256, 256]")
    if layers_per_block < 1:
        raise ConfigError(f"model.unet_layers_per_block: must be >= 1, got {layers_per_block}")
    if mid_attention and not mid_block:
        raise ConfigError("model.unet_attention: the attention sits in the U-Net's middle block, which "
                          "model.unet_mid_block=false removes; set model.unet_attention=false as well")
    groups = min(group_count(c) for c in channels)
    n = len(channels)
    unet = UNet2DModel(
        in_channels=2 * latent_channels,
        out_channels=latent_channels,
        block_out_channels=tuple(channels),
        down_block_types=("DownBlock2D",) * n,
        up_block_types=("UpBlock2D",) * n,
        layers_per_block=layers_per_block,
        norm_num_groups=groups,
        add_attention=mid_attention,
        mid_block_type="UNetMidBlock2D" if mid_block else None,
        attention_head_dim=attention_head_dim,
    )
    if zero_output:
        torch.nn.init.zeros_(unet.conv_out.weight)
        torch.nn.init.zeros_(unet.conv_out.bias)
    return unet


def downsample_factor(unet: UNet2DModel) -> int:
    """Spatial sizes must be a multiple of this: 2**(number of levels - 1)."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def run_denoiser(unet: UNet2DModel, z_t: torch.Tensor, z0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Raw network output on concat(z_t, z0) at timesteps ``t`` (B,), for any latent size.

    z_t, z0: (B, Cz, h, w) -> output (B, Cz, h, w).
    """
    x = torch.cat([z_t, z0], dim=1)  # (B, 2Cz, h, w)
    h, w = x.shape[-2:]
    m = downsample_factor(unet)
    pad_h, pad_w = (-h) % m, (-w) % m
    if pad_h or pad_w:  # replicate works for any size (reflect needs pad < size)
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")  # (B, 2Cz, h', w')
    out = unet(x, t, return_dict=False)[0]  # (B, Cz, h', w')
    return out[..., :h, :w]
