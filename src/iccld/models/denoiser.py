"""eps_theta, the denoising U-Net: a ``diffusers.UNet2DModel`` on concat(z_t, z0).

It runs on the latent grid (stride 16 by default), so inputs are tiny (8 x 16 for a 128 x 256 crop)
and often odd-sized. :func:`run_denoiser` pads the input (replicate) to a multiple of the U-Net's
total downsampling factor and crops the output back, so any latent size works.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_2d_blocks import DownBlock2D, UNetMidBlock2D, UpBlock2D

from ..errors import ConfigError


MIN_CHANNELS_PER_GROUP = 4
# PyTorch's own grain size (at::internal::GRAIN_SIZE): element-wise work below it stays on one thread
SMALL_ACTIVATION = 32768


def norm_groups(channels: list[int], requested: int = 0) -> int:
    """GroupNorm groups of the U-Net: ``requested`` after checking it, or with 0 the most groups (<= 32,
    diffusers' default) that divide every level's channels and leave >= 4 channels per group.

    With one channel per group, the norm after each ResNet block adds its timestep projection (one
    shift per channel) subtracts that shift again: the network would be blind to t.
    """
    if requested < 0:
        raise ConfigError(f"model.unet_norm_groups: must be >= 0 (0 picks a count), got {requested}")
    if requested:
        bad = [c for c in channels if c % requested]
        if bad:
            raise ConfigError(f"model.unet_norm_groups: {requested} groups do not divide the U-Net's "
                              f"channels {bad} (model.unet_channels={channels})")
        if min(channels) // requested < 2:
            raise ConfigError(f"model.unet_norm_groups: {requested} groups leave one channel per group at "
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
            (used with the residual parameterisation, see ICCLD.denoise).
        groups: GroupNorm groups; 0 picks them (see :func:`norm_groups`).
    """
    if not channels:
        raise ConfigError("model.unet_channels: needs at least one level, e.g. [128, 256, 256]")
    if layers_per_block < 0:
        raise ConfigError(f"model.unet_layers_per_block: must be >= 0, got {layers_per_block}")
    if layers_per_block == 0 and len(set(channels)) > 1:
        raise ConfigError(f"model.unet_layers_per_block=0 needs the same channels on every level (the down "
                          f"path then has no ResNet block to change them), got unet_channels={channels}")
    if mid_attention and not mid_block:
        raise ConfigError("model.unet_attention: the attention sits in the U-Net's middle block, which "
                          "model.unet_mid_block=false removes; set model.unet_attention=false as well")
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


def downsample_factor(unet: UNet2DModel) -> int:
    """Spatial sizes must be a multiple of this: 2**(number of levels - 1)."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (replicate: works for any size, reflect needs pad < size) at the bottom and right to a
    multiple of ``multiple``: (B, C, h, w) -> (B, C, h', w')."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


def run_denoiser(unet: UNet2DModel, z_t: torch.Tensor, z0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Raw network output on concat(z_t, z0) at timesteps ``t`` (B,), for any latent size.

    z_t, z0: (B, Cz, h, w) -> output (B, Cz, h, w).
    """
    h, w = z_t.shape[-2:]
    x = _pad_to(torch.cat([z_t, z0], dim=1), downsample_factor(unet))  # (B, 2Cz, h', w')
    out = unet(x, t, return_dict=False)[0]  # (B, Cz, h', w')
    return out[..., :h, :w]


def _conv(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _norm_act(norm: torch.nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    return F.silu(F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps))


def _plain_resnet(block: ResnetBlock2D) -> bool:
    """A ResNet block whose forward is norm-SiLU-conv, + time projection, norm-SiLU-conv, + shortcut."""
    convs = [block.conv1, block.conv2] + ([block.conv_shortcut] if block.conv_shortcut is not None else [])
    return (block.upsample is None and block.downsample is None and block.time_emb_proj is not None
            and block.time_embedding_norm == "default" and not block.skip_time_act
            and block.output_scale_factor == 1.0 and isinstance(block.nonlinearity, torch.nn.SiLU)
            and all(type(c) is torch.nn.Conv2d and c.padding_mode == "zeros" for c in convs)
            and all(type(n) is torch.nn.GroupNorm for n in (block.norm1, block.norm2)))


def _resnets(unet: UNet2DModel) -> list[ResnetBlock2D]:
    """Every ResNet block of the U-Net: down path, up path, then the middle block's."""
    mid = list(unet.mid_block.resnets) if unet.mid_block is not None else []
    return [r for b in (*unet.down_blocks, *unet.up_blocks) for r in b.resnets] + mid


def supports_fixed_steps(unet: UNet2DModel) -> bool:
    """Whether :class:`FixedStepDenoiser` can run this U-Net: the configurations :func:`build_denoiser`
    makes (plain Down/UpBlock2D levels, optional UNetMidBlock2D, positional time embedding, SiLU)."""
    cfg = unet.config
    if (cfg.time_embedding_type != "positional" or unet.class_embedding is not None
            or type(unet.conv_in) is not torch.nn.Conv2d or type(unet.conv_out) is not torch.nn.Conv2d
            or type(unet.conv_norm_out) is not torch.nn.GroupNorm or not isinstance(unet.conv_act, torch.nn.SiLU)
            or any(type(b) is not DownBlock2D for b in unet.down_blocks)
            or any(type(b) is not UpBlock2D for b in unet.up_blocks)
            or any(getattr(b, "s1", None) for b in unet.up_blocks)):  # FreeU switched on
        return False
    mid = unet.mid_block
    if mid is not None and (type(mid) is not UNetMidBlock2D
                            or any(a is not None and a.spatial_norm is not None for a in mid.attentions)):
        return False
    return all(_plain_resnet(r) for r in _resnets(unet))


class FixedStepDenoiser:
    """eps_theta at a fixed list of timesteps, for sampling without gradients: the same outputs as
    :func:`run_denoiser` (the same operations on the same weights, in the same order), at a fraction
    of its fixed cost per call.

    On the stride-16 latent a U-Net call is mostly fixed cost, paid per operation: the generic
    ``UNet2DModel.forward`` (argument handling, block dispatch, module calls) and the timestep MLP
    and per-block time projections, recomputed on every call although a K-step DDIM loop only ever
    sees K timesteps. This runner embeds the K timesteps once, in one batch, projects them once per
    ResNet block, and then calls the convolutions and norms directly in a plain loop. The difference
    is largest where operations are cheapest: small latents on a CPU, or kernel launches on a GPU.

    Use only on U-Nets for which :func:`supports_fixed_steps` holds, under ``torch.no_grad()``. The
    projections are computed once, here: :meth:`matches` says whether a runner can be reused (same
    timesteps, time-embedding weights unchanged); all other weights are read at each call.
    """

    def __init__(self, unet: UNet2DModel, timesteps: list[int]):
        if not supports_fixed_steps(unet):
            raise ValueError("FixedStepDenoiser: this U-Net configuration is not supported; use run_denoiser")
        self.unet = unet
        self.row = {t: i for i, t in enumerate(timesteps)}
        t = torch.tensor(timesteps, dtype=torch.long, device=unet.conv_in.weight.device)  # (K,)
        emb = unet.time_embedding(unet.time_proj(t).to(dtype=unet.dtype))  # (K, D)
        # each ResNet block's time projection of every timestep: (K, C, 1, 1)
        self.projections = {r: r.time_emb_proj(F.silu(emb))[:, :, None, None] for r in _resnets(unet)}
        self._key = self._weights_key()

    def _weights_key(self) -> tuple:
        """Storage and version counter (bumped by every in-place change: optimizer and EMA steps,
        load_state_dict) of each weight the projections were computed from, and the autocast state
        they were computed under."""
        tensors = [*self.unet.time_embedding.parameters(),
                   *(p for r in self.projections for p in r.time_emb_proj.parameters())]
        device = self.unet.conv_in.weight.device.type
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        return (autocast, *((p.data_ptr(), p._version) for p in tensors))

    def matches(self, unet: UNet2DModel, timesteps: list[int]) -> bool:
        """Whether this runner still serves ``unet`` at ``timesteps``: the same U-Net and timesteps,
        and the weights its time projections came from unchanged since it was built."""
        return unet is self.unet and list(self.row) == list(timesteps) and self._key == self._weights_key()

    def _resnet(self, block: ResnetBlock2D, x: torch.Tensor, k: int) -> torch.Tensor:
        h = _conv(block.conv1, _norm_act(block.norm1, x))
        h = _conv(block.conv2, block.dropout(_norm_act(block.norm2, h + self.projections[block][k:k + 1])))
        if block.conv_shortcut is not None:
            x = _conv(block.conv_shortcut, x)
        return x + h

    def __call__(self, z_t: torch.Tensor, z0: torch.Tensor, t: int) -> torch.Tensor:
        """Raw output on concat(z_t, z0) (B, Cz, h, w each) at timestep ``t`` (one of the timesteps
        given at construction, shared by the batch): (B, Cz, h, w)."""
        unet, k = self.unet, self.row[t]
        h, w = z_t.shape[-2:]
        x = _conv(unet.conv_in, _pad_to(torch.cat([z_t, z0], dim=1), downsample_factor(unet)))
        skips = [x]
        for block in unet.down_blocks:
            for r in block.resnets:
                x = self._resnet(r, x, k)
                skips.append(x)
            for down in block.downsamplers or []:
                x = down(x)
                skips.append(x)
        if unet.mid_block is not None:
            x = self._resnet(unet.mid_block.resnets[0], x, k)
            for attn, r in zip(unet.mid_block.attentions, unet.mid_block.resnets[1:]):
                if attn is not None:
                    x = attn(x)
                x = self._resnet(r, x, k)
        for block in unet.up_blocks:
            for r in block.resnets:
                x = self._resnet(r, torch.cat([x, skips.pop()], dim=1), k)
            for up in block.upsamplers or []:
                x = up(x)
        x = _conv(unet.conv_out, _norm_act(unet.conv_norm_out, x))
        return x[..., :h, :w]


@contextlib.contextmanager
def sampling_threads(unet: UNet2DModel, z: torch.Tensor) -> Iterator[None]:
    """Run the block on one CPU thread when the U-Net's activations on latents like z (B, Cz, h, w)
    are small (B * h * w * widest level <= SMALL_ACTIVATION, e.g. a 16 x 8 latent of the CPU preset).

    Such operations take microseconds, and convolutions and norms still open a parallel region
    each: waking the other threads then costs more than they save, by far under
    ``OMP_WAIT_POLICY=PASSIVE`` (the CLI's setting), where idle threads sleep between regions.
    Larger latents (the paper preset's 32 x 32 at 512 x 512) and GPU tensors are left alone.
    """
    b, _, h, w = z.shape
    threads = torch.get_num_threads()
    small = z.device.type == "cpu" and b * h * w * max(unet.config.block_out_channels) <= SMALL_ACTIVATION
    if not small or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
