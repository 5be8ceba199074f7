"""Confusion matrix -> per-class IoU, mIoU over 19 / 16 / 13 classes, pixel accuracy.

The matrix is accumulated over the whole split (not averaged per image), as mmsegmentation and the
Cityscapes scripts do. Conventions:

* rows are ground truth, columns are predictions; pixels whose ground truth is ``ignore_index``
  are not counted;
* a prediction outside ``0..C-1`` (e.g. 255 written by a method that abstains) on a labelled pixel
  counts as a miss for that pixel's class (a false negative that is no class's false positive), as
  in mmsegmentation; it is kept in ``unassigned``, not in ``matrix``;
* IoU = TP / (TP + FP + FN). A class absent from both the prediction and the ground truth has an
  undefined IoU (NaN); it is left out of every mean. A class present in the ground truth but never
  predicted correctly has IoU 0 and counts. On Cityscapes val every class occurs, so for a
  SYNTHIA-trained model the three classes SYNTHIA lacks have IoU 0 and
  mIoU16 = mIoU19 * 19 / 16 when their IoU is 0 (DAFormer's README).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist

from ..data.kinds import class_subsets
from ..data.labels import CLASSES, IGNORE_INDEX, NUM_CLASSES
# Subsets as ``summary`` expects them; the keys become keys of the summary (`iccld score --subsets`)
from ..data.labels import SYNTHIA_SUBSETS  # noqa: F401 (re-exported)


def subsets_for_source(kind: str) -> dict[str, tuple[int, ...]] | None:
    """The class subsets a run reports besides mIoU19, as its source kind declares them (SYNTHIA's
    16 and 13 classes, see :mod:`iccld.data.kinds`); None when the kind declares none."""
    return class_subsets(kind) or None


class ConfusionMatrix:
    """Accumulates a (C, C) int64 confusion matrix on the device of the tensors it is fed."""

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX,
                 class_names: Sequence[str] | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is None:
            class_names = CLASSES if num_classes == len(CLASSES) else [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names)
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        # (C,) ground-truth pixels of each class predicted as a value outside 0..C-1
        self.unassigned = torch.zeros(num_classes, dtype=torch.int64)

    def to(self, device: torch.device | str) -> ConfusionMatrix:
        """Keep the counts on ``device`` (e.g. the GPU, so NCCL can reduce them); returns self."""
        self.matrix = self.matrix.to(device)
        self.unassigned = self.unassigned.to(device)
        return self

    def reset(self) -> None:
        self.matrix.zero_()
        self.unassigned.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch. ``pred`` and ``target`` are integer tensors of the same shape, e.g. (B, H, W).

        Raises ValueError when ``target`` holds a value that is neither a class nor ignore.
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        c = self.num_classes
        pred = pred.reshape(-1).long()
        target = target.reshape(-1).long()
        valid = target != self.ignore_index
        pred, target = pred[valid], target[valid]  # (N,)
        if target.numel() and bool(((target < 0) | (target >= c)).any()):
            bad = torch.unique(target[(target < 0) | (target >= c)])[:8].tolist()
            raise ValueError(f"target holds values {bad} that are neither 0..{c - 1} nor "
                             f"the ignore index {self.ignore_index}")
        inside = (pred >= 0) & (pred < c)
        counts = torch.bincount(target[inside] * c + pred[inside], minlength=c * c)
        missed = torch.bincount(target[~inside], minlength=c)
        device = pred.device
        self.matrix = self.matrix.to(device)
        self.unassigned = self.unassigned.to(device)
        self.matrix += counts.view(c, c)
        self.unassigned += missed

    def reduce_across_processes(self) -> None:
        """Sum the matrices of all processes in place (a no-op without torch.distributed)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        home = self.matrix.device
        both = torch.cat((self.matrix.reshape(-1), self.unassigned.to(home)))
        if dist.get_backend() == "nccl" and home.type != "cuda":
            both = both.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(both, op=dist.ReduceOp.SUM)
        both = both.to(home)
        c = self.num_classes
        self.matrix = both[: c * c].view(c, c).clone()
        self.unassigned = both[c * c:].clone()

    def iou(self) -> torch.Tensor:
        """(C,) float64 IoU per class as a fraction in [0, 1]; NaN for a class absent from both
        the prediction and the ground truth."""
        m = self.matrix.double().cpu()
        tp = m.diagonal()
        gt = m.sum(dim=1) + self.unassigned.double().cpu()
        pred = m.sum(dim=0)
        union = gt + pred - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))

    def pixel_accuracy(self) -> float:
        """Share of labelled pixels predicted correctly, in [0, 1]; NaN when nothing was counted."""
        total = int(self.matrix.sum()) + int(self.unassigned.sum())
        return int(self.matrix.diagonal().sum()) / total if total else math.nan

    def summary(self, subsets: Mapping[str, Sequence[int]] | None = None) -> dict:
        """Percentages (0..100) for reports and JSON.

        Returns ``{"miou": ..., <subset name>: ..., "per_class": {name: iou or None},
        "pixel_accuracy": ...}``. Means skip classes whose IoU is undefined; a mean over no
        defined class, and an undefined IoU or accuracy, are None.
        ``subsets`` maps a key (e.g. "miou16") to class ids; see :data:`SYNTHIA_SUBSETS`.
        """
        iou = self.iou()
        result: dict = {"miou": _nanmean_percent(iou, range(self.num_classes))}
        for name, ids in (subsets or {}).items():
            bad = [i for i in ids if not 0 <= i < self.num_classes]
            if bad:
                raise ValueError(f"subset {name!r} names classes {bad} outside 0..{self.num_classes - 1}")
            result[name] = _nanmean_percent(iou, ids)
        result["per_class"] = {
            name: (None if math.isnan(v) else 100.0 * v)
            for name, v in zip(self.class_names, iou.tolist())
        }
        acc = self.pixel_accuracy()
        result["pixel_accuracy"] = None if math.isnan(acc) else 100.0 * acc
        return result

    def confusions(self, top: int = 3) -> list[dict]:
        """Where each class's ground-truth pixels went: one entry per class present in the ground truth.

        Returns ``[{"class": name, "pixels": n, "correct": %, "predicted_as": [{"class": other,
        "share": %}, ...], "unassigned": %}, ...]`` in class order; ``predicted_as`` holds the ``top``
        most frequent wrong predictions with a non-zero share, most frequent first. Shares are
        percentages of the class's ground-truth pixels (``unassigned``: predictions outside 0..C-1).
        """
        if top < 0:
            raise ValueError(f"top must be >= 0, got {top}")
        m = self.matrix.cpu()
        unassigned = self.unassigned.cpu()
        rows = []
        for i, name in enumerate(self.class_names):
            total = int(m[i].sum()) + int(unassigned[i])
            if total == 0:
                continue
            wrong = [(int(m[i, j]), j) for j in range(self.num_classes) if j != i and int(m[i, j]) > 0]
            wrong.sort(key=lambda cj: (-cj[0], cj[1]))
            rows.append({
                "class": name, "pixels": total, "correct": 100.0 * int(m[i, i]) / total,
                "predicted_as": [{"class": self.class_names[j], "share": 100.0 * c / total} for c, j in wrong[:top]],
                "unassigned": 100.0 * int(unassigned[i]) / total,
            })
        return rows


def _nanmean_percent(iou: torch.Tensor, ids: Sequence[int]) -> float | None:
    values = [v for v in iou[list(ids)].tolist() if not math.isnan(v)]
    return 100.0 * sum(values) / len(values) if values else None
