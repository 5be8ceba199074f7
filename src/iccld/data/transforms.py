"""Image/label transforms for training and evaluation (the DAFormer/mmseg pipeline, written out).

Training: resize to a fixed (W, H) box (stretched, or fitted keeping the aspect ratio) -> random crop whose largest class covers less than
``cat_max_ratio`` of the labelled pixels (up to 10 tries) -> horizontal flip (p = 0.5) ->
optional photometric jitter -> ImageNet normalisation -> pad to the crop size (image 0, label 255).
Evaluation: resize the image only; the label keeps its original resolution, because mmseg/DAFormer
score predictions upsampled to the full-resolution ground truth.

Every random choice comes from the ``numpy.random.Generator`` passed in, never from a global RNG,
so the same generator state gives the same sample bit for bit.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .labels import IGNORE_INDEX

# ImageNet statistics on the 0..255 scale (mmseg / DAFormer): the normalisation every image batch
# travels in to the networks, whatever the backbone; a backbone whose weights expect another one
# converts on its way in (iccld.models.backbones.normalization.PIPELINE_MEAN/STD, a test keeps them equal).
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
CAT_MAX_TRIES = 10


def fit_size(width: int, height: int, box: Sequence[int], keep_ratio: bool) -> tuple[int, int]:
    """The (w, h) an image of ``width`` x ``height`` is resized to for ``box`` = (W, H).

    ``keep_ratio=False`` stretches to the box. ``keep_ratio=True`` scales as mmcv's keep-ratio
    ``Resize`` does (DAFormer, HRDA and MIC's pipelines): by the largest factor that keeps the long
    side within the box's long side and the short side within its short side, rounded half up, so
    GTA5's 1914x1052 in a (1280, 720) box becomes 1280x704 and Cityscapes' 2048x1024 in (1024, 512)
    becomes 1024x512.
    """
    if not keep_ratio:
        return int(box[0]), int(box[1])
    scale = min(max(box) / max(width, height), min(box) / min(width, height))
    return max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5))


def resize_image(image: np.ndarray, size: Sequence[int], keep_ratio: bool = False) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 with bilinear interpolation; ``size`` is (w, h), or the
    box the image is fitted into with ``keep_ratio`` (see :func:`fit_size`)."""
    w, h = fit_size(image.shape[1], image.shape[0], size, keep_ratio)
    if image.shape[1] == w and image.shape[0] == h:
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def resize_label(label: np.ndarray, size: Sequence[int], keep_ratio: bool = False) -> np.ndarray:
    """(H, W) uint8 train ids -> (h, w) with nearest-neighbour interpolation (no new values); ``size``
    as in :func:`resize_image`."""
    w, h = fit_size(label.shape[1], label.shape[0], size, keep_ratio)
    if label.shape[1] == w and label.shape[0] == h:
        return label
    return np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))


