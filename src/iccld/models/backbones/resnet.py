"""ResNet-101 (``transformers.ResNetModel``), the DeepLabV2-era backbone many UDA tables report.

Its four stages give strides 4, 8, 16 and 32 (the stem's stride-2 conv and max-pool, then one
stride-2 stage after another). Every stride-2 layer pads by kernel // 2, so for an input of
H x W level i is (ceil(H/s_i), ceil(W/s_i)): any input size works, e.g. 70 x 90.
ImageNet weights: ``microsoft/resnet-101``. [ours] No dilation: DeepLabV2 keeps strides 16/32 at
8 with dilated convs; this backbone keeps the strides the latent head and D expect.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import ResNetConfig, ResNetModel

from .normalization import IMAGENET_MEAN, IMAGENET_STD

# hub configurations of microsoft/resnet-{50,101}; "resnet-tiny" is ours, for tests
RESNET_ARCHS: dict[str, dict] = {
    "resnet-tiny": dict(embedding_size=8, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1]),
    "resnet-50": dict(embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3]),
    "resnet-101": dict(embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 23, 3]),
}
STRIDES = (4, 8, 16, 32)


def resnet_config(variant: str) -> ResNetConfig:
    if variant not in RESNET_ARCHS:
        raise ValueError(f"ResNet variant '{variant}' is not one of {', '.join(RESNET_ARCHS)}")
    return ResNetConfig(layer_type="bottleneck", **RESNET_ARCHS[variant])


class ResNet(nn.Module):
    """A ``ResNetModel`` (``self.resnet``) whose ``forward(x)`` returns its four stage outputs."""

    hf_class = ResNetModel
    strides = STRIDES
    min_input_size = 1
    input_mean = IMAGENET_MEAN  # the ImageNet weights' (and the pipeline's) normalisation
    input_std = IMAGENET_STD

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.resnet = ResNetModel(config)
        self.channels = tuple(config.hidden_sizes)

    def pretrained_part(self) -> ResNetModel:
        return self.resnet

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, H, W) -> [(B, channels[i], ceil(H/s_i), ceil(W/s_i)) for s_i in 4, 8, 16, 32]."""
        out = self.resnet(pixel_values=x, output_hidden_states=True, return_dict=True)
        return list(out.hidden_states[1:])  # hidden_states[0] is the stem's output


def build_resnet(variant: str, drop_path_rate: float = 0.0, **config_overrides) -> ResNet:
    """A randomly initialised ResNet; ``drop_path_rate`` is unused (no stochastic depth in it)."""
    config = resnet_config(variant)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    return ResNet(config)
