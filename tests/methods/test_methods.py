"""Training objectives on tiny tensors: losses, freezing, the critic's step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from iccld.io import build_model_from_config
from iccld.methods.base import StepOutput, cross_entropy
from iccld.methods.stage1 import Stage1, Stage1Config
from iccld.methods.stage2 import Stage2, Stage2Config
from iccld.models import PatchDiscriminator
from iccld.presets import preset


def tiny_model():
    torch.manual_seed(0)
    return build_model_from_config(preset("cpu"))


def batch(b=2, h=64, w=64):
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, 19, (b, h, w), generator=g)
    label[:, :4] = 255
    return {"source": {"image": torch.randn(b, 3, h, w, generator=g), "label": label},
            "target": {"image": torch.randn(b, 3, h, w, generator=g), "label": torch.full((b, h, w), 255)}}


def test_cross_entropy_weighting_and_ignore():
    logits = torch.randn(1, 19, 4, 4)
    labels = torch.randint(0, 19, (1, 4, 4))
    full = cross_entropy(logits, labels)
    assert full == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-6)
    assert cross_entropy(logits, labels, torch.full((1, 4, 4), 0.25)) == pytest.approx(0.25 * float(full), rel=1e-6)
    ignored = labels.clone()
    ignored[0, 0] = 255
    expected = F.cross_entropy(logits, ignored, ignore_index=255)
    assert cross_entropy(logits, ignored) == pytest.approx(float(expected), rel=1e-6)


def test_stage1_losses_and_gradients_reach_encoder_and_decoder():
    method = Stage1(tiny_model(), Stage1Config(pl_crop_top=0, pl_crop_bottom=0))
    out = method.training_losses(batch(), 0, torch.Generator().manual_seed(0))
    losses = out.losses
    assert set(losses) == {"seg", "mix"}
    sum(losses.values()).backward()
    groups = method.model.parameter_groups()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["encoder"])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["decoder"])
    assert all(p.grad is None for p in method.ema_model.parameters())  # the EMA model never trains
    assert set(out.logged) == {"pl_weight"} and 0.0 <= out.logged["pl_weight"] <= 1.0


def test_stage2_trains_only_the_denoiser_and_the_adversarial_term_reaches_it():
    model = tiny_model()
    disc = PatchDiscriminator(model.config.latent_channels, 16)
    method = Stage2(model, Stage2Config(pl_crop_top=0, pl_crop_bottom=0, adversarial_weight=1.0), disc)
    groups = method.trainable_groups()
    assert set(groups) == {"denoiser"}
    out = method.training_losses(batch(), 0, torch.Generator().manual_seed(0))
    assert isinstance(out, StepOutput) and set(out.losses) == {"diffusion", "seg", "adv"}
    assert all(p.requires_grad for p in disc.parameters())  # never toggled
    out.losses["adv"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.denoiser.parameters())
    assert all(p.grad is None for p in disc.parameters())  # the generator term leaves the critic alone
    # what the critic trains on comes back with the losses, detached
    assert set(out.critic_inputs) == {"source", "target"}
    assert not any(t.requires_grad for t in out.critic_inputs.values())


def test_stage2_registers_each_network_once_and_keeps_frozen_parts_in_eval_mode():
    model = tiny_model()
    method = Stage2(model, Stage2Config(adversarial_weight=1.0), PatchDiscriminator(model.config.latent_channels, 16))
    keys = list(method.state_dict())
    expected = (len(model.state_dict()) + len(method.ema_model.state_dict())
                + len(method.discriminator.state_dict()))
    assert len(keys) == expected  # model.*, ema_model.*, discriminator.*: no second copy of E, head, D
    assert {k.split(".")[0] for k in keys} == {"model", "ema_model", "discriminator"}
    method.train()
    assert not model.encoder.training and not model.latent_head.training and not model.decoder.training
    assert model.denoiser.training


def test_discriminator_step_lowers_its_own_loss_on_fixed_latents():
    torch.manual_seed(0)
    disc = PatchDiscriminator(16, 32)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    z_src, z_tgt = torch.randn(4, 16, 8, 8) + 1.0, torch.randn(4, 16, 8, 8) - 1.0
    method = Stage2(tiny_model(), Stage2Config(), disc)
    inputs = {"source": z_src, "target": z_tgt}
    before = method.critic_losses(inputs).losses["disc"].item()
    for _ in range(20):
        opt.zero_grad()
        method.critic_losses(inputs).losses["disc"].backward()
        opt.step()
    after = method.critic_losses(inputs).losses["disc"].item()
    assert after < 0.5 * before
    assert method.critic().module is disc and method.critic().lr == Stage2Config().disc_lr


def test_decoder_features_then_classify_is_the_decoder():
    model = tiny_model().eval()
    x = torch.randn(1, 3, 70, 90)
    z0, skips = model.encode(x)
    feats = model.decode_features(z0, skips, (70, 90))
    assert feats.shape == (1, model.config.decoder_channels, 18, 23)  # ceil(70/4), ceil(90/4)
    assert torch.equal(model.decoder.classify(feats, (70, 90)), model.decode(z0, skips, (70, 90)))


def test_stage2_fused_adversarial_input_aligns_what_the_decoder_sees():
    model = tiny_model()
    channels = model.config.decoder_channels
    disc = PatchDiscriminator(channels, 16)
    cfg = Stage2Config(pl_crop_top=0, pl_crop_bottom=0, adversarial_weight=1.0, freeze_decoder=False,
                       adversarial_input="fused")
    assert Stage2.build_critic(cfg, model.config).net[0].in_channels == channels
    method = Stage2(model, cfg, disc)
    out = method.training_losses(batch(b=2, h=64, w=64), 0, torch.Generator().manual_seed(0))
    losses = out.losses
    z_src, z_tgt = out.critic_inputs["source"], out.critic_inputs["target"]  # D's fused features at stride 4
    assert z_src.shape == z_tgt.shape == (2, channels, 16, 16)
    losses["adv"].backward()
    # the adversarial gradient reaches the skip projections of D (the path a latent critic cannot
    # align) as well as eps_theta
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.skip_projs.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.denoiser.parameters())
    assert all(p.grad is None for p in model.encoder.parameters())  # E stays frozen
    critic = method.critic_losses(out.critic_inputs)
    assert set(critic.losses) == {"disc"} and 0 <= critic.logged["critic_acc"] <= 1


@pytest.mark.parametrize("weighting,base", [("fixed", 0.05), ("adaptive", 0.3), ("adaptive", 2.0)])
def test_stage2_adaptive_adversarial_weight_sets_the_gradient_ratio_on_the_last_layer(weighting, base):
    from iccld.methods.stage2 import last_layer

    model = tiny_model()
    torch.nn.init.normal_(model.denoiser.conv_out.weight, std=0.01)  # a denoiser that already moved
    disc = PatchDiscriminator(model.config.latent_channels, 16)
    cfg = Stage2Config(pl_crop_top=0, pl_crop_bottom=0, adversarial_weight=base, adversarial_weighting=weighting)
    method = Stage2(model, cfg, disc)
    out = method.training_losses(batch(), 0, torch.Generator().manual_seed(0))
    last, stats = last_layer(model.denoiser), out.logged
    assert last is model.denoiser.conv_out.weight and last.grad is None  # measuring leaves .grad alone
    (g_seg,) = torch.autograd.grad(out.losses["seg"], last, retain_graph=True)
    (g_adv,) = torch.autograd.grad(out.losses["adv"], last, retain_graph=True)
    assert stats["grad_seg"] == pytest.approx(float(g_seg.norm()), rel=1e-5)
    assert stats["grad_adv"] == pytest.approx(float(g_adv.norm()), rel=1e-4)
    if weighting == "adaptive":  # the optimised adversarial term's gradient is base x the seg one
        assert float(g_adv.norm()) == pytest.approx(base * float(g_seg.norm()), rel=1e-4)
    else:
        assert stats["adv_weight"] == base
    assert 0 < stats["latent_change_source"] and 0 < stats["latent_change_target"]


def test_stage2_end_of_run_tells_a_stage2_that_did_not_move_from_one_that_did():
    model = tiny_model()  # eps_theta's output layer starts at zero: z0_hat = z0 exactly
    method = Stage2(model, Stage2Config(adversarial_weight=0, freeze_decoder=True)).eval()
    images = [batch()["target"]["image"][:1]]
    still = method.end_of_run(images)
    assert still["latent_change"] == 0 and still["path_agreement"] == 1 and not still["changed_latents"]
    assert still["summary"].startswith("stage 2 changed nothing") and "D was frozen" in still["summary"]
    torch.nn.init.normal_(method.ema_model.denoiser.conv_out.weight, std=1.0)
    moved = method.end_of_run(images)
    assert moved["latent_change"] > 0.01 and moved["changed_latents"]
    assert moved["summary"].startswith("stage 2 moved the latents")


@pytest.mark.parametrize("warmup,share_of_start", [("first_step", 0.0), ("start", 0.5)])
def test_ema_warmup_from_the_first_step_or_including_the_initial_weights(warmup, share_of_start):
    method = Stage1(tiny_model(), Stage1Config(ema_warmup=warmup))
    start = {k: v.clone() for k, v in method.model.state_dict().items()}
    with torch.no_grad():
        for p in method.model.parameters():
            p.add_(1.0)  # "the first step"
    method.after_step(0)
    name, value = next((k, v) for k, v in method.ema_model.named_parameters())
    # DAFormer's uniform warm-up average: theta_0 and theta_1 weigh half each with "start"
    assert torch.allclose(value, start[name] + (1 - share_of_start) * 1.0, atol=1e-6)
