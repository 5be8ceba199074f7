"""BDD100K, the 10K semantic segmentation subset (Yu et al. 2020): US dashcam frames in many weathers
and times of day, 1280x720, labelled with Cityscapes' 19 classes. Used here to evaluate generalisation.

Download layouts (ROOT is the ``bdd100k`` folder the archives unpack to, or the folder holding it)::

    current (bdd100k_images_10k.zip + bdd100k_sem_seg_labels_trainval.zip):
        ROOT/images/10k/{train,val,test}/NAME.jpg
        ROOT/labels/sem_seg/masks/{train,val}/NAME.png          train ids 0..18, 255 = ignore
    older (bdd100k_seg.zip):
        ROOT/seg/images/{train,val,test}/NAME.jpg
        ROOT/seg/labels/{train,val}/NAME_train_id.png           train ids 0..18, 255 = ignore

The labels are train ids already: ``iccld prepare bdd100k --root ROOT`` checks the layout and every
label's values and counts classes, converting nothing. Train: 7,000 images, val: 1,000 (the
generalisation benchmark), test: 2,000 without labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import DataError
from .base import SegmentationDataset, Transform, attach_labels, count_pairs, list_files, require_dir
from .kinds import DatasetKind
from .labels import LabelMap
from .transforms import EvalTransform

SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = ".jpg"
LAYOUT = ("ROOT/images/10k/{split}/NAME.jpg and ROOT/labels/sem_seg/masks/{split}/NAME.png "
          "(or the older ROOT/seg/images/{split}/ and ROOT/seg/labels/{split}/NAME_train_id.png)")
EXPECTED = {"train": 7000, "val": 1000, "test": 2000}  # images in the full download


@dataclass(frozen=True)
class Layout:
    """Where one release keeps a split's images and labels, relative to the ``bdd100k`` folder."""

    name: str
    images: str
    labels: str
    label_suffix: str


CURRENT = Layout("images/10k", "images/10k/{split}", "labels/sem_seg/masks/{split}", ".png")
OLDER = Layout("seg", "seg/images/{split}", "seg/labels/{split}", "_train_id.png")


def find_layout(root: Path) -> tuple[Path, Layout]:
    """(the ``bdd100k`` folder, its layout): ROOT itself or ROOT/bdd100k, the current layout first."""
    root = Path(root)
    for base in (root, root / "bdd100k"):
        for layout in (CURRENT, OLDER):
            if (base / layout.name).is_dir():
                return base, layout
    raise DataError(f"{root}: neither images/10k/ nor seg/images/ found here or in {root / 'bdd100k'} "
                    f"(expected {LAYOUT})")


def _folders(base: Path, layout: Layout, split: str) -> tuple[Path, Path]:
    return base / layout.images.format(split=split), base / layout.labels.format(split=split)


def bdd100k_label_jobs(root: Path) -> list[tuple[Path, Path]]:
    """(label, label) for every label of every split present: they are train ids already, so
    ``iccld prepare`` checks and counts them in place."""
    base, layout = find_layout(root)
    jobs = []
    for split in SPLITS:
        labels = _folders(base, layout, split)[1]
        if labels.is_dir():
            jobs += [(f, f) for f in list_files(labels, layout.label_suffix)]
    if not jobs:
        raise DataError(f"{base}: no *{layout.label_suffix} labels found (expected {LAYOUT})")
    return jobs


def bdd100k_report(root: Path) -> list[str]:
    """One line per split present: images and labels against the full download, and files that are
    neither. A label without its image, or a split labelled only in part, is a DataError."""
    base, layout = find_layout(root)
    lines = []
    for split in SPLITS:
        images, labels = _folders(base, layout, split)
        if not images.is_dir():
            continue
        found = count_pairs(images, IMAGE_SUFFIX, labels, layout.label_suffix)
        note = "" if found.images == EXPECTED[split] else f" (the full download has {EXPECTED[split]}: partial?)"
        if found.other:
            note += (f"; {len(found.other)} other file{'s' if len(found.other) > 1 else ''} ignored "
                     f"(e.g. {found.other[0].relative_to(base).as_posix()})")
        lines.append(f"{split}: {found.images} images, {found.labels} labels{note}")
    if not lines:
        raise DataError(f"{base}: no split folder under {layout.name}/ (expected {LAYOUT})")
    return lines


class BDD100KDataset(SegmentationDataset):
    """One BDD100K 10K split in either download layout (see the module doc). The labels are read as
    shipped; ``iccld prepare bdd100k`` only checks them and writes the class statistics.

    Args:
        root: the ``bdd100k`` folder (or the folder holding it).
        split: train | val | test.
        transform, labelled, skip_bad: as :class:`~iccld.data.gta5.GTA5Dataset`. Names are the
            file stems (e.g. ``7d2f7975-e0c1c5a7``).
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Optional[Transform] = None,
                 *, labelled: bool = True, skip_bad: bool = False):
        root = Path(root)
        if split not in SPLITS:
            raise DataError(f"{root}: BDD100K split '{split}' is not one of {', '.join(SPLITS)}")
        base, layout = find_layout(root)
        image_dir, label_dir = _folders(base, layout, split)
        expected = LAYOUT.replace("{split}", split)
        files = list_files(require_dir(image_dir, expected), IMAGE_SUFFIX)
        if not files:
            raise DataError(f"{image_dir}: no *{IMAGE_SUFFIX} images found (expected {expected})")
        labels = [label_dir / (f.stem + layout.label_suffix) for f in files]
        items = [(f, label, label, f.stem) for f, label in zip(files, labels)]
        command = f"iccld prepare bdd100k --root {root}"
        super().__init__(attach_labels(items, labelled, command), transform or EvalTransform(),
                         root=root, skip_bad=skip_bad, prepare_command=command)


KIND = DatasetKind(
    name="bdd100k", display_name="BDD100K",
    dataset=lambda cfg, transform, **common: BDD100KDataset(cfg.root, cfg.split, transform, **common),
    plan=lambda root, spec: (bdd100k_label_jobs(root), LabelMap("train_ids")),  # shipped in train ids
    layout_report=bdd100k_report,
)
