"""Rare class sampling (RCS, DAFormer, Hoyer et al. 2022) of the source dataset.

With f_c the share of all labelled source pixels that belong to class c (from
``ROOT/sample_class_stats.json``, written by ``iccld prepare``), class c is drawn with probability

    p_c = exp((1 - f_c) / T) / sum_c' exp((1 - f_c') / T)

over the classes present; then an image is drawn uniformly among those holding at least
``min_pixels`` pixels of c; then the training crop is redrawn (up to 10 crops in all) until it
holds at least ``min_crop_ratio * min_pixels`` pixels of c. As in DAFormer, the pixel counts are
those of the full-resolution labels while the crop is taken after the resize.

A class present in the data but in no image with ``min_pixels`` of it cannot be drawn; it is left
out and the others renormalised (listed in ``dropped_classes``), where DAFormer would stop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError
from .base import SegmentationDataset, parse_key, rng_for
from .labels import NUM_CLASSES
from .prepare import STATS_FILE

CROP_TRIES = 10


def rcs_probabilities(freqs: Sequence[float], temperature: float) -> np.ndarray:
    """``softmax((1 - f) / T)``: the class sampling probabilities for frequencies ``freqs``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = (1.0 - np.asarray(freqs, dtype=np.float64)) / temperature
    logits -= logits.max()  # stable: T = 0.01 gives logits up to 100
    weights = np.exp(logits)
    return weights / weights.sum()


def load_class_stats(root: str | Path, prepare_command: str = "") -> list[dict]:
    """The entries of ``ROOT/sample_class_stats.json``; missing or malformed -> DataError."""
    path = Path(root) / STATS_FILE
    hint = f"; run `{prepare_command}`" if prepare_command else "; run `iccld prepare <kind> --root ROOT`"
    if not path.is_file():
        raise DataError(f"{path}: class statistics not found (rare class sampling needs them){hint}, "
                        "or set data.rcs_temperature=0")
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "file" in e for e in entries):
            raise ValueError("expected a list of {file, class: count} entries")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: unreadable class statistics ({str(exc).splitlines()[0]}){hint} "
                        "--overwrite") from None
    return entries


class RareClassDataset(torch.utils.data.Dataset):
    """Wraps a labelled source dataset; each key draws a rare-class sample as described above.

    Args:
        dataset: a labelled :class:`~iccld.data.base.SegmentationDataset` with a TrainTransform.
        stats: entries of sample_class_stats.json (see :func:`load_class_stats`); entries are
            matched to the dataset's labels by path relative to the root, else by file name.
        temperature: T > 0; smaller favours rare classes more (DAFormer: 0.01).
        min_pixels: an image is a candidate for class c if it holds at least this many pixels of c.
        min_crop_ratio: 0 keeps the first crop.

    Keys are ``(index, seed)`` (or ``i``, seeded with ``i``); the index itself is not used, as in
    DAFormer: the seed alone decides the class, the image and the crop.
    """

    def __init__(self, dataset: SegmentationDataset, stats: list[dict], *, temperature: float = 0.01,
                 min_pixels: int = 3000, min_crop_ratio: float = 0.5):
        if not dataset.labelled:
            raise DataError(f"{dataset.root}: rare class sampling needs a labelled dataset")
        self.dataset = dataset
        self.min_pixels = int(min_pixels)
        self.min_crop_ratio = float(min_crop_ratio)
        by_path = {dataset.label_key(i): i for i in range(len(dataset))}
        by_name = {Path(key).name: i for key, i in by_path.items()}
        counts = np.zeros((len(dataset), NUM_CLASSES), dtype=np.int64)  # (N, 19) pixels per class
        matched = np.zeros(len(dataset), dtype=bool)
        for entry in stats:
            file = str(entry["file"]).replace("\\", "/")
            index = by_path.get(file, by_name.get(Path(file).name))
            if index is None:
                continue
            matched[index] = True
            for key, n in entry.items():
                if key != "file" and str(key).isdigit() and int(key) < NUM_CLASSES:
                    counts[index, int(key)] = int(n)
        if not matched.any():
            raise DataError(f"{dataset.root / STATS_FILE}: none of its entries names a label of this "
                            f"dataset; rerun `{dataset.prepare_command} --overwrite`")
        totals = counts.sum(axis=0)
        if totals.sum() == 0:
            raise DataError(f"{dataset.root}: its labels hold no class (every pixel is ignore, 255, in "
                            f"{dataset.root / STATS_FILE}); check the label files and the dataset's label map")
        present = np.flatnonzero(totals > 0)
        freqs = totals[present] / totals.sum()
        candidates = {int(c): np.flatnonzero(counts[:, c] >= self.min_pixels) for c in present}
        keep = [i for i, c in enumerate(present) if len(candidates[int(c)]) > 0]
        if not keep:
            raise DataError(f"{dataset.root}: no image holds {self.min_pixels} pixels of any class; "
                            "lower data.rcs_min_pixels")
        self.class_freqs = {int(present[i]): float(freqs[i]) for i in range(len(present))}
        self.classes = [int(present[i]) for i in keep]
        self.dropped_classes = [int(c) for c in present if int(c) not in self.classes]
        self.probabilities = rcs_probabilities(freqs[keep], temperature)
        self.samples_with_class = {c: candidates[c] for c in self.classes}
        self.num_unmatched = int((~matched).sum())  # images missing from the stats never get drawn

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def num_skipped(self) -> int:
        return self.dataset.num_skipped

    @property
    def bad_pairs(self) -> set[str]:
        return self.dataset.bad_pairs

    def choose(self, rng: np.random.Generator) -> tuple[int, int]:
        """(class, dataset index) drawn from ``rng``."""
        c = self.classes[int(rng.choice(len(self.classes), p=self.probabilities))]
        images = self.samples_with_class[c]
        return c, int(images[int(rng.integers(len(images)))])

    def __getitem__(self, key: object) -> dict:
        index, seed = parse_key(key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        rng = rng_for(seed)
        c, i = self.choose(rng)
        sample = self.dataset.load(i, rng)
        needed = self.min_crop_ratio * self.min_pixels
        if self.min_crop_ratio > 0:
            for _ in range(CROP_TRIES - 1):
                if int((sample["label"] == c).sum()) >= needed:
                    break
                sample = self.dataset.load(i, rng)  # a new crop of the same image
        return sample
