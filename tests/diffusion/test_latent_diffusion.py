"""The latent diffusion object: its loss is the hand-written stage-2 recipe (same draws, same
numbers), ``rows`` selects whose error counts, and batched draws equal successive single draws."""

import pytest
import torch
import torch.nn.functional as F

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


@pytest.mark.parametrize("kind", ["sample", "epsilon", "v_prediction"])
def test_loss_is_the_written_out_recipe(kind):
    d = diffusion(kind)
    z0 = torch.randn(6, 8, 5, 7, generator=torch.Generator().manual_seed(1))
    got = d.loss(z0, z0, torch.Generator().manual_seed(2), rows=slice(0, 4))
    g = torch.Generator().manual_seed(2)  # t first, then eps, both on the CPU
    t = torch.randint(0, 1000, (6,), generator=g)
    noise = torch.randn(z0.shape, generator=g)
    z_t = d.scheduler.add_noise(z0, noise, t)
    raw = d.denoise(z_t, z0, t)
    target = {"sample": z0, "epsilon": noise, "v_prediction": d.scheduler.get_velocity(z0, noise, t)}[kind]
    assert torch.equal(got.loss, F.mse_loss(raw[:4], target[:4]))
    assert torch.equal(got.z0_hat, d.estimate_z0(z_t, z0, t, output=raw))
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
