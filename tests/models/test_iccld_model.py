"""The ICCLD network: shapes, sampling, the inter-coder switch, predict, save/load."""

import dataclasses
import json
import math

import pytest
import torch

from iccld.config import ModelConfig
from iccld.errors import CheckpointError, ConfigError, DataError
from iccld.io import build_model_from_config, load_pretrained, save_pretrained
from iccld.models import ICCLD
from iccld.presets import preset


def tiny_cfg(**kw) -> ModelConfig:
    return dataclasses.replace(preset("cpu"), **kw)


@pytest.fixture(scope="module")
def model() -> ICCLD:
    """A model as after some stage-2 training: the (zero-initialised) output layer is non-zero, so
    the diffusion path depends on the noise draw."""
    torch.manual_seed(0)
    m = build_model_from_config(tiny_cfg()).eval()
    torch.nn.init.normal_(m.denoiser.conv_out.weight, std=0.05)
    return m


@pytest.mark.parametrize("hw", [(64, 64), (97, 131), (33, 29), (128, 48)])
def test_shapes_for_any_input_size(model, hw):
    H, W = hw
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        z0, skips = model.encode(x)
        assert z0.shape == (2, 16, math.ceil(H / 16), math.ceil(W / 16))
        assert [tuple(s.shape) for s in skips] == [
            (2, c, math.ceil(H / s), math.ceil(W / s)) for c, s in zip((16, 32, 64, 128), (4, 8, 16, 32))]
        assert model.decode(z0, skips, (H, W)).shape == (2, 19, H, W)
        assert model.diffusion.denoise(z0, z0, 500).shape == z0.shape
        assert model.sample(z0, generator=torch.Generator().manual_seed(0)).shape == z0.shape
    pred = model.predict(x, samples=2, generator=torch.Generator().manual_seed(0))
    assert pred.logits.shape == (2, 19, H, W) and pred.uncertainty.shape == (2, H, W)


def test_latent_is_normalised_per_position(model):
    with torch.no_grad():
        z0, _ = model.encode(torch.randn(1, 3, 64, 96))
    assert torch.allclose(z0.mean(1), torch.zeros(1), atol=1e-4)
    assert torch.allclose(z0.var(1, unbiased=False), torch.ones(1), atol=1e-2)


def test_bad_inputs_are_data_errors(model):
    with pytest.raises(DataError, match="too small"):
        model.encode(torch.randn(1, 3, 20, 64))
    with pytest.raises(DataError, match="image batch"):
        model.encode(torch.randn(3, 64, 64))


def test_denoiser_pads_odd_latents_for_a_deep_unet():
    torch.manual_seed(0)
    m = build_model_from_config(tiny_cfg(unet_channels=[16, 32, 32], unet_layers_per_block=1))  # needs multiples of 4 inside
    z = torch.randn(1, 16, 5, 7)
    out = m.diffusion.denoise(z, z, torch.tensor([3]))
    assert out.shape == (1, 16, 5, 7) and torch.isfinite(out).all()


def test_sampling_is_reproducible_and_seed_dependent(model):
    with torch.no_grad():
        z0, _ = model.encode(torch.randn(2, 3, 64, 64))
        for steps in (1, 4):
            a = model.sample(z0, steps, torch.Generator().manual_seed(1))
            b = model.sample(z0, steps, torch.Generator().manual_seed(1))
            c = model.sample(z0, steps, torch.Generator().manual_seed(2))
            assert torch.equal(a, b)
            assert (a - c).abs().max() > 1e-3
        k1 = model.sample(z0, 1, torch.Generator().manual_seed(1))
        k4 = model.sample(z0, 4, torch.Generator().manual_seed(1))
        assert (k1 - k4).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="sampling steps"):
        model.sample(z0, 0)


