"""Segment images of any size and write the train-id PNG, a colour PNG, an overlay and, with several
noise draws, an uncertainty heat map.

The pieces a video shares with an image (:mod:`.video`) are here: :func:`check_outputs` (the output
policy for a whole ``predict`` call), :func:`predict_rgb` (one frame through the model at the size it
sees), :func:`at_size` and :func:`overlay`; :func:`segment` is one image in memory (the web demo's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.io import read_image, write_png
from ..data.labels import colorize
from ..data.transforms import normalize, resize_image
from ..errors import DataError
from ..outputs import check_output_dir, check_output_file, claim_outputs
from .inference import model_device, model_predict

NOISE_SEED_STRIDE = 1_000_003  # image i of a call draws its noise from seed * stride + i


def _heatmap(values: np.ndarray) -> np.ndarray:
    """(H, W) float -> (H, W, 3) uint8 with matplotlib's magma map, scaled to the image's range."""
    from matplotlib import colormaps

    lo, hi = float(values.min()), float(values.max())
    scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    return (colormaps["magma"](scaled)[..., :3] * 255).astype(np.uint8)


def output_paths(out: Path, image: Path, with_uncertainty: bool) -> dict[str, Path]:
    stem = image.stem
    paths = {"trainid": out / f"{stem}_trainid.png", "color": out / f"{stem}_color.png",
             "overlay": out / f"{stem}_overlay.png"}
    if with_uncertainty:
        paths["uncertainty"] = out / f"{stem}_uncertainty.png"
    return paths


def check_outputs(plans: list[tuple[Path, dict[str, Path]]], *, overwrite: bool) -> None:
    """Before anything is written: refuse an output that would replace an input, two inputs that
    would write the same file, and any existing output unless ``overwrite`` (see
    :func:`~iccld.outputs.check_output_file`). ``plans`` pairs each input with its outputs; the
    caller checks the output folder itself (:func:`~iccld.outputs.check_output_dir`)."""
    inputs = {src.resolve() for src, _ in plans}
    names: dict[Path, Path] = {}
    for src, paths in plans:
        for p in paths.values():
            if p.resolve() in inputs:
                raise DataError(f"{p}: would overwrite an input image or video; choose another --out")
            if p in names:
                raise DataError(f"{src} and {names[p]} would both write {p}; give them different names")
            names[p] = src
            check_output_file(p, overwrite=overwrite, command="predict", check_dir=False)


def predict_rgb(model: nn.Module, rgb: np.ndarray, *, path: str, steps: int | None, samples: int,
                generator: torch.Generator | None, resize: tuple[int, int] | None, keep_ratio: bool = True):
    """(H, W, 3) uint8 -> the model's :class:`Prediction` (logits (1, C, h, w)) for the image resized
    to ``resize`` (W, H) (fitted into it keeping its aspect ratio when ``keep_ratio``, as
    data.val.keep_ratio), or at its own size when None. A DataError (an image too small for the
    encoder) propagates for the caller to name the file."""
    device = model_device(model)
    x = normalize(resize_image(rgb, resize, keep_ratio) if resize else rgb).unsqueeze(0).to(device)  # (1, 3, h, w)
    return model_predict(model, x, steps=steps, samples=samples, generator=generator,
                         diffusion=(path == "diffusion"))


def at_size(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, C, h, w) -> (1, C, H, W) bilinearly (align_corners=False, as evaluation scores logits at
    the label's size); unchanged when already (H, W)."""
    if values.shape[-2:] == size:
        return values
    return F.interpolate(values, size=size, mode="bilinear", align_corners=False)


def overlay(rgb: np.ndarray, label: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 image and (H, W) train ids -> the image blended 50/50 with the label colours."""
    return (0.5 * rgb + 0.5 * colorize(label)).astype(np.uint8)


@dataclass
class Segmentation:
    """What ``predict`` writes for one image, at the image's size."""

    label: np.ndarray  # (H, W) uint8 train ids
    color: np.ndarray  # (H, W, 3) uint8, the labels in the Cityscapes palette
    overlay: np.ndarray  # (H, W, 3) uint8, half image, half colour map
    uncertainty: np.ndarray | None  # (H, W, 3) uint8 heat map of the draws' variance; None for one draw


@torch.no_grad()
def segment(model: nn.Module, rgb: np.ndarray, *, path: str = "diffusion", steps: int | None = None,
            samples: int = 1, generator: torch.Generator | None = None,
            resize: tuple[int, int] | None = None, keep_ratio: bool = True) -> Segmentation:
    """Segment one (H, W, 3) uint8 RGB image (see :func:`predict_rgb` for ``resize``); the outputs are
    at the image's own size."""
    size = rgb.shape[:2]
    pred = predict_rgb(model, rgb, path=path, steps=steps, samples=samples, generator=generator,
                       resize=resize, keep_ratio=keep_ratio)
    # back to the input's size, as evaluation scores at the label's size
    label = at_size(pred.logits.float(), size).argmax(1)[0].cpu().numpy().astype(np.uint8)  # (H, W)
    heat = None
    if pred.uncertainty is not None:
        var = at_size(pred.uncertainty.float()[:, None], size)[:, 0]  # (1, H, W)
        heat = _heatmap(var[0].cpu().numpy())
    return Segmentation(label, colorize(label), overlay(rgb, label), heat)


@torch.no_grad()
def predict_images(model: nn.Module, images: list[Path], out: Path, *, path: str = "diffusion",
                   steps: int | None = None, samples: int = 1, seed: int = 0,
                   overwrite: bool = False, resize: tuple[int, int] | None = None,
                   keep_ratio: bool = True) -> list[Path]:
    """Writes the outputs of every image into ``out``, each at its input's size; refuses to replace
    existing files (or an input image) unless ``overwrite``.

    ``resize`` = (W, H): the model sees each image resized to it, as evaluation does (a model trained
    on 1024x512 Cityscapes would see a raw 2048x1024 frame at twice its scale), and its logits are
    upsampled back; None runs at the native size. ``keep_ratio`` fits each image into that box
    keeping its aspect ratio (data.val.keep_ratio), as evaluation does.
    """
    out = Path(out)
    plans = [(img, output_paths(out, img, samples > 1)) for img in images]
    check_outputs(plans, overwrite=overwrite)
    check_output_dir(out)
    written = []
    for index, (img, paths) in enumerate(plans):
        rgb = read_image(img)  # (H, W, 3) uint8
        generator = torch.Generator().manual_seed(seed * NOISE_SEED_STRIDE + index)
        try:
            result = segment(model, rgb, path=path, steps=steps, samples=samples, generator=generator,
                             resize=resize, keep_ratio=keep_ratio)
        except DataError as exc:  # e.g. an image too small for the encoder: say which image
            raise DataError(f"{img}: {exc}") from None
        # claimed in a run folder's marker as they are written (not before: a run that fails part-way
        # must not leave claims on names it never wrote), so that the next --overwrite may replace them
        claim_outputs(paths.values(), "predict")
        write_png(paths["trainid"], result.label)
        write_png(paths["color"], result.color)
        write_png(paths["overlay"], result.overlay)
        if "uncertainty" in paths:
            write_png(paths["uncertainty"], result.uncertainty)
        written.extend(paths.values())
    return written
