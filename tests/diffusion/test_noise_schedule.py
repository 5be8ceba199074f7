"""Closed-form checks of the diffusion glue: alpha_bar, add_noise, targets and their inversion."""

import math

import pytest
import torch

from iccld.diffusion import (
    add_noise,
    alpha_bar,
    as_timesteps,
    build_sampler,
    build_train_scheduler,
    diffusion_target,
    output_to_z0,
    sample_timesteps,
)
from iccld.errors import ConfigError

T = 1000


def cosine_alpha_bar(t: int) -> float:
    """Nichol & Dhariwal's cosine schedule, alpha_bar at (0-based) timestep t: f(t+1)/f(0)."""
    f = lambda s: math.cos((s / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    return f(t + 1) / f(0)


def test_cosine_alpha_bar_matches_the_formula():
    sched = build_train_scheduler(T, "squaredcos_cap_v2", "sample")
    for t in (0, 1, 10, 250, 500, 750, 900, 990):
        assert sched.alphas_cumprod[t].item() == pytest.approx(cosine_alpha_bar(t), rel=1e-4, abs=1e-7)
    ab = sched.alphas_cumprod
    assert torch.all(ab[1:] < ab[:-1])  # strictly decreasing
    assert ab[0].item() > 0.9999 and ab[-1].item() < 1e-6  # ~clean at t=0, ~pure noise at T-1


def test_linear_schedule_alpha_bar_is_the_product_of_one_minus_beta():
    sched = build_train_scheduler(T, "linear", "sample")
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    expected = torch.cumprod(1 - betas, 0)
    assert torch.allclose(sched.alphas_cumprod.double(), expected, rtol=1e-5)


def test_sampler_and_train_scheduler_share_alpha_bar():
    a = build_train_scheduler(T, "squaredcos_cap_v2", "v_prediction")
    b = build_sampler(T, "squaredcos_cap_v2", "v_prediction")
    assert torch.equal(a.alphas_cumprod, b.alphas_cumprod)
    b.set_timesteps(4)
    assert b.timesteps.tolist() == [999, 749, 499, 249]  # trailing: the first step is at T-1


def test_add_noise_closed_form():
    sched = build_train_scheduler(T, "squaredcos_cap_v2", "sample")
    g = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(3, 4, 5, 7, generator=g), torch.randn(3, 4, 5, 7, generator=g)
    t = torch.tensor([0, 500, 999])
    z_t = add_noise(sched, z0, noise, t)
    for i, ti in enumerate(t.tolist()):
        ab = cosine_alpha_bar(ti) if ti < 999 else sched.alphas_cumprod[ti].item()
        expected = math.sqrt(ab) * z0[i] + math.sqrt(1 - ab) * noise[i]
        assert torch.allclose(z_t[i], expected, atol=1e-5)
    # t = 0 is nearly clean: sqrt(1 - alpha_bar[0]) ~ 0.006
    z_0 = add_noise(sched, z0, noise, torch.zeros(3, dtype=torch.long))
    assert (z_0 - z0).abs().max() < 0.01 * noise.abs().max()


@pytest.mark.parametrize("kind", ["sample", "epsilon", "v_prediction"])
def test_estimate_inverts_add_noise_when_the_output_is_the_true_target(kind):
    sched = build_train_scheduler(T, "squaredcos_cap_v2", kind)
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(4, 8, 3, 5, generator=g, dtype=torch.float64)
    noise = torch.randn(4, 8, 3, 5, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 100, 600, 950])
    z_t = add_noise(sched, z0, noise, t)
    target = diffusion_target(sched, z0, noise, t)
    assert torch.allclose(output_to_z0(sched, target, z_t, t), z0, atol=1e-9)


def test_targets_by_prediction_type():
    g = torch.Generator().manual_seed(2)
    z0, noise = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    t = torch.tensor([10, 700])
    assert diffusion_target(build_train_scheduler(T, "squaredcos_cap_v2", "sample"), z0, noise, t) is z0
    assert diffusion_target(build_train_scheduler(T, "squaredcos_cap_v2", "epsilon"), z0, noise, t) is noise
    v_sched = build_train_scheduler(T, "squaredcos_cap_v2", "v_prediction")
    ab = alpha_bar(v_sched, t, z0)
    v = diffusion_target(v_sched, z0, noise, t)
    assert torch.allclose(v, ab.sqrt() * noise - (1 - ab).sqrt() * z0, atol=1e-6)


def test_timesteps_helpers():
    assert as_timesteps(7, 3, torch.device("cpu")).tolist() == [7, 7, 7]
    assert as_timesteps(torch.tensor([1, 2]), 2, torch.device("cpu")).dtype == torch.long
    with pytest.raises(ValueError):
        as_timesteps(torch.tensor([1, 2, 3]), 2, torch.device("cpu"))
    a = sample_timesteps(64, T, generator=torch.Generator().manual_seed(3))
    b = sample_timesteps(64, T, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() < T and a.unique().numel() > 10


def test_bad_schedule_values_are_config_errors():
    with pytest.raises(ConfigError, match="model.prediction_type"):
        build_train_scheduler(T, "squaredcos_cap_v2", "x0")
    with pytest.raises(ConfigError, match="model.beta_schedule"):
        build_sampler(T, "cosine", "sample")
