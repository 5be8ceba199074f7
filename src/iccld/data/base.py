"""The dataset base class shared by every family (GTA5, SYNTHIA, Cityscapes, folder).

A family only finds its files: it builds a list of :class:`Sample` (image path, prepared train-id
label path or None, name) and hands it to :class:`SegmentationDataset`, which reads, checks,
transforms and returns

    {"image": float32 (3, H, W) ImageNet-normalised, "label": int64 (H, W), 255 = ignore,
     "name": str}

plus ``"skipped": int`` (bad pairs passed over to produce this sample) and ``"bad_pairs": str`` (their
image paths, joined by newlines) when ``skip_bad`` is on.

Keys: ``dataset[i]`` is deterministic (its random choices are seeded with ``i``; meant for
evaluation and tests); ``dataset[(i, seed)]`` draws every random choice of that sample (crop,
flip, jitter, rare-class choice) from ``numpy.random.default_rng(seed)``. Training passes
``(index, seed)`` keys so that a resumed run sees exactly the same samples. No global RNG is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..errors import DataError
from .io import read_image, read_label
from .labels import IGNORE_INDEX, NUM_CLASSES

PREPARED_SUFFIX = "_labelTrainIds.png"

# (image (H, W, 3) uint8, label (H, W) uint8 or None, rng or None) -> (image tensor, label tensor)
Transform = Callable[[np.ndarray, Optional[np.ndarray], Optional[np.random.Generator]],
                     tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Optional[Path]  # the prepared train-id PNG; None for unlabelled use
    name: str


def parse_key(key: object) -> tuple[int, object]:
    """``i`` -> (i, i); ``(i, seed)`` -> (i, seed). ``seed`` is an int >= 0 or a tuple of them."""
    if isinstance(key, (tuple, list)):
        if len(key) != 2:
            raise TypeError(f"a dataset key is an index or (index, seed), got {key!r}")
        index, seed = key
    else:
        index, seed = key, None
    if isinstance(index, torch.Tensor):
        index = index.item()
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
        raise TypeError(f"a dataset index must be an int, got {index!r}")
    index = int(index)
    if seed is None:
        seed = index
    elif isinstance(seed, torch.Tensor):
        seed = seed.item()
    if isinstance(seed, np.integer):
        seed = int(seed)
    return index, seed


def rng_for(seed: object) -> np.random.Generator:
    return np.random.default_rng(seed)  # type: ignore[arg-type]


def require_dir(path: Path, expected: str) -> Path:
    """``path`` if it is a folder, else a DataError saying what was expected there."""
    if not path.is_dir():
        raise DataError(f"{path}: folder not found (expected {expected})")
    return path


def list_files(folder: Path, suffix: str, recursive: bool = False) -> list[Path]:
    """Sorted files in ``folder`` ending with ``suffix``, skipping hidden files and the prepared
    ``*_labelTrainIds.png`` files (unless ``suffix`` asks for those)."""
    found: list[Path] = []
    walker = os.walk(folder) if recursive else [(str(folder), [], os.listdir(folder))]
    for dirpath, dirnames, filenames in walker:
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or not name.endswith(suffix):
                continue
            if name.endswith(PREPARED_SUFFIX) and not suffix.endswith(PREPARED_SUFFIX):
                continue
            path = Path(dirpath) / name
            if path.is_file():
                found.append(path)
    return sorted(found)


@dataclass(frozen=True)
class PairCount:
    """What :func:`count_pairs` found in one image folder and its label folder."""

    images: int
    labels: int
    other: tuple[Path, ...]  # files of neither kind in the two folders (hidden files aside)


def count_pairs(image_dir: Path, image_suffix: str, label_dir: Path, label_suffix: str) -> PairCount:
    """Images ``NAME<image_suffix>`` in ``image_dir`` and labels ``NAME<label_suffix>`` in
    ``label_dir`` (both flat; either may be absent). A label without its image, or labels for only
    some of the images, is a DataError naming the first such file; prepared ``*_labelTrainIds.png``
    files are neither labels nor other files."""
    images = list_files(image_dir, image_suffix) if image_dir.is_dir() else []
    names = {p.name[: -len(image_suffix)] for p in images}
    labels = list_files(label_dir, label_suffix) if label_dir.is_dir() else []
    labelled = set()
    for p in labels:
        name = p.name[: -len(label_suffix)]
        if name not in names:
            raise DataError(f"{p}: label without an image (expected {image_dir / (name + image_suffix)})")
        labelled.add(name)
    if labelled and len(labelled) < len(names):
        missing = sorted(names - labelled)[0]
        raise DataError(f"{image_dir / (missing + image_suffix)}: no label (expected "
                        f"{label_dir / (missing + label_suffix)}; {len(names) - len(labelled)} of "
                        f"{len(names)} images in {image_dir} have none)")
    known = set(images) | set(labels)
    other = []
    for folder in dict.fromkeys(d for d in (image_dir, label_dir) if d.is_dir()):
        other += [f for f in list_files(folder, "") if f not in known]
    return PairCount(len(images), len(labelled), tuple(sorted(other)))


def paired_flat_folders(root: Path, image_dir: str, label_dir: str, layout: str,
                        command: str, labelled: bool) -> list:
    """Samples of a dataset whose images and labels share file names in two flat folders
    (GTA5's images/labels, SYNTHIA's RGB/GT/LABELS)."""
    images = require_dir(root / image_dir, layout)
    files = list_files(images, ".png")
    if not files:
        raise DataError(f"{images}: no .png images found (expected {layout})")
    labels = root / label_dir
    items = [(f, labels / f.name, labels / (f.stem + PREPARED_SUFFIX), f.stem) for f in files]
    return attach_labels(items, labelled, command)


def attach_labels(items: Sequence[tuple[Path, Path, Path, str]], labelled: bool,
                  prepare_command: str) -> list[Sample]:
    """Build samples from ``(image, original label, prepared label, name)`` tuples.

    Unlabelled: labels are not looked at. Labelled: every prepared label must exist; a missing
    original label is a layout error, a missing prepared one means ``iccld prepare`` was not run.
    """
    if not labelled:
        return [Sample(image, None, name) for image, _, _, name in items]
    missing = [(orig, prep) for _, orig, prep, _ in items if not prep.is_file()]
    if missing:
        absent = [orig for orig, _ in missing if not orig.is_file()]
        if absent:
            raise DataError(f"{absent[0]}: label file not found (expected one label per image; "
                            f"{len(absent)} of {len(items)} images have none)")
        raise DataError(f"{missing[0][1]}: prepared label not found ({len(missing)} of {len(items)} "
                        f"missing); run `{prepare_command}` first")
    return [Sample(image, prep, name) for image, _, prep, name in items]


class SegmentationDataset(torch.utils.data.Dataset):
    """Reads :class:`Sample` pairs, checks them and applies ``transform``.

    Args:
        samples: the pairs, in a fixed order (index i is always the same pair).
        transform: a :class:`~iccld.data.transforms.TrainTransform` or ``EvalTransform``.
        root: the dataset root; stats files name labels relative to it.
        skip_bad: an unreadable or mismatched pair is replaced by the next readable one (index
            i+1, i+2, ...) and counted in :attr:`num_skipped` (draws) and in the sample's
            ``"skipped"``; :attr:`bad_pairs` and the sample's ``"bad_pairs"`` name the distinct pairs.
        prepare_command: the command that writes the prepared labels, quoted in errors.
    """

    def __init__(self, samples: Sequence[Sample], transform: Transform, *, root: Path,
                 skip_bad: bool = False, prepare_command: str = ""):
        if not samples:
            raise DataError(f"{root}: no samples found")
        self.samples = list(samples)
        self.transform = transform
        self.root = Path(root)
        self.skip_bad = bool(skip_bad)
        self.prepare_command = prepare_command
        self.labelled = self.samples[0].label is not None
        self.num_skipped = 0  # in this process; with DataLoader workers sum the "skipped" keys
        self.bad_pairs: set[str] = set()  # image paths of the pairs skipped (distinct files)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: object) -> dict:
        index, seed = parse_key(key)
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} samples")
        return self.load(index, rng_for(seed))

    def label_key(self, index: int) -> str:
        """The prepared label's path relative to the root (posix), as in sample_class_stats.json."""
        label = self.samples[index].label
        if label is None:
            raise ValueError("unlabelled dataset has no label files")
        return Path(os.path.relpath(label, self.root)).as_posix()

    def read_pair(self, index: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """(image (H, W, 3) uint8, train ids (H, W) uint8 or None). Bad data -> DataError."""
        sample = self.samples[index]
        image = read_image(sample.image)
        if sample.label is None:
            return image, None
        label = read_label(sample.label)
        if label.shape != image.shape[:2]:
            raise DataError(f"{sample.image} is {image.shape[1]}x{image.shape[0]} but its label "
                            f"{sample.label} is {label.shape[1]}x{label.shape[0]} (WxH); they must match")
        if label.max(initial=0) >= NUM_CLASSES:
            bad = (label >= NUM_CLASSES) & (label != IGNORE_INDEX)
            if bad.any():
                hint = f"; rerun `{self.prepare_command} --overwrite`" if self.prepare_command else ""
                raise DataError(f"{sample.label}: value {int(label[bad][0])} is not a train id "
                                f"(0..{NUM_CLASSES - 1} or 255){hint}")
        return image, label.astype(np.uint8, copy=False)

    def load(self, index: int, rng: Optional[np.random.Generator]) -> dict:
        """The transformed sample ``index`` with random choices from ``rng`` (see module doc)."""
        skipped, bad = 0, []
        while True:
            try:
                image, label = self.read_pair(index)
                break
            except DataError as exc:
                if not self.skip_bad:
                    raise
                skipped += 1
                self.num_skipped += 1
                bad.append(str(self.samples[index].image))
                self.bad_pairs.add(bad[-1])
                if skipped >= len(self.samples):
                    raise DataError(f"{self.root}: no readable image/label pair left "
                                    f"(last: {exc})") from None
                index = (index + 1) % len(self.samples)
        image_t, label_t, *valid = self.transform(image, label, rng)
        out = {"image": image_t, "label": label_t, "name": self.samples[index].name}
        if valid:  # the transform's pseudo-label region (data.pl_margins)
            out["pl_valid"] = valid[0]
        if self.skip_bad:
            out["skipped"] = skipped
            out["bad_pairs"] = "\n".join(bad)
        return out
