"""The DDIM loop: timesteps visited, exactness with oracle denoisers, step validation, noise draws."""

import pytest
import torch

from iccld.diffusion import alpha_bar, build_sampler, check_steps, ddim_sample, ddim_timesteps, draw_noise
from iccld.errors import ConfigError

T = 1000


def test_loop_visits_trailing_timesteps_and_returns_the_sample_prediction():
    sampler = build_sampler(T, "squaredcos_cap_v2", "sample")
    seen = []
    target = torch.full((2, 3, 4, 5), 0.25)

    def denoise(z_t, t):
        seen.append(t)
        return target

    out = ddim_sample(denoise, sampler, torch.randn(2, 3, 4, 5), steps=4)
    assert seen == [999, 749, 499, 249]
    assert torch.equal(out, target)
    seen.clear()
    ddim_sample(denoise, sampler, torch.randn(2, 3, 4, 5), steps=1)
    assert seen == [999]
    assert ddim_timesteps(sampler, 4) == [999, 749, 499, 249]
    assert ddim_timesteps(sampler, 2) == [999, 499]


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("steps", [1, 3, 4])
def test_oracle_denoiser_recovers_z0(kind, steps):
    """With a network that outputs the exact target for the true z0, DDIM lands on z0."""
    sampler = build_sampler(T, "squaredcos_cap_v2", kind)
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)

    def oracle(z_t, t):
        ab = alpha_bar(sampler, torch.full((z_t.shape[0],), t), z_t)
        eps = (z_t - ab.sqrt() * z0) / (1 - ab).sqrt()
        return eps if kind == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * z0

    out = ddim_sample(oracle, sampler, torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64), steps)
    # epsilon: at t = T-1 the scheduler's float32 1 - alpha_bar rounds to 1 and the z0 estimate
    # divides by sqrt(alpha_bar) ~ 5e-5, so a one-step sample is only accurate to ~1e-4
    assert torch.allclose(out, z0, atol=1e-6 if kind == "v_prediction" else 1e-3)


def test_step_count_is_validated():
    check_steps(1, T)
    check_steps(T, T)
    for bad in (0, T + 1, 2.0):
        with pytest.raises(ConfigError, match="sampling steps"):
            check_steps(bad, T)


def test_noise_draws_follow_the_generator():
    like = torch.empty(2, 3, 4, 4)
    a = draw_noise(like, torch.Generator().manual_seed(5))
    b = draw_noise(like, torch.Generator().manual_seed(5))
    c = draw_noise(like, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert abs(float(draw_noise(torch.empty(64, 64), torch.Generator().manual_seed(0)).std()) - 1) < 0.05


def test_every_draw_happens_on_the_generators_device_or_the_cpu():
    """One rule for noise and timesteps: the generator's device, or the CPU's global generator without
    one, whatever device the latents are on (here 'meta', where a draw on the latents' device would
    leave the CPU generator untouched)."""
    from iccld.diffusion.schedule import draw_device, sample_timesteps

    assert draw_device(None) == torch.device("cpu") and draw_device(torch.Generator()) == torch.device("cpu")
    like = torch.empty(2, 3, 4, 4, device="meta")
    for draw, reference in ((lambda: draw_noise(like), lambda: torch.randn(2, 3, 4, 4)),
                            (lambda: sample_timesteps(5, T, device="meta"), lambda: torch.randint(0, T, (5,)))):
        torch.manual_seed(7)
        assert draw().device.type == "meta"  # moved to where it is used
        after = torch.rand(3)
        torch.manual_seed(7)
        reference()
        assert torch.equal(after, torch.rand(3))  # the draw consumed the CPU generator, as its reference
