"""Strong augmentation of the mixed images (DACS/DAFormer ``strong_transform``), in plain torch.

DAFormer denormalises the image to 0..1, applies kornia 0.5's ``ColorJitter(s, s, s, s)``,
renormalises, then applies a Gaussian blur. This module reproduces kornia 0.5's operations
without the dependency:

* brightness: ``x + (b - 1)``, b ~ U[max(0, 1 - s), 1 + s] (kornia adds, torchvision multiplies);
* contrast: ``x * c``, c ~ U[max(0, 1 - s), 1 + s] (kornia scales, no blend with the mean);
* saturation: HSV saturation times a ~ U[max(0, 1 - s), 1 + s];
* hue: HSV hue shifted by h ~ U[-s, s] of a full turn;
* the four in a random order per image, each clamped to [0, 1];
* Gaussian blur with sigma ~ U[0.15, 1.15] and an odd kernel of about ``ceil(0.1 * size)`` along
  each axis, reflect padding (kornia's default).

Probabilities, as DAFormer *actually* behaves: jitter runs when ``u > color_jitter_p`` with
u ~ U[0, 1) (``if color_jitter > p``), i.e. with probability ``1 - color_jitter_p`` = 0.8 for the
default 0.2; ``color_jitter_p`` is the probability of *skipping* it. Blur runs with probability 0.5.
One difference [ours]: DAFormer draws the two coin flips once per batch; here every image draws its
own. All randomness comes from ``generator``, a fixed number of draws per call, so equal generator
states give equal outputs.

The ImageNet constants below (0..255 scale) are the same as data/transforms.py and can be shared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

IMAGENET_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
IMAGENET_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)

BLUR_SIGMA_RANGE = (0.15, 1.15)


def blur_kernel_size(size: int) -> int:
    """DAFormer's odd kernel length for an image side: ceil(0.1 * size), minus one when even."""
    k = math.ceil(0.1 * size)
    return max(k - 1 if k % 2 == 0 else k, 1)


