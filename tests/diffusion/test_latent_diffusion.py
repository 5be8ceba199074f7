"""The latent diffusion object: its loss and z0_hat are the formulas written out from the cosine
schedule's definition (same draws), ``rows`` selects whose error counts, and batched draws equal
successive single draws."""

import pytest
import torch

from iccld.diffusion import build_sampler, build_train_scheduler
from iccld.diffusion.latent import LatentDiffusion
from iccld.models.denoiser import build_denoiser


def diffusion(prediction_type: str = "sample", residual: bool = True) -> LatentDiffusion:
    torch.manual_seed(0)
    unet = build_denoiser(8, [16], 0, mid_attention=False, mid_block=False)
    for p in unet.parameters():  # as after training: the zero-initialised output layer moves too
        torch.nn.init.normal_(p, std=0.1)
    return LatentDiffusion(unet, build_train_scheduler(1000, "squaredcos_cap_v2", prediction_type),
                           build_sampler(1000, "squaredcos_cap_v2", prediction_type), sampling_steps=4,
                           residual=residual and prediction_type == "sample")


def cosine_alpha_bar(t: torch.Tensor, T: int = 1000) -> torch.Tensor:
    """alpha_bar[t] of the squaredcos_cap_v2 schedule from its definition (Nichol & Dhariwal 2021):
    beta_i = min(1 - f((i + 1) / T) / f(i / T), 0.999) with f(s) = cos((s + 0.008) / 1.008 * pi / 2)^2,
    alpha_bar[t] = prod_{i <= t} (1 - beta_i); in float64, shaped (B, 1, 1, 1)."""
    i = torch.arange(T, dtype=torch.float64)

    def f(s):
        return torch.cos((s + 0.008) / 1.008 * torch.pi / 2) ** 2

    beta = torch.clamp(1 - f((i + 1) / T) / f(i / T), max=0.999)
    return torch.cumprod(1 - beta, 0)[t].view(-1, 1, 1, 1)


@pytest.mark.parametrize("kind", ["sample", "epsilon", "v_prediction"])
def test_loss_is_the_written_out_recipe(kind):
    """The loss and z0_hat against the formulas, written here without the schedulers or the code's
    own noising, target and conversion functions: only eps_theta (the U-Net) is shared."""
    d = diffusion(kind)
    z0 = torch.randn(6, 8, 5, 7, generator=torch.Generator().manual_seed(1))
    got = d.loss(z0, z0, torch.Generator().manual_seed(2), rows=slice(0, 4))
    g = torch.Generator().manual_seed(2)  # t first, then eps, both on the CPU
    t = torch.randint(0, 1000, (6,), generator=g)
    eps = torch.randn(z0.shape, generator=g)
    ab = cosine_alpha_bar(t)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    z_t = (a * z0 + s * eps).float()
    with torch.no_grad():
        out = d.denoiser(torch.cat([z_t, z0], dim=1), t).sample.double()  # eps_theta(concat(z_t, z0), t)
    if kind == "sample":
        raw = out + z0  # the residual parameterisation: z0_hat = z0 + eps_theta(...)
        target, z0_hat = z0, raw
    elif kind == "epsilon":
        raw, target = out, eps
        z0_hat = (z_t - s * raw) / a
    else:
        raw, target = out, a * eps - s * z0  # v = sqrt(ab) eps - sqrt(1 - ab) z0
        z0_hat = a * z_t - s * raw
    expected = ((raw - target)[:4] ** 2).mean()
    assert float(got.loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    torch.testing.assert_close(got.z0_hat.double(), z0_hat.double(), rtol=1e-4, atol=1e-4)
    assert got.z0_hat.shape == z0.shape and got.loss.requires_grad
    everything = d.loss(z0, z0, torch.Generator().manual_seed(2))
    assert not torch.equal(everything.loss, got.loss)  # the last two rows count now
    assert torch.equal(everything.z0_hat, got.z0_hat)


def test_draws_in_one_loop_equal_successive_single_draws():
    d = diffusion().eval()
    cond = torch.randn(2, 8, 5, 7, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        batched = d.sample(cond, 4, 3, torch.Generator().manual_seed(4))
        g = torch.Generator().manual_seed(4)
        single = torch.cat([d.sample(cond, 4, 1, g) for _ in range(3)])
    assert batched.shape == (6, 8, 5, 7)
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-6)
