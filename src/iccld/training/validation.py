"""The trainer's evaluations: mIoU of ``model`` and ``ema_model`` on the validation split (periodic
and final), and the method's end-of-run check of what the run changed."""

from __future__ import annotations

import sys

import torch

from ..config import Config
from ..methods import Method

END_OF_RUN_IMAGES = 8  # validation images the method's end-of-run check looks at


class Validation:
    def __init__(self, method: Method, val, config: Config, *, device: torch.device, rank: int,
                 world_size: int, is_main: bool):
        self.method, self.val, self.config, self.device = method, val, config, device
        self.rank, self.world_size, self.is_main = rank, world_size, is_main

    def evaluate(self, max_images: int | None = None) -> dict:
        """mIoU of ``model`` and ``ema_model`` on the validation split, on the method's default path;
        each process takes its share of the images and the confusion matrices are summed.

        In fp32, without the training autocast: the argmax of bf16/fp16 logits can differ from the
        fp32 one, and ``results.json`` must equal what ``iccld evaluate`` reports."""
        from ..evaluation.evaluate import evaluate_model
        from ..evaluation.metrics import subsets_for_source

        tc = self.config.trainer
        results = {}
        for label, model in (("model", self.method.model), ("ema", self.method.ema_model)):
            cm = evaluate_model(model, self.val, device=self.device,
                                path=self.method.inference_path, seed=tc.seed, slide=tc.eval_slide,
                                window=tuple(self.config.data.crop_size),
                                max_images=tc.eval_max_images if max_images is None else max_images,
                                rank=self.rank, world_size=self.world_size, progress=False)
            results[label] = cm.summary(subsets_for_source(self.config.data.source.kind))  # + miou16/13 for SYNTHIA
        return results

    def end_of_run(self) -> dict:
        """The method's own check of what the run changed (:meth:`Method.end_of_run`), on the first
        validation images, each cut to the training crop around its centre (bounded memory at any
        image size); its summary line is printed."""
        val, (ch, cw) = self.val, self.config.data.crop_size
        images = []
        for index in range(min(END_OF_RUN_IMAGES, len(val))):
            image = val[index]["image"]  # (3, H, W)
            h, w = image.shape[-2:]
            top, left = max(0, (h - ch) // 2), max(0, (w - cw) // 2)
            images.append(image[:, top:top + ch, left:left + cw].unsqueeze(0).to(self.device))
        self.method.eval()
        found = self.method.end_of_run(images)
        if found.get("summary") and self.is_main:
            print(f"[{self.config.method.name}] {found['summary']}", file=sys.stderr)
        return {"end_of_run": found} if found else {}
