"""The latent patch discriminator."""

import pytest
import torch

from iccld.models import PatchDiscriminator


@pytest.mark.parametrize("hw, out_hw", [((8, 8), (2, 2)), ((5, 7), (2, 2)), ((1, 1), (1, 1)), ((32, 64), (8, 16))])
def test_patch_map_shape(hw, out_hw):
    d = PatchDiscriminator(in_channels=16, channels=8)
    assert d(torch.randn(3, 16, *hw)).shape == (3, 1, *out_hw)


def test_default_width_and_activation():
    d = PatchDiscriminator(in_channels=32)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].out_channels == 64 and convs[-1].out_channels == 1
    assert all(m.negative_slope == 0.2 for m in d.modules() if isinstance(m, torch.nn.LeakyReLU))
    assert not any(isinstance(m, torch.nn.Sigmoid) for m in d.modules())


def test_scores_are_raw_and_gradients_reach_the_input():
    torch.manual_seed(0)
    d = PatchDiscriminator(in_channels=4, channels=8)
    last = d.net[-1]
    with torch.no_grad():  # a score of 5 is only possible without a squashing output
        last.weight.zero_()
        last.bias.fill_(5.0)
    z = torch.randn(2, 4, 8, 8, requires_grad=True)
    assert torch.equal(d(z), torch.full((2, 1, 2, 2), 5.0))
    with torch.no_grad():
        last.weight.normal_()
    ((d(z) - 1.0) ** 2).mean().backward()  # least-squares GAN loss
    assert z.grad.abs().sum() > 0 and d.net[0].weight.grad.abs().sum() > 0
