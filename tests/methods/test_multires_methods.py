"""The methods with HRDA multi-resolution (model.multires): the detail loss weight, pseudo-labels from
the fused prediction, stage 2 at both scales, and 2-iteration runs through the CLI."""

from __future__ import annotations

import torch

from iccld.cli import main
from iccld.io import build_model_from_config
from iccld.io.checkpoint import load_checkpoint
from iccld.methods.base import MethodConfig, cross_entropy
from iccld.methods.stage1 import Stage1, Stage1Config
from iccld.methods.stage2 import Stage2, Stage2Config
from iccld.methods.supervised import SourceOnly
from iccld.models import PatchDiscriminator
from iccld.models.multires import predict_draws, train_forward
from iccld.presets import preset
from iccld.uda.pseudo_label import pseudo_labels

from conftest import CONFIGS, tiny_overrides

CONFIDENT = dict(pseudo_threshold=0.0, pl_crop_top=0, pl_crop_bottom=0)
MULTIRES = ["model.multires.enabled=true", "model.multires.detail_crop=[32,32]"]


def multires_model(detail_loss_weight=0.1):
    cfg = preset("cpu")
    cfg.multires.enabled = True
    cfg.multires.detail_crop = [32, 32]
    cfg.multires.detail_loss_weight = detail_loss_weight
    torch.manual_seed(0)
    return build_model_from_config(cfg)


def batch(b=2, h=64, w=64):
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, 19, (b, h, w), generator=g)
    label[:, :4] = 255
    return {"source": {"image": torch.randn(b, 3, h, w, generator=g), "label": label},
            "target": {"image": torch.randn(b, 3, h, w, generator=g), "label": torch.full((b, h, w), 255)}}


def test_detail_loss_weight_scales_the_detail_term():
    data = batch()["source"]
    losses = {}
    for lam in (0.1, 0.4):
        method = SourceOnly(multires_model(lam), MethodConfig(name="source_only")).eval()
        losses[lam] = method.training_losses({"source": data}, 0, torch.Generator().manual_seed(5))["seg"]
        out = train_forward(method.model, data["image"], torch.Generator().manual_seed(5))  # the same box
        fused, detail = cross_entropy(out.logits, data["label"]), cross_entropy(out.detail, out.box.crop(data["label"]))
        assert torch.allclose(losses[lam], (1 - lam) * fused + lam * detail, atol=1e-6)
        assert not torch.allclose(fused, detail)  # so the weight matters
    # the same network (same seed) and box: the loss is linear in lambda_d
    assert torch.allclose(losses[0.4] - losses[0.1], 0.3 * (detail - fused), atol=1e-5)


def test_pseudo_labels_come_from_the_fused_multires_prediction():
    method = Stage1(multires_model(), Stage1Config(name="stage1", **CONFIDENT)).train()
    x_t = batch()["target"]["image"]
    with torch.no_grad():
        target = method.self_training.pseudo_labels(method.segment(method.ema_model, x_t))
    labels, weight = target.label, target.weight
    with torch.no_grad():
        fused = next(predict_draws(method.ema_model, x_t, diffusion=False))
        z0, skips = method.ema_model.encode(x_t)
        single = method.ema_model.decode(z0, skips, x_t.shape[-2:])
    expected, expected_weight = pseudo_labels(fused, 0.0)
    assert torch.equal(labels, expected) and torch.equal(weight, expected_weight)
    assert not torch.equal(labels, single.argmax(1))  # not the single-resolution prediction


def test_stage1_step_trains_both_branches_and_the_attention():
    method = Stage1(multires_model(), Stage1Config(name="stage1", mic_weight=1.0, mic_block_size=16, **CONFIDENT))
    losses = method.training_losses(batch(), 0, torch.Generator().manual_seed(0)).losses
    assert set(losses) == {"seg", "mix", "mic"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    attention = method.model.multires.attention
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (attention.classifier.weight,))
    assert method.model.encoder.stages[0].patch_embeddings.proj.weight.grad is not None


def test_stage2_runs_the_latent_path_at_both_scales_with_the_attention_frozen():
    model = multires_model()
    cfg = Stage2Config(name="stage2", stage1_checkpoint="unused", mic_weight=1.0, mic_block_size=16, **CONFIDENT)
    method = Stage2(model, cfg, PatchDiscriminator(16, 8)).train()
    assert not any(p.requires_grad for p in model.multires.parameters())  # frozen with D
    assert not model.multires.training
    assert method.lr_scale("scale_attention") == method.lr_scale("decoder")
    step = method.training_losses(batch(), 0, torch.Generator().manual_seed(0))
    assert set(step.losses) == {"diffusion", "seg", "mic", "adv"}
    assert all(torch.isfinite(v) for v in step.losses.values())
    # the critic sees the context scale: 64x64 crops at 0.5 -> 32x32 -> latents at stride 16
    assert step.critic_inputs["source"].shape == (2, 16, 2, 2)
    sum(step.losses.values()).backward()
    assert model.denoiser.conv_out.weight.grad is not None
    # same draws, same step: the multi-resolution step is reproducible from the generator
    again = method.training_losses(batch(), 0, torch.Generator().manual_seed(0))
    assert torch.allclose(again.losses["seg"], step.losses["seg"])


