"""Model presets."""

import dataclasses

import pytest

from iccld.config import ModelConfig
from iccld.errors import ConfigError
from iccld.io import build_model_from_config
from iccld.presets import PRESETS, preset


def test_paper_preset_is_the_default_config_with_mit_b5():
    assert preset("paper") == ModelConfig(backbone="mit-b5")
    assert dataclasses.asdict(ModelConfig()) == dataclasses.asdict(preset("paper"))


def test_cpu_preset_is_small_and_its_unet_has_no_middle_block():
    cfg = preset("cpu")
    assert cfg.backbone == "mit-tiny" and cfg.unet_layers_per_block == 0
    model = build_model_from_config(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert n < 2_000_000
    assert model.denoiser.mid_block is None  # no middle block, so no self-attention either
    resnets = [m for m in model.denoiser.modules() if type(m).__name__ == "ResnetBlock2D"]
    assert len(resnets) == 1  # 0 down + 1 up
    assert model.denoiser.conv_norm_out.num_groups == 4  # 4 channels per group: t is not normalised away


def count(cfg):
    return sum(p.numel() for p in build_model_from_config(cfg).denoiser.parameters())


def test_unet_middle_block_and_attention_when_asked():
    cpu = preset("cpu")
    model = build_model_from_config(dataclasses.replace(cpu, unet_mid_block=True, unet_attention=True))
    attention = model.denoiser.mid_block.attentions[0]
    assert attention is not None and len(model.denoiser.mid_block.resnets) == 2
    # what the middle block adds, counted by hand for C = 16 channels and a time embedding of 4C = 64:
    # a ResNet block is two GroupNorms (2C each), two 3x3 convolutions (9C^2 + C each) and the time
    # projection (64C + C); the attention is a GroupNorm (2C) and q, k, v, out (C^2 + C each)
    c, temb = 16, 64
    resnet = 2 * 2 * c + 2 * (9 * c * c + c) + temb * c + c
    attn = 2 * c + 4 * (c * c + c)
    plain = count(cpu)
    assert count(dataclasses.replace(cpu, unet_mid_block=True)) - plain == 2 * resnet == 11488
    assert count(dataclasses.replace(cpu, unet_mid_block=True, unet_attention=True)) - plain == 2 * resnet + attn


def test_attention_without_middle_block_is_refused():
    with pytest.raises(ConfigError, match="unet_mid_block=false removes"):
        build_model_from_config(dataclasses.replace(preset("cpu"), unet_attention=True))


def test_preset_returns_a_copy():
    cfg = preset("cpu")
    cfg.unet_channels.append(999)
    cfg.latent_channels = 3
    assert PRESETS["cpu"].unet_channels == [16] and preset("cpu").latent_channels == 16


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ConfigError, match="cpu, paper.*did you mean 'paper'"):
        preset("papr")
