"""MobileNetV2 and the pretrained regime: each backbone's input normalisation reaches its first layer on
every path, the ImageNet weights load and reproduce transformers' own model, and E's BatchNorm keeps
its stored statistics under ``norm_eval``. Tests that need the real weights read them from
``../shared/weights/mobilenet_v2_1.0_224`` and skip, saying so, when that folder is absent."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import MobileNetV2ForImageClassification, MobileNetV2Model

from iccld.data.transforms import normalize
from iccld.io import load_backbone_weights
from iccld.models import BACKBONES, build_backbone, build_model
from iccld.models.backbones.mobilenet import mobilenet_v2_config

WEIGHTS = Path(__file__).resolve().parents[3] / "shared" / "weights" / "mobilenet_v2_1.0_224"
needs_weights = pytest.mark.skipif(not (WEIGHTS / "model.safetensors").is_file(),
                                   reason=f"the ImageNet MobileNetV2 weights are not at {WEIGHTS} "
                                          "(a user has the Hub id google/mobilenet_v2_1.0_224 instead)")

TINY = {"mit": dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 2]),
        "dinov2": dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2),
        "resnet": dict(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]),
        "mobilenet": dict(depth_multiplier=0.25)}


def first_conv(backbone: torch.nn.Module) -> torch.nn.Conv2d:
    """The first convolution the pretrained network applies to the pixels."""
    return next(m for m in backbone.pretrained_part().modules() if isinstance(m, torch.nn.Conv2d))


def pixels_seen(backbone: torch.nn.Module, run) -> torch.Tensor:
    """What the backbone's first convolution received while ``run()`` ran (the first call)."""
    seen = []
    handle = first_conv(backbone).register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        run()
    finally:
        handle.remove()
    return seen[0]


def image(h: int = 32, w: int = 48, seed: int = 0) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    rgb[0, 0], rgb[0, 1] = 0, 255  # both ends of the range
    return rgb


def expected(backbone, rgb: np.ndarray) -> torch.Tensor:
    mean = torch.tensor(backbone.input_mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.input_std).view(1, 3, 1, 1)
    return (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() - mean) / std


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_sees_the_normalisation_its_weights_expect(name):
    torch.manual_seed(0)
    backbone = build_backbone(name, **TINY[name.split("-")[0]]).eval()
    rgb = image()
    with torch.no_grad():
        seen = pixels_seen(backbone, lambda: backbone(normalize(rgb)[None]))
    h, w = rgb.shape[:2]  # MobileNetV2's SAME padding and DINOv2's patch padding add rows at the bottom/right
    torch.testing.assert_close(seen[..., :h, :w], expected(backbone, rgb), atol=1e-5, rtol=1e-5)


def test_the_pipeline_and_the_networks_agree_on_the_normalisation_images_travel_in():
    from iccld.data import transforms
    from iccld.models.backbones import normalization

    assert (normalization.PIPELINE_MEAN, normalization.PIPELINE_STD) == (transforms.MEAN, transforms.STD)


def test_the_declared_normalisations_are_the_weights_own():
    imagenet = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
    for name in BACKBONES:
        b = build_backbone(name, **TINY[name.split("-")[0]])
        want = ((127.5,) * 3, (127.5,) * 3) if name.startswith("mobilenet") else imagenet
        assert (tuple(b.input_mean), tuple(b.input_std)) == want, name
    # MobileNetV2 in [-1, 1]: black is -1 and white +1 on the way in
    b = build_backbone("mobilenet-v2-tiny").eval()
    seen = pixels_seen(b, lambda: b(normalize(image())[None]))
    assert seen[0, :, 0, 0].tolist() == pytest.approx([-1.0] * 3, abs=1e-6)
    assert seen[0, :, 0, 1].tolist() == pytest.approx([1.0] * 3, abs=1e-6)


def test_predict_and_the_saved_model_feed_mobilenet_its_own_normalisation(tmp_path):
    from PIL import Image

    from iccld.evaluation.predict import predict_images
    from iccld.io import load_pretrained, save_pretrained
    from iccld.io import build_model_from_config
    from iccld.presets import preset

    cfg = dataclasses.replace(preset("cpu"), backbone="mobilenet-v2-tiny", num_classes=5)

    model = build_model_from_config(cfg).eval()
    rgb = image(40, 56, seed=3)
    Image.fromarray(rgb).save(tmp_path / "street.png")
    seen = pixels_seen(model.encoder, lambda: predict_images(model, [tmp_path / "street.png"], tmp_path / "out",
                                                             path="direct"))
    torch.testing.assert_close(seen[..., :40, :56], expected(model.encoder, rgb), atol=1e-5, rtol=1e-5)
    save_pretrained(model, tmp_path / "export")  # an exported model converts the same way
    again = load_pretrained(tmp_path / "export").eval()
    seen = pixels_seen(again.encoder, lambda: again.predict(normalize(rgb)[None], diffusion=False))
    torch.testing.assert_close(seen[..., :40, :56], expected(again.encoder, rgb), atol=1e-5, rtol=1e-5)


