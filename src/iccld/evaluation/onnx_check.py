"""How close exported ONNX predictors are to the PyTorch network they came from.

Both run image by image on the CPU in fp32 with the same noise: image ``i`` draws from a generator
seeded with ``seed * 1_000_003 + i``, as :func:`iccld.evaluation.evaluate.evaluate_model` does, the
PyTorch side through :func:`~iccld.evaluation.inference.model_predict` (what the commands run). Per
path (diffusion, direct) it reports the largest absolute logit difference, the share of pixels whose
argmax is identical and, on labelled images, the mIoU of each and their difference (mIoU points).
The first image is also run at a second, odd size, so a graph fixed to one input size is caught.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.io import read_image
from ..data.transforms import normalize, resize_image
from ..io.onnx import OnnxPredictor
from .inference import model_predict
from .metrics import ConfusionMatrix

ARGMAX_TARGET = 99.9  # % of pixels with the same argmax as PyTorch
MIOU_TARGET = 0.05  # mIoU points between PyTorch and ONNX


def dataset_items(dataset, max_images: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """(image (1, 3, H, W), label (1, H, W)) of the first ``max_images`` items (0: all) of a labelled dataset."""
    total = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    for index in range(total):
        item = dataset[index]
        yield item["image"].unsqueeze(0), item["label"].unsqueeze(0)


def image_items(images: list[Path], resize: tuple[int, int] | None = None,
                keep_ratio: bool = True) -> Iterator[tuple[torch.Tensor, None]]:
    """(image (1, 3, H, W), None) of image files, each resized to ``resize`` (W, H) when given, as
    ``iccld predict`` does."""
    for path in images:
        rgb = read_image(path)
        yield normalize(resize_image(rgb, resize, keep_ratio) if resize else rgb).unsqueeze(0), None


def second_size(height: int, width: int, multiple: int = 1) -> tuple[int, int]:
    """A size other than the first: (H, W) about 3/4 of the given one, odd and at least 33 pixels,
    or for a graph that takes multiples of ``multiple`` > 1 only, the nearest multiples (at least 2x)."""
    if multiple > 1:
        return tuple(max(2 * multiple, (side * 3 // 4) // multiple * multiple) for side in (height, width))
    return max(33, (height * 3 // 4) | 1), max(33, (width * 3 // 4) | 1)


class _Tally:
    """Running figures of one path: logit difference, identical argmax, two confusion matrices."""

    def __init__(self, num_classes: int) -> None:
        self.max_diff, self.same, self.pixels, self.images, self.labelled = 0.0, 0, 0, 0, 0
        self.cms = (ConfusionMatrix(num_classes), ConfusionMatrix(num_classes))

    def add(self, ours: torch.Tensor, theirs: torch.Tensor, label: torch.Tensor | None) -> None:
        self.images += 1
        self.max_diff = max(self.max_diff, float((ours.float() - theirs.float()).abs().max()))
        self.same += int((ours.argmax(1) == theirs.argmax(1)).sum())
        self.pixels += ours.shape[0] * ours.shape[-2] * ours.shape[-1]
        if label is not None:
            self.labelled += 1
            for cm, logits in zip(self.cms, (ours, theirs)):
                if logits.shape[-2:] != label.shape[-2:]:  # scored at the label's size, as evaluate does
                    logits = F.interpolate(logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False)
                cm.update(logits.argmax(1), label)

    def summary(self) -> dict:
        out = {"images": self.images, "pixels": self.pixels, "max_abs_logit_diff": float(f"{self.max_diff:.3g}"),
               "argmax_identical_percent": round(100.0 * self.same / max(self.pixels, 1), 4),
               "miou_pytorch": None, "miou_onnx": None, "miou_diff": None}
        if self.labelled:
            torch_miou, onnx_miou = (cm.summary()["miou"] for cm in self.cms)
            out.update(miou_pytorch=round(torch_miou, 4), miou_onnx=round(onnx_miou, 4),
                       miou_diff=round(abs(torch_miou - onnx_miou), 4))
        return out


@torch.no_grad()
def compare_onnx(model, predictors: dict[str, OnnxPredictor], items: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
                 *, seed: int = 0) -> dict:
    """Compare each predictor (keyed by its path, "diffusion" or "direct") with ``model`` (an ICCLD
    on the CPU, eval mode) on ``items`` (see :func:`dataset_items`, :func:`image_items`).

    Returns {path: figures (see the module doc), "second_size": the same figures on the first image
    at :func:`second_size`, "sizes_hw": the two (H, W)}, plus "targets" and "met" (every path has
    >= :data:`ARGMAX_TARGET` % identical argmax at both sizes and, with labels, an mIoU difference
    <= :data:`MIOU_TARGET`).
    """
    tallies = {path: _Tally(p.config.num_classes) for path, p in predictors.items()}
    resized = {path: _Tally(p.config.num_classes) for path, p in predictors.items()}
    first = None
    for index, (image, label) in enumerate(items):
        if first is None:
            first = image
        for path, predictor in predictors.items():
            tallies[path].add(*_both(model, predictor, image, seed * 1_000_003 + index), label)
    if first is None:
        return {"images": 0}
    size = second_size(*first.shape[-2:], max(p.config.size_multiple for p in predictors.values()))
    other = F.interpolate(first, size=size, mode="bilinear", align_corners=False)
    for path, predictor in predictors.items():
        resized[path].add(*_both(model, predictor, other, seed * 1_000_003), None)
    result: dict = {"sizes_hw": [list(first.shape[-2:]), list(size)]}
    met = True
    for path in predictors:
        figures = tallies[path].summary()
        figures["second_size"] = resized[path].summary()
        met &= (figures["argmax_identical_percent"] >= ARGMAX_TARGET
                and figures["second_size"]["argmax_identical_percent"] >= ARGMAX_TARGET
                and (figures["miou_diff"] is None or figures["miou_diff"] <= MIOU_TARGET))
        result[path] = figures
    result["targets"] = {"argmax_identical_percent": f">= {ARGMAX_TARGET}", "miou_diff": f"<= {MIOU_TARGET} (mIoU points)"}
    result["met"] = met
    return result


def _both(model, predictor: OnnxPredictor, image: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ONNX logits, PyTorch logits) of one image, each path with its own generator of ``seed``."""
    kwargs = {"diffusion": predictor.path == "diffusion"}
    if kwargs["diffusion"]:
        kwargs["steps"] = predictor.config.steps
    ours = predictor.predict(image, generator=torch.Generator().manual_seed(seed), **kwargs).logits
    theirs = model_predict(model, image, generator=torch.Generator().manual_seed(seed), **kwargs).logits
    return ours, theirs


def format_check(result: dict) -> list[str]:
    """One line per path, for the terminal."""
    if not result.get("images", 1):
        return ["ONNX check: no images"]
    lines = []
    for path in ("diffusion", "direct"):
        if path not in result:
            continue
        f = result[path]
        miou = (f", mIoU {f['miou_pytorch']:.2f} (PyTorch) vs {f['miou_onnx']:.2f} (ONNX), difference {f['miou_diff']:.3f}"
                if f["miou_diff"] is not None else ", no labels: no mIoU")
        lines.append(f"ONNX {path} path on {f['images']} images: max |logit difference| {f['max_abs_logit_diff']:.2g}, "
                     f"identical argmax {f['argmax_identical_percent']:.3f}% of pixels{miou}; at "
                     f"{result['sizes_hw'][1][1]}x{result['sizes_hw'][1][0]} (WxH): identical argmax "
                     f"{f['second_size']['argmax_identical_percent']:.3f}%")
    return lines
