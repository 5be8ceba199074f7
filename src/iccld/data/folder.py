"""A generic dataset described by a small YAML spec (see docs/datasets.md, configs/datasets/camvid.yaml).

Spec keys (paths are relative to the dataset root given by ``data.*.root`` or ``--root``)::

    images: images/{split}        # image folder; "{split}" is replaced by the split, or, without
    labels: labels/{split}        #   it, a non-empty split is appended as a sub-folder
    image_suffix: .png            # image file = <name><image_suffix>
    label_suffix: _L.png          # its label  = <name><label_suffix> in the label folder
    encoding: rgb                 # ids (single-channel values) | rgb (colours) | train_ids
    splits: [train, val]          # the splits that exist; default [""] (no splits)
    unmapped: error               # error | ignore: what a value not listed below does
    classes:                      # ids: value is an int; rgb: value is [R, G, B]
      - {name: Road, value: [128, 64, 128], train_id: 0}

Names may include sub-folders (``seq01/frame0001``). ``iccld prepare folder --root R --spec S``
writes ``<name>_labelTrainIds.png`` beside each label; with ``encoding: train_ids`` the labels
are used as they are and prepare only checks them and writes the class statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from ..errors import ConfigError, DataError
from .base import PREPARED_SUFFIX, SegmentationDataset, Transform, attach_labels, list_files, require_dir
from .labels import IGNORE_INDEX, NUM_CLASSES
from .labels import LabelMap
from .kinds import DatasetKind
from .transforms import EvalTransform

ENCODINGS = ("ids", "rgb", "train_ids")
SPEC_KEYS = ("name", "images", "labels", "image_suffix", "label_suffix", "encoding", "splits",
             "unmapped", "classes")


@dataclass
class FolderSpec:
    """A parsed spec; see the module docstring for the meaning of each field."""

    path: Path
    images: str
    labels: str
    image_suffix: str = ".png"
    label_suffix: str = ".png"
    encoding: str = "ids"
    splits: list[str] = field(default_factory=lambda: [""])
    unmapped: str = "error"
    classes: list[tuple[str, object, int]] = field(default_factory=list)  # (name, value, train id)
    name: str = ""

    def folders(self, root: Path, split: str) -> tuple[Path, Path]:
        """(image folder, label folder) of ``split``."""
        if split not in self.splits:
            shown = ", ".join(repr(s) for s in self.splits)
            raise ConfigError(f"{self.path}: split '{split}' is not one of the spec's splits ({shown}); "
                              "set data.<part>.split accordingly or add it to 'splits'")

        def resolve(template: str) -> Path:
            if "{split}" in template:
                return Path(root) / template.replace("{split}", split)
            return Path(root) / template / split if split else Path(root) / template

        return resolve(self.images), resolve(self.labels)

    def label_map(self) -> LabelMap:
        if self.encoding == "train_ids":
            return LabelMap("train_ids")
        if self.encoding == "rgb":
            mapping = {(r << 16) | (g << 8) | b: t for _, (r, g, b), t in self.classes}  # type: ignore[misc]
            expected = f"a colour listed in {self.path}"
        else:
            mapping = {int(v): t for _, v, t in self.classes}  # type: ignore[call-overload]
            expected = f"a value listed in {self.path}"
        known = frozenset(mapping) if self.unmapped == "error" else None
        return LabelMap(self.encoding, mapping, known, expected)

    def prepared_path(self, label: Path) -> Path:
        if self.encoding == "train_ids":
            return label
        return label.with_name(label.name[: -len(self.label_suffix)] + PREPARED_SUFFIX)


def _value(spec_path: Path, index: int, raw: object, encoding: str) -> object:
    where = f"{spec_path}: classes[{index}].value"
    if encoding == "rgb":
        if (not isinstance(raw, (list, tuple)) or len(raw) != 3
                or not all(isinstance(v, int) and 0 <= v <= 255 for v in raw)):
            raise ConfigError(f"{where}: expected a colour [R, G, B] with 0..255 each, got {raw!r}")
        return tuple(raw)
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= 65535:
        raise ConfigError(f"{where}: expected an integer label value 0..65535, got {raw!r}")
    return raw


def load_folder_spec(path: str | Path) -> FolderSpec:
    """Read and check a spec; any problem -> ConfigError naming the spec file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: folder dataset spec not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not a readable YAML spec ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(SPEC_KEYS)}")
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}' (valid keys: {', '.join(SPEC_KEYS)})")
    for key in ("images", "labels"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{path}: '{key}' is required (a folder relative to the dataset root)")
    for key in ("image_suffix", "label_suffix", "name"):
        if key in raw and (not isinstance(raw[key], str) or (key != "name" and not raw[key])):
            raise ConfigError(f"{path}: '{key}' must be a non-empty string, got {raw[key]!r}")
    encoding = raw.get("encoding", "ids")
    if encoding not in ENCODINGS:
        raise ConfigError(f"{path}: encoding '{encoding}' is not one of {', '.join(ENCODINGS)}")
    unmapped = raw.get("unmapped", "error")
    if unmapped not in ("error", "ignore"):
        raise ConfigError(f"{path}: unmapped '{unmapped}' is not one of error, ignore")
    splits = raw.get("splits", [""])
    if not isinstance(splits, list) or not splits or not all(isinstance(s, str) for s in splits):
        raise ConfigError(f"{path}: 'splits' must be a list of folder names, got {splits!r}")
    entries = raw.get("classes") or []
    if encoding == "train_ids" and entries:
        raise ConfigError(f"{path}: 'classes' is not used with encoding: train_ids; remove it")
    if encoding != "train_ids" and not entries:
        raise ConfigError(f"{path}: 'classes' is required: a list of {{name, value, train_id}}")
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'classes' must be a list of {{name, value, train_id}}")
    classes, seen = [], set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) - {"name", "value", "train_id"} or "value" not in entry \
                or "train_id" not in entry:
            raise ConfigError(f"{path}: classes[{i}]: expected {{name, value, train_id}}, got {entry!r}")
        value = _value(path, i, entry["value"], encoding)
        train_id = entry["train_id"]
        if not isinstance(train_id, int) or not (0 <= train_id < NUM_CLASSES or train_id == IGNORE_INDEX):
            raise ConfigError(f"{path}: classes[{i}].train_id: expected 0..{NUM_CLASSES - 1} or 255, "
                              f"got {train_id!r}")
        if value in seen:
            raise ConfigError(f"{path}: classes[{i}].value {entry['value']!r} is listed twice")
        seen.add(value)
        classes.append((str(entry.get("name", "")), value, train_id))
    return FolderSpec(path=path, images=raw["images"], labels=raw["labels"],
                      image_suffix=raw.get("image_suffix", ".png"),
                      label_suffix=raw.get("label_suffix", ".png"), encoding=encoding,
                      splits=splits, unmapped=unmapped, classes=classes, name=raw.get("name", ""))


