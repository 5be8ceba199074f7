"""Strong augmentation: determinism, shapes, the kornia-0.5 colour operations, blur."""

import colorsys

import pytest
import torch

from iccld.uda.augment import (IMAGENET_MEAN, IMAGENET_STD, _jitter_one, blur_kernel_size,
                               gaussian_blur, hsv_to_rgb, rgb_to_hsv, strong_augment)

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _images(batch: int = 4, seed: int = 0) -> torch.Tensor:
    """Normalised images whose 0..1 values lie strictly inside [0.05, 0.95]."""
    x01 = 0.05 + 0.9 * torch.rand(batch, 3, 20, 24, generator=torch.Generator().manual_seed(seed))
    return (x01 * 255.0 - MEAN) / STD


def test_deterministic_given_generator_and_keeps_shape_dtype_and_input():
    images = _images()
    before = images.clone()
    a = strong_augment(images, torch.Generator().manual_seed(5))
    b = strong_augment(images, torch.Generator().manual_seed(5))
    c = strong_augment(images, torch.Generator().manual_seed(6))
    assert a.shape == images.shape and a.dtype == images.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(images, before)


def test_always_jitter_changes_every_image():
    images = _images()
    out = strong_augment(images, torch.Generator().manual_seed(0), color_jitter_p=0.0, blur=False)
    changed = (out - images).abs().flatten(1).amax(dim=1)  # (B,)
    assert bool((changed > 1e-3).all())


def test_skip_probability_one_and_no_blur_is_identity():
    images = _images()
    out = strong_augment(images, torch.Generator().manual_seed(0), color_jitter_p=1.0, blur=False)
    assert torch.equal(out, images)


def test_same_number_of_draws_whatever_happens():
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    strong_augment(_images(), g1, color_jitter_p=0.0, blur=True)
    strong_augment(_images(), g2, color_jitter_p=1.0, blur=False)
    assert torch.equal(g1.get_state(), g2.get_state())


def test_zero_strength_jitter_is_identity_up_to_rounding():
    images = _images()
    out = strong_augment(images, torch.Generator().manual_seed(0), color_jitter_strength=0.0,
                         color_jitter_p=0.0, blur=False)
    torch.testing.assert_close(out, images, atol=1e-4, rtol=0)


def test_blur_only_some_images_and_keeps_the_mean():
    images = _images(batch=16)
    out = strong_augment(images, torch.Generator().manual_seed(1), color_jitter_p=1.0, blur=True)
    changed = (out - images).abs().flatten(1).amax(dim=1) > 1e-5
    assert 0 < int(changed.sum()) < 16  # each image flips its own coin (p = 0.5)
    # Blur smooths: less total variation, about the same mean.
    tv = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))  # noqa: E731
    assert bool((tv(out)[changed] < tv(images)[changed]).all())
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), images.mean(dim=(1, 2, 3)), atol=0.05, rtol=0)


def test_kernel_sizes_follow_daformer():
    assert [blur_kernel_size(s) for s in (8, 20, 30, 512, 1024)] == [1, 1, 3, 51, 103]


def test_gaussian_blur_of_constant_is_constant_and_kernel_is_normalised():
    flat = torch.full((2, 3, 30, 40), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, torch.tensor([0.2, 1.1])), flat)
    impulse = torch.zeros(1, 1, 30, 40)
    impulse[0, 0, 15, 20] = 1.0
    blurred = gaussian_blur(impulse, torch.tensor([1.0]))
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(blurred[0, 0, 15, 20]) < 0.5


def test_hsv_round_trip_matches_colorsys():
    rgb = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(0))
    hsv = rgb_to_hsv(rgb)
    for y in range(4):
        for x in range(5):
            expected = colorsys.rgb_to_hsv(*rgb[:, y, x].tolist())
            torch.testing.assert_close(hsv[:, y, x], torch.tensor(expected, dtype=torch.float32))
    torch.testing.assert_close(hsv_to_rgb(hsv), rgb, atol=1e-6, rtol=0)


def test_each_colour_operation_in_closed_form():
    img = torch.tensor([0.2, 0.5, 0.8])[:, None, None].repeat(1, 2, 2)  # (3, 2, 2)
    identity = torch.tensor([1.0, 1.0, 1.0, 0.0])
    order = torch.arange(4)

    def run(**changes):
        f = identity.clone()
        for i, v in changes.items():
            f[int(i[1])] = v
        return _jitter_one(img, f, order)[:, 0, 0]

    torch.testing.assert_close(run(f0=1.3), torch.tensor([0.5, 0.8, 1.0]))  # brightness adds 0.3
    torch.testing.assert_close(run(f1=0.5), torch.tensor([0.1, 0.25, 0.4]))  # contrast scales
    torch.testing.assert_close(run(f2=0.0), torch.tensor([0.8, 0.8, 0.8]))  # no saturation: V grey
    red = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    cyan = _jitter_one(red, torch.tensor([1.0, 1.0, 1.0, 0.5]), order)[:, 0, 0]
    torch.testing.assert_close(cyan, torch.tensor([0.0, 1.0, 1.0]))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        strong_augment(torch.zeros(2, 1, 4, 4), torch.Generator())
    with pytest.raises(ValueError):
        strong_augment(_images(), torch.Generator(), color_jitter_strength=0.6)