def test_mobilenet_weights_load_from_a_classification_folder_with_a_report(tmp_path, caplog):
    torch.manual_seed(4)
    config = mobilenet_v2_config("mobilenet-v2-tiny")
    config.num_labels = 7
    MobileNetV2ForImageClassification(config).save_pretrained(tmp_path / "cls")
    donor = MobileNetV2ForImageClassification.from_pretrained(tmp_path / "cls").mobilenet_v2.eval()
    backbone = build_backbone("mobilenet-v2-tiny").eval()
    with caplog.at_level("INFO", logger="iccld.io.backbone_weights"):
        report = load_backbone_weights(backbone, tmp_path / "cls")
    assert report.loaded == report.total and report.missing == []
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # unused ImageNet parts: logged, no warning
    # the ImageNet classifier and its 1280-channel head conv are not the encoder's: reported, not loaded
    assert report.unexpected and all(k.startswith(("classifier.", "mobilenet_v2.conv_1x1.")) for k in report.unexpected)
    with torch.no_grad():
        ours = backbone(normalize(image(45, 61))[None])
        ref = donor(expected(backbone, image(45, 61)), output_hidden_states=True).hidden_states
    for f, i in zip(ours, (1, 4, 11, 15)):
        torch.testing.assert_close(f, ref[i], atol=1e-4, rtol=1e-4)


def test_norm_eval_keeps_e_batchnorm_statistics_and_leaves_the_rest_training():
    def model(norm_eval: bool):
        torch.manual_seed(0)
        return build_model(build_backbone("mobilenet-v2-tiny"), num_classes=3, latent_channels=4, latent_stride=16,
                           skip_strides=[4], decoder_channels=8, unet_channels=[8], unet_layers_per_block=0,
                           unet_attention=False, unet_mid_block=False, norm_eval=norm_eval)

    frozen, batch = model(True).train(), model(False).train()
    bns = [m for m in frozen.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert frozen.decoder.training and frozen.encoder.training  # only the BatchNorms stay in eval mode
    assert all(m.momentum == 0.01 for m in bns)  # not transformers' TF-style 0.997
    before = {k: v.clone() for k, v in frozen.encoder.state_dict().items() if "running" in k}
    x = torch.randn(2, 3, 64, 64)
    frozen.predict(x, diffusion=False)
    batch.predict(x, diffusion=False)
    after = frozen.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # stored statistics untouched
    moved = batch.encoder.state_dict()
    assert any(not torch.equal(before[k], moved[k]) for k in before)  # batch statistics update them
    # a copy (the EMA model, the FD reference) keeps the setting
    clone = copy.deepcopy(frozen).train()
    assert not any(m.training for m in clone.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))


@needs_weights
def test_the_shared_imagenet_weights_reproduce_transformers_mobilenet():
    from iccld.io import build_model_from_config
    from iccld.presets import preset

    cfg = dataclasses.replace(preset("cpu"), backbone="mobilenet-v2", pretrained=str(WEIGHTS))
    model = build_model_from_config(cfg).eval()
    ref = MobileNetV2Model.from_pretrained(WEIGHTS).eval()
    rgb = image(128, 96, seed=5)
    with torch.no_grad():
        ours = model.encoder(normalize(rgb)[None])
        theirs = ref(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1,
                     output_hidden_states=True).hidden_states
    assert model.encoder.channels == (24, 32, 96, 320)
    for f, i in zip(ours, (1, 4, 11, 15)):
        assert f.shape == theirs[i].shape
        assert (f - theirs[i]).abs().max() < 1e-4 * max(1.0, theirs[i].abs().max().item())


def test_the_pretrained_configs_load_and_differ_from_the_scratch_ones_only_where_they_say():
    from iccld.config import load_config

    root = Path(__file__).resolve().parents[2] / "configs"
    for path in sorted((root / "synthetic_pretrained").glob("*.yaml")):
        if path.name == "base.yaml":
            continue
        cfg = load_config(path)
        assert cfg.model.backbone == "mobilenet-v2" and cfg.model.pretrained == "google/mobilenet_v2_1.0_224"
        scratch_name = path.name.replace("_bn_batch", "")
        scratch = load_config(root / "synthetic" / scratch_name)
        assert cfg.method == dataclasses.replace(scratch.method, **(
            {"stage1_checkpoint": cfg.method.stage1_checkpoint} if hasattr(scratch.method, "stage1_checkpoint") else {}))
        assert cfg.data == scratch.data and cfg.trainer == scratch.trainer
        assert cfg.model.norm_eval == ("_bn_batch" not in path.name)
        if cfg.method.name == "stage2":  # stage 2 keeps its own lr: E is frozen there
            assert cfg.optim == scratch.optim
            assert cfg.method.stage1_checkpoint.startswith("runs/synthetic_pretrained/")
        else:
            assert (cfg.optim.lr, cfg.optim.head_lr_mult) == (1e-4, 10.0)
