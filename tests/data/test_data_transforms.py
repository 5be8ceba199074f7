"""Transforms: resize interpolation, the cat_max_ratio crop, flip/pad alignment, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iccld.data.transforms import (MEAN, STD, EvalTransform, TrainTransform, cat_max_ratio_crop_box,
                                   denormalize, fit_size, largest_class_ratio, normalize, photometric_jitter,
                                   resize_image, resize_label)


def _position_image(h: int, w: int) -> np.ndarray:
    """Pixel (y, x) holds (y, x, 0): a crop/flip can be read back from the values."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.dstack([ys, xs, np.zeros_like(ys)]).astype(np.uint8)


def _pixels(image: torch.Tensor) -> np.ndarray:
    return denormalize(image).round().permute(1, 2, 0).numpy().astype(np.int64)


def test_resize_label_is_nearest_and_image_bilinear():
    label = np.zeros((8, 8), np.uint8)
    label[:, 4:] = 13
    label[0, 0] = 255
    small = resize_label(label, (3, 5))  # (W, H)
    assert small.shape == (5, 3) and set(np.unique(small)) <= {0, 13, 255}
    big = resize_label(label, (16, 16))
    assert set(np.unique(big)) == {0, 13, 255} and (big[:, 8:] == 13).all()
    image = np.zeros((4, 4, 3), np.uint8)
    image[:, 2:] = 200
    mid = resize_image(image, (8, 4))[0, :, 0]
    assert 0 < mid[3] < 200 or 0 < mid[4] < 200  # bilinear makes intermediate values
    assert resize_image(image, (4, 4)) is image  # same size: untouched


def test_normalisation_uses_imagenet_statistics_and_inverts():
    image = np.empty((2, 3, 3), np.uint8)
    image[:] = (124, 116, 104)
    x = normalize(image)
    assert x.shape == (3, 2, 3) and x.dtype == torch.float32
    expected = [(124 - MEAN[c]) / STD[c] if c == 0 else ((116, 104)[c - 1] - MEAN[c]) / STD[c] for c in range(3)]
    assert torch.allclose(x[:, 0, 0], torch.tensor(expected, dtype=torch.float32))
    assert torch.allclose(denormalize(x), torch.tensor(image, dtype=torch.float32).permute(2, 0, 1), atol=1e-4)
    batch = torch.stack([x, x])
    assert torch.allclose(denormalize(batch)[1], denormalize(x))


def test_cat_max_ratio_crop_respects_the_ratio():
    label = np.zeros((20, 100), np.uint8)  # class 0 on x < 60, class 1 on x >= 60
    label[:, 60:] = 1
    label[:2] = 255  # ignore rows do not count
    ratios_checked, ratios_unchecked = [], []
    for seed in range(30):
        top, left, bottom, right = cat_max_ratio_crop_box(label, (20, 40), 0.75, np.random.default_rng(seed))
        ratios_checked.append(largest_class_ratio(label[top:bottom, left:right]))
        top, left, bottom, right = cat_max_ratio_crop_box(label, (20, 40), 1.0, np.random.default_rng(seed))
        ratios_unchecked.append(largest_class_ratio(label[top:bottom, left:right]))
    assert max(ratios_checked) < 0.75
    assert max(ratios_unchecked) >= 0.75  # the test above is not trivially true


def test_largest_class_ratio_ignores_255_and_needs_two_classes():
    assert largest_class_ratio(np.array([[0, 0, 1, 255, 255, 255]], np.uint8)) == pytest.approx(2 / 3)
    assert largest_class_ratio(np.array([[3, 3, 255]], np.uint8)) == 1.0


def test_train_transform_keeps_image_and_label_aligned_through_crop_and_flip():
    h, w = 30, 50
    image = _position_image(h, w)
    label = (np.arange(w)[None, :].repeat(h, 0) % 19).astype(np.uint8)  # label = x mod 19
    transform = TrainTransform(None, (16, 24), cat_max_ratio=1.0, flip=True)
    flips = 0
    for seed in range(12):
        img, lab = transform(image, label, np.random.default_rng(seed))
        assert img.shape == (3, 16, 24) and img.dtype == torch.float32
        assert lab.shape == (16, 24) and lab.dtype == torch.int64
        xs = _pixels(img)[..., 1]
        assert np.array_equal(lab.numpy(), xs % 19)  # the label still sits under its pixel
        flips += int(xs[0, 0] > xs[0, -1])
    assert 0 < flips < 12


