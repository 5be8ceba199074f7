"""Dark Zurich (Sakaridis et al. 2019): Zurich driven by day, at twilight and at night, 1920x1080,
with Cityscapes' 19 classes labelled on the night validation (and withheld test) frames.

Download layout (Dark_Zurich_train_anon.zip, Dark_Zurich_val_anon.zip and
Dark_Zurich_test_anon_withoutGt.zip unpacked into one folder)::

    ROOT/rgb_anon/{train,val,test}/{day,twilight,night}/SEQ/SEQ_frame_NNNNNN_rgb_anon.png
    ROOT/gt/val/night/SEQ/SEQ_frame_NNNNNN_gt_labelIds.png          Cityscapes label ids
    ROOT/gt/val/night/SEQ/SEQ_frame_NNNNNN_gt_labelTrainIds.png     train ids (shipped)

``iccld prepare darkzurich --root ROOT`` checks the layout and counts, writes the train-id labels
where only label ids are present and counts classes. The UDA target is the 2,416 night frames of
train (without labels); evaluation uses the 50 labelled night frames of val; the 151 night test
frames are scored by the benchmark's server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..errors import DataError
from .acdc import IMAGE_SUFFIX, anon_items, check_choice, label_jobs, label_map, layout_report
from .base import SegmentationDataset, Transform, attach_labels, require_dir
from .kinds import DatasetKind
from .labels import LabelMap
from .transforms import EvalTransform

TIMES = ("day", "twilight", "night")
SPLITS = ("train", "val", "test")
LAYOUT = "ROOT/rgb_anon/{split}/{time}/SEQ/*_rgb_anon.png and ROOT/gt/val/night/SEQ/*_gt_labelTrainIds.png"
EXPECTED = {("train", "day"): 3041, ("train", "twilight"): 2920, ("train", "night"): 2416,
            ("val", "night"): 50, ("test", "night"): 151}


def darkzurich_label_jobs(root: Path) -> tuple[list[tuple[Path, Path]], str]:
    return label_jobs(Path(root) / "gt", LAYOUT)


def darkzurich_report(root: Path) -> list[str]:
    root = Path(root)
    require_dir(root / "rgb_anon", LAYOUT)
    folders = [((s, t), root / "rgb_anon" / s / t, root / "gt" / s / t) for s in SPLITS for t in TIMES]
    return layout_report(root, folders, EXPECTED)


class DarkZurichDataset(SegmentationDataset):
    """One Dark Zurich split at some times of day, in the download layout.

    Args:
        root: the Dark Zurich folder holding rgb_anon/ and gt/.
        split: train | val | test.
        times: any of day, twilight, night (None: night, the benchmark's target).
        transform, labelled, skip_bad: as :class:`~iccld.data.gta5.GTA5Dataset`. Labels exist for
            val/night only. Names are ``SEQ_frame_NNNNNN``.
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Optional[Transform] = None,
                 *, times: Optional[Sequence[str]] = None, labelled: bool = True, skip_bad: bool = False):
        root = Path(root)
        if split not in SPLITS:
            raise DataError(f"{root}: Dark Zurich split '{split}' is not one of {', '.join(SPLITS)}")
        self.times = check_choice(times, TIMES, ("night",), "Dark Zurich time of day")
        command = f"iccld prepare darkzurich --root {root}"
        items = []
        for time in self.times:
            layout = LAYOUT.replace("{split}", split).replace("{time}", time)
            images = require_dir(root / "rgb_anon" / split / time, layout)
            found = anon_items(images, root / "gt" / split / time)
            if not found:
                raise DataError(f"{images}: no *{IMAGE_SUFFIX} images found (expected {layout})")
            items += found
        super().__init__(attach_labels(items, labelled, command), transform or EvalTransform(),
                         root=root, skip_bad=skip_bad, prepare_command=command)


def _plan(root: Path, spec: Optional[str]) -> tuple[list[tuple[Path, Path]], LabelMap]:
    jobs, encoding = darkzurich_label_jobs(root)
    return jobs, label_map(encoding)


KIND = DatasetKind(
    name="darkzurich", display_name="Dark Zurich",
    dataset=lambda cfg, transform, **common: DarkZurichDataset(cfg.root, cfg.split, transform,
                                                               times=cfg.conditions, **common),
    plan=_plan, layout_report=darkzurich_report, conditions=TIMES,
)
