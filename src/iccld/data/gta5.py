"""GTA5 ("Playing for Data", Richter et al. 2016): 24,966 synthetic frames, 1914x1052.

Original layout (as downloaded, the ten parts unpacked into one folder)::

    ROOT/images/00001.png              RGB frame
    ROOT/labels/00001.png              palette PNG; the palette index is the Cityscapes label id
    ROOT/labels/00001_labelTrainIds.png   written by `iccld prepare gta5 --root ROOT`

GTA5 has no splits: the whole set is the source domain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import DataError
from .base import (PREPARED_SUFFIX, SegmentationDataset, Transform, list_files, paired_flat_folders,
                   require_dir)
from .kinds import DatasetKind
from .labels import CITYSCAPES_MAP
from .transforms import EvalTransform

LAYOUT = "ROOT/images/NNNNN.png and ROOT/labels/NNNNN.png, the GTA5 download layout"


def gta5_label_jobs(root: Path) -> list[tuple[Path, Path]]:
    """(original label, prepared label) for every label in ROOT/labels."""
    labels = require_dir(Path(root) / "labels", LAYOUT)
    files = list_files(labels, ".png")
    if not files:
        raise DataError(f"{labels}: no label PNGs found (expected {LAYOUT})")
    return [(f, f.with_name(f.stem + PREPARED_SUFFIX)) for f in files]


class GTA5Dataset(SegmentationDataset):
    """GTA5 in its original layout; labelled use needs `iccld prepare gta5` first.

    Args:
        root: the GTA5 folder.
        transform: a TrainTransform or EvalTransform (default: EvalTransform without resize).
        labelled: False reads images only (labels become all 255) and needs no prepared files.
        skip_bad: see :class:`~iccld.data.base.SegmentationDataset`.
    """

    def __init__(self, root: str | Path, transform: Optional[Transform] = None, *,
                 labelled: bool = True, skip_bad: bool = False):
        root = Path(root)
        command = f"iccld prepare gta5 --root {root}"
        samples = paired_flat_folders(root, "images", "labels", LAYOUT, command, labelled)
        super().__init__(samples, transform or EvalTransform(),
                         root=root, skip_bad=skip_bad, prepare_command=command)


KIND = DatasetKind(
    name="gta5", display_name="GTA5",
    dataset=lambda cfg, transform, **common: GTA5Dataset(cfg.root, transform, **common),
    plan=lambda root, spec: (gta5_label_jobs(root), CITYSCAPES_MAP),
)
