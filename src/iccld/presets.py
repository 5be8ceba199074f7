"""Named model configurations.

- ``cpu``: a tiny MiT, DAFormer's decoder at width 64 and a tiny U-Net for the synthetic benchmark and
  the tests (a stage-1 iteration of the demo, batch 4 + 4 at 128 x 128, takes about 0.8 s on 2 CPU
  cores with this decoder: README, the demo's timing).
  eps_theta runs on 8 x 8 latents there, where its cost is per-op overhead rather than arithmetic,
  so its U-Net has a single resolution level (no down/upsampling), one ResNet block per block and
  no middle block: 3 ResNet blocks per call. Its receptive field still covers a whole 128 x 128 crop
  (an 8 x 8 latent).
- ``paper``: MiT-B5, Cz = 32 at stride 16, the defaults of :class:`~iccld.config.ModelConfig`.
  Set ``model.pretrained`` (e.g. ``nvidia/mit-b5`` or a local copy) for ImageNet weights.
"""

from __future__ import annotations

import copy

from .sections import ModelConfig
from .errors import ConfigError, did_you_mean

PRESETS: dict[str, ModelConfig] = {
    "cpu": ModelConfig(
        backbone="mit-tiny",
        latent_channels=16,
        latent_stride=16,
        skip_strides=[4, 8, 16, 32],
        # DAFormer's context-aware fusion of all four levels, 64 wide: chosen on val over the segformer-style
        # head in both regimes (with method.teacher_norm: batch; docs/benchmarks.md, "D's decoder")
        decoder="daformer",
        decoder_channels=64,
        # one level of 16 channels (4 GroupNorm groups) and one ResNet block on the 16 x 8 latent:
        # there a U-Net call costs per operation, not per channel, and K=4 calls must cost <= 0.3x
        # the encoder + decoder on a 2-core CPU (docs/benchmarks.md)
        unet_channels=[16],
        unet_layers_per_block=0,
        unet_attention=False,
        unet_mid_block=False,
        sampling_steps=4,
    ),
    "paper": ModelConfig(backbone="mit-b5"),
}


def preset(name: str) -> ModelConfig:
    """A fresh copy of the named preset's ModelConfig."""
    if name not in PRESETS:
        raise ConfigError(f"model preset '{name}' is not one of {', '.join(PRESETS)}{did_you_mean(name, PRESETS)}")
    return copy.deepcopy(PRESETS[name])  # its lists and sections too
