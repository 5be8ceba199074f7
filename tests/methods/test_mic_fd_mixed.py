"""The paper's missing pieces, off by default: FD and MIC in stage 1, MIC and the mixed-domain critic
in stage 2, on tiny tensors (values against the uda functions on the same draws)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from iccld.config import from_dict, load_config, to_dict, to_yaml
from iccld.errors import ConfigError
from iccld.methods import StepOutput
from iccld.methods.stage1 import Stage1, Stage1Config
from iccld.methods.stage2 import Stage2, Stage2Config
from iccld.models import PatchDiscriminator
from iccld.uda.feature_distance import feature_distance
from iccld.uda.mic import masked_consistency_loss

from iccld.io import build_model_from_config
from iccld.presets import preset

from conftest import CONFIGS

# every pixel confident and kept, so the pseudo-label weight is 1 and MIC's term is not trivially 0
CONFIDENT = dict(pseudo_threshold=0.0, pl_crop_top=0, pl_crop_bottom=0)


def tiny_model():
    torch.manual_seed(0)
    return build_model_from_config(preset("cpu"))


def batch(b=2, h=64, w=64):
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, 19, (b, h, w), generator=g)
    label[:, :4] = 255
    return {"source": {"image": torch.randn(b, 3, h, w, generator=g), "label": label},
            "target": {"image": torch.randn(b, 3, h, w, generator=g), "label": torch.full((b, h, w), 255)}}


def things_batch():
    data = batch()
    data["source"]["label"][:, 32:] = 13  # car, a thing class: FD has pixels to act on
    return data


def perturbed(method):
    """Move ``model``'s encoder off its initial weights, so FD's distance is not 0."""
    with torch.no_grad():
        for p in method.model.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return method


def losses_of(method, data, seed=3):
    return StepOutput.of(method.training_losses(data, 0, torch.Generator().manual_seed(seed)))


def test_fd_adds_exactly_its_weight_times_the_feature_distance():
    data = things_batch()
    off = perturbed(Stage1(tiny_model(), Stage1Config(**CONFIDENT))).eval()
    on = Stage1(tiny_model(), Stage1Config(fd_weight=0.5, **CONFIDENT))
    frozen = {k: v.clone() for k, v in on.imagenet_encoder.state_dict().items()}
    perturbed(on).eval()
    a, b = losses_of(off, data).losses, losses_of(on, data).losses
    assert set(a) == {"seg", "mix"} and set(b) == {"seg", "fd", "mix"}
    assert torch.equal(a["seg"], b["seg"]) and torch.equal(a["mix"], b["mix"])  # FD changes nothing else
    x_s, y_s = data["source"]["image"], data["source"]["label"]
    with torch.no_grad():
        expected = feature_distance(on.model.encoder(x_s)[-1], tiny_model().encoder.eval()(x_s)[-1], y_s, 1.0)
    assert float(expected) > 0
    assert float(b["fd"].detach()) == pytest.approx(0.5 * float(expected), rel=1e-5)
    b["fd"].backward()  # the gradient reaches the trained encoder, never the frozen copy
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in on.model.encoder.parameters())
    assert all(not p.requires_grad and p.grad is None for p in on.imagenet_encoder.parameters())
    assert all(torch.equal(v, frozen[k]) for k, v in on.imagenet_encoder.state_dict().items())


def test_fd_and_mic_off_add_no_module_and_no_key():
    method = Stage1(tiny_model(), Stage1Config())
    assert not hasattr(method, "imagenet_encoder")
    assert all(not k.startswith("imagenet_encoder") for k in method.state_dict())
    text = to_yaml(load_config(CONFIGS / "synthetic" / "stage2.yaml"))
    for key in ("fd_weight", "mic_weight", "mic_block_size", "mic_ratio", "adversarial_mixed"):
        assert key not in text  # resolved configs of runs made before these switches are unchanged
    on = load_config(CONFIGS / "synthetic" / "stage2_mic.yaml")
    saved = to_dict(on)
    assert saved["method"]["mic_weight"] == 1.0 and saved["method"]["mic_block_size"] == 16
    assert from_dict(saved).method == on.method


def test_stage2_has_no_fd_because_it_freezes_the_encoder():
    assert "fd_weight" not in {f.name for f in dataclasses.fields(Stage2Config)}  # FD only constrains E
    with pytest.raises(ConfigError, match="method.fd_weight.*method stage2 has no such setting; stage1 has"):
        load_config(CONFIGS / "synthetic" / "stage2.yaml", ["method.fd_weight=0.005"])
    with pytest.raises(ConfigError, match="method.adversarial_mixed"):
        load_config(CONFIGS / "synthetic" / "stage2.yaml", ["method.adversarial_mixed=thrid"])


def test_mic_adds_the_masked_consistency_loss_on_the_same_draws():
    data = batch()
    cfg = Stage1Config(mic_weight=0.5, mic_block_size=8, mic_ratio=0.7, **CONFIDENT)
    off = Stage1(tiny_model(), Stage1Config(**CONFIDENT)).eval()
    on = Stage1(tiny_model(), cfg).eval()  # eval: no dropout, so every forward is reproducible
    a, b = losses_of(off, data).losses, losses_of(on, data).losses
    assert set(b) == {"seg", "mix", "mic"}
    assert torch.equal(a["seg"], b["seg"]) and torch.equal(a["mix"], b["mix"])  # drawn after the mix
    # the same draws by hand: pseudo-labels, the mix, then the masked target
    x_s, y_s, x_t = data["source"]["image"], data["source"]["label"], data["target"]["image"]
    g = torch.Generator().manual_seed(3)
    st = on.self_training
    with torch.no_grad():
        pl, weight = target = st.pseudo_labels(on.segment(on.ema_model, x_t))
    st.mixed(x_s, y_s, x_t, target, g)
    x_k = st.masked_target(x_t, g)
    hidden = (x_k == 0).all(dim=1).float().mean()
    assert 0.4 < float(hidden) < 0.95  # about mic_ratio of the 8x8 blocks are hidden
    expected = masked_consistency_loss(on.segment(on.model, x_k), pl, weight)
    assert float(weight.min()) == 1.0 and float(expected.detach()) > 0
    assert torch.equal(b["mic"], 0.5 * expected)


def stage2(**kw):
    model = tiny_model()
    width = model.config.latent_channels
    return Stage2(model, Stage2Config(adversarial_weight=1.0, **CONFIDENT, **kw), PatchDiscriminator(width, 16))


def test_stage2_mic_trains_the_denoiser_through_z0_hat_and_leaves_the_encoder_alone():
    method = stage2(mic_weight=1.0, mic_block_size=8, freeze_decoder=False)
    out = losses_of(method, batch())
    assert {"diffusion", "seg", "adv", "mic"} == set(out.losses) and float(out.losses["mic"].detach()) > 0
    out.losses["mic"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.model.diffusion.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.model.decoder.parameters())
    assert all(p.grad is None for p in method.model.encoder.parameters())
    assert set(out.critic_inputs) == {"source", "target"}  # MIC's masked image never reaches the critic


def test_mixed_critic_sees_source_target_and_mixed_with_mixed_as_target():
    data = batch()
    plain, mixed = stage2().eval(), stage2(adversarial_mixed="target").eval()  # eval: no dropout
    a, b = losses_of(plain, data), losses_of(mixed, data)
    assert set(a.critic_inputs) == {"source", "target"}
    assert set(b.critic_inputs) == {"source", "target", "mixed"}
    for k in ("source", "target"):  # the same step otherwise: same draws, same inputs
        assert torch.equal(a.critic_inputs[k], b.critic_inputs[k])
    assert b.critic_inputs["mixed"].shape == b.critic_inputs["source"].shape
    assert not torch.equal(b.critic_inputs["mixed"], b.critic_inputs["target"])
    disc = mixed.discriminator
    src, tgt, mix = (disc(b.critic_inputs[k]) for k in ("source", "target", "mixed"))
    # critic: source labelled 1, target and mixed labelled 0, one mean over both
    expected = 0.5 * (F.mse_loss(src, torch.ones_like(src))
                      + F.mse_loss(torch.cat([tgt, mix]), torch.zeros_like(torch.cat([tgt, mix]))))
    assert torch.allclose(mixed.critic_losses(b.critic_inputs).losses["disc"], expected)
    # generator: target and mixed both pushed towards the source label
    fooled = torch.cat([tgt, mix]).detach()
    assert torch.allclose(b.losses["adv"], F.mse_loss(fooled, torch.ones_like(fooled)))


def test_third_class_critic_scores_three_domains_against_their_one_hot_codes():
    model = tiny_model()
    cfg = Stage2Config(adversarial_weight=1.0, adversarial_mixed="third", disc_channels=16, **CONFIDENT)
    method = Stage2(model, cfg, Stage2.build_critic(cfg, model.config)).eval()
    out = losses_of(method, batch())
    assert set(out.critic_inputs) == {"source", "target", "mixed"}
    disc = method.discriminator
    scores = {k: disc(v) for k, v in out.critic_inputs.items()}
    assert scores["source"].shape[1] == 3  # one output per domain: source, mixed, target
    codes = {"source": 0, "mixed": 1, "target": 2}

    def code(s, k):
        return F.one_hot(torch.full(s.shape[:1] + s.shape[2:], codes[k]), 3).permute(0, 3, 1, 2).float()

    expected = sum(F.mse_loss(s, code(s, k)) for k, s in scores.items()) / 3
    assert torch.allclose(method.critic_losses(out.critic_inputs).losses["disc"], expected)
    fooled = torch.cat([scores["target"], scores["mixed"]]).detach()  # both pushed to the source code
    assert torch.allclose(out.losses["adv"], F.mse_loss(fooled, code(fooled, "source")))
    plain = Stage2.build_critic(Stage2Config(adversarial_weight=1.0), model.config)
    assert plain(out.critic_inputs["source"]).shape[1] == 1  # the default critic is unchanged
