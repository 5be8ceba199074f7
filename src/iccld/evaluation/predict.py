"""Segment images of any size and write the train-id PNG, a colour PNG, an overlay and, with several
noise draws, an uncertainty heat map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.io import read_image, write_png
from ..data.labels import colorize
from ..data.transforms import fit_size, normalize, resize_image
from ..errors import DataError
from ..outputs import check_output_dir, check_output_file, claim_outputs
from .inference import model_predict


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


@torch.no_grad()
def predict_images(model: nn.Module, images: list[Path], out: Path, *, path: str = "diffusion",
                   steps: int | None = None, samples: int = 1, seed: int = 0,
                   overwrite: bool = False, resize: tuple[int, int] | None = None,
                   keep_ratio: bool = False) -> list[Path]:
    """Writes the outputs of every image into ``out``, each at its input's size; refuses to replace
    existing files (or an input image) unless ``overwrite``.

    ``resize`` = (W, H): the model sees each image resized to it, as evaluation does (a model trained
    on 1024x512 Cityscapes would see a raw 2048x1024 frame at twice its scale), and its logits are
    upsampled back; None runs at the native size. ``keep_ratio``: resized by one factor within
    ``resize``'s bounds instead (:func:`~iccld.data.transforms.fit_size`, as data.val.keep_ratio).
    """
    out = Path(out)
    plans = [(img, output_paths(out, img, samples > 1)) for img in images]
    inputs = {img.resolve() for img in images}
    names: dict[Path, Path] = {}
    for img, paths in plans:
        for p in paths.values():
            if p.resolve() in inputs:
                raise DataError(f"{p}: would overwrite an input image; choose another --out")
            if p in names:
                raise DataError(f"{img} and {names[p]} would both write {p}; give them different names")
            names[p] = img
            check_output_file(p, overwrite=overwrite, command="predict", check_dir=False)
    check_output_dir(out)
    device = next(model.parameters()).device
    written = []
    for index, (img, paths) in enumerate(plans):
        rgb = read_image(img)  # (H, W, 3) uint8
        size = rgb.shape[:2]
        seen = resize_image(rgb, fit_size(size[1], size[0], resize, keep_ratio)) if resize else rgb
        x = normalize(seen).unsqueeze(0).to(device)  # (1, 3, h, w)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        try:
            pred = model_predict(model, x, steps=steps, samples=samples, generator=generator,
                                 diffusion=(path == "diffusion"))
        except DataError as exc:  # e.g. an image too small for the encoder: say which image
            raise DataError(f"{img}: {exc}") from None
        logits = pred.logits.float()  # (1, C, h, w)
        if logits.shape[-2:] != size:  # back to the input's size, as evaluation scores at the label's size
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        label = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)  # (H, W)
        # claimed in a run folder's marker as they are written (not before: a run that fails part-way
        # must not leave claims on names it never wrote), so that the next --overwrite may replace them
        claim_outputs(paths.values(), "predict")
        color = colorize(label)
        overlay = (0.5 * rgb + 0.5 * color).astype(np.uint8)
        write_png(paths["trainid"], label)
        write_png(paths["color"], color)
        write_png(paths["overlay"], overlay)
        if "uncertainty" in paths:
            heat = pred.uncertainty.float()  # (1, h, w)
            if heat.shape[-2:] != size:
                heat = F.interpolate(heat[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
            write_png(paths["uncertainty"], _heatmap(heat[0].cpu().numpy()))
        written.extend(paths.values())
    return written
