"""``iccld prepare``: convert a dataset's labels to train ids once, and count classes for RCS.

For every original label file this writes ``<name>_labelTrainIds.png`` (8-bit, train ids 0..18,
255 = ignore) beside it, never touching the original, and then ``ROOT/sample_class_stats.json``:
a list with one entry per label, ``{"file": <prepared label relative to ROOT>, "<train id>":
<pixel count>, ...}`` (classes with no pixels left out), the format DAFormer's converters write.

Label values that the dataset's label map does not know (not a Cityscapes/GTA5 id 0..33, not a
SYNTHIA id 0..22, not a Mapillary Vistas v1.2 index 0..65, not listed in a folder spec) stop the run with a DataError naming the file and the
value: they mean a wrong ``kind`` or a damaged file, and mapping them silently to "ignore" would
hide that. Prepared files that already exist are kept (their classes are still counted) unless
``overwrite``.

This module does not import torch, so the worker processes start quickly.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError
from ..utils import atomic_write_text
from .io import read_label, write_png
from .kinds import dataset_kind
from .labels import CITYSCAPES_MAP, NUM_CLASSES, SYNTHIA_MAP, LabelMap  # noqa: F401  (re-exported)

STATS_FILE = "sample_class_stats.json"


# ----------------------------------------------------------------------------------------------
# worker side


_WORKER_MAP: Optional[LabelMap] = None


def _init_worker(label_map: LabelMap) -> None:
    global _WORKER_MAP
    _WORKER_MAP = label_map


def _prepare_one(job: tuple[Path, Path, bool]) -> tuple[list[int], str]:
    """Convert one label (or count an existing prepared one): (counts per train id, status)."""
    source, target, overwrite = job
    label_map = _WORKER_MAP
    assert label_map is not None
    if target != source and target.is_file() and not overwrite:
        out = LabelMap("train_ids").convert(read_label(target), target)
        status = "existing"
    else:
        out = label_map.convert(label_map.read(source), source)
        if target != source:
            write_png(target, out, compress_level=1)
            status = "converted"
        else:
            status = "checked"
    counts = np.bincount(out.ravel(), minlength=256)[:NUM_CLASSES]
    return [int(n) for n in counts], status


def _stats_up_to_date(stats_path: Path, root: Path, jobs: list[tuple[Path, Path]]) -> bool:
    try:
        entries = json.loads(stats_path.read_text())
        files = {entry["file"] for entry in entries}
    except (OSError, ValueError, TypeError, KeyError):
        return False
    return all(_relative(target, root) in files and target.is_file() for _, target in jobs)


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def prepare_dataset(kind: str, root: str | Path, workers: int = 2, spec: Optional[str] = None,
                    overwrite: bool = False, progress: bool = True) -> dict:
    """Write the train-id labels and ``ROOT/sample_class_stats.json`` for one dataset.

    Args:
        kind: a kind of :mod:`iccld.data.kinds` with a plan (gta5, cityscapes, folder, ...).
        root: the dataset folder in its original layout (see docs/datasets.md).
        workers: processes converting labels in parallel (1 = in this process).
        spec: folder datasets: path of the YAML spec.
        overwrite: recompute prepared files that already exist.
        progress: show a tqdm progress bar.

    Returns a summary: kind, root, labels, converted, existing, checked, stats_file, seconds,
    images_per_second, layout (acdc, darkzurich: one line of counts per condition folder;
    mapillary, bdd100k: per split folder). Raises DataError/ConfigError with a one-line message on
    bad input.
    """
    from tqdm import tqdm

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found (expected the {kind} folder in its original "
                        "layout, see docs/datasets.md)")
    declared = dataset_kind(kind, usable="plan")  # ConfigError listing the kinds prepare knows
    layout = declared.layout_report(root) if declared.layout_report else []
    jobs, label_map = declared.plan(root, spec)
    stats_path = root / STATS_FILE
    summary = {"kind": kind, "root": str(root), "labels": len(jobs), "converted": 0, "existing": 0,
               "checked": 0, "stats_file": str(stats_path), "seconds": 0.0, "images_per_second": 0.0,
               "layout": layout}
    if not overwrite and stats_path.is_file() and _stats_up_to_date(stats_path, root, jobs):
        summary["existing"] = len(jobs)
        return summary

    start = time.perf_counter()
    tasks = [(source, target, overwrite) for source, target in jobs]
    bar = dict(total=len(tasks), desc=f"prepare {kind}", unit="label", disable=not progress,
               dynamic_ncols=True)
    if workers <= 1 or len(tasks) <= 1:
        _init_worker(label_map)
        results = [_prepare_one(task) for task in tqdm(tasks, **bar)]
    else:
        with multiprocessing.get_context().Pool(min(workers, len(tasks)), initializer=_init_worker,
                                                initargs=(label_map,)) as pool:
            results = list(tqdm(pool.imap(_prepare_one, tasks, chunksize=4), **bar))

    entries = []
    for (_, target), (counts, status) in zip(jobs, results, strict=True):
        summary[status] += 1
        entry: dict = {"file": _relative(target, root)}
        entry.update({str(c): n for c, n in enumerate(counts) if n > 0})
        entries.append(entry)
    if entries and not any(len(e) > 1 for e in entries):
        raise DataError(f"{root}: none of its {len(entries)} labels holds a class (every pixel is ignore, 255, "
                        f"after the {kind} label map); check the label files and --spec / the dataset kind")
    atomic_write_text(stats_path, "[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n")
    summary["seconds"] = round(time.perf_counter() - start, 3)
    summary["images_per_second"] = round(len(jobs) / max(summary["seconds"], 1e-9), 2)
    return summary
