"""The anchors' remaining details, each an option: mmseg's all-pixel cross-entropy mean, DAFormer's
weight-decay exemptions and its per-term backward (same gradients as one backward of the sum)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from iccld.config import load_config, to_dict
from iccld.errors import ConfigError
from iccld.methods.base import cross_entropy
from iccld.training.optimizers import NORM_LAYERS
from iccld.training.trainer import Trainer
from iccld.uda.mic import masked_consistency_loss

from conftest import CONFIGS, tiny_overrides

SYNTHETIC = CONFIGS / "synthetic"


def _logits_and_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 19, 8, 8, generator=g)
    labels = torch.randint(0, 19, (2, 8, 8), generator=g)
    labels[0, :4] = 255  # a quarter of the batch ignored
    return logits, labels


def test_cross_entropy_means_over_labelled_or_all_pixels():
    logits, labels = _logits_and_labels()
    per_pixel = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")  # ignored: 0
    labelled = (labels != 255).sum().item()
    assert labelled == 96
    assert torch.allclose(cross_entropy(logits, labels), per_pixel.sum() / 96)
    assert torch.allclose(cross_entropy(logits, labels), F.cross_entropy(logits, labels, ignore_index=255))
    assert torch.allclose(cross_entropy(logits, labels, over="all"), per_pixel.sum() / 128)
    weight = torch.full(labels.shape, 0.5)
    assert torch.allclose(cross_entropy(logits, labels, weight, over="all"), per_pixel.sum() / 256)
    assert torch.allclose(masked_consistency_loss(logits, labels, weight, over="all"), per_pixel.sum() / 256)
    assert torch.allclose(masked_consistency_loss(logits, labels, weight), per_pixel.sum() / 192)


def test_the_new_settings_stay_out_of_a_config_at_their_defaults(tiny_benchmark):
    config = load_config(SYNTHETIC / "stage1.yaml", tiny_overrides(tiny_benchmark))
    data = to_dict(config)
    assert "keep_ratio" not in data["data"]["source"] and "no_decay" not in data["optim"]
    assert "backward" not in data["trainer"] and "ce_mean" not in data["method"]
    changed = load_config(SYNTHETIC / "stage1.yaml", tiny_overrides(tiny_benchmark) + [
        "data.source.keep_ratio=false", "optim.no_decay=norms", "trainer.backward=per_term", "method.ce_mean=all"])
    data = to_dict(changed)
    assert data["data"]["source"]["keep_ratio"] is False and data["optim"]["no_decay"] == "norms"
    assert data["trainer"]["backward"] == "per_term" and data["method"]["ce_mean"] == "all"
    for bad, field in (("optim.no_decay=norm", "optim.no_decay"), ("trainer.backward=each", "trainer.backward"),
                       ("method.ce_mean=every", "method.ce_mean")):
        with pytest.raises(ConfigError, match=field):
            load_config(SYNTHETIC / "stage1.yaml", tiny_overrides(tiny_benchmark) + [bad])


def _decay_of(trainer: Trainer) -> dict[int, float]:
    return {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}


def test_weight_decay_exempts_norm_layers_only_with_no_decay_norms(tiny_benchmark, tmp_path):
    overrides = tiny_overrides(tiny_benchmark) + ["model.backbone=mobilenet-v2-tiny"]
    one_dim = Trainer(load_config(SYNTHETIC / "stage1.yaml", overrides), tmp_path / "a", progress=False)
    norms = Trainer(load_config(SYNTHETIC / "stage1.yaml", overrides + ["optim.no_decay=norms"]),
                    tmp_path / "b", progress=False)
    model = norms.method.model
    norm_ids = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    bias_ids = {id(p) for name, p in model.named_parameters() if name.endswith("bias") and id(p) not in norm_ids}
    assert norm_ids and bias_ids  # the encoder's BatchNorms, the denoiser's GroupNorms; conv and linear biases
    decay_a, decay_b = _decay_of(one_dim), _decay_of(norms)
    wd = one_dim.config.optim.weight_decay
    assert wd > 0
    names = {id(p): n for n, p in model.named_parameters()}
    for pid, value in decay_b.items():
        assert value == (0.0 if pid in norm_ids else wd), names[pid]
    # the default exempts every 1-D parameter, biases included
    params_a = {id(p): p for g in one_dim.optimizer.param_groups for p in g["params"]}
    assert all(decay_a[pid] == (0.0 if p.ndim <= 1 else wd) for pid, p in params_a.items())
    assert sum(v == 0 for v in decay_a.values()) > sum(v == 0 for v in decay_b.values())
    # the same parameters are trained, at the same learning rates
    assert len(decay_a) == len(decay_b)


@pytest.mark.parametrize("name", ["stage1_mic", "stage1_fd"])
def test_per_term_backward_gives_the_gradients_of_one_backward(name, tiny_benchmark, tmp_path):
    overrides = tiny_overrides(tiny_benchmark, iters=2) + ["method.pseudo_threshold=0.0"]
    runs = {}
    for mode in ("sum", "per_term"):
        trainer = Trainer(load_config(SYNTHETIC / f"{name}.yaml", overrides + [f"trainer.backward={mode}"]),
                          tmp_path / mode, progress=False)
        batch = _one_batch(trainer)
        released = []
        backward_now = trainer.method.backward_now
        if backward_now is not None:  # count the backward passes the method ran during its step
            trainer.method.backward_now = lambda loss: (released.append(loss.item()), backward_now(loss))
        logged = trainer.train_step(batch)
        assert len(released) == (2 if mode == "per_term" else 0)  # source terms, then the mix (MIC: the rest)
        grads = [p.grad.clone() for g in trainer.optimizer.param_groups for p in g["params"] if p.grad is not None]
        runs[mode] = (logged, grads, [p.detach().clone() for p in trainer.method.model.parameters()])
    (l_sum, g_sum, w_sum), (l_term, g_term, w_term) = runs["sum"], runs["per_term"]
    assert set(l_sum) == set(l_term) and len(l_sum) >= 2
    for k in l_sum:
        assert l_sum[k] == pytest.approx(l_term[k], rel=1e-6), k
    assert len(g_sum) == len(g_term) > 0
    worst = max(float((a - b).abs().max() / (a.abs().max() + 1e-12)) for a, b in zip(g_sum, g_term))
    assert worst < 1e-4  # the same gradients, up to the order of the float sums
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(w_sum, w_term))


def _one_batch(trainer: Trainer) -> dict:
    """The first training batch of ``trainer``, built the way its loop builds it."""
    return trainer.data.first_batch()
