"""ACDC, the Adverse Conditions Dataset with Correspondences (Sakaridis et al. 2021): 4,006 frames of
Swiss roads in fog, at night, in rain and in snow, 1920x1080, with Cityscapes' 19 classes.

Download layout (rgb_anon_trainvaltest.zip + gt_trainval.zip unpacked into one folder)::

    ROOT/rgb_anon/{fog,night,rain,snow}/{train,val,test}/SEQ/SEQ_frame_NNNNNN_rgb_anon.png
    ROOT/rgb_anon/{condition}/{split}_ref/...      daytime reference frames (not used here)
    ROOT/gt/{condition}/{train,val}/SEQ/SEQ_frame_NNNNNN_gt_labelIds.png        Cityscapes label ids
    ROOT/gt/{condition}/{train,val}/SEQ/SEQ_frame_NNNNNN_gt_labelTrainIds.png   train ids (shipped)

``iccld prepare acdc --root ROOT`` checks the layout and counts, writes the train-id labels where only
label ids are present (the shipped ones are kept and checked), and counts classes. Train: 400 images
per condition (the UDA target, without labels), val: 406 (evaluation), test: 2,000 without public
labels (scored by the ACDC server, see ``iccld predict --format submission``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..errors import ConfigError, DataError
from .base import SegmentationDataset, Transform, attach_labels, list_files, require_dir
from .kinds import DatasetKind
from .labels import CITYSCAPES_MAP, LabelMap
from .transforms import EvalTransform

CONDITIONS = ("fog", "night", "rain", "snow")
SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_rgb_anon.png"
LABEL_IDS = "_gt_labelIds.png"
TRAIN_IDS = "_gt_labelTrainIds.png"
LAYOUT = "ROOT/rgb_anon/{condition}/{split}/SEQ/*_rgb_anon.png and ROOT/gt/{condition}/{split}/SEQ/*_gt_labelTrainIds.png"
# images per (condition, split) in the full download, for `iccld prepare`'s count check
EXPECTED = {("fog", "train"): 400, ("night", "train"): 400, ("rain", "train"): 400, ("snow", "train"): 400,
            ("fog", "val"): 100, ("night", "val"): 106, ("rain", "val"): 100, ("snow", "val"): 100,
            ("fog", "test"): 500, ("night", "test"): 500, ("rain", "test"): 500, ("snow", "test"): 500}


def check_choice(values: Optional[Sequence[str]], allowed: tuple[str, ...], default: tuple[str, ...],
                 what: str) -> tuple[str, ...]:
    """``values`` (None: ``default``) checked against ``allowed``, in the order given, without repeats."""
    chosen = tuple(default if values is None else values)
    bad = [v for v in chosen if v not in allowed]
    if bad or not chosen:
        raise ConfigError(f"data.*.conditions: {what} '{bad[0] if bad else ''}' is not one of "
                          f"{', '.join(allowed)}")
    return tuple(dict.fromkeys(chosen))


def anon_items(image_dir: Path, label_dir: Path) -> list[tuple[Path, Path, Path, str]]:
    """(image, original label, prepared label, name) for every ``SEQ/*_rgb_anon.png`` under
    ``image_dir``; labels are looked for in ``label_dir/SEQ/``. The original label is the shipped
    train-id file when present (nothing to convert), else the label-id file ``prepare`` converts."""
    items = []
    for image in list_files(image_dir, IMAGE_SUFFIX, recursive=True):
        name = image.name[: -len(IMAGE_SUFFIX)]
        folder = label_dir / image.parent.relative_to(image_dir)
        prepared = folder / (name + TRAIN_IDS)
        original = prepared if prepared.is_file() else folder / (name + LABEL_IDS)
        items.append((image, original, prepared, name))
    return items


def label_jobs(gt: Path, layout: str) -> tuple[list[tuple[Path, Path]], str]:
    """(label, prepared label) jobs for every label under ``gt`` and the encoding they share:
    ``ids`` (label-id files, converted to train ids; shipped train-id files are kept and checked)
    or ``train_ids`` (only train-id files: checked and counted in place)."""
    require_dir(gt, layout)
    ids = list_files(gt, LABEL_IDS, recursive=True)
    train = list_files(gt, TRAIN_IDS, recursive=True)
    if not ids and not train:
        raise DataError(f"{gt}: no *{TRAIN_IDS} or *{LABEL_IDS} labels found (expected {layout})")
    if ids:
        have_ids = {p.with_name(p.name[: -len(LABEL_IDS)] + TRAIN_IDS) for p in ids}
        orphans = [p for p in train if p not in have_ids]
        if orphans:
            raise DataError(f"{orphans[0]}: has no {LABEL_IDS} beside it while other labels do "
                            f"({len(orphans)} such files); unpack the whole gt download")
        return [(p, p.with_name(p.name[: -len(LABEL_IDS)] + TRAIN_IDS)) for p in ids], "ids"
    return [(p, p) for p in train], "train_ids"


def count_folder(image_dir: Path, label_dir: Path) -> tuple[int, int]:
    """(images, images with a label) of one condition/split folder; a label without its image, or
    labels for only some of the images, is a layout error."""
    images = list_files(image_dir, IMAGE_SUFFIX, recursive=True) if image_dir.is_dir() else []
    names = {(p.parent.relative_to(image_dir), p.name[: -len(IMAGE_SUFFIX)]) for p in images}
    labels = set()
    if label_dir.is_dir():
        for suffix in (TRAIN_IDS, LABEL_IDS):
            for p in list_files(label_dir, suffix, recursive=True):
                key = (p.parent.relative_to(label_dir), p.name[: -len(suffix)])
                if key not in names:
                    raise DataError(f"{p}: label without an image (expected {image_dir / key[0] / (key[1] + IMAGE_SUFFIX)})")
                labels.add(key)
    if labels and len(labels) < len(names):
        missing = sorted(names - labels)[0]
        raise DataError(f"{image_dir / missing[0] / (missing[1] + IMAGE_SUFFIX)}: no label "
                        f"({len(names) - len(labels)} of {len(names)} images in {image_dir} have none)")
    return len(images), len(labels)


def layout_report(root: Path, folders: list[tuple[str, Path, Path]], expected: dict) -> list[str]:
    """One line per present ``(key, image folder, label folder)``: counts against the full download."""
    lines = []
    for key, image_dir, label_dir in folders:
        if not image_dir.is_dir():
            continue
        n_images, n_labels = count_folder(image_dir, label_dir)
        full = expected.get(key)
        note = "" if full is None or n_images == full else f" (the full download has {full}: partial?)"
        lines.append(f"{'/'.join(key)}: {n_images} images, {n_labels} labels{note}")
    if not lines:
        raise DataError(f"{root}: no image folders found")
    return lines


def acdc_label_jobs(root: Path) -> tuple[list[tuple[Path, Path]], str]:
    return label_jobs(Path(root) / "gt", LAYOUT)


def label_map(encoding: str) -> LabelMap:
    """The map of labels in ``encoding`` (:func:`label_jobs`): Cityscapes label ids or train ids."""
    return CITYSCAPES_MAP if encoding == "ids" else LabelMap("train_ids")


def acdc_report(root: Path) -> list[str]:
    root = Path(root)
    require_dir(root / "rgb_anon", LAYOUT)
    folders = [((c, s), root / "rgb_anon" / c / s, root / "gt" / c / s) for c in CONDITIONS for s in SPLITS]
    return layout_report(root, folders, EXPECTED)


class ACDCDataset(SegmentationDataset):
    """One ACDC split of some conditions, in the download layout.

    Args:
        root: the ACDC folder holding rgb_anon/ and gt/.
        split: train | val | test.
        conditions: any of fog, night, rain, snow (None: all four), in this order.
        transform, labelled, skip_bad: as :class:`~iccld.data.gta5.GTA5Dataset`. Names are
            ``SEQ_frame_NNNNNN`` (e.g. ``GOPR0475_frame_000041``).
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Optional[Transform] = None,
                 *, conditions: Optional[Sequence[str]] = None, labelled: bool = True, skip_bad: bool = False):
        root = Path(root)
        if split not in SPLITS:
            raise DataError(f"{root}: ACDC split '{split}' is not one of {', '.join(SPLITS)}")
        self.conditions = check_choice(conditions, CONDITIONS, CONDITIONS, "ACDC condition")
        command = f"iccld prepare acdc --root {root}"
        items = []
        for condition in self.conditions:
            layout = LAYOUT.replace("{condition}", condition).replace("{split}", split)
            images = require_dir(root / "rgb_anon" / condition / split, layout)
            found = anon_items(images, root / "gt" / condition / split)
            if not found:
                raise DataError(f"{images}: no *{IMAGE_SUFFIX} images found (expected {layout})")
            items += found
        super().__init__(attach_labels(items, labelled, command), transform or EvalTransform(),
                         root=root, skip_bad=skip_bad, prepare_command=command)


def _plan(root: Path, spec: Optional[str]) -> tuple[list[tuple[Path, Path]], LabelMap]:
    jobs, encoding = acdc_label_jobs(root)
    return jobs, label_map(encoding)


KIND = DatasetKind(
    name="acdc", display_name="ACDC",
    dataset=lambda cfg, transform, **common: ACDCDataset(cfg.root, cfg.split, transform,
                                                         conditions=cfg.conditions, **common),
    plan=_plan, layout_report=acdc_report, conditions=CONDITIONS,
)
