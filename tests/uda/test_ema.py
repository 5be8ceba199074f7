"""EMA arithmetic in closed form (DAFormer's warm-up decay), buffers."""

import pytest
import torch
from torch import nn

from iccld.uda.ema import batch_statistics_like, copy_model, ema_decay, ema_update


def _set(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_decay_warm_up():
    assert ema_decay(0.999, 0) == 0.0
    assert ema_decay(0.999, 1) == 0.5
    assert ema_decay(0.999, 2) == pytest.approx(2 / 3)
    assert ema_decay(0.9, 9) == pytest.approx(0.9)  # 1 - 1/10 = 0.9
    assert ema_decay(0.9, 100) == 0.9


def test_closed_form_after_three_steps():
    model = nn.Linear(3, 2)
    ema = copy_model(model)
    _set(ema, -7.0)  # whatever the EMA model held, step 0 copies the model
    values = [1.0, 3.0, 10.0]
    for step, v in enumerate(values):
        _set(model, v)
        ema_update(ema, model, alpha=0.6, step=step)
    # step 0: a=0 -> 1; step 1: a=0.5 -> 0.5*1 + 0.5*3 = 2; step 2: a=min(2/3, 0.6)=0.6 -> 0.6*2 + 0.4*10
    expected = 0.6 * 2.0 + 0.4 * 10.0
    for p in ema.parameters():
        torch.testing.assert_close(p, torch.full_like(p, expected))
    for p in model.parameters():  # the model is read, not written
        torch.testing.assert_close(p, torch.full_like(p, 10.0))


def test_returns_decay_and_rejects_bad_alpha():
    model = nn.Linear(2, 2)
    ema = copy_model(model)
    assert ema_update(ema, model, alpha=0.99, step=1) == 0.5
    with pytest.raises(ValueError):
        ema_update(ema, model, alpha=1.0, step=1)


def test_float_buffers_averaged_integer_buffers_copied():
    model = nn.BatchNorm1d(4)
    ema = copy_model(model)
    model.running_mean.fill_(2.0)
    model.num_batches_tracked.fill_(5)
    ema_update(ema, model, alpha=0.9, step=1)  # alpha_t = 0.5
    torch.testing.assert_close(ema.running_mean, torch.full((4,), 1.0))  # 0.5*0 + 0.5*2
    assert int(ema.num_batches_tracked) == 5


def test_copy_model_is_frozen_and_independent():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    ema = copy_model(model)
    assert all(not p.requires_grad for p in ema.parameters())
    assert all(p.requires_grad for p in model.parameters())
    before = [p.clone() for p in ema.parameters()]
    _set(model, 4.0)  # no shared storage: the copy keeps its values
    for p, b in zip(ema.parameters(), before):
        torch.testing.assert_close(p, b)
        assert not torch.equal(p, torch.full_like(p, 4.0))


def test_mismatched_architectures_raise():
    with pytest.raises(ValueError, match="different parameters"):
        ema_update(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), alpha=0.9, step=1)


def test_batch_statistics_like_normalises_by_the_batch_where_the_model_trains_and_writes_nothing():
    """DAFormer's teacher: inside the block the EMA model's BatchNorm layers whose twins train use the
    batch's statistics (equal to a train-mode copy), a layer the model keeps in eval mode (norm_eval)
    keeps its running statistics; after it, statistics, modes and momenta are as before."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    for bn in (model[1], model[3]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    ema = copy_model(model).eval()
    model.train()
    model[1].eval()  # as norm_eval keeps an encoder's BatchNorm
    x = torch.randn(2, 3, 5, 5)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        running = ema(x)
        with batch_statistics_like(ema, model) as teacher:
            inside = teacher(x)
        reference = copy_model(ema)
        reference.train()
        reference[1].eval()
        expected = reference(x)
    assert torch.allclose(inside, expected, atol=1e-6) and not torch.allclose(inside, running, atol=1e-3)
    assert all(torch.equal(v, ema.state_dict()[k]) for k, v in before.items() if "num_batches" not in k)
    assert not ema[1].training and not ema[3].training and ema[3].momentum == 0.1
    with torch.no_grad():
        assert torch.equal(ema(x), running)


def test_teacher_norm_is_a_checked_self_training_setting():
    from iccld.config import load_config, to_dict
    from iccld.errors import ConfigError

    from conftest import CONFIGS

    assert load_config(CONFIGS / "synthetic" / "stage1.yaml").method.teacher_norm == "batch"  # with daformer's BN
    config = load_config(CONFIGS / "synthetic" / "stage1.yaml", ["method.teacher_norm=running"])
    assert config.method.teacher_norm == "running"
    assert "teacher_norm" not in to_dict(config)["method"]  # a switch left out of a resolved config while off
    with pytest.raises(ConfigError, match="method.teacher_norm: 'train' is not one of running, batch"):
        load_config(CONFIGS / "synthetic" / "stage1.yaml", ["method.teacher_norm=train"])

