"""method.teacher_norm=batch: stage 1's pseudo-labels come from the EMA model normalising like a
train-mode copy with dropout and drop-path off (DAFormer's teacher), on a network with BatchNorm in D."""

from __future__ import annotations

import copy

import torch
from torch import nn

from iccld.config import load_config
from iccld.methods.self_training import SelfTraining
from iccld.training.trainer import Trainer

from conftest import CONFIGS, tiny_overrides

DAFORMER = ["model.decoder=daformer", "model.skip_strides=[4,8,16,32]"]


def _teacher_logits(tiny_benchmark, tmp_path, mode, monkeypatch):
    config = load_config(CONFIGS / "synthetic" / "stage1.yaml",
                         tiny_overrides(tiny_benchmark) + DAFORMER + [f"method.teacher_norm={mode}"])
    trainer = Trainer(config, tmp_path / mode, progress=False)
    method = trainer.method
    method.train()
    batch = trainer.data.first_batch()
    seen = []
    original = SelfTraining.pseudo_labels
    monkeypatch.setattr(SelfTraining, "pseudo_labels", lambda self, logits, valid=None: (
        seen.append(logits.clone()), original(self, logits, valid))[1])
    # DAFormer's teacher: train mode with dropout and drop-path off, i.e. only BatchNorm in train mode
    reference = copy.deepcopy(method.ema_model).eval()
    for m in reference.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
    with torch.no_grad():
        expected = method.segment(reference, batch["target"]["image"])
        running = method.segment(method.ema_model, batch["target"]["image"])
    method.training_losses(batch, 0, torch.Generator().manual_seed(0))
    return seen[0], expected, running


def test_batch_teacher_matches_a_train_mode_copy_and_running_is_unchanged(tiny_benchmark, tmp_path, monkeypatch):
    got, expected, running = _teacher_logits(tiny_benchmark, tmp_path, "batch", monkeypatch)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, running, atol=1e-3)  # D's BatchNorm makes the two differ
    got, _, running = _teacher_logits(tiny_benchmark, tmp_path, "running", monkeypatch)
    assert torch.equal(got, running)