def rgb_to_hsv(rgb: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> HSV with hue in [0, 1) turns, saturation and value in [0, 1]."""
    r, g, b = rgb.unbind(dim=-3)
    maxc, argmax = rgb.max(dim=-3)
    minc = rgb.min(dim=-3).values
    delta = maxc - minc
    safe = torch.where(delta > eps, delta, torch.ones_like(delta))
    hue = torch.stack(((g - b) / safe, (b - r) / safe + 2.0, (r - g) / safe + 4.0), dim=-3)
    hue = hue.gather(-3, argmax.unsqueeze(-3)).squeeze(-3)
    hue = torch.where(delta > eps, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    sat = torch.where(maxc > eps, delta / torch.where(maxc > eps, maxc, torch.ones_like(maxc)),
                      torch.zeros_like(maxc))
    return torch.stack((hue, sat, maxc), dim=-3)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv.unbind(dim=-3)
    h6 = (h % 1.0) * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    sector = sector.long().clamp(0, 5).unsqueeze(-3)  # (..., 1, H, W)
    # Rows: sector 0..5; columns of each row: (r, g, b).
    table = torch.stack((
        torch.stack((v, t, p), -3), torch.stack((q, v, p), -3), torch.stack((p, v, t), -3),
        torch.stack((p, q, v), -3), torch.stack((t, p, v), -3), torch.stack((v, p, q), -3),
    ), dim=-4)  # (..., 6, 3, H, W)
    index = sector.unsqueeze(-4).expand(*table.shape[:-4], 1, 3, *table.shape[-2:])
    return table.gather(-4, index).squeeze(-4)


def _jitter_one(img: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [0, 1]; factors (4,) = brightness, contrast, saturation, hue; order (4,)."""
    for op in order.tolist():
        if op == 0:
            img = (img + (factors[0] - 1.0)).clamp(0.0, 1.0)
        elif op == 1:
            img = (img * factors[1]).clamp(0.0, 1.0)
        elif op == 2:
            hsv = rgb_to_hsv(img)
            hsv = torch.stack((hsv[0], (hsv[1] * factors[2]).clamp(0.0, 1.0), hsv[2]))
            img = hsv_to_rgb(hsv).clamp(0.0, 1.0)
        else:
            hsv = rgb_to_hsv(img)
            hsv = torch.stack(((hsv[0] + factors[3]) % 1.0, hsv[1], hsv[2]))
            img = hsv_to_rgb(hsv).clamp(0.0, 1.0)
    return img


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of (N, C, H, W) with its own sigma (N,), separable, reflect padding."""
    n, c, height, width = images.shape
    ky, kx = blur_kernel_size(height), blur_kernel_size(width)
    out = images.reshape(1, n * c, height, width)
    for axis, k in ((2, ky), (3, kx)):
        if k == 1:
            continue
        x = torch.arange(k, dtype=images.dtype, device=images.device) - k // 2  # (k,)
        kernel = torch.exp(-0.5 * (x[None] / sigma[:, None].to(images)) ** 2)  # (N, k)
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C, k)
        if axis == 2:
            out = F.pad(out, (0, 0, k // 2, k // 2), mode="reflect")
            out = F.conv2d(out, kernel[:, None, :, None], groups=n * c)
        else:
            out = F.pad(out, (k // 2, k // 2, 0, 0), mode="reflect")
            out = F.conv2d(out, kernel[:, None, None, :], groups=n * c)
    return out.reshape(n, c, height, width)


@torch.no_grad()
def strong_augment(images: torch.Tensor, generator: torch.Generator,
                   color_jitter_strength: float = 0.2, color_jitter_p: float = 0.2,
                   blur: bool = True, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """DAFormer's strong augmentation of normalised images; returns a new tensor.

    Args:
        images: (B, 3, H, W), normalised with ``mean``/``std`` given on a 0..255 scale.
        generator: the only source of randomness (draws happen on its device).
        color_jitter_strength: s of the jitter ranges above, in [0, 0.5].
        color_jitter_p: probability of *skipping* the jitter per image (DAFormer's convention).
        blur: whether the blur may run (then with probability 0.5 per image).

    Returns:
        (B, 3, H, W), same dtype and device as ``images``.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    s = float(color_jitter_strength)
    if not 0.0 <= s <= 0.5:
        raise ValueError(f"color_jitter_strength must be in [0, 0.5], got {s}")
    if not 0.0 <= color_jitter_p <= 1.0:
        raise ValueError(f"color_jitter_p must be in [0, 1], got {color_jitter_p}")
    batch = images.shape[0]
    # A fixed number of draws per call: gates (2), factors (4), sigma (1), order keys (4).
    u = torch.rand(batch, 11, generator=generator, device=generator.device, dtype=torch.float64)
    u = u.cpu()
    do_jitter = (u[:, 0] >= color_jitter_p) & (color_jitter_p < 1.0)  # (B,)
    do_blur = (u[:, 1] >= 0.5) & blur  # (B,)
    low = max(0.0, 1.0 - s)
    factors = torch.stack((
        low + (1.0 + s - low) * u[:, 2],  # brightness
        low + (1.0 + s - low) * u[:, 3],  # contrast
        low + (1.0 + s - low) * u[:, 4],  # saturation
        -s + 2.0 * s * u[:, 5],  # hue, in turns
    ), dim=1).float()  # (B, 4)
    sigma = (BLUR_SIGMA_RANGE[0] + (BLUR_SIGMA_RANGE[1] - BLUR_SIGMA_RANGE[0]) * u[:, 6]).float()
    order = u[:, 7:].argsort(dim=1)  # (B, 4) a random permutation per image

    if not bool(do_jitter.any() or do_blur.any()):
        return images.clone()
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    x = (images.float() * std_t + mean_t) / 255.0  # (B, 3, H, W) in 0..1
    out = x.clone()
    for i in torch.nonzero(do_jitter).flatten().tolist():
        out[i] = _jitter_one(x[i], factors[i].to(images.device), order[i])
    blur_idx = torch.nonzero(do_blur).flatten()
    if blur_idx.numel() > 0:
        out[blur_idx.to(images.device)] = gaussian_blur(out[blur_idx.to(images.device)],
                                                         sigma[blur_idx].to(images.device))
    return ((out * 255.0 - mean_t) / std_t).to(images.dtype)
