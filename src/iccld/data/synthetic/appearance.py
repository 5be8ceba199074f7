"""From an object-id map to an RGB image: per-object colours, textures, then camera effects.

The source style switches every effect off, so a source image is exactly ``colours[ids]``: flat
shading, one colour per object. The target style turns them on: per-material textures (fine
per-pixel and coarse blotchy noise), a sky gradient, contrast, brightness, colour cast, an
illumination ramp, vignetting, gamma, Gaussian blur and sensor noise.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from .style import DomainStyle

SKY_ID = 23


def _u(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1])) if r[0] != r[1] else float(r[0])


@lru_cache(maxsize=8)
def _grid(H: int, W: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row fraction (H, 1) in [0, 1]; x and y (H, W) in [-1, 1]."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    return (np.linspace(0.0, 1.0, H, dtype=np.float32)[:, None],
            xx / max(W - 1, 1) * 2 - 1, yy / max(H - 1, 1) * 2 - 1)


def render_image(ids: np.ndarray, labels: np.ndarray, colors: np.ndarray, textures: np.ndarray,
                 style: DomainStyle, rng: np.random.Generator) -> np.ndarray:
    """ids (H, W) int32 object ids; labels (N,) uint8; colors (N, 3); textures (N, 2) -> (H, W, 3) uint8."""
    H, W = ids.shape
    rows, xx, yy = _grid(H, W)
    img = colors[ids]  # (H, W, 3) float32
    shift = None  # (H, W) brightness offset shared by the three channels
    fine, coarse = textures[ids, 0], textures[ids, 1]  # (H, W) amplitudes, RGB units
    if fine.any():
        shift = fine * rng.standard_normal((H, W), dtype=np.float32)
    if coarse.any():
        low = rng.standard_normal((max(2, H // 6), max(2, W // 6)), dtype=np.float32)
        low = np.asarray(Image.fromarray(low, mode="F").resize((W, H), Image.BILINEAR))
        shift = coarse * low if shift is None else shift + coarse * low
    if style.sky_gradient:  # the sky brightens towards the horizon
        grad = (labels[ids] == SKY_ID) * (style.sky_gradient * rows)
        shift = grad if shift is None else shift + grad
    if shift is not None:
        img = img + shift[..., None]

    contrast, gain = _u(rng, style.contrast), _u(rng, style.brightness)
    cast = np.asarray(style.color_cast, dtype=np.float32)
    if style.cast_jitter:
        cast = cast * (1.0 + rng.normal(0.0, style.cast_jitter, 3)).astype(np.float32)
    if contrast != 1.0 or gain != 1.0 or (cast != 1.0).any():
        img = ((img - 128.0) * contrast + 128.0) * (gain * cast)
    light = None  # (H, W) gain: illumination ramp times vignetting
    if style.lighting_gradient:
        angle = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0, style.lighting_gradient)
        light = 1.0 + amp * (np.cos(angle) * xx + np.sin(angle) * yy) / 2
    if style.vignetting:
        vig = 1.0 - style.vignetting * (xx ** 2 + yy ** 2) / 2
        light = vig if light is None else light * vig
    if light is not None:
        img = img * light[..., None]
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    gamma = _u(rng, style.gamma)
    if gamma != 1.0:
        lut = np.clip(np.rint(255.0 * (np.arange(256) / 255.0) ** gamma), 0, 255).astype(np.uint8)
        out = lut[out]
    sigma = _u(rng, style.blur) * W / 256.0
    if sigma > 0:
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(sigma)))
    if style.noise or style.chroma_noise:
        noisy = out.astype(np.float32)
        if style.noise:
            noisy += style.noise * rng.standard_normal((H, W, 1), dtype=np.float32)
        if style.chroma_noise:
            noisy += style.chroma_noise * rng.standard_normal((H, W, 3), dtype=np.float32)
        out = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return out
