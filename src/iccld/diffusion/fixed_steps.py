"""The CPU-speed runner of eps_theta for K-step sampling without gradients, beside the reference
path (:func:`iccld.diffusion.unet.run_denoiser`) and tested equal to it; used by
:class:`iccld.diffusion.latent.LatentDiffusion` when its ``fast_sampling`` flag is on (the default).

**A re-implementation of a library's forward.** :class:`FixedStepDenoiser` re-writes diffusers'
``UNet2DModel.forward`` (with ``DownBlock2D``, ``UpBlock2D``, ``UNetMidBlock2D`` and
``ResnetBlock2D``'s default path) for the configurations :func:`supports_fixed_steps` accepts. It
reads diffusers' modules and weights but not its control flow, so a diffusers release that changes
that forward (an extra scale, another order of operations) would silently change what sampling
computes. It is therefore pinned: :data:`MEASURED_DIFFUSERS` is the version it was checked against,
and tests/models/test_denoiser.py compares it with diffusers' own forward to 1e-5 on the ``cpu``
and ``paper`` presets' U-Nets (on any version) and fails, naming both versions, when another
diffusers is installed. To move to a new diffusers: run those tests, rerun
``benchmarks/fixed_steps_speed.py``, and update :data:`MEASURED_DIFFUSERS`; if the runner no longer
matches, set ``fast_sampling`` off by default rather than patch it blind.

Why keep it (``benchmarks/fixed_steps_speed.py``, diffusers 0.42.1, torch 2.13 CPU, one thread,
2 shared cores): on the ``cpu`` preset's 8x16 latent the K=4 sampling loop takes 6.2 ms instead of
10.1 ms (1.75x; K=10: 1.72x; 4 draws: 1.3-1.6x), the whole prediction of a 256x128 image 1.15x
less (K=10: 1.34x); without it the K=4 path would miss its 1.3x-the-stage-1-path target
(docs/benchmarks.md). On the ``paper`` preset's denoiser at a 32x32 latent the loop gains only
1.09x: there the convolutions, not the per-call overhead, dominate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_2d_blocks import DownBlock2D, UNetMidBlock2D, UpBlock2D

from .unet import downsample_factor, pad_to

#: the diffusers version whose ``UNet2DModel.forward`` this module re-implements and was checked against
MEASURED_DIFFUSERS = "0.42.1"


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
        x = _conv(unet.conv_in, pad_to(torch.cat([z_t, z0], dim=1), downsample_factor(unet)))
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