def _train(config: str, out, overrides) -> int:
    return main(["train", "--config", str(CONFIGS / "synthetic" / config), "--out", str(out), *overrides])


def test_stage1_and_evaluate_through_the_cli_with_multires(tiny_benchmark, tmp_path, capsys):
    overrides = tiny_overrides(tiny_benchmark) + MULTIRES
    assert _train("stage1.yaml", tmp_path / "s1", overrides) == 0
    state = load_checkpoint(tmp_path / "s1" / "last.ckpt")
    assert state["iteration"] == 2
    assert any(k.startswith("multires.attention.") for k in state["model"])
    assert any(k.startswith("multires.attention.") for k in state["ema_model"])
    saved = (tmp_path / "s1" / "config.yaml").read_text()
    assert "multires:" in saved and "enabled: true" in saved
    assert main(["evaluate", "--checkpoint", str(tmp_path / "s1"), "--json", str(tmp_path / "e.json")]) == 0


def test_stage2_through_the_cli_with_multires(tiny_benchmark, tmp_path):
    overrides = tiny_overrides(tiny_benchmark) + MULTIRES
    assert _train("source_only.yaml", tmp_path / "s1", overrides) == 0
    s1 = load_checkpoint(tmp_path / "s1" / "last.ckpt")["ema_model"]
    stage2 = overrides + [f"method.stage1_checkpoint={tmp_path / 's1'}"]
    assert _train("stage2.yaml", tmp_path / "s2", stage2) == 0
    state = load_checkpoint(tmp_path / "s2" / "last.ckpt")
    assert state["iteration"] == 2
    # the recipe fine-tunes D (freeze_decoder: false), and the scale attention with it, at D's lr
    attention = [k for k in s1 if k.startswith("multires.") and k.endswith("weight")]
    assert attention and any(not torch.equal(state["model"][k], s1[k]) for k in attention)
    encoder = [k for k in s1 if k.startswith("encoder.")]
    assert all(torch.equal(state["model"][k], s1[k]) for k in encoder)  # E frozen


def _tiny_paper(bench) -> list[str]:
    """A tiny network and crops scaled down (64x64 crops, 32x32 detail) for the paper-scale YAMLs."""
    return tiny_overrides(bench, iters=1) + [
        "model.backbone=mit-tiny", "model.pretrained=", "model.latent_channels=16", "model.decoder_channels=64",
        "model.unet_channels=[32,64]", "model.unet_layers_per_block=1", "data.source.resize=null",
        "data.target.resize=null", "data.val.resize=null", "model.multires.detail_crop=[32,32]"]


def test_hrda_stage1_mic_config_trains_with_a_tiny_model(tiny_benchmark, tmp_path):
    """hrda_stage1_mic.yaml (MIC + FD on HRDA) from its real YAML."""
    from iccld.config import load_config
    from iccld.training.commands import run_training

    config = load_config(CONFIGS / "gta5_cityscapes" / "hrda_stage1_mic.yaml",
                         _tiny_paper(tiny_benchmark) + ["method.mic_block_size=16"])
    assert config.method.fd_weight > 0 and config.model.decoder == "daformer"
    assert run_training(config, tmp_path / "s1", progress=False) == 0
    assert any(k.startswith("multires.") for k in load_checkpoint(tmp_path / "s1" / "last.ckpt")["model"])


def test_hrda_source_only_and_stage2_configs_train_with_a_tiny_model(tiny_benchmark, tmp_path):
    """hrda_source_only.yaml, then hrda_stage2.yaml from it, from their real YAML."""
    from iccld.config import load_config
    from iccld.training.commands import run_training

    family, tiny = CONFIGS / "gta5_cityscapes", _tiny_paper(tiny_benchmark)
    assert run_training(load_config(family / "hrda_source_only.yaml", tiny), tmp_path / "s1", progress=False) == 0
    stage2 = load_config(family / "hrda_stage2.yaml", tiny + [f"method.stage1_checkpoint={tmp_path / 's1'}"])
    assert run_training(stage2, tmp_path / "s2", progress=False) == 0
    assert load_checkpoint(tmp_path / "s2" / "last.ckpt")["iteration"] == 1
