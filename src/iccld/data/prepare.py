"""``iccld prepare``: convert a dataset's labels to train ids once, and count classes for RCS.

For every original label file this writes ``<name>_labelTrainIds.png`` (8-bit, train ids 0..18,
255 = ignore) beside it, never touching the original, and then ``ROOT/sample_class_stats.json``:
a list with one entry per label, ``{"file": <prepared label relative to ROOT>, "<train id>":
<pixel count>, ...}`` (classes with no pixels left out), the format DAFormer's converters write.

Label values that the dataset's label map does not know (not a Cityscapes/GTA5 id 0..33, not a
SYNTHIA id 0..22, not listed in a folder spec) stop the run with a DataError naming the file and the
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import ConfigError, DataError
from ..utils import atomic_write_text
from .io import read_image, read_label, write_png
from .labels import (CITYSCAPES_ID_TO_TRAINID, CITYSCAPES_KNOWN_IDS, IGNORE_INDEX, NUM_CLASSES,
                     SYNTHIA_ID_TO_TRAINID, SYNTHIA_KNOWN_IDS, UNMAPPED, lookup_table)

STATS_FILE = "sample_class_stats.json"
KINDS = ("gta5", "synthia", "cityscapes", "folder", "synthetic")


@dataclass
class LabelMap:
    """How raw label files become train ids.

    Args:
        encoding: ``ids`` (single-channel values, incl. palette indices and SYNTHIA's 16-bit first
            channel), ``rgb`` (colours, keys are ``r << 16 | g << 8 | b``) or ``train_ids``
            (already train ids: only checked and counted).
        mapping: raw value -> train id.
        known: raw values that are valid but ignored (255); values in neither ``mapping`` nor
            ``known`` are errors. None: every value not in ``mapping`` is ignored.
        expected: words for error messages, e.g. "a Cityscapes label id 0..33".
    """

    encoding: str
    mapping: dict[int, int] = field(default_factory=dict)
    known: Optional[frozenset[int]] = None
    expected: str = "a known label value"
    _tables: dict = field(default_factory=dict, repr=False, compare=False)

    def table(self, size: int) -> np.ndarray:
        if size not in self._tables:  # built lazily in each worker; the rgb one is 16 MiB
            mapping = {k: v for k, v in self.mapping.items() if k < size}
            self._tables[size] = lookup_table(mapping, self.known, size=size)
        return self._tables[size]

    def read(self, path: Path) -> np.ndarray:
        """The raw label: (H, W, 3) uint8 for ``rgb``, else (H, W) uint8/uint16."""
        return read_image(path) if self.encoding == "rgb" else read_label(path)

    def convert(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Raw label -> (H, W) uint8 train ids; an unknown value -> DataError naming ``path``."""
        if self.encoding == "train_ids":
            bad = (raw >= NUM_CLASSES) & (raw != IGNORE_INDEX)
            if bad.any():
                raise DataError(f"{path}: label value {int(raw[bad].min())} is not a train id "
                                f"(0..{NUM_CLASSES - 1} or 255), but the spec says encoding: train_ids")
            return raw.astype(np.uint8)
        if self.encoding == "rgb":
            codes = (raw[..., 0].astype(np.uint32) << 16) | (raw[..., 1].astype(np.uint32) << 8) | raw[..., 2]
            out = self.table(1 << 24)[codes]
            if (out == UNMAPPED).any():
                code = int(codes[out == UNMAPPED].min())
                raise DataError(f"{path}: label colour ({code >> 16}, {(code >> 8) & 255}, {code & 255}) "
                                f"is not mapped (expected {self.expected})")
            return out
        size = 256 if raw.dtype == np.uint8 else 65536
        out = self.table(size)[raw]
        if (out == UNMAPPED).any():
            raise DataError(f"{path}: label value {int(raw[out == UNMAPPED].min())} is not mapped "
                            f"(expected {self.expected}); is this the right dataset kind?")
        return out


CITYSCAPES_MAP = LabelMap("ids", CITYSCAPES_ID_TO_TRAINID, CITYSCAPES_KNOWN_IDS,
                          "a Cityscapes/GTA5 label id 0..33")