def random_crop_box(height: int, width: int, crop: Sequence[int],
                    rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A uniformly random (top, left, bottom, right) window of at most ``crop`` = (h, w) pixels."""
    margin_h = max(height - int(crop[0]), 0)
    margin_w = max(width - int(crop[1]), 0)
    top = int(rng.integers(0, margin_h + 1))
    left = int(rng.integers(0, margin_w + 1))
    return top, left, top + min(int(crop[0]), height), left + min(int(crop[1]), width)


def largest_class_ratio(label: np.ndarray) -> float:
    """Share of the non-ignore pixels held by the most frequent class; 1.0 when fewer than two
    classes are present (mmseg counts a crop with one class as failing the test)."""
    counts = np.bincount(label.ravel(), minlength=256)[:IGNORE_INDEX]
    present = counts[counts > 0]
    if len(present) < 2:
        return 1.0
    return float(present.max() / present.sum())


def cat_max_ratio_crop_box(label: np.ndarray, crop: Sequence[int], cat_max_ratio: float,
                           rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random crop box retried (up to 10 draws) until no class holds ``cat_max_ratio`` or more
    of the crop's labelled pixels; the last draw is kept if none passes. ``cat_max_ratio`` >= 1
    draws once."""
    height, width = label.shape
    tries = 1 if cat_max_ratio >= 1.0 else CAT_MAX_TRIES
    for _ in range(tries):
        top, left, bottom, right = box = random_crop_box(height, width, crop, rng)
        if tries == 1 or largest_class_ratio(label[top:bottom, left:right]) < cat_max_ratio:
            break
    return box


def photometric_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and saturation, each scaled by a factor in [1-s, 1+s].

    (H, W, 3) uint8 -> (H, W, 3) float32 on the 0..255 scale (clipped). Draws exactly 3 numbers.
    """
    b, c, s = rng.uniform(1.0 - strength, 1.0 + strength, size=3).astype(np.float32)
    x = image.astype(np.float32) * b
    mean = x.mean()
    x = (x - mean) * c + mean
    gray = x @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)  # (H, W)
    x = (x - gray[..., None]) * s + gray[..., None]
    return np.clip(x, 0.0, 255.0)


def normalize(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8/float on 0..255 -> (3, H, W) float32, ImageNet mean/std normalised."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
    mean = torch.tensor(MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(3, 1, 1)
    return ((x - mean) / std).contiguous()


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Undo :func:`normalize`: (3, H, W) or (B, 3, H, W) -> same shape on the 0..255 scale (float,
    not clipped). Use ``.clamp(0, 255).byte()`` for display."""
    shape = (3, 1, 1) if image.dim() == 3 else (1, 3, 1, 1)
    mean = torch.tensor(MEAN, dtype=image.dtype, device=image.device).view(shape)
    std = torch.tensor(STD, dtype=image.dtype, device=image.device).view(shape)
    return image * std + mean


def pad_to(image: torch.Tensor, label: torch.Tensor, size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (3, H, W) image with 0 and (H, W) label with 255 at the bottom/right up to ``size`` (h, w)."""
    pad_h = max(int(size[0]) - image.shape[1], 0)
    pad_w = max(int(size[1]) - image.shape[2], 0)
    if pad_h == 0 and pad_w == 0:
        return image, label
    image = torch.nn.functional.pad(image, (0, pad_w, 0, pad_h), value=0.0)
    label = torch.nn.functional.pad(label, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
    return image, label


def _label_tensor(label: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))


class TrainTransform:
    """Resize -> cat_max_ratio crop -> flip -> jitter -> normalise -> pad.

    Args:
        resize: (W, H) every image is resized to first, or None to keep its size.
        keep_ratio: fit each image into ``resize`` keeping its aspect ratio (mmcv's keep-ratio
            resize) instead of stretching it to exactly (W, H).
        crop_size: (H, W) of the crop.
        cat_max_ratio: in (0, 1]; 1 disables the class-ratio test.
        flip: horizontal flip with probability 0.5.
        jitter: photometric jitter strength (0 = off), see :func:`photometric_jitter`.
        pl_margins: (top, bottom, left, right) pixels of the resized image outside the pseudo-label
            region (HRDA's margins), or None.

    ``__call__(image, label, rng)`` takes (H, W, 3) uint8 and (H, W) uint8 train ids (or None for
    an unlabelled image: the ratio test is skipped and the label is all 255) and returns
    ``(image (3, h, w) float32, label (h, w) int64)`` with (h, w) = crop_size; with ``pl_margins``
    a third tensor, ``pl_valid`` (h, w) float32: 1 inside the margins, 0 in them and in the padding,
    cropped and flipped with the image (no random draw of its own).
    """

    def __init__(self, resize: Optional[Sequence[int]], crop_size: Sequence[int],
                 cat_max_ratio: float = 0.75, flip: bool = True, jitter: float = 0.0,
                 keep_ratio: bool = False, pl_margins: Optional[Sequence[int]] = None):
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f"crop_size must be (H, W) > 0, got {crop_size}")
        self.resize = tuple(resize) if resize is not None else None
        self.keep_ratio = bool(keep_ratio)
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.cat_max_ratio = float(cat_max_ratio)
        self.flip = bool(flip)
        self.jitter = float(jitter)
        self.pl_margins = tuple(int(m) for m in pl_margins) if pl_margins is not None else None

    def __call__(self, image: np.ndarray, label: Optional[np.ndarray],
                 rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        if self.resize is not None:
            image = resize_image(image, self.resize, self.keep_ratio)
            label = resize_label(label, self.resize, self.keep_ratio) if label is not None else None
        if label is None:
            label = np.full(image.shape[:2], IGNORE_INDEX, dtype=np.uint8)
            top, left, bottom, right = random_crop_box(*label.shape, self.crop_size, rng)
        else:
            top, left, bottom, right = cat_max_ratio_crop_box(label, self.crop_size, self.cat_max_ratio, rng)
        valid = self._valid_region(image.shape[:2], (top, left, bottom, right))
        image = image[top:bottom, left:right]
        label = label[top:bottom, left:right]
        flipped = self.flip and rng.random() < 0.5
        if flipped:
            image = image[:, ::-1]
            label = label[:, ::-1]
        if self.jitter > 0:
            image = photometric_jitter(image, self.jitter, rng)
        image_t, label_t = pad_to(normalize(image), _label_tensor(label), self.crop_size)
        if valid is None:
            return image_t, label_t
        valid = torch.from_numpy(np.ascontiguousarray(valid[:, ::-1] if flipped else valid))
        pad_h, pad_w = self.crop_size[0] - valid.shape[0], self.crop_size[1] - valid.shape[1]
        return image_t, label_t, torch.nn.functional.pad(valid, (0, max(pad_w, 0), 0, max(pad_h, 0)), value=0.0)

    def _valid_region(self, shape: tuple[int, int], box: tuple[int, int, int, int]) -> Optional[np.ndarray]:
        """The crop ``box`` (top, left, bottom, right) of the resized image of ``shape``, as float32:
        1 where pseudo-labels count, 0 in the image's margins."""
        if self.pl_margins is None:
            return None
        m_top, m_bottom, m_left, m_right = self.pl_margins
        (height, width), (top, left, bottom, right) = shape, box
        rows = np.arange(top, bottom)
        cols = np.arange(left, right)
        inside_rows = (rows >= m_top) & (rows < height - m_bottom)
        inside_cols = (cols >= m_left) & (cols < width - m_right)
        return np.outer(inside_rows, inside_cols).astype(np.float32)


class EvalTransform:
    """Resize the image to ``resize`` = (W, H) (or keep it; ``keep_ratio`` fits it into that box as
    :class:`TrainTransform` does), normalise; the label is unchanged.

    ``__call__(image, label, rng=None)`` -> ``(image (3, H', W') float32, label (H, W) int64)``;
    the label keeps the original resolution (evaluation upsamples logits to ``label.shape``).
    """

    def __init__(self, resize: Optional[Sequence[int]] = None, keep_ratio: bool = False):
        self.resize = tuple(resize) if resize is not None else None
        self.keep_ratio = bool(keep_ratio)

    def __call__(self, image: np.ndarray, label: Optional[np.ndarray],
                 rng: Optional[np.random.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        if label is None:
            label = np.full(image.shape[:2], IGNORE_INDEX, dtype=np.uint8)
        if self.resize is not None:
            image = resize_image(image, self.resize, self.keep_ratio)
        return normalize(image), _label_tensor(label)
