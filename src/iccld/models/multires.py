"""HRDA's multi-resolution training and inference around the ICCLD network (Hoyer et al., "HRDA:
Context-Aware High-Resolution Domain-Adaptive Semantic Segmentation", ECCV 2022).

Two branches of the same network (E, the latent diffusion and D) see one image at two scales:

- the *context*: the whole training crop (or, at inference, the whole image) resized by
  ``context_scale`` (HRDA: a 1024x1024 crop at 0.5, so 512x512);
- the *detail*: a crop at full resolution inside it (HRDA: 512x512), at a random place in training
  (offsets multiples of ``crop_divisible``), and at inference a sliding window over the whole image
  (stride half the window; overlapping logits averaged).

A scale-attention head reads what D reads on the context branch and gives, per pixel (and per class
with ``classwise``), the *context share* ``a`` in [0, 1]; the fused logits are

    fused = a * up(context logits) + (1 - a) * detail logits,

with ``a = 1`` wherever there is no detail prediction (outside the detail crop in training). HRDA's
head outputs the detail's share sigmoid(s); here ``a = 1 - sigmoid(s)``, the same fusion. The fused
logits are at the full resolution of the input. Training supervises the fused logits with weight
``1 - detail_loss_weight`` and the detail crop's own logits with ``detail_loss_weight`` (HRDA: 0.1).

Tensors in, tensors out: the functions take the network (anything with ``encode``, ``decode``,
``diffusion`` and ``multires``) and never read a config.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn


class DetailBox(NamedTuple):
    """A detail crop in full-resolution pixels: rows ``top:top+height``, columns ``left:left+width``."""

    top: int
    left: int
    height: int
    width: int

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """The box of the last two dimensions of ``x`` (images (B, 3, H, W), labels (B, H, W), ...)."""
        return x[..., self.top:self.top + self.height, self.left:self.left + self.width]


class SegOutput(NamedTuple):
    """What a segmentation forward gives a loss: ``logits`` (B, C, H, W) at the input's size (the
    fused ones with multi-resolution); with it, ``detail`` (B, C, h, w), the detail branch's own
    logits of the crop ``box``. Single resolution: ``detail`` and ``box`` are None."""

    logits: torch.Tensor
    detail: Optional[torch.Tensor] = None
    box: Optional[DetailBox] = None

    def rows(self, index) -> "SegOutput":
        """The same output for the batch rows ``index`` (a slice or index tensor)."""
        return SegOutput(self.logits[index], None if self.detail is None else self.detail[index], self.box)


def resize_logits(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of (B, C, h, w) to ``size``; a no-op at that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def fuse(context: torch.Tensor, detail: torch.Tensor, context_share: torch.Tensor,
         box: DetailBox | None = None) -> torch.Tensor:
    """``a * context + (1 - a) * detail`` inside ``box`` and ``context`` outside it.

    Args:
        context: (B, C, H, W) context logits, already at full resolution.
        detail: (B, C, box.height, box.width) detail logits of the box (the whole image without box).
        context_share: ``a``, (B, C or 1, H, W) in [0, 1].
        box: where the detail logits lie; None: they cover the whole image.
    """
    if box is None:
        return context_share * context + (1 - context_share) * detail
    share = box.crop(context_share)
    inside = share * box.crop(context) + (1 - share) * detail  # (B, C, h, w)
    fused = context.clone()
    fused[..., box.top:box.top + box.height, box.left:box.left + box.width] = inside
    return fused


def window_boxes(size: tuple[int, int], window: tuple[int, int]) -> list[DetailBox]:
    """The detail branch's sliding windows over an image of ``size``: ``window`` clipped to the image,
    stride half of it, the last window of each row and column flush with the border (mmseg's grid,
    as HRDA's overlapping detail inference)."""
    boxes_along = []
    for length, win in zip(size, window):
        win = min(win, length)
        stride = max(win // 2, 1)
        count = max(length - win + stride - 1, 0) // stride + 1
        boxes_along.append([(min(i * stride + win, length) - win, win) for i in range(count)])
    return [DetailBox(top, left, h, w) for top, h in boxes_along[0] for left, w in boxes_along[1]]


class MultiRes(nn.Module):
    """The settings of multi-resolution and its one learned part, the scale-attention head.

    Args:
        attention: a head with D's interface, ``attention(z, skips, size) -> (B, C or 1, *size)``
            logits of the detail's share (built as a 1x1-fusion decoder, HRDA's attention head).
        context_scale: the context branch's resize factor, in (0, 1].
        detail_crop: (H, W) of the detail crop / window at full resolution.
        crop_divisible: the training detail crop's offsets are multiples of it.
        detail_loss_weight: lambda_d, for the methods' losses (the network itself never uses it).
    """

    def __init__(self, attention: nn.Module, *, context_scale: float = 0.5,
                 detail_crop: tuple[int, int] = (512, 512), crop_divisible: int = 8,
                 detail_loss_weight: float = 0.1) -> None:
        super().__init__()
        if not 0 < context_scale <= 1:
            raise ValueError(f"multires.context_scale: must be in (0, 1], got {context_scale}")
        if len(detail_crop) != 2 or min(detail_crop) < 1:
            raise ValueError(f"multires.detail_crop: expected [height, width] >= 1, got {list(detail_crop)}")
        if crop_divisible < 1:
            raise ValueError(f"multires.crop_divisible: must be >= 1, got {crop_divisible}")
        if not 0 <= detail_loss_weight < 1:
            raise ValueError(f"multires.detail_loss_weight: must be in [0, 1), got {detail_loss_weight}")
        self.attention = attention
        self.context_scale = context_scale
        self.detail_crop = (int(detail_crop[0]), int(detail_crop[1]))
        self.crop_divisible = crop_divisible
        self.detail_loss_weight = detail_loss_weight

    def context_image(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the context (B, 3, round(H * scale), round(W * scale)), bilinear."""
        if self.context_scale == 1:
            return x
        size = (max(1, round(x.shape[-2] * self.context_scale)), max(1, round(x.shape[-1] * self.context_scale)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def context_share(self, z: torch.Tensor, skips: list[torch.Tensor], context_size: tuple[int, int],
                      size: tuple[int, int]) -> torch.Tensor:
        """``a``, the context's share (B, C or 1, *size) in [0, 1], from D's inputs on the context
        branch (z (B, Cz, h, w) and the skips), computed at ``context_size`` and resized."""
        return 1 - torch.sigmoid(resize_logits(self.attention(z, skips, tuple(context_size)), size))

    def draw_box(self, size: tuple[int, int], generator: torch.Generator | None = None) -> DetailBox:
        """A random detail crop inside an image of ``size`` (H, W), offsets multiples of
        ``crop_divisible``; the whole image where the crop does not fit. Draws from ``generator``
        only where there is a choice."""
        corner = []
        for length, crop in zip(size, self.detail_crop):
            choices = (max(length - crop, 0) + 1 + self.crop_divisible - 1) // self.crop_divisible
            offset = 0 if choices <= 1 else int(torch.randint(choices, (1,), generator=generator))
            corner.append(offset * self.crop_divisible)
        h, w = min(self.detail_crop[0], size[0]), min(self.detail_crop[1], size[1])
        return DetailBox(min(corner[0], size[0] - h), min(corner[1], size[1] - w), h, w)


def train_forward(model, x: torch.Tensor, generator: torch.Generator | None = None) -> SegOutput:
    """The direct path D(E(.)) at both scales, as in training: the context of the whole crop, the
    detail of a random box; x (B, 3, H, W) -> fused logits (B, C, H, W), detail logits and box."""
    mr = model.multires
    size = tuple(x.shape[-2:])
    box = mr.draw_box(size, generator)
    x_c = mr.context_image(x)
    z_c, skips_c = model.encode(x_c)
    context = resize_logits(model.decode(z_c, skips_c, x_c.shape[-2:]), size)  # (B, C, H, W)
    share = mr.context_share(z_c, skips_c, x_c.shape[-2:], size)  # (B, C or 1, H, W)
    x_d = box.crop(x)
    z_d, skips_d = model.encode(x_d)
    detail = model.decode(z_d, skips_d, x_d.shape[-2:])  # (B, C, h, w)
    return SegOutput(fuse(context, detail, share, box), detail, box)


def predict_draws(model, x: torch.Tensor, steps: int | None = None, samples: int = 1,
                  generator: torch.Generator | None = None, diffusion: bool = True) -> Iterator[torch.Tensor]:
    """Multi-resolution inference: each draw's fused logits (B, C, H, W).

    The context branch sees the whole image x (B, 3, H, W) resized by ``context_scale``; the detail
    branch slides ``detail_crop`` windows (stride half a window) over x at full resolution and averages
    the overlapping logits; the attention of the context fuses them. With ``diffusion``, every branch
    (the context and each window) runs E once and D on ``samples`` draws of z0_hat = sample(z0), the
    context's draws first, then each window's in order; without it, one draw of D(z0).
    """
    mr = model.multires
    size = tuple(x.shape[-2:])
    draws = samples if diffusion else 1

    def latents(image: torch.Tensor):
        z0, skips = model.encode(image)
        if not diffusion:
            return [z0], skips
        b = z0.shape[0]
        z_hat = model.diffusion.sample(z0, steps, samples, generator)  # (samples*B, Cz, h, w)
        return [z_hat[i * b:(i + 1) * b] for i in range(samples)], skips

    x_c = mr.context_image(x)
    ctx_size = tuple(x_c.shape[-2:])
    z_c, skips_c = latents(x_c)
    detail = [None] * draws  # running sums of each draw's window logits, (B, C, H, W)
    count = x.new_zeros((1, 1, *size))
    for box in window_boxes(size, mr.detail_crop):
        crop = box.crop(x)
        zs, skips = latents(crop)
        for i, z in enumerate(zs):
            out = model.decode(z, skips, crop.shape[-2:]).float()  # (B, C, h, w)
            if detail[i] is None:
                detail[i] = out.new_zeros((out.shape[0], out.shape[1], *size))
            box.crop(detail[i]).add_(out)
        box.crop(count).add_(1)
    for i in range(draws):
        context = resize_logits(model.decode(z_c[i], skips_c, ctx_size), size).float()
        share = mr.context_share(z_c[i], skips_c, ctx_size, size).float()
        yield fuse(context, detail[i] / count, share)


__all__ = ["DetailBox", "MultiRes", "SegOutput", "fuse", "predict_draws", "resize_logits", "train_forward",
           "window_boxes"]
