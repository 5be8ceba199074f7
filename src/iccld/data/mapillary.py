"""Mapillary Vistas v1.2 (Neuhold et al. 2017): 25,000 street-level photos from six continents, taken
with many cameras (sizes vary, typically 4000x3000 or larger, some portrait), labelled with 66 classes.
Used here to evaluate generalisation, with its classes mapped to the 19 Cityscapes train ids.

Download layout (mapillary-vistas-dataset_public_v1.2.zip unpacked into ROOT)::

    ROOT/{training,validation,testing}/images/NAME.jpg
    ROOT/{training,validation}/labels/NAME.png        8-bit palette PNG: the palette index is the
                                                      v1.2 class index 0..65 (65 = unlabeled)
    ROOT/{training,validation}/labels/NAME_labelTrainIds.png   written by `iccld prepare mapillary`

The Vistas 2.0 download carries the same v1.2 labels in ``SPLIT/v1.2/labels/``; they are used when
``SPLIT/labels/`` is absent. (Its ``SPLIT/v2.0/labels/`` hold 124 classes and are not read.)

Splits: train = training (18,000 images), val = validation (2,000; the generalisation benchmark),
test = testing (5,000, without labels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import DataError
from .base import PREPARED_SUFFIX, SegmentationDataset, Transform, attach_labels, count_pairs, list_files, require_dir
from .kinds import DatasetKind
from .labels import LabelMap
from .transforms import EvalTransform

# the 66 classes of Mapillary Vistas v1.2 in the order of the download's config_v1.2.json: the
# position is the value in the label PNGs, the colour that index's palette entry. (The dataset's own
# names and colours; checked against the list Mask2Former's dataset registration carries, which
# evaluates the first 65 and treats 65, "unlabeled", as void.)
V12_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("animal--bird", (165, 42, 42)), ("animal--ground-animal", (0, 192, 0)),
    ("construction--barrier--curb", (196, 196, 196)), ("construction--barrier--fence", (190, 153, 153)),
    ("construction--barrier--guard-rail", (180, 165, 180)), ("construction--barrier--other-barrier", (90, 120, 150)),
    ("construction--barrier--wall", (102, 102, 156)), ("construction--flat--bike-lane", (128, 64, 255)),
    ("construction--flat--crosswalk-plain", (140, 140, 200)), ("construction--flat--curb-cut", (170, 170, 170)),
    ("construction--flat--parking", (250, 170, 160)), ("construction--flat--pedestrian-area", (96, 96, 96)),
    ("construction--flat--rail-track", (230, 150, 140)), ("construction--flat--road", (128, 64, 128)),
    ("construction--flat--service-lane", (110, 110, 110)), ("construction--flat--sidewalk", (244, 35, 232)),
    ("construction--structure--bridge", (150, 100, 100)), ("construction--structure--building", (70, 70, 70)),
    ("construction--structure--tunnel", (150, 120, 90)), ("human--person", (220, 20, 60)),
    ("human--rider--bicyclist", (255, 0, 0)), ("human--rider--motorcyclist", (255, 0, 100)),
    ("human--rider--other-rider", (255, 0, 200)), ("marking--crosswalk-zebra", (200, 128, 128)),
    ("marking--general", (255, 255, 255)), ("nature--mountain", (64, 170, 64)),
    ("nature--sand", (230, 160, 50)), ("nature--sky", (70, 130, 180)),
    ("nature--snow", (190, 255, 255)), ("nature--terrain", (152, 251, 152)),
    ("nature--vegetation", (107, 142, 35)), ("nature--water", (0, 170, 30)),
    ("object--banner", (255, 255, 128)), ("object--bench", (250, 0, 30)),
    ("object--bike-rack", (100, 140, 180)), ("object--billboard", (220, 220, 220)),
    ("object--catch-basin", (220, 128, 128)), ("object--cctv-camera", (222, 40, 40)),
    ("object--fire-hydrant", (100, 170, 30)), ("object--junction-box", (40, 40, 40)),
    ("object--mailbox", (33, 33, 33)), ("object--manhole", (100, 128, 160)),
    ("object--phone-booth", (142, 0, 0)), ("object--pothole", (70, 100, 150)),
    ("object--street-light", (210, 170, 100)), ("object--support--pole", (153, 153, 153)),
    ("object--support--traffic-sign-frame", (128, 128, 128)), ("object--support--utility-pole", (0, 0, 80)),
    ("object--traffic-light", (250, 170, 30)), ("object--traffic-sign--back", (192, 192, 192)),
    ("object--traffic-sign--front", (220, 220, 0)), ("object--trash-can", (140, 140, 20)),
    ("object--vehicle--bicycle", (119, 11, 32)), ("object--vehicle--boat", (150, 0, 255)),
    ("object--vehicle--bus", (0, 60, 100)), ("object--vehicle--car", (0, 0, 142)),
    ("object--vehicle--caravan", (0, 0, 90)), ("object--vehicle--motorcycle", (0, 0, 230)),
    ("object--vehicle--on-rails", (0, 80, 100)), ("object--vehicle--other-vehicle", (128, 64, 64)),
    ("object--vehicle--trailer", (0, 0, 110)), ("object--vehicle--truck", (0, 0, 70)),
    ("object--vehicle--wheeled-slow", (0, 0, 192)), ("void--car-mount", (32, 32, 32)),
    ("void--ego-vehicle", (120, 10, 10)), ("void--unlabeled", (0, 0, 0)),
)
UNLABELED = 65

# v1.2 class -> Cityscapes train id, written out by name and checked against V12_CLASSES below.
# The mapping of RobustNet (Choi et al., CVPR 2021; datasets/mapillary.py, gen_id_to_ignore), which
# the domain-generalisation literature evaluates with: HRDA's DG code (lhoyer/HRDA,
# tools/convert_datasets/mapillary.py) and VFM-UDA++ (tue-mps/vfm-uda-plusplus,
# datasets/utils/mappings.py) use the same 25 pairs. Every other class is ignored (255), among them
# zebra crossings, plain crosswalks, bike and service lanes, parking, curb cuts and sign backs.
_TO_TRAIN_ID_BY_NAME: dict[str, int] = {
    "construction--flat--road": 0, "marking--general": 0, "object--manhole": 0,
    "construction--barrier--curb": 1, "construction--flat--sidewalk": 1,
    "construction--structure--building": 2,
    "construction--barrier--wall": 3,
    "construction--barrier--fence": 4,
    "object--support--pole": 5, "object--support--utility-pole": 5,
    "object--traffic-light": 6,
    "object--traffic-sign--front": 7,
    "nature--vegetation": 8,
    "nature--terrain": 9,
    "nature--sky": 10,
    "human--person": 11,
    "human--rider--bicyclist": 12, "human--rider--motorcyclist": 12, "human--rider--other-rider": 12,
    "object--vehicle--car": 13,
    "object--vehicle--truck": 14,
    "object--vehicle--bus": 15,
    "object--vehicle--on-rails": 16,
    "object--vehicle--motorcycle": 17,
    "object--vehicle--bicycle": 18,
}
_INDEX = {name: i for i, (name, _) in enumerate(V12_CLASSES)}
MAPILLARY_TO_TRAINID: dict[int, int] = {_INDEX[name]: t for name, t in _TO_TRAIN_ID_BY_NAME.items()}
MAPILLARY_MAP = LabelMap("ids", MAPILLARY_TO_TRAINID, frozenset(range(len(V12_CLASSES))),
                         "a Mapillary Vistas v1.2 class index 0..65")

SPLITS = {"train": "training", "val": "validation", "test": "testing"}
IMAGE_SUFFIX = ".jpg"
LABEL_SUFFIX = ".png"
LAYOUT = "ROOT/{folder}/images/NAME.jpg and ROOT/{folder}/labels/NAME.png, the Mapillary Vistas v1.2 layout"
EXPECTED = {"training": 18000, "validation": 2000, "testing": 5000}  # images in the full download


def _layout(folder: str) -> str:
    return LAYOUT.replace("{folder}", folder)


def label_dir(root: Path, folder: str) -> Path:
    """``ROOT/FOLDER/labels``, or the Vistas 2.0 download's ``ROOT/FOLDER/v1.2/labels`` when only
    that exists; a download with v2.0 labels only is refused (their 124 class indices are others)."""
    plain, v12 = root / folder / "labels", root / folder / "v1.2" / "labels"
    if not plain.is_dir() and v12.is_dir():
        return v12
    if not plain.is_dir() and (root / folder / "v2.0" / "labels").is_dir():
        raise DataError(f"{root / folder / 'v2.0' / 'labels'}: Vistas v2.0 labels (124 classes) are not "
                        f"supported; the v1.2 labels are (expected {plain} or {v12})")
    return plain


def mapillary_label_jobs(root: Path) -> list[tuple[Path, Path]]:
    """(label, prepared label) for every label of every split present."""
    root = Path(root)
    jobs = []
    for folder in SPLITS.values():
        labels = label_dir(root, folder)
        if labels.is_dir():
            jobs += [(f, f.with_name(f.name[: -len(LABEL_SUFFIX)] + PREPARED_SUFFIX))
                     for f in list_files(labels, LABEL_SUFFIX)]
    if not jobs:
        raise DataError(f"{root}: no label PNGs found (expected {_layout('training')}, or validation/)")
    return jobs


def mapillary_report(root: Path) -> list[str]:
    """One line per split folder present: images and labels against the full download, and files
    that are neither. A label without its image, or a split labelled only in part, is a DataError."""
    root = Path(root)
    lines = []
    for folder in SPLITS.values():
        images = root / folder / "images"
        if not images.is_dir():
            continue
        found = count_pairs(images, IMAGE_SUFFIX, label_dir(root, folder), LABEL_SUFFIX)
        note = "" if found.images == EXPECTED[folder] else f" (the full download has {EXPECTED[folder]}: partial?)"
        if found.other:
            note += (f"; {len(found.other)} other file{'s' if len(found.other) > 1 else ''} ignored "
                     f"(e.g. {found.other[0].relative_to(root).as_posix()})")
        lines.append(f"{folder}: {found.images} images, {found.labels} labels{note}")
    if not lines:
        raise DataError(f"{root}: no training/images, validation/images or testing/images folder "
                        f"(expected {_layout('validation')})")
    return lines


class MapillaryDataset(SegmentationDataset):
    """One Mapillary Vistas v1.2 split in the download layout; labelled use needs
    ``iccld prepare mapillary`` first (it writes the 19-class train-id labels).

    Args:
        root: the folder holding training/, validation/ and testing/.
        split: train | val | test (the folders training, validation, testing).
        transform, labelled, skip_bad: as :class:`~iccld.data.gta5.GTA5Dataset`. Names are the
            file stems (the images' Mapillary keys).
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Optional[Transform] = None,
                 *, labelled: bool = True, skip_bad: bool = False):
        root = Path(root)
        if split not in SPLITS:
            raise DataError(f"{root}: Mapillary split '{split}' is not one of {', '.join(SPLITS)}")
        folder = SPLITS[split]
        images = require_dir(root / folder / "images", _layout(folder))
        files = list_files(images, IMAGE_SUFFIX)
        if not files:
            raise DataError(f"{images}: no *{IMAGE_SUFFIX} images found (expected {_layout(folder)})")
        labels = label_dir(root, folder)
        items = [(f, labels / (f.stem + LABEL_SUFFIX), labels / (f.stem + PREPARED_SUFFIX), f.stem) for f in files]
        command = f"iccld prepare mapillary --root {root}"
        super().__init__(attach_labels(items, labelled, command), transform or EvalTransform(),
                         root=root, skip_bad=skip_bad, prepare_command=command)


KIND = DatasetKind(
    name="mapillary", display_name="Mapillary Vistas",
    dataset=lambda cfg, transform, **common: MapillaryDataset(cfg.root, cfg.split, transform, **common),
    plan=lambda root, spec: (mapillary_label_jobs(root), MAPILLARY_MAP),
    layout_report=mapillary_report,
)
