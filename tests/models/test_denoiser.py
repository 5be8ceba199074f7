"""eps_theta: GroupNorm groups that keep the timestep visible, the fixed-step sampling runner (same
outputs as the generic U-Net call), its reuse, and the flag that switches it off."""

import dataclasses

import diffusers
import pytest
import torch

from iccld.errors import ConfigError
from iccld.diffusion.fixed_steps import MEASURED_DIFFUSERS, FixedStepDenoiser, supports_fixed_steps
from iccld.diffusion.unet import run_denoiser
from iccld.io import build_model_from_config
from iccld.models.denoiser import build_denoiser, norm_groups
from iccld.presets import preset

TIMESTEPS = [999, 749, 499, 249]


def randomised(unet):
    """A U-Net with every weight drawn at random (the zero-initialised output layer included), as
    after training: outputs then depend on every part of the network."""
    torch.manual_seed(0)
    for p in unet.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return unet.eval()


def test_norm_groups_leave_at_least_four_channels_per_group():
    assert norm_groups([16]) == 4
    assert norm_groups([32]) == 8
    assert norm_groups([32, 64]) == 8
    assert norm_groups([128, 256, 256]) == 32  # diffusers' default where the channels allow it
    assert norm_groups([6]) == 1
    assert norm_groups([32], requested=16) == 16
    with pytest.raises(ValueError, match="could not see t"):
        norm_groups([32], requested=32)
    with pytest.raises(ValueError, match="do not divide"):
        norm_groups([16, 24], requested=16)


@pytest.mark.parametrize("channels, layers", [([16], 0), ([32, 64], 1)])
def test_the_unet_sees_the_timestep(channels, layers):
    """With one channel per GroupNorm group the norm after each time projection removed it again and
    the output was the same for every t; with the chosen groups it is not."""
    unet = randomised(build_denoiser(16, channels, layers, mid_attention=False, mid_block=False))
    z = torch.randn(2, 16, 8, 16)
    with torch.no_grad():
        early = run_denoiser(unet, z, z, torch.full((2,), 999))
        late = run_denoiser(unet, z, z, torch.full((2,), 249))
    assert (early - late).abs().max() > 1e-3


def test_unequal_levels_need_a_resnet_on_the_down_path():
    with pytest.raises(ValueError, match="same channels on every level"):
        build_denoiser(16, [16, 32], 0)
    assert len(build_denoiser(16, [16, 16], 0).up_blocks) == 2


@pytest.mark.parametrize("channels, layers, mid, attention, hw", [
    ([16], 0, False, False, (8, 16)),  # the CPU preset
    ([32, 64], 2, True, True, (5, 7)),  # two levels, middle block with attention, odd latent
    ([16, 32, 32], 1, True, False, (9, 13)),
])
def test_fixed_step_runner_gives_the_generic_outputs(channels, layers, mid, attention, hw):
    unet = randomised(build_denoiser(16, channels, layers, mid_attention=attention, mid_block=mid))
    assert supports_fixed_steps(unet)
    z_t, z0 = torch.randn(3, 16, *hw), torch.randn(3, 16, *hw)
    with torch.no_grad():
        runner = FixedStepDenoiser(unet, TIMESTEPS)
        for t in TIMESTEPS:
            expected = run_denoiser(unet, z_t, z0, torch.full((3,), t))
            torch.testing.assert_close(runner(z_t, z0, t), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["cpu", "paper"])
def test_fixed_step_runner_matches_diffusers_own_forward_on_the_presets(name):
    """Against ``UNet2DModel.forward`` itself (no iccld wrapper), to 1e-5, on the presets' U-Nets."""
    cfg = preset(name)
    unet = randomised(build_denoiser(cfg.latent_channels, cfg.unet_channels, cfg.unet_layers_per_block,
                                     mid_attention=cfg.unet_attention, mid_block=cfg.unet_mid_block))
    assert supports_fixed_steps(unet)
    z_t, z0 = torch.randn(2, cfg.latent_channels, 8, 16), torch.randn(2, cfg.latent_channels, 8, 16)
    with torch.no_grad():
        runner = FixedStepDenoiser(unet, TIMESTEPS)
        for t in TIMESTEPS:
            expected = unet(torch.cat([z_t, z0], dim=1), torch.full((2,), t)).sample
            assert float(expected.abs().mean()) > 0.05  # every layer random: the output is not trivially 0
            torch.testing.assert_close(runner(z_t, z0, t), expected, rtol=1e-5, atol=1e-5)


def test_fixed_step_runner_is_pinned_to_the_diffusers_version_it_was_checked_against():
    installed = diffusers.__version__
    assert installed == MEASURED_DIFFUSERS, (
        f"diffusers {installed} is installed, but iccld/diffusion/fixed_steps.py re-implements "
        f"UNet2DModel's forward as of diffusers {MEASURED_DIFFUSERS}. If the equality tests in this file "
        "pass, rerun benchmarks/fixed_steps_speed.py and set MEASURED_DIFFUSERS to the new version; if "
        "not, make LatentDiffusion's fast_sampling opt-in (see the module's docstring)")