def test_train_transform_pads_small_images_with_zero_and_ignore():
    image = np.full((10, 12, 3), 255, np.uint8)
    label = np.ones((10, 12), np.uint8)
    img, lab = TrainTransform(None, (16, 20), cat_max_ratio=0.75, flip=False)(image, label, np.random.default_rng(0))
    assert img.shape == (3, 16, 20) and lab.shape == (16, 20)
    assert (lab[:10, :12] == 1).all() and (lab[10:] == 255).all() and (lab[:, 12:] == 255).all()
    assert (img[:, 10:] == 0).all() and (img[:, :, 12:] == 0).all()
    assert (img[:, :10, :12] > 0).all()


def test_train_transform_resizes_first_and_is_deterministic_given_the_generator():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (40, 60)).astype(np.uint8)
    transform = TrainTransform((30, 20), (16, 16), cat_max_ratio=0.75, flip=True, jitter=0.3)
    a = transform(image, label, np.random.default_rng(7))
    b = transform(image, label, np.random.default_rng(7))
    c = transform(image, label, np.random.default_rng(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    unlabelled = transform(image, None, np.random.default_rng(7))[1]
    assert (unlabelled == 255).all() and unlabelled.shape == (16, 16)


def test_photometric_jitter_stays_in_range_and_uses_the_generator_only():
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out = photometric_jitter(image, 0.5, np.random.default_rng(3))
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255
    assert np.array_equal(out, photometric_jitter(image, 0.5, np.random.default_rng(3)))
    assert np.allclose(photometric_jitter(image, 0.0, np.random.default_rng(3)), image, atol=1e-3)


def test_eval_transform_resizes_the_image_but_not_the_label():
    image = np.zeros((20, 40, 3), np.uint8)
    label = np.full((20, 40), 7, np.uint8)
    img, lab = EvalTransform((20, 10))(image, label)
    assert img.shape == (3, 10, 20) and lab.shape == (20, 40) and (lab == 7).all()
    img, lab = EvalTransform(None)(image, None)
    assert img.shape == (3, 20, 40) and (lab == 255).all()


@pytest.mark.parametrize("size, box, expected", [
    ((1914, 1052), (1280, 720), (1280, 704)),   # GTA5 in DAFormer's source box
    ((2048, 1024), (1024, 512), (1024, 512)),   # Cityscapes
    ((1280, 760), (1280, 760), (1280, 760)),    # SYNTHIA at its own size
    ((1920, 1080), (960, 540), (960, 540)),     # ACDC / Dark Zurich
    ((1024, 768), (1280, 720), (960, 720)),     # an off-size 4:3 frame: the short side binds
    ((600, 1000), (1280, 720), (720, 1200)),    # portrait: long side to the long side, short to the short
])
def test_keep_ratio_fits_the_box_as_mmcv_does(size, box, expected):
    w, h = fit_size(*size, box, keep_ratio=True)
    assert (w, h) == expected
    assert max(w, h) <= max(box) and min(w, h) <= min(box)
    assert abs(w / h - size[0] / size[1]) < 0.01  # the aspect ratio is kept (to the rounding)
    assert fit_size(*size, box, keep_ratio=False) == tuple(box)  # stretched to exactly the box


def test_keep_ratio_resize_applies_to_image_and_label_alike():
    image = np.zeros((1052, 1914, 3), np.uint8)
    label = np.zeros((1052, 1914), np.uint8)
    assert resize_image(image, (1280, 720), keep_ratio=True).shape == (704, 1280, 3)
    assert resize_label(label, (1280, 720), keep_ratio=True).shape == (704, 1280)
    assert resize_image(image, (1280, 720)).shape == (720, 1280, 3)
    x, y = EvalTransform((1280, 720), keep_ratio=True)(image, label)
    assert tuple(x.shape) == (3, 704, 1280) and tuple(y.shape) == (1052, 1914)
    rng = np.random.default_rng(0)
    tall = np.zeros((40, 20, 3), np.uint8)  # 1:2 portrait into a 30x30 box -> 15x30, then padded to the crop
    xt, yt = TrainTransform((30, 30), (32, 32), keep_ratio=True, flip=False)(tall, np.zeros((40, 20), np.uint8), rng)
    assert tuple(xt.shape) == (3, 32, 32)
    assert (yt[:, 15:] == 255).all() and (yt[:30, :15] == 0).all() and (yt[30:] == 255).all()
