"""SYNTHIA-RAND-CITYSCAPES (Ros et al. 2016): 9,400 synthetic frames, 1280x760.

Original layout (the RAND-CITYSCAPES archive unpacked)::

    ROOT/RGB/0000000.png                   RGB frame
    ROOT/GT/LABELS/0000000.png             16-bit 3-channel PNG: class id in the first channel,
                                           instance id in the second
    ROOT/GT/LABELS/0000000_labelTrainIds.png   written by `iccld prepare synthia --root ROOT`

SYNTHIA has no splits. It has no terrain, truck or train pixels; results are reported over 16
and 13 classes (see iccld.data.labels.SYNTHIA16/SYNTHIA13).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import DataError
from .base import (PREPARED_SUFFIX, SegmentationDataset, Transform, list_files, paired_flat_folders,
                   require_dir)
from .kinds import DatasetKind
from .labels import SYNTHIA_MAP, SYNTHIA_SUBSETS
from .transforms import EvalTransform

LAYOUT = "ROOT/RGB/NNNNNNN.png and ROOT/GT/LABELS/NNNNNNN.png, the SYNTHIA-RAND-CITYSCAPES layout"


def synthia_label_jobs(root: Path) -> list[tuple[Path, Path]]:
    """(original label, prepared label) for every label in ROOT/GT/LABELS."""
    labels = require_dir(Path(root) / "GT" / "LABELS", LAYOUT)
    files = list_files(labels, ".png")
    if not files:
        raise DataError(f"{labels}: no label PNGs found (expected {LAYOUT})")
    return [(f, f.with_name(f.stem + PREPARED_SUFFIX)) for f in files]


class SynthiaDataset(SegmentationDataset):
    """SYNTHIA-RAND-CITYSCAPES in its original layout; labelled use needs `iccld prepare synthia`.

    Arguments as :class:`~iccld.data.gta5.GTA5Dataset`.
    """

    def __init__(self, root: str | Path, transform: Optional[Transform] = None, *,
                 labelled: bool = True, skip_bad: bool = False):
        root = Path(root)
        command = f"iccld prepare synthia --root {root}"
        samples = paired_flat_folders(root, "RGB", "GT/LABELS", LAYOUT, command, labelled)
        super().__init__(samples, transform or EvalTransform(),
                         root=root, skip_bad=skip_bad, prepare_command=command)


KIND = DatasetKind(
    name="synthia", display_name="SYNTHIA",
    dataset=lambda cfg, transform, **common: SynthiaDataset(cfg.root, transform, **common),
    plan=lambda root, spec: (synthia_label_jobs(root), SYNTHIA_MAP),
    class_subsets=SYNTHIA_SUBSETS,  # SYNTHIA lacks terrain, truck and train
)
