"""HRDA multi-resolution (iccld.models.multires) on tiny tensors: the fusion, the crops, the sliding
detail inference, and the network's predict with it."""

from __future__ import annotations

import pytest
import torch

from iccld.errors import ConfigError
from iccld.io import build_model_from_config, load_pretrained, save_pretrained
from iccld.models.multires import DetailBox, fuse, predict_draws, resize_logits, train_forward, window_boxes
from iccld.presets import preset


def multires_model(detail=(32, 32), classwise=True, seed=0):
    cfg = preset("cpu")
    cfg.multires.enabled = True
    cfg.multires.detail_crop = list(detail)
    cfg.multires.classwise_attention = classwise
    torch.manual_seed(seed)
    return build_model_from_config(cfg).eval()


def force_attention(model, context_share: float) -> None:
    """Make the scale attention give ``context_share`` (0 or 1) everywhere: its classifier's logit of
    the detail share is a constant -30 (share 1 for the context) or +30 (share 0)."""
    classifier = model.multires.attention.classifier
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.fill_(-30.0 if context_share == 1 else 30.0)


def image(b=2, h=64, w=96, seed=1):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_fuse_is_the_attention_weighted_sum_inside_the_box_and_the_context_outside():
    g = torch.Generator().manual_seed(0)
    context, detail = torch.randn(2, 19, 16, 24, generator=g), torch.randn(2, 19, 8, 8, generator=g)
    box = DetailBox(top=4, left=8, height=8, width=8)
    inside = (slice(None), slice(None), slice(4, 12), slice(8, 16))
    ones, zeros = torch.ones(2, 1, 16, 24), torch.zeros(2, 1, 16, 24)
    assert torch.equal(fuse(context, detail, ones, box), context)  # attention 1: the context prediction
    fused = fuse(context, detail, zeros, box)  # attention 0: the detail inside its box, the context outside
    assert torch.equal(fused[inside], detail)
    outside = fused.clone()
    outside[inside] = context[inside]
    assert torch.equal(outside, context)
    share = torch.rand(2, 19, 16, 24, generator=g)  # class-wise
    fused = fuse(context, detail, share, box)
    assert torch.allclose(fused[inside], share[inside] * context[inside] + (1 - share[inside]) * detail)
    # without a box the detail covers the image
    whole = torch.randn(2, 19, 16, 24, generator=g)
    assert torch.allclose(fuse(context, whole, share), share * context + (1 - share) * whole)


def test_window_boxes_follow_the_overlapping_grid_and_cover_the_image():
    boxes = window_boxes((64, 96), (32, 32))
    assert sorted({b.top for b in boxes}) == [0, 16, 32]
    assert sorted({b.left for b in boxes}) == [0, 16, 32, 48, 64]
    assert all((b.height, b.width) == (32, 32) for b in boxes)
    assert window_boxes((64, 96), (512, 512)) == [DetailBox(0, 0, 64, 96)]  # clipped: one window, the image
    assert window_boxes((50, 40), (32, 32))[-1] == DetailBox(18, 8, 32, 32)  # last one flush with the border


def test_training_crops_context_and_detail_shapes_and_box():
    model = multires_model()
    x = image()
    g = torch.Generator().manual_seed(3)
    out = train_forward(model, x, g)
    assert out.logits.shape == (2, 19, 64, 96) and out.detail.shape == (2, 19, 32, 32)
    box = out.box
    assert (box.height, box.width) == (32, 32)
    assert box.top % 8 == 0 and box.left % 8 == 0 and box.top <= 32 and box.left <= 64
    # the same draws give the same box; the context is the whole image at 0.5
    assert model.multires.draw_box((64, 96), torch.Generator().manual_seed(3)) == box
    assert model.multires.context_image(x).shape == (2, 3, 32, 48)
    # outside the box, the fused logits are the context branch's, D(E(x at 0.5)) upsampled
    x_c = model.multires.context_image(x)
    z, skips = model.encode(x_c)
    context = resize_logits(model.decode(z, skips, (32, 48)), (64, 96))
    outside = torch.ones(64, 96, dtype=torch.bool)
    outside[box.top:box.top + 32, box.left:box.left + 32] = False
    assert torch.allclose(out.logits[..., outside], context[..., outside], atol=1e-5)
    # the detail logits are D(E(crop)) at full resolution
    z, skips = model.encode(box.crop(x))
    assert torch.allclose(out.detail, model.decode(z, skips, (32, 32)), atol=1e-5)


@pytest.mark.parametrize("share", [1, 0])
def test_attention_one_gives_the_context_zero_the_detail(share):
    model = multires_model(classwise=False)
    force_attention(model, share)
    x = image()
    out = train_forward(model, x, torch.Generator().manual_seed(0))
    z, skips = model.encode(model.multires.context_image(x))
    context = resize_logits(model.decode(z, skips, (32, 48)), (64, 96))
    expected = context if share == 1 else fuse(context, out.detail, torch.zeros(2, 1, 64, 96), out.box)
    assert torch.allclose(out.logits, expected, atol=1e-5)


