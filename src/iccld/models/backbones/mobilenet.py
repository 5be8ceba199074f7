"""MobileNetV2 (``transformers.MobileNetV2Model``): a small ImageNet CNN that trains on a CPU.

Its 17 inverted-residual blocks give the pyramid mmseg's MobileNetV2 gives a segmentation head: the
last block at each stride, ``hidden_states[1, 4, 11, 15]`` at strides 4, 8, 16 and 32 (24, 32, 96
and 320 channels at depth multiplier 1.0). The 1x1 conv to 1280 channels that feeds the ImageNet
classifier is not part of the encoder (its weights, like the classifier's, are reported as unused).
With TensorFlow's SAME padding (``tf_padding``, what the published weights were trained with) level
i of an H x W input is (ceil(H/s_i), ceil(W/s_i)) for any size.

Inputs: the weights (``google/mobilenet_v2_1.0_224``, or the converted copy the benchmark reads) expect
RGB scaled to [-1, 1] (mean 0.5, std 0.5 of x/255), not ImageNet mean/std: the backbone declares it
and converts the pipeline's batch on the way in (:mod:`.normalization`).

BatchNorm: transformers builds these layers with ``momentum=0.997``, TensorFlow's decay used as
PyTorch's momentum, so in train mode each step would replace 99.7% of the stored statistics with the
batch's. [ours] The backbone sets PyTorch's 0.01 instead (a slow moving average of the stored
statistics); whether BatchNorm uses batch statistics at all is ``ModelConfig.norm_eval`` (the ICCLD
network keeps E's BatchNorms in eval mode when it is set).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import MobileNetV2Config, MobileNetV2Model

from .normalization import input_normalization

# depth multipliers: 1.0 is the published ImageNet model; "mobilenet-v2-tiny" is ours, for tests
MOBILENET_ARCHS: dict[str, dict] = {
    "mobilenet-v2-tiny": dict(depth_multiplier=0.25),
    "mobilenet-v2-0.35": dict(depth_multiplier=0.35),
    "mobilenet-v2-0.5": dict(depth_multiplier=0.5),
    "mobilenet-v2-0.75": dict(depth_multiplier=0.75),
    "mobilenet-v2": dict(depth_multiplier=1.0),
    "mobilenet-v2-1.4": dict(depth_multiplier=1.4),
}
STRIDES = (4, 8, 16, 32)
LEVEL_BLOCKS = (1, 4, 11, 15)  # the last inverted-residual block at each stride
BN_MOMENTUM = 0.01


def mobilenet_v2_config(variant: str) -> MobileNetV2Config:
    """The published models' config (google/mobilenet_v2_*_224) at the variant's depth multiplier."""
    if variant not in MOBILENET_ARCHS:
        raise ValueError(f"MobileNetV2 variant '{variant}' is not one of {', '.join(MOBILENET_ARCHS)}")
    return MobileNetV2Config(tf_padding=True, layer_norm_eps=1e-3, hidden_act="relu6", finegrained_output=True,
                             first_layer_is_expansion=True, output_stride=32, **MOBILENET_ARCHS[variant])


class MobileNetV2(nn.Module):
    """A ``MobileNetV2Model`` (``self.mobilenet``, without its 1280-channel head conv) whose
    ``forward(x)`` returns the four levels at :attr:`strides` with :attr:`channels`."""

    hf_class = MobileNetV2Model
    strides = STRIDES
    min_input_size = 1
    input_mean = (127.5, 127.5, 127.5)  # [-1, 1]: what the published weights were trained on
    input_std = (127.5, 127.5, 127.5)

    def __init__(self, config: MobileNetV2Config) -> None:
        super().__init__()
        self.input_norm = input_normalization(self.input_mean, self.input_std)
        self.mobilenet = MobileNetV2Model(config, add_pooling_layer=False)
        self.mobilenet.conv_1x1 = nn.Identity()  # the classifier's 320 -> 1280 conv: not used here
        self.num_blocks = LEVEL_BLOCKS[-1] + 1
        self.mobilenet.layer = self.mobilenet.layer[:self.num_blocks]
        self.channels = tuple(self.mobilenet.layer[i].reduce_1x1.convolution.out_channels for i in LEVEL_BLOCKS)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = BN_MOMENTUM

    def pretrained_part(self) -> MobileNetV2Model:
        return self.mobilenet

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, H, W) in the pipeline's normalisation -> [(B, channels[i], ceil(H/s_i), ceil(W/s_i))
        for s_i in 4, 8, 16, 32]."""
        h = self.mobilenet.conv_stem(self.input_norm(x))
        feats = []
        for i, block in enumerate(self.mobilenet.layer):
            h = block(h)
            if i in LEVEL_BLOCKS:
                feats.append(h)
        return feats


def build_mobilenet_v2(variant: str, drop_path_rate: float = 0.0, **config_overrides) -> MobileNetV2:
    """A randomly initialised MobileNetV2; ``drop_path_rate`` is unused (no stochastic depth in it)."""
    config = mobilenet_v2_config(variant)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    return MobileNetV2(config)
