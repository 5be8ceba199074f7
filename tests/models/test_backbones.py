"""E's backbones: every registered one declares the channels and strides it returns, carries the
latent head and D on an odd-sized image, trains through the normal trainer, and loads
transformers weights from a local folder with a load report."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import Dinov2Config, Dinov2ForImageClassification, Dinov2Model, ResNetModel

from iccld.errors import CheckpointError
from iccld.io import load_backbone_weights
from iccld.models import BACKBONES, build_backbone, build_model
from iccld.models.backbones.dinov2 import dinov2_config
from iccld.models.backbones.resnet import resnet_config

# small transformers configs for every family, so that even mit-b5 or dinov2-giant build in a blink
TINY = {
    "mit": dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 2]),
    "dinov2": dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2),
    "resnet": dict(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]),
    "mobilenet": dict(depth_multiplier=0.25),
}


def tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(name, **TINY[name.split("-")[0]])


def test_the_registry_names_every_family_and_lists_choices_on_a_typo():
    from iccld.config import load_config
    from iccld.errors import ConfigError

    assert {"mit-b0", "mit-b5", "dinov2-small", "dinov2-giant", "resnet-101"} <= set(BACKBONES)
    with pytest.raises(ValueError, match="mit-b5"):
        build_backbone("mit-b6")
    with pytest.raises(ConfigError, match=r"model.backbone: 'mit-b6' is not one of mit-tiny, .*mit-b5.*"
                                          r"\(did you mean 'mit-b5'\?\)"):
        load_config(None, ["model.backbone=mit-b6"])


def test_a_backbone_registered_at_run_time_is_a_config_choice_and_builds(monkeypatch):
    """A new backbone is one builder in BACKBONES: the config accepts its name (no copy of the list
    elsewhere) and the network builds around it."""
    from iccld.config import load_config
    from iccld.io import build_model_from_config
    from iccld.models.backbones import build_mit

    monkeypatch.setitem(BACKBONES, "toy-net", lambda name, rate, **kw: build_mit("mit-tiny", rate, **TINY["mit"]))
    cfg = load_config(None, ["model.backbone=toy-net", "model.decoder_channels=8", "model.unet_channels=[8]",
                             "model.latent_channels=4", "model.unet_mid_block=false", "model.unet_attention=false"])
    model = build_model_from_config(cfg.model)
    assert tuple(model.encoder.channels) == (8, 16, 24, 32)  # TINY's widths reached the network


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_returns_what_it_declares_and_carries_e_and_d(name):
    backbone = tiny(name).eval()
    x = torch.randn(1, 3, 70, 90)  # odd-sized: neither a multiple of 14 nor of 32
    with torch.no_grad():
        feats = backbone(x)
    assert len(feats) == len(backbone.channels) == len(backbone.strides)
    assert list(backbone.strides) == sorted(backbone.strides)
    for f, c, s in zip(feats, backbone.channels, backbone.strides):
        assert tuple(f.shape) == (1, c, math.ceil(70 / s), math.ceil(90 / s))
    model = build_model(backbone, num_classes=5, latent_channels=8, latent_stride=16, skip_strides=[4, 8],
                        decoder_channels=16, unet_channels=[16], unet_layers_per_block=0,
                        unet_attention=False, unet_mid_block=False).eval()
    with torch.no_grad():
        z0, skips = model.encode(x)
        logits = model.predict(x, steps=2, generator=torch.Generator().manual_seed(0)).logits
    assert tuple(z0.shape) == (1, 8, 5, 6)  # ceil(70 / 16), ceil(90 / 16)
    assert [tuple(f.shape[-2:]) for f in skips] == [(18, 23), (9, 12)]
    assert tuple(logits.shape) == (1, 5, 70, 90) and torch.isfinite(logits).all()


def test_dinov2_pads_to_its_patch_size_and_crops_the_padding_off():
    backbone = tiny("dinov2-small").eval()
    x = torch.randn(1, 3, 28, 28)  # exactly 2 x 2 patches
    padded = torch.nn.functional.pad(x, (0, 13, 0, 13))  # 41 x 41 -> padded to 42 x 42: 3 x 3 patches
    with torch.no_grad():
        a = backbone.vit(pixel_values=x).last_hidden_state  # (1, 1 + 4, C)
        feats = backbone(padded)
    assert a.shape[1] == 5 and feats[2].shape[-2:] == (3, 3)  # ceil(41 / 16) at stride 16
    # an input that is already a multiple of 14 is not padded: its stride-16 level is the token grid
    with torch.no_grad():
        grid = a[:, 1:].transpose(1, 2).reshape(1, -1, 2, 2)
        torch.testing.assert_close(backbone(x)[2], grid)


@pytest.mark.parametrize("name", ["dinov2-tiny", "resnet-tiny", "mobilenet-v2-tiny"])
def test_stage1_trains_three_iterations_with_the_backbone(name, tiny_benchmark, tmp_path):
    from conftest import CONFIGS, tiny_overrides

    from iccld.config import load_config
    from iccld.evaluation.loading import load_models
    from iccld.training.commands import run_training

    cfg = load_config(CONFIGS / "synthetic" / "stage1.yaml",
                      tiny_overrides(tiny_benchmark, iters=3) + [f"model.backbone={name}"])
    assert run_training(cfg, tmp_path / "run", progress=False) == 0
    loaded = load_models(str(tmp_path / "run"), "both")
    ema, model = loaded.models["ema"], loaded.models["model"]
    assert type(model.encoder).__name__ == type(build_backbone(name)).__name__
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = ema.predict(x, diffusion=False).logits, model.predict(x, diffusion=False).logits
    assert torch.isfinite(a).all() and not torch.equal(a, b)  # three steps moved the model off its EMA


def _equal_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("swiglu", [False, True])  # ViT-g's MLP is a SwiGLU with fused weights on file
def test_dinov2_weights_load_from_a_save_pretrained_folder_with_a_report(tmp_path, swiglu):
    torch.manual_seed(1)
    config = dinov2_config("dinov2-tiny")
    config.use_swiglu_ffn = swiglu
    Dinov2Model(config).save_pretrained(tmp_path / "vit")  # written in the hub's key layout
    donor = Dinov2Model.from_pretrained(tmp_path / "vit")  # what transformers itself loads
    backbone = build_backbone("dinov2-tiny", use_swiglu_ffn=swiglu)
    assert not _equal_weights(backbone.vit, donor)
    report = load_backbone_weights(backbone, tmp_path / "vit")
    assert report.loaded == report.total == len(donor.state_dict()) and report.missing == []
    assert report.unexpected == [] and _equal_weights(backbone.vit, donor)
    # a classification model holds the ViT under "dinov2." and a classifier, reported as unexpected
    Dinov2ForImageClassification(Dinov2Config(**{**config.to_dict(), "num_labels": 3})).save_pretrained(tmp_path / "cls")
    report = load_backbone_weights(build_backbone("dinov2-tiny", use_swiglu_ffn=swiglu), tmp_path / "cls")
    assert report.loaded == report.total and report.unexpected == ["classifier.bias", "classifier.weight"]


def test_resnet_weights_load_and_a_foreign_folder_is_refused(tmp_path):
    torch.manual_seed(2)
    ResNetModel(resnet_config("resnet-tiny")).save_pretrained(tmp_path / "resnet")
    backbone = build_backbone("resnet-tiny")
    report = load_backbone_weights(backbone, tmp_path / "resnet")
    assert report.loaded == report.total and report.missing == [] and report.unexpected == []
    assert _equal_weights(backbone.resnet, ResNetModel.from_pretrained(tmp_path / "resnet"))
    with pytest.raises(CheckpointError, match="no tensor .* matches the Dinov2Model backbone"):
        load_backbone_weights(build_backbone("dinov2-tiny"), tmp_path / "resnet")
    with pytest.raises(CheckpointError, match="another backbone"):  # same names, other widths
        load_backbone_weights(build_backbone("resnet-tiny", hidden_sizes=[8, 16, 24, 48]), tmp_path / "resnet")