def test_predict_averages_draws_in_logit_space_and_reports_their_variance(model):
    x = torch.randn(1, 3, 64, 80)
    pred = model.predict(x, steps=2, samples=3, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        z0, skips = model.encode(x)
        draws = torch.stack([model.decode(model.sample(z0, 2, g), skips, (64, 80)) for _ in range(3)])
    assert torch.allclose(pred.logits, draws.mean(0), atol=1e-5)
    assert torch.allclose(pred.uncertainty, draws.var(0, unbiased=False).mean(1), atol=1e-5)
    assert pred.uncertainty.max() > 0
    single = model.predict(x, steps=2, generator=torch.Generator().manual_seed(7))
    assert single.uncertainty is None and torch.allclose(single.logits, draws[0], atol=1e-5)
    direct = model.predict(x, diffusion=False)
    assert direct.uncertainty is None and torch.allclose(direct.logits, model.decode(z0, skips, (64, 80)))
    with pytest.raises(ValueError, match="samples"):
        model.predict(x, samples=0)


def test_encoder_runs_once_for_many_samples(model):
    calls = []
    handle = model.encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        model.predict(torch.randn(1, 3, 64, 64), samples=3, generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert len(calls) == 1


@pytest.mark.parametrize("inter_coder", [True, False])
def test_inter_coder_switch_removes_the_skip_path(inter_coder):
    torch.manual_seed(0)
    m = build_model_from_config(tiny_cfg(inter_coder=inter_coder)).eval()
    has_skip_params = any("skip_projs" in n for n, _ in m.decoder.named_parameters())
    assert has_skip_params == inter_coder
    with torch.no_grad():
        z0, skips = m.encode(torch.randn(1, 3, 64, 64))
        ref = m.decode(z0, skips, (64, 64))
        perturbed = m.decode(z0, [s + torch.randn_like(s) for s in skips], (64, 64))
        other_z = m.decode(z0 + torch.randn_like(z0), skips, (64, 64))
    assert ((ref - perturbed).abs().max() > 1e-4) == inter_coder
    assert (ref - other_z).abs().max() > 1e-4  # z always matters


def test_parameter_groups_partition_the_parameters(model):
    groups = model.parameter_groups()
    assert list(groups) == ["encoder", "encoder_neck", "latent_head", "decoder", "denoiser"]
    assert groups["encoder_neck"] == []  # MiT has no layers of its own beyond SegformerModel
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    assert not any(k.startswith(("scheduler", "sampler")) for k in model.state_dict())


def test_a_backbones_new_layers_train_as_a_head():
    from iccld.models import build_backbone, build_model

    backbone = build_backbone("dinov2-tiny")
    model = build_model(backbone, num_classes=3, latent_channels=8, latent_stride=16, skip_strides=[4],
                        decoder_channels=8, unet_channels=[8], unet_layers_per_block=0, unet_attention=False,
                        unet_mid_block=False)
    groups = model.parameter_groups()
    assert {id(p) for p in groups["encoder"]} == {id(p) for p in backbone.vit.parameters()}
    assert {id(p) for p in groups["encoder_neck"]} == {id(p) for p in backbone.neck.parameters()}


def test_stage1_loss_reaches_encoder_head_and_decoder_but_not_the_denoiser():
    torch.manual_seed(0)
    m = build_model_from_config(tiny_cfg()).train()
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 19, (2, 64, 64))
    z0, skips = m.encode(x)
    torch.nn.functional.cross_entropy(m.decode(z0, skips, (64, 64)), y).backward()
    grads = {k: any(p.grad is not None and p.grad.abs().sum() > 0 for p in ps)
             for k, ps in m.parameter_groups().items()}
    assert grads == {"encoder": True, "encoder_neck": False, "latent_head": True, "decoder": True, "denoiser": False}


def test_diffusion_methods_are_consistent(model):
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(2, 16, 4, 4, generator=g)
    noise = torch.randn(2, 16, 4, 4, generator=g)
    t = torch.tensor([10, 900])
    diffusion = model.diffusion
    z_t = diffusion.add_noise(z0, noise, t)
    with torch.no_grad():
        out = diffusion.denoise(z_t, z0, t)
        assert torch.equal(diffusion.estimate_z0(z_t, z0, t), diffusion.estimate_z0(z_t, z0, t, output=out))
    # prediction type "sample": the raw output is the z0 estimate and the target is z0
    assert torch.equal(diffusion.estimate_z0(z_t, z0, t, output=out), out)
    assert torch.equal(diffusion.target(z0, noise, t), z0)


def test_save_and_reload_predict_identically(model, tmp_path):
    folder = save_pretrained(model, tmp_path / "final")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format_version"] == 1 and meta["model"]["backbone"] == "mit-tiny"
    loaded = load_pretrained(folder).eval()
    assert loaded.config == model.config
    x = torch.randn(1, 3, 64, 64)
    a = model.predict(x, samples=2, generator=torch.Generator().manual_seed(3))
    b = loaded.predict(x, samples=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.logits, b.logits) and torch.equal(a.uncertainty, b.uncertainty)
    save_pretrained(model, folder)  # overwriting our own save is fine
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_load_errors_name_the_path(model, tmp_path):
    with pytest.raises(CheckpointError, match="nowhere"):
        load_pretrained(tmp_path / "nowhere")
    folder = save_pretrained(model, tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_pretrained(folder)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="config.json"):
        load_pretrained(folder)
    other = save_pretrained(model, tmp_path / "other")
    meta = json.loads((other / "config.json").read_text())
    meta["model"]["latent_channels"] = 8  # weights no longer fit the architecture
    (other / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match"):
        load_pretrained(other)


def test_save_does_not_overwrite_a_foreign_config(model, tmp_path):
    (tmp_path / "config.json").write_text('{"user": "data"}')
    with pytest.raises(CheckpointError, match="not overwriting"):
        save_pretrained(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()) == {"user": "data"}


def test_deepcopy_for_an_ema_model_keeps_its_own_schedulers(model):
    import copy

    ema = copy.deepcopy(model)
    assert ema.diffusion.sampler is not model.diffusion.sampler
    assert ema.diffusion.scheduler is not model.diffusion.scheduler
    x = torch.randn(1, 3, 64, 64)
    a = model.predict(x, generator=torch.Generator().manual_seed(0))
    b = ema.predict(x, steps=1, generator=torch.Generator().manual_seed(0))  # resets ema.sampler only
    c = ema.predict(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.logits, c.logits) and not torch.equal(a.logits, b.logits)


def test_residual_denoiser_starts_exactly_at_the_stage1_path():
    import torch

    from iccld.io import build_model_from_config
    from iccld.presets import preset

    torch.manual_seed(0)
    model = build_model_from_config(preset("cpu")).eval()
    assert model.diffusion.residual
    x = torch.randn(1, 3, 64, 96)
    direct = model.predict(x, diffusion=False).logits
    sampled = model.predict(x, steps=4, generator=torch.Generator().manual_seed(3)).logits
    assert torch.allclose(direct, sampled, atol=1e-5)  # zero-initialised output: z0_hat == z0
    # and the raw output is a correction on top of the condition
    z0, _ = model.encode(x)
    z_t = torch.randn_like(z0)
    assert torch.equal(model.diffusion.denoise(z_t, z0, 500), z0)