def folder_label_jobs(root: Path, spec: FolderSpec) -> list[tuple[Path, Path]]:
    """(label, prepared label) for every label file of every split whose label folder exists."""
    jobs: list[tuple[Path, Path]] = []
    folders = []
    for split in spec.splits:
        label_dir = spec.folders(root, split)[1]
        folders.append(str(label_dir))
        if label_dir.is_dir():
            jobs += [(f, spec.prepared_path(f)) for f in list_files(label_dir, spec.label_suffix, recursive=True)]
    if not jobs:
        raise DataError(f"{' / '.join(folders)}: no *{spec.label_suffix} label files found "
                        f"(expected the layout described in {spec.path})")
    return jobs


class FolderDataset(SegmentationDataset):
    """One split of a folder dataset.

    Args:
        root: the dataset root the spec's folders are relative to.
        spec: a :class:`FolderSpec` or the path of its YAML.
        split: one of ``spec.splits``.
        transform, labelled, skip_bad: as :class:`~iccld.data.gta5.GTA5Dataset`.
    """

    def __init__(self, root: str | Path, spec: FolderSpec | str | Path, split: str = "",
                 transform: Optional[Transform] = None, *, labelled: bool = True, skip_bad: bool = False):
        root = Path(root)
        spec = spec if isinstance(spec, FolderSpec) else load_folder_spec(spec)
        self.spec = spec
        command = f"iccld prepare folder --root {root} --spec {spec.path}"
        if not root.is_dir():
            raise DataError(f"{root}: dataset root not found (expected the folder {spec.path} describes)")
        image_dir, label_dir = spec.folders(root, split)
        require_dir(image_dir, f"the image folder '{spec.images}' of {spec.path}")
        files = list_files(image_dir, spec.image_suffix, recursive=True)
        if image_dir == label_dir and spec.label_suffix != spec.image_suffix:
            files = [f for f in files if not f.name.endswith(spec.label_suffix)]
        if not files:
            raise DataError(f"{image_dir}: no *{spec.image_suffix} images found (spec {spec.path})")
        items = []
        for f in files:
            rel = f.relative_to(image_dir).as_posix()[: -len(spec.image_suffix)]
            label = label_dir / (rel + spec.label_suffix)
            items.append((f, label, spec.prepared_path(label), rel))
        super().__init__(attach_labels(items, labelled, command), transform or EvalTransform(),
                         root=root, skip_bad=skip_bad, prepare_command=command)


def _dataset(cfg, transform, **common) -> FolderDataset:
    if not cfg.spec:
        raise ConfigError("data: a folder dataset needs 'spec', the YAML describing its layout "
                          "(see docs/datasets.md)")
    return FolderDataset(cfg.root, cfg.spec, cfg.split, transform, **common)


def _plan(root: Path, spec: Optional[str]) -> tuple[list[tuple[Path, Path]], LabelMap]:
    if not spec:
        raise ConfigError("iccld prepare folder: --spec is required (the YAML that describes the "
                          "layout and label map, see docs/datasets.md)")
    folder_spec = load_folder_spec(spec)
    return folder_label_jobs(root, folder_spec), folder_spec.label_map()


KIND = DatasetKind(name="folder", display_name="folder dataset", dataset=_dataset, plan=_plan)
