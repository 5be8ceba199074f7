"""Dataset kinds, found by name: what ``data.<part>.kind`` and ``iccld prepare KIND`` may say.

Each kind's own file declares a :class:`DatasetKind` as ``KIND``: its name, the words a model card
uses for it, how to build one split from a ``DatasetConfig``, its ``iccld prepare`` plan and layout
check, the conditions it may be filtered by and the class subsets a model trained on it reports.
:data:`KINDS` maps each name to that file; the config, the CLI, ``prepare``, the dataset builder, the
Hub export and the metrics ask here, and no module outside ``iccld.data`` names a kind. A new kind is
one file and one line in :data:`KINDS` (or :func:`register` at run time); see docs/datasets.md.

A kind's file is imported when the kind is first asked for, not before: listing the names (the CLI's
choices) must not import torch, which the datasets' files do.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ..errors import ConfigError, did_you_mean

#: kind name -> the module of ``iccld.data`` that declares it as ``KIND``
KINDS: dict[str, str] = {
    "gta5": "gta5",
    "synthia": "synthia",
    "cityscapes": "cityscapes",
    "acdc": "acdc",
    "darkzurich": "darkzurich",
    "mapillary": "mapillary",
    "bdd100k": "bdd100k",
    "folder": "folder",
    "synthetic": "synthetic",
}


@dataclass(frozen=True, eq=False)
class DatasetKind:
    """What iccld knows of one kind of dataset.

    - ``name``: the value of ``data.<part>.kind`` and of ``iccld prepare NAME``;
    - ``display_name``: the words a model card uses for it ("GTA5", "Dark Zurich");
    - ``dataset(cfg, transform, labelled=, skip_bad=)``: one split as the ``DatasetConfig`` ``cfg``
      describes it (a :class:`~iccld.data.base.SegmentationDataset`); None for a kind that only
      ``iccld prepare`` knows (the synthetic benchmark is generated, then read as gta5/cityscapes);
    - ``plan(root, spec)``: ``iccld prepare``'s work, ``([(original label, prepared label)], label map)``
      (``spec``: the ``--spec`` argument, or None); None: no labels to convert;
    - ``layout_report(root)``: one line of image/label counts per folder of a download split into
      folders, raising DataError for a label without its image; None: nothing to report;
    - ``conditions``: the values ``data.<part>.conditions`` may hold (ACDC's weather); None: the
      kind has none, and the field must stay unset;
    - ``class_subsets``: the class means a model trained on this kind reports besides the mean over
      every class, ``{summary key: train ids}`` (SYNTHIA's 16 and 13 classes).
    """

    name: str
    display_name: str
    dataset: Optional[Callable[..., Any]] = None
    plan: Optional[Callable[[Path, Optional[str]], tuple[list[tuple[Path, Path]], Any]]] = None
    layout_report: Optional[Callable[[Path], list[str]]] = None
    conditions: Optional[tuple[str, ...]] = None
    class_subsets: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


_LOADED: dict[str, DatasetKind] = {}


def register(kind: DatasetKind) -> DatasetKind:
    """Add a kind declared outside :data:`KINDS` (e.g. by a test or a plug-in); the name must be new."""
    if not kind.name:
        raise ValueError("a dataset kind needs a name")
    if kind.name in KINDS and find_kind(kind.name) is not kind:
        raise ValueError(f"dataset kind '{kind.name}' is already registered")
    KINDS[kind.name] = ""  # declared here, not in a module of iccld.data
    _LOADED[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove a kind :func:`register` added (tests)."""
    if KINDS.get(name) == "":
        del KINDS[name]
    _LOADED.pop(name, None)


def find_kind(name: str) -> Optional[DatasetKind]:
    """The kind called ``name``, or None when there is none."""
    if name not in _LOADED:
        module = KINDS.get(name)
        if not module:
            return None
        kind = importlib.import_module(f"{__package__}.{module}").KIND
        if kind.name != name:
            raise ValueError(f"iccld.data.{module} declares kind '{kind.name}', registered as '{name}'")
        _LOADED[name] = kind
    return _LOADED[name]


def kind_names(usable: Optional[str] = None) -> tuple[str, ...]:
    """Every kind's name, in registry order; ``usable="dataset"`` (or "plan", "conditions"): only
    the kinds that have one (importing their files)."""
    if usable is None:
        return tuple(KINDS)
    return tuple(name for name in KINDS if getattr(find_kind(name), usable))


def dataset_kind(name: str, what: str = "dataset kind", usable: str = "dataset") -> DatasetKind:
    """The kind ``name`` that has a ``usable`` (a dataset, by default); otherwise a ConfigError that
    starts with ``what`` (e.g. "data.val.kind:") and lists the choices and the closest one."""
    kind = find_kind(name)
    if kind is None or not getattr(kind, usable):
        choices = kind_names(usable)
        raise ConfigError(f"{what} '{name}' is not one of {', '.join(choices)}{did_you_mean(name, choices)}")
    return kind


def display_name(name: str) -> str:
    """The words a model card uses for kind ``name`` (the name itself for an unknown kind)."""
    kind = find_kind(name)
    return kind.display_name if kind is not None else name


def class_subsets(name: str) -> dict[str, tuple[int, ...]]:
    """The class subsets a model trained on kind ``name`` reports (none for an unknown kind)."""
    kind = find_kind(name)
    return dict(kind.class_subsets) if kind is not None else {}
