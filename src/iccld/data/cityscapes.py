"""Cityscapes (Cordts et al. 2016): leftImg8bit_trainvaltest + gtFine_trainvaltest, 2048x1024.

Original layout::

    ROOT/leftImg8bit/{train,val,test}/CITY/CITY_SEQ_FRAME_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png
    ROOT/gtFine/{split}/CITY/CITY_SEQ_FRAME_gtFine_labelTrainIds.png
        written by `iccld prepare cityscapes --root ROOT` (the same files cityscapesscripts'
        createTrainIdLabelImgs writes, so either tool may have made them)

Train: 2,975 images (the UDA target, used without labels), val: 500 (evaluation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import DataError
from .base import SegmentationDataset, Transform, attach_labels, list_files, require_dir
from .kinds import DatasetKind
from .labels import CITYSCAPES_MAP
from .transforms import EvalTransform

SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
PREPARED = "_gtFine_labelTrainIds.png"
LAYOUT = "ROOT/leftImg8bit/{split}/CITY/*_leftImg8bit.png and ROOT/gtFine/{split}/CITY/*_gtFine_labelIds.png"


def cityscapes_label_jobs(root: Path) -> list[tuple[Path, Path]]:
    """(labelIds, labelTrainIds) for every gtFine label of every split present."""
    gt = require_dir(Path(root) / "gtFine", LAYOUT.replace("{split}", "train"))
    jobs = []
    for split in SPLITS:
        if (gt / split).is_dir():
            jobs += [(f, f.with_name(f.name[: -len(LABEL_SUFFIX)] + PREPARED))
                     for f in list_files(gt / split, LABEL_SUFFIX, recursive=True)]
    if not jobs:
        raise DataError(f"{gt}: no *{LABEL_SUFFIX} files found (expected {LAYOUT})")
    return jobs


class CityscapesDataset(SegmentationDataset):
    """One Cityscapes split in its original layout.

    Args:
        root: the Cityscapes folder holding leftImg8bit/ and gtFine/.
        split: train | val | test.
        transform, labelled, skip_bad: as :class:`~iccld.data.gta5.GTA5Dataset`. Names are
            ``CITY_SEQ_FRAME`` (e.g. ``aachen_000000_000019``).
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Optional[Transform] = None,
                 *, labelled: bool = True, skip_bad: bool = False):
        root = Path(root)
        if split not in SPLITS:
            raise DataError(f"{root}: Cityscapes split '{split}' is not one of {', '.join(SPLITS)}")
        command = f"iccld prepare cityscapes --root {root}"
        images = require_dir(root / "leftImg8bit" / split, LAYOUT.replace("{split}", split))
        files = list_files(images, IMAGE_SUFFIX, recursive=True)
        if not files:
            raise DataError(f"{images}: no *{IMAGE_SUFFIX} images found "
                            f"(expected {LAYOUT.replace('{split}', split)})")
        items = []
        for f in files:
            name = f.name[: -len(IMAGE_SUFFIX)]
            label_dir = root / "gtFine" / split / f.parent.name
            items.append((f, label_dir / (name + LABEL_SUFFIX), label_dir / (name + PREPARED), name))
        super().__init__(attach_labels(items, labelled, command), transform or EvalTransform(),
                         root=root, skip_bad=skip_bad, prepare_command=command)


KIND = DatasetKind(
    name="cityscapes", display_name="Cityscapes",
    dataset=lambda cfg, transform, **common: CityscapesDataset(cfg.root, cfg.split, transform, **common),
    plan=lambda root, spec: (cityscapes_label_jobs(root), CITYSCAPES_MAP),
)
