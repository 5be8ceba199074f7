"""DINOv2 ViT-S/B/L/g (``transformers.Dinov2Model``) with a small multi-scale neck.

A plain ViT has one feature map: its patch tokens at stride 14. The latent head and D need a
pyramid at strides 4, 8, 16 and 32, so a neck builds one from the last layer's tokens, as ViTDet's
"simple feature pyramid" does from a single stride-16 map (Li et al. 2022): two transposed convs
for the finest level, one for the next, the map itself, and a max-pool for the coarsest.

    x (B, 3, H, W) --pad to a multiple of 14--> ViT --> tokens (B, C, ceil(H/14), ceil(W/14))
        --> ConvT, GN, GELU, ConvT --> C/4 channels --resize--> (ceil(H/4),  ceil(W/4))
        --> ConvT                 --> C/2 channels --resize--> (ceil(H/8),  ceil(W/8))
        --> identity              --> C   channels --resize--> (ceil(H/16), ceil(W/16))
        --> max-pool 2            --> C   channels --resize--> (ceil(H/32), ceil(W/32))

Any input size works: the image is zero-padded at the bottom and right to a multiple of the patch
size (``Dinov2Model`` interpolates its position embeddings to the grid), the padded tokens are
cropped off the grid, and each level is resized to the exact size its declared stride gives.
[ours] GroupNorm in the neck where ViTDet has a channel LayerNorm; the resize to strides 4..32
(the ViT's own stride is 14, not 16).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Dinov2Config, Dinov2Model

from .normalization import IMAGENET_MEAN, IMAGENET_STD
from ..latent_head import group_count, resize_to

# hub configurations of facebook/dinov2-{small,base,large,giant}; "dinov2-tiny" is ours, for tests
DINOV2_ARCHS: dict[str, dict] = {
    "dinov2-tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2),
    "dinov2-small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
    "dinov2-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
    "dinov2-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
    "dinov2-giant": dict(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, use_swiglu_ffn=True),
}
STRIDES = (4, 8, 16, 32)


def dinov2_config(variant: str, drop_path_rate: float = 0.1) -> Dinov2Config:
    if variant not in DINOV2_ARCHS:
        raise ValueError(f"DINOv2 variant '{variant}' is not one of {', '.join(DINOV2_ARCHS)}")
    return Dinov2Config(patch_size=14, image_size=518, mlp_ratio=4, drop_path_rate=drop_path_rate,
                        **DINOV2_ARCHS[variant])


class DINOv2(nn.Module):
    """A DINOv2 ViT (``self.vit``, a ``Dinov2Model``) and the neck above; ``forward(x)`` returns the
    four levels at :attr:`strides` with :attr:`channels`."""

    hf_class = Dinov2Model
    strides = STRIDES
    min_input_size = 1
    input_mean = IMAGENET_MEAN  # the ImageNet weights' (and the pipeline's) normalisation
    input_std = IMAGENET_STD

    def __init__(self, config: Dinov2Config) -> None:
        super().__init__()
        self.vit = Dinov2Model(config)
        c = config.hidden_size
        self.patch_size = config.patch_size
        self.channels = (c // 4, c // 2, c, c)
        self.neck = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, stride=2), nn.GroupNorm(group_count(c // 2), c // 2),
                          nn.GELU(), nn.ConvTranspose2d(c // 2, c // 4, 2, stride=2)),
            nn.ConvTranspose2d(c, c // 2, 2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(2, ceil_mode=True),
        ])

    def pretrained_part(self) -> Dinov2Model:
        return self.vit

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, H, W) -> [(B, channels[i], ceil(H/s_i), ceil(W/s_i)) for s_i in 4, 8, 16, 32]."""
        b, _, h, w = x.shape
        p = self.patch_size
        x = F.pad(x, (0, (-w) % p, 0, (-h) % p))  # (B, 3, H', W'), multiples of 14
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        tokens = self.vit(pixel_values=x).last_hidden_state[:, 1:]  # (B, H'/14 * W'/14, C), CLS dropped
        f = tokens.transpose(1, 2).reshape(b, -1, *grid)  # (B, C, H'/14, W'/14)
        f = f[..., :math.ceil(h / p), :math.ceil(w / p)]  # tokens of padding only are cropped off
        return [resize_to(layer(f), (math.ceil(h / s), math.ceil(w / s)))
                for layer, s in zip(self.neck, self.strides)]


def build_dinov2(variant: str, drop_path_rate: float = 0.1, **config_overrides) -> DINOv2:
    """A randomly initialised DINOv2 + neck; ``config_overrides`` replace Dinov2Config fields."""
    config = dinov2_config(variant, drop_path_rate)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    return DINOv2(config)