def test_unsupported_unets_are_reported_and_sampling_still_works():
    cpu = preset("cpu")
    model = build_model_from_config(cpu).eval()
    block = model.denoiser.up_blocks[0].resnets[0]
    block.time_embedding_norm = "scale_shift"  # a variant the runner does not implement
    assert not supports_fixed_steps(model.denoiser)
    with pytest.raises(ValueError, match="not supported"):
        FixedStepDenoiser(model.denoiser, TIMESTEPS)
    block.time_embedding_norm = "default"
    assert supports_fixed_steps(model.denoiser)


@pytest.fixture()
def trained_model():
    torch.manual_seed(0)
    model = build_model_from_config(preset("cpu")).eval()
    randomised(model.denoiser)
    return model


def test_sampling_without_gradients_equals_the_generic_loop(trained_model):
    z0 = torch.randn(2, 16, 8, 16)
    with torch.no_grad():
        fast = trained_model.sample(z0, 4, torch.Generator().manual_seed(3))
    assert trained_model.diffusion._fixed_steps is not None  # the no-grad path used the runner
    with torch.enable_grad():  # the generic path, e.g. for a loss through the sampler
        generic = trained_model.sample(z0, 4, torch.Generator().manual_seed(3))
    assert generic.requires_grad
    torch.testing.assert_close(fast, generic.detach(), rtol=0, atol=1e-5)


def test_the_runner_is_reused_until_the_time_weights_change(trained_model):
    z0 = torch.randn(1, 16, 8, 16)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    with torch.no_grad():
        first = trained_model.sample(z0, 4, g())
        runner = trained_model.diffusion._fixed_steps
        assert torch.equal(trained_model.sample(z0, 4, g()), first)
        assert trained_model.diffusion._fixed_steps is runner
        trained_model.sample(z0, 2, g())  # other timesteps: a new runner
        assert trained_model.diffusion._fixed_steps is not runner
        runner = trained_model.diffusion._fixed_steps
        trained_model.denoiser.time_embedding.linear_1.weight.mul_(3.0)  # as an optimizer or EMA step
        changed = trained_model.sample(z0, 4, g())
        assert trained_model.diffusion._fixed_steps is not runner
    with torch.enable_grad():
        expected = trained_model.sample(z0, 4, g()).detach()
    torch.testing.assert_close(changed, expected, rtol=0, atol=1e-5)
    assert (changed - first).abs().max() > 1e-4


def test_the_runner_is_rebuilt_when_autocast_changes(trained_model):
    z0 = torch.randn(1, 16, 8, 16)
    with torch.no_grad():
        trained_model.sample(z0, 4, torch.Generator().manual_seed(1))
        runner = trained_model.diffusion._fixed_steps
        with torch.autocast("cpu", dtype=torch.bfloat16):  # projections would be bf16 here
            trained_model.sample(z0, 1, torch.Generator().manual_seed(1))
            assert trained_model.diffusion._fixed_steps.matches(trained_model.denoiser, [999])
        assert not trained_model.diffusion._fixed_steps.matches(trained_model.denoiser, [999])
        trained_model.sample(z0, 4, torch.Generator().manual_seed(1))
        assert trained_model.diffusion._fixed_steps is not runner


def test_the_flag_off_samples_through_the_generic_forward_with_the_same_outputs(trained_model):
    z0 = torch.randn(2, 16, 8, 16)
    before = torch.get_num_threads()
    with torch.no_grad():
        fast = trained_model.sample(z0, 4, torch.Generator().manual_seed(3))
        trained_model.diffusion.fast_sampling = False
        trained_model.diffusion._fixed_steps = None
        generic = trained_model.sample(z0, 4, torch.Generator().manual_seed(3))
    assert trained_model.diffusion._fixed_steps is None  # the runner was not built
    torch.testing.assert_close(fast, generic, rtol=0, atol=1e-5)
    assert torch.get_num_threads() == before  # sampling leaves torch's global state alone


def test_predict_matches_sequential_generic_sampling(trained_model):
    """predict's K=4 path (the runner) equals encode, the generic DDIM loop and decode."""
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        logits = trained_model.predict(x, steps=4, generator=torch.Generator().manual_seed(7)).logits
        z0, skips = trained_model.encode(x)
    with torch.enable_grad():
        z = trained_model.sample(z0, 4, torch.Generator().manual_seed(7)).detach()
    with torch.no_grad():
        expected = trained_model.decode(z, skips, (64, 96))
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)


def test_old_cpu_width_with_one_channel_per_group_is_refused():
    cfg = dataclasses.replace(preset("cpu"), unet_channels=[32], unet_norm_groups=32)
    with pytest.raises(ConfigError, match="unet_norm_groups"):
        build_model_from_config(cfg)
