"""Run a model over a labelled split and accumulate one confusion matrix.

Images go one at a time (validation images may differ in size). Each image's noise draws come from
a generator seeded by (seed, image index), so results do not depend on how the split is sharded
across processes. Under ``torch.distributed`` each process takes every ``world_size``-th image and
the matrices are summed.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data.labels import NUM_CLASSES
from .inference import model_predict, slide_inference, whole_inference
from .metrics import ConfusionMatrix


def make_predict_fn(model: nn.Module, *, path: str, steps: int | None, samples: int,
                    generator: torch.Generator | None):
    """x (B, 3, H, W) -> logits (B, C, H, W) through the direct or the diffusion path."""
    def predict(x: torch.Tensor) -> torch.Tensor:
        return model_predict(model, x, steps=steps, samples=samples, generator=generator,
                             diffusion=(path == "diffusion")).logits
    return predict


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset, *, device: torch.device | str = "cpu", path: str = "direct",
                   steps: int | None = None, samples: int = 1, seed: int = 0, slide: bool = False,
                   window: tuple[int, int] | None = None, max_images: int = 0, rank: int = 0,
                   world_size: int = 1, progress: bool = True, autocast=None) -> ConfusionMatrix:
    was_training = model.training
    model.eval()
    num_classes = getattr(getattr(model, "config", None), "num_classes", NUM_CLASSES)
    cm = ConfusionMatrix(num_classes=num_classes).to(device)
    total = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    indices = range(rank, total, world_size)
    for index in tqdm(indices, desc="evaluate", disable=not progress, leave=False, mininterval=2):
        sample = dataset[index]
        image = sample["image"].unsqueeze(0).to(device)  # (1, 3, H, W)
        label = sample["label"].unsqueeze(0).to(device)  # (1, H, W)
        generator = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + index)
        predict = make_predict_fn(model, path=path, steps=steps, samples=samples, generator=generator)
        with (autocast() if autocast is not None else nullcontext()):
            if slide:
                win = window or tuple(min(s, w) for s, w in zip(image.shape[-2:], (512, 512)))
                stride = tuple(max(1, w * 2 // 3) for w in win)
                logits = slide_inference(predict, image, window=win, stride=stride, num_classes=num_classes)
            else:
                logits = whole_inference(predict, image)
        if logits.shape[-2:] != label.shape[-2:]:  # labels are scored at their full resolution
            logits = F.interpolate(logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False)
        cm.update(logits.argmax(1), label)
    cm.reduce_across_processes()
    model.train(was_training)
    return cm

