"""The MIC, FD and mixed-critic configs through the normal trainer; resume stays exact with MIC on."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from iccld.config import load_config
from iccld.io.checkpoint import load_checkpoint
from iccld.training.commands import run_training
from iccld.training.trainer import Trainer

from conftest import CONFIGS, tiny_overrides

SYNTHETIC = CONFIGS / "synthetic"
# the tiny model's pseudo-labels are never confident at 0.968, which would make MIC's term 0
CONFIDENT = ["method.pseudo_threshold=0.0"]


def train(name: str, out: Path, overrides: list[str], **kwargs) -> int:
    return run_training(load_config(SYNTHETIC / f"{name}.yaml", overrides), out, progress=False, **kwargs)


def test_new_synthetic_configs_train_two_iterations(tiny_benchmark, tmp_path):
    base = tiny_overrides(tiny_benchmark) + CONFIDENT
    for name, stage1 in (("stage1_mic", None), ("stage1_fd", None), ("stage1", None), ("stage2_mic", "stage1_mic"),
                         ("stage2_mixed", "stage1"), ("stage2_mixed_third", "stage1"),
                         ("stage2_fd", "stage1_fd"), ("stage2_mixed_fd", "stage1_fd")):
        extra = [f"method.stage1_checkpoint={tmp_path / stage1}"] if stage1 else []
        assert train(name, tmp_path / name, base + extra) == 0, name
        state = load_checkpoint(tmp_path / name / "last.ckpt")
        assert state["iteration"] == 2
        assert not any("imagenet" in k for k in state["model"]), name  # the frozen FD copy is never saved
    saved = (tmp_path / "stage2_mixed" / "config.yaml").read_text()
    assert "adversarial_mixed: target" in saved
    assert "adversarial_mixed: target" in (tmp_path / "stage2_mixed_fd" / "config.yaml").read_text()
    assert "mic_weight: 1.0" in (tmp_path / "stage2_mic" / "config.yaml").read_text()


def test_fd_reference_encoder_is_the_initial_one_and_never_moves(tiny_benchmark, tmp_path):
    config = load_config(SYNTHETIC / "stage1_fd.yaml", tiny_overrides(tiny_benchmark, iters=3))
    trainer = Trainer(config, tmp_path / "run", progress=False)
    method = trainer.method
    before = {k: v.clone() for k, v in method.imagenet_encoder.state_dict().items()}
    assert all(torch.equal(v, method.model.encoder.state_dict()[k]) for k, v in before.items())  # E as built
    trainer.fit()
    after = method.imagenet_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not all(torch.equal(before[k], method.model.encoder.state_dict()[k]) for k in before)
    assert not any(p.requires_grad for p in method.imagenet_encoder.parameters())
    trained = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not trained & {id(p) for p in method.imagenet_encoder.parameters()}


def _interrupt_at(monkeypatch, iteration: int) -> None:
    original = Trainer.train_step

    def step(self, batch):
        out = original(self, batch)
        if self.iteration + 1 == iteration:  # the loop increments after train_step returns
            self.signals.received = signal.SIGTERM
        return out

    monkeypatch.setattr(Trainer, "train_step", step)


def test_resume_with_mic_on_is_bitwise_identical(tiny_benchmark, tmp_path, monkeypatch):
    overrides = tiny_overrides(tiny_benchmark, iters=4) + CONFIDENT
    assert train("stage1_mic", tmp_path / "straight", overrides) == 0
    with monkeypatch.context() as m:
        _interrupt_at(m, 2)
        assert train("stage1_mic", tmp_path / "resumed", overrides) == 128 + signal.SIGTERM
    assert load_checkpoint(tmp_path / "resumed" / "last.ckpt")["iteration"] == 2
    assert train("stage1_mic", tmp_path / "resumed", overrides, resume=True) == 0
    a = load_checkpoint(tmp_path / "straight" / "last.ckpt")
    b = load_checkpoint(tmp_path / "resumed" / "last.ckpt")
    assert a["iteration"] == b["iteration"] == 4
    for part in ("model", "ema_model"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"


def test_a_run_with_mic_on_is_not_taken_for_the_same_config_with_mic_off(tiny_benchmark, tmp_path):
    from iccld.errors import TrainingError

    overrides = tiny_overrides(tiny_benchmark)
    assert train("stage1_mic", tmp_path / "run", overrides) == 0
    with pytest.raises(TrainingError, match="different config.*method.mic_weight"):
        train("stage1", tmp_path / "run", overrides, resume=True)