SYNTHIA_MAP = LabelMap("ids", SYNTHIA_ID_TO_TRAINID, SYNTHIA_KNOWN_IDS,
                       "a SYNTHIA class id 0..22 in the first channel")


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


# ----------------------------------------------------------------------------------------------
# planning: which files, which map


def _plan(kind: str, root: Path, spec: Optional[str]) -> tuple[list[tuple[Path, Path]], LabelMap, str]:
    """(jobs as (original label, prepared label), label map, the command that reruns this)."""
    command = f"iccld prepare {kind} --root {root}"
    if kind == "gta5":
        from .gta5 import gta5_label_jobs
        return gta5_label_jobs(root), CITYSCAPES_MAP, command
    if kind == "synthia":
        from .synthia import synthia_label_jobs
        return synthia_label_jobs(root), SYNTHIA_MAP, command
    if kind == "cityscapes":
        from .cityscapes import cityscapes_label_jobs
        return cityscapes_label_jobs(root), CITYSCAPES_MAP, command
    if kind == "folder":
        if not spec:
            raise ConfigError("iccld prepare folder: --spec is required (the YAML that describes the "
                              "layout and label map, see docs/datasets.md)")
        from .folder import folder_label_jobs, load_folder_spec
        folder_spec = load_folder_spec(spec)
        return folder_label_jobs(root, folder_spec), folder_spec.label_map(), f"{command} --spec {spec}"
    raise ConfigError(f"dataset kind '{kind}' is not one of {', '.join(KINDS[:-1])}")


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
        kind: gta5 | synthia | cityscapes | folder.
        root: the dataset folder in its original layout (see docs/datasets.md).
        workers: processes converting labels in parallel (1 = in this process).
        spec: folder datasets: path of the YAML spec.
        overwrite: recompute prepared files that already exist.
        progress: show a tqdm progress bar.

    Returns a summary: kind, root, labels, converted, existing, checked, stats_file, seconds,
    images_per_second. Raises DataError/ConfigError with a one-line message on bad input.
    """
    from tqdm import tqdm

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found (expected the {kind} folder in its original "
                        "layout, see docs/datasets.md)")
    jobs, label_map, command = _plan(kind, root, spec)
    stats_path = root / STATS_FILE
    summary = {"kind": kind, "root": str(root), "labels": len(jobs), "converted": 0, "existing": 0,
               "checked": 0, "stats_file": str(stats_path), "seconds": 0.0, "images_per_second": 0.0}
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
    atomic_write_text(stats_path, "[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n")
    summary["seconds"] = round(time.perf_counter() - start, 3)
    summary["images_per_second"] = round(len(jobs) / max(summary["seconds"], 1e-9), 2)
    return summary


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size: expected WIDTHxHEIGHT such as 256x128, got '{text}'") from None
    if w <= 0 or h <= 0:
        raise ConfigError(f"--size: width and height must be > 0, got '{text}'")
    return w, h


def prepare_command(args) -> int:
    """The ``iccld prepare`` subcommand (arguments: see iccld.cli)."""
    if args.kind == "synthetic":
        if not args.out:
            raise ConfigError("iccld prepare synthetic: --out is required (the folder to write to)")
        from .synthetic import generate
        result = generate(out=args.out, seed=args.seed, num_source=args.num_source,
                          num_target=args.num_target, num_val=args.num_val, num_test=args.num_test,
                          size=_parse_size(args.size), workers=args.workers)
        status = result.get("status", "generated") if isinstance(result, dict) else "generated"
        print(f"synthetic benchmark in {args.out}: {status}")
        return 0
    if not args.root:
        raise ConfigError(f"iccld prepare {args.kind}: --root is required (the dataset folder)")
    s = prepare_dataset(args.kind, args.root, workers=args.workers, spec=args.spec,
                        overwrite=args.overwrite)
    if s["converted"] == 0 and s["checked"] == 0 and s["seconds"] == 0.0:
        print(f"{args.kind}: all {s['labels']} labels in {s['root']} are already prepared "
              f"(--overwrite recomputes them)")
    else:
        print(f"{args.kind}: {s['labels']} labels ({s['converted']} converted, {s['existing']} already "
              f"prepared, {s['checked']} checked) in {s['seconds']:.1f} s "
              f"({s['images_per_second']:.1f}/s); class statistics in {s['stats_file']}")
    return 0