def test_sliding_detail_equals_the_whole_image_detail_when_the_window_covers_it():
    model = multires_model(detail=(64, 96))  # one window: the whole image
    x = image()
    fused = model.predict(x, diffusion=False).logits
    z, skips = model.encode(x)
    detail = model.decode(z, skips, (64, 96))
    x_c = model.multires.context_image(x)
    z_c, skips_c = model.encode(x_c)
    context = resize_logits(model.decode(z_c, skips_c, (32, 48)), (64, 96))
    share = model.multires.context_share(z_c, skips_c, (32, 48), (64, 96))
    assert torch.allclose(fused, share * context + (1 - share) * detail, atol=1e-5)
    force_attention(model, 0)  # all detail: the prediction is D(E(x)) at full resolution
    assert torch.allclose(model.predict(x, diffusion=False).logits, detail, atol=1e-5)


def test_sliding_detail_averages_overlapping_windows():
    model = multires_model(detail=(64, 48))
    force_attention(model, 0)
    x = image(b=1, h=64, w=64)
    windows = window_boxes((64, 64), (64, 48))  # columns 0..48 and 16..64, stride 24, the last flush
    assert [(b.top, b.left) for b in windows] == [(0, 0), (0, 16)]
    logits = [model.decode(*model.encode(b.crop(x)), (64, 48)) for b in windows]
    expected = torch.zeros(1, 19, 64, 64)
    expected[..., :16] = logits[0][..., :16]
    expected[..., 16:48] = (logits[0][..., 16:] + logits[1][..., :32]) / 2
    expected[..., 48:] = logits[1][..., 32:]
    assert torch.allclose(model.predict(x, diffusion=False).logits, expected, atol=1e-5)


def test_diffusion_predict_runs_both_scales_per_draw_with_uncertainty():
    model = multires_model()
    x = image()
    pred = model.predict(x, samples=2, generator=torch.Generator().manual_seed(0))
    assert pred.logits.shape == (2, 19, 64, 96) and pred.uncertainty.shape == (2, 64, 96)
    again = model.predict(x, samples=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pred.logits, again.logits)  # every draw from the generator
    draws = list(predict_draws(model, x, samples=2, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(pred.logits, (draws[0] + draws[1]) / 2, atol=1e-5)


def test_attention_head_is_built_last_and_only_when_enabled():
    single = build_model_from_config(preset("cpu"))
    assert single.multires is None and "scale_attention" not in single.parameter_groups()
    assert not any(k.startswith("multires.") for k in single.state_dict())
    torch.manual_seed(0)
    plain = build_model_from_config(preset("cpu")).state_dict()
    model = multires_model(seed=0)
    state = model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in plain.items())  # E, D, eps_theta initialised as without it
    head = model.multires.attention.classifier
    assert head.out_channels == 19 and multires_model(classwise=False).multires.attention.classifier.out_channels == 1
    assert model.parameter_groups()["scale_attention"] == list(model.multires.parameters())


def test_save_pretrained_round_trip_and_no_key_while_off(tmp_path):
    import json

    save_pretrained(build_model_from_config(preset("cpu")), tmp_path / "single")
    assert "multires" not in json.loads((tmp_path / "single" / "config.json").read_text())["model"]
    model = multires_model()
    save_pretrained(model, tmp_path / "multi")
    loaded = load_pretrained(tmp_path / "multi").eval()
    assert loaded.config.multires.enabled and loaded.config.multires.detail_crop == [32, 32]
    x = image()
    assert torch.equal(loaded.predict(x, diffusion=False).logits, model.predict(x, diffusion=False).logits)


def test_config_refuses_a_detail_crop_larger_than_the_training_crop():
    from iccld.config import load_config, to_yaml

    from conftest import CONFIGS

    assert "multires" not in to_yaml(load_config(CONFIGS / "synthetic" / "stage1.yaml"))
    with pytest.raises(ConfigError, match="model.multires.detail_crop.*data.crop_size"):
        load_config(CONFIGS / "synthetic" / "stage1.yaml", ["model.multires.enabled=true",
                                                             "model.multires.detail_crop=[256,256]"])
    with pytest.raises(ConfigError, match="model.multires.detail_loss_weight"):
        load_config(CONFIGS / "synthetic" / "stage1.yaml", ["model.multires.enabled=true", "model.multires.detail_crop=[64,64]",
                                                             "model.multires.detail_loss_weight=1.5"])
    # the paper-scale HRDA configs: HRDA's full-resolution data and crops
    for family, source in (("gta5_cityscapes", [2560, 1440]), ("synthia_cityscapes", [2560, 1520])):
        c = load_config(CONFIGS / family / "hrda_stage1_mic.yaml")
        assert c.model.multires.enabled and c.model.multires.detail_crop == [512, 512]
        assert c.model.multires.context_scale == 0.5 and c.model.multires.detail_loss_weight == 0.1
        assert c.data.crop_size == [1024, 1024] and c.data.source.resize == source
        assert c.data.target.resize == [2048, 1024] and c.data.val.resize == [2048, 1024]
        assert c.data.rcs_min_crop_ratio == 2.0 and c.method.mic_weight == 1.0 and c.method.fd_weight == 0.005


def test_onnx_export_refuses_a_multires_network(tmp_path):
    from iccld.errors import CheckpointError
    from iccld.io.onnx import export_onnx

    with pytest.raises(CheckpointError, match="multi-resolution"):
        export_onnx(multires_model(), tmp_path / "onnx")
