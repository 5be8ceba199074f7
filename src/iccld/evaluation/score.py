"""Score a folder of predicted train-id PNGs against a folder of ground-truth train-id PNGs.

Both folders are searched recursively for ``*.png`` (so Cityscapes' ``gtFine/val/<city>/`` works).
Files are paired by a normalised stem: the file name without ``.png`` and without one of
:data:`KNOWN_SUFFIXES`, so ``aachen_000000_000019_leftImg8bit.png`` (prediction) pairs with
``aachen_000000_000019_gtFine_labelTrainIds.png`` (ground truth). Files ending in one of
:data:`SKIPPED_SUFFIXES` (Cityscapes' colour/labelIds/instanceIds images; visualisations written
next to predictions) are not labels and are passed over.

Both sides must be 8-bit single-channel PNGs (mode L or P) of equal size. Ground truth holds
0..C-1 or 255; a prediction holds 0..C-1, and 255 on a labelled pixel counts as a miss.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.labels import IGNORE_INDEX, NUM_CLASSES
from ..errors import DataError
from .metrics import SYNTHIA_SUBSETS, ConfusionMatrix

KNOWN_SUFFIXES: tuple[str, ...] = ("_gtFine_labelTrainIds", "_labelTrainIds", "_leftImg8bit", "_trainid")
SKIPPED_SUFFIXES: tuple[str, ...] = (
    "_color", "_labelIds", "_instanceIds", "_overlay", "_uncertainty",
)
_SHOW = 5  # names listed in an error message


def normalized_stem(path: Path) -> str:
    """The pairing key of a label file: its stem without the known suffixes (``iccld predict``
    writes ``<image stem>_trainid.png``, so ``*_leftImg8bit_trainid`` loses both)."""
    stem = path.name[: -len(".png")] if path.name.lower().endswith(".png") else path.stem
    stripped = True
    while stripped:
        stripped = False
        for suffix in KNOWN_SUFFIXES:  # longest first where one ends another
            if stem.endswith(suffix):
                stem, stripped = stem[: -len(suffix)], True
    return stem


def _label_files(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{role} folder {folder} does not exist or is not a folder")
    files: dict[str, Path] = {}
    skipped = 0
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() != ".png":
            continue
        stem = path.name[: -len(".png")]
        if stem.endswith(SKIPPED_SUFFIXES):
            skipped += 1
            continue
        key = normalized_stem(path)
        if key in files:
            raise DataError(f"{role} folder {folder}: {files[key]} and {path} both pair with the "
                            f"name {key!r}; keep one of them")
        files[key] = path
    if not files:
        hint = (f" ({skipped} colour/labelIds/visualisation PNGs skipped; convert labels to train "
                f"ids with `iccld prepare`)" if skipped else "")
        raise DataError(f"{role} folder {folder} holds no label PNG{hint}")
    return files


def _read_label(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode not in ("L", "P"):
                raise DataError(f"{path}: expected an 8-bit single-channel train-id PNG (mode L or P), "
                                f"got mode {mode}; a colour visualisation is not a label")
            return np.array(img, dtype=np.uint8)  # a writable copy for torch.from_numpy
    except DataError:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise DataError(f"{path}: cannot read the PNG ({exc})") from None


def _check_values(path: Path, label: np.ndarray, num_classes: int, role: str) -> None:
    counts = np.bincount(label.ravel(), minlength=256)
    counts[:num_classes] = 0
    counts[IGNORE_INDEX] = 0
    if counts.any():
        bad = np.nonzero(counts)[0][:8].tolist()
        raise DataError(f"{path}: {role} holds values {bad} that are neither train ids "
                        f"0..{num_classes - 1} nor {IGNORE_INDEX}; convert it with `iccld prepare`")


def _unmatched(names: list[str], folder: Path, other: Path) -> str:
    shown = ", ".join(names[:_SHOW]) + (", ..." if len(names) > _SHOW else "")
    return f"{len(names)} in {folder} have no counterpart in {other} ({shown})"


def score_folders(pred_dir: str | Path, gt_dir: str | Path, subsets: bool = False,
                  num_classes: int = NUM_CLASSES, confusion: bool = False) -> dict:
    """Accumulate one confusion matrix over all pairs and return its summary.

    Returns :meth:`ConfusionMatrix.summary` (with "miou16"/"miou13" when ``subsets``) plus
    "num_images", and with ``confusion`` a "confusion" list (:meth:`ConfusionMatrix.confusions`).
    Raises DataError for a missing or empty folder, unpaired files, a size mismatch or an unreadable
    or invalid PNG, naming the file.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    preds = _label_files(pred_dir, "prediction")
    gts = _label_files(gt_dir, "ground-truth")
    only_pred = sorted(set(preds) - set(gts))
    only_gt = sorted(set(gts) - set(preds))
    if only_pred or only_gt:
        parts = []
        if only_gt:
            parts.append(_unmatched([gts[k].name for k in only_gt], gt_dir, pred_dir))
        if only_pred:
            parts.append(_unmatched([preds[k].name for k in only_pred], pred_dir, gt_dir))
        raise DataError("unpaired files: " + "; ".join(parts))

    cm = ConfusionMatrix(num_classes=num_classes, ignore_index=IGNORE_INDEX)
    for key in sorted(gts):
        gt_path, pred_path = gts[key], preds[key]
        gt, pred = _read_label(gt_path), _read_label(pred_path)
        if gt.shape != pred.shape:
            raise DataError(f"size mismatch: {pred_path} is {pred.shape[1]}x{pred.shape[0]} but "
                            f"{gt_path} is {gt.shape[1]}x{gt.shape[0]} (WxH)")
        _check_values(gt_path, gt, num_classes, "ground truth")
        _check_values(pred_path, pred, num_classes, "prediction")
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
    result = cm.summary(SYNTHIA_SUBSETS if subsets else None)
    result["num_images"] = len(gts)
    if confusion:
        result["confusion"] = cm.confusions()
    return result
