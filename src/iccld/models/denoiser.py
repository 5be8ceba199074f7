"""eps_theta, the denoising U-Net: a ``diffusers.UNet2DModel`` on concat(z_t, z0).

This file builds it; running it on any latent size, and the fast sampling runner, belong to the
latent diffusion (:mod:`iccld.diffusion.latent`, :mod:`iccld.diffusion.fixed_steps`).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel


MIN_CHANNELS_PER_GROUP = 4


def norm_groups(channels: list[int], requested: int = 0) -> int:
    """GroupNorm groups of the U-Net: ``requested`` after checking it, or with 0 the most groups (<= 32,
    diffusers' default) that divide every level's channels and leave >= 4 channels per group.

    With one channel per group, the norm after each ResNet block adds its timestep projection (one
    shift per channel) subtracts that shift again: the network would be blind to t.
    """
    if requested < 0:
        raise ValueError(f"unet_norm_groups: must be >= 0 (0 picks a count), got {requested}")
    if requested:
        bad = [c for c in channels if c % requested]
        if bad:
            raise ValueError(f"unet_norm_groups: {requested} groups do not divide the U-Net's "
                             f"channels {bad} (unet_channels={channels})")
        if min(channels) // requested < 2:
            raise ValueError(f"unet_norm_groups: {requested} groups leave one channel per group at "
                              f"{min(channels)} channels; GroupNorm would then remove the timestep "
                              f"embedding (the U-Net could not see t). Use at most {min(channels) // 2}, "
                              f"or 0 to pick a count")
        return requested
    for g in range(32, 0, -1):
        if all(c % g == 0 and c // g >= MIN_CHANNELS_PER_GROUP for c in channels):
            return g
    return 1


def build_denoiser(latent_channels: int, channels: list[int], layers_per_block: int,
                   mid_attention: bool = True, attention_head_dim: int = 8,
                   zero_output: bool = False, mid_block: bool = True, groups: int = 0) -> UNet2DModel:
    """A U-Net with in_channels = 2*Cz (z_t and the condition z0) and out_channels = Cz.

    Args:
        latent_channels: Cz.
        channels: output channels of each resolution level; level i runs at 1/2**i of the latent grid.
        layers_per_block: ResNet blocks per level of the down path; the up path has one more, as in
            diffusers (0: one ResNet block per level, on the up path only).
        mid_attention: self-attention in the middle block (off for the CPU preset).
        mid_block: keep the middle block (two ResNet blocks, optionally with attention, at the
            lowest resolution). Off for the CPU preset, where each block costs fixed per-op overhead.
        zero_output: zero-initialise the output convolution, so the network starts at output 0
            (used with the residual parameterisation, see LatentDiffusion.denoise).
        groups: GroupNorm groups; 0 picks them (see :func:`norm_groups`).
    """
    if not channels:
        raise ValueError("unet_channels: needs at least one level, e.g. [128, 256, 256]")
    if layers_per_block < 0:
        raise ValueError(f"unet_layers_per_block: must be >= 0, got {layers_per_block}")
    if layers_per_block == 0 and len(set(channels)) > 1:
        raise ValueError(f"unet_layers_per_block=0 needs the same channels on every level (the down "
                          f"path then has no ResNet block to change them), got unet_channels={channels}")
    if mid_attention and not mid_block:
        raise ValueError("unet_attention: the attention sits in the U-Net's middle block, which "
                          "unet_mid_block=false removes; set model.unet_attention=false as well")
    groups = norm_groups(channels, groups)
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
