"""Write the benchmark to disk: GTA5 layout for the source, Cityscapes layout for the target.

``generate`` = ``write_benchmark`` (images and raw labels, in parallel) + ``prepare_dataset`` on both
domains, so that every later command treats the result exactly like GTA5 -> Cityscapes.

The target has three labelled splits: ``train`` (used without labels by UDA), ``val`` (where every
setting is chosen) and ``test`` (held out: the reported numbers). Each image's seed depends on its
split, so the splits never share a scene, and adding the test split leaves the other files as they were.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...errors import ConfigError, DataError
from ...utils import atomic_write_text
from ..prepare import prepare_dataset
from .appearance import render_image
from .canvas import Canvas
from .scene import draw_scene
from .style import SOURCE_STYLE, TARGET_STYLE, DomainStyle, check_style

FORMAT_VERSION = 1  # bump whenever a code change alters the rendered files: old benchmarks then no longer match
TRAIN_CITIES: tuple[str, ...] = ("aldmere", "brackwater", "corrin", "dunholt")
VAL_CITIES: tuple[str, ...] = ("eastvale", "fernmoor", "glenrock")
TEST_CITIES: tuple[str, ...] = ("harlow", "ivesby", "juniper")
DOMAIN_CODES = {"source": 0, "train": 1, "val": 2, "test": 3}  # part of each image's seed
TEST_KEYS = ("num_test", "test_cities")  # parameters a benchmark made before the test split lacks
PNG_OPTIONS = {"format": "PNG", "compress_level": 1, "optimize": False}  # fixed: same bytes every run

# Colour of every Cityscapes labelId 0..33 (the GTA5 label palette uses the same colours).
LABEL_ID_COLORS: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0), 1: (0, 0, 0), 2: (0, 0, 0), 3: (0, 0, 0), 4: (0, 0, 0), 5: (111, 74, 0),
    6: (81, 0, 81), 7: (128, 64, 128), 8: (244, 35, 232), 9: (250, 170, 160), 10: (230, 150, 140),
    11: (70, 70, 70), 12: (102, 102, 156), 13: (190, 153, 153), 14: (180, 165, 180),
    15: (150, 100, 100), 16: (150, 120, 90), 17: (153, 153, 153), 18: (153, 153, 153),
    19: (250, 170, 30), 20: (220, 220, 0), 21: (107, 142, 35), 22: (152, 251, 152),
    23: (70, 130, 180), 24: (220, 20, 60), 25: (255, 0, 0), 26: (0, 0, 142), 27: (0, 0, 70),
    28: (0, 60, 100), 29: (0, 0, 90), 30: (0, 0, 110), 31: (0, 80, 100), 32: (0, 0, 230),
    33: (119, 11, 32),
}
_PALETTE = [c for i in range(256) for c in LABEL_ID_COLORS.get(i, (0, 0, 0))]


def image_seed(seed: int, domain: str, index: int) -> np.random.SeedSequence:
    """The seed of one image: depends only on (seed, domain, index), never on worker scheduling."""
    return np.random.SeedSequence([int(seed), DOMAIN_CODES[domain], int(index)])


def render_sample(style: DomainStyle, seed: np.random.SeedSequence, size: tuple[int, int]
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """One scene -> (image (H, W, 3) uint8, labelIds (H, W) uint8, tables).

    ``tables`` holds the object-id map ``ids`` (H, W) and per-object ``labels``, ``colors`` and
    ``textures``: ``labelIds == tables["labels"][tables["ids"]]`` always.
    """
    rng = np.random.default_rng(seed)
    cv = Canvas(size[0], size[1], style, rng)
    draw_scene(cv, style, rng)
    ids, labels, colors, textures = cv.tables()
    image = render_image(ids, labels, colors, textures, style, rng)
    tables = {"ids": ids, "labels": labels, "colors": colors, "textures": textures}
    return image, labels[ids], tables


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, **PNG_OPTIONS)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    """Temp name in the same folder + rename: never a half-written file (no fsync: a crash leaves
    the benchmark marked incomplete and the next run rewrites it)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


_WORKER: dict[str, Any] = {}


def _init_worker(seed: int, size: tuple[int, int], styles: dict[str, DomainStyle]) -> None:
    _WORKER.update(seed=seed, size=size, styles=styles)


def _make_one(task: tuple[str, int, str, str]) -> None:
    domain, index, image_path, label_path = task
    style = _WORKER["styles"]["source" if domain == "source" else "target"]
    image, label, _ = render_sample(style, image_seed(_WORKER["seed"], domain, index), _WORKER["size"])
    _write(Path(image_path), _png(Image.fromarray(image)))  # (H, W, 3) uint8 -> RGB
    if domain == "source":  # GTA5: palette PNG whose pixel index is the labelId
        lbl = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
        lbl.putpalette(_PALETTE)
    else:  # Cityscapes gtFine: 8-bit grayscale labelIds
        lbl = Image.fromarray(label)
    _write(Path(label_path), _png(lbl))


def _city_split(n: int, cities: tuple[str, ...]) -> list[tuple[str, int]]:
    """Image i -> (city, frame): contiguous blocks of images per city, frames from 0."""
    out, per = [], {}
    for i in range(n):
        city = cities[min(i * len(cities) // max(n, 1), len(cities) - 1)]
        out.append((city, per.get(city, 0)))
        per[city] = per.get(city, 0) + 1
    return out


def _tasks(out: Path, num_source: int, num_target: int, num_val: int, num_test: int = 0
           ) -> list[tuple[str, int, str, str]]:
    tasks = []
    src = out / "source"
    for i in range(num_source):
        tasks.append(("source", i, str(src / "images" / f"{i + 1:05d}.png"), str(src / "labels" / f"{i + 1:05d}.png")))
    for split, n, cities in (("train", num_target, TRAIN_CITIES), ("val", num_val, VAL_CITIES),
                             ("test", num_test, TEST_CITIES)):
        for i, (city, frame) in enumerate(_city_split(n, cities)):
            stem = f"{city}_000000_{frame:06d}"
            image = out / "target" / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            label = out / "target" / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
            tasks.append((split, i, str(image), str(label)))
    return tasks


def benchmark_parameters(seed: int, num_source: int, num_target: int, num_val: int, size: tuple[int, int],
                         source_style: DomainStyle, target_style: DomainStyle, num_test: int = 0
                         ) -> dict[str, Any]:
    """Everything that determines the files (JSON-normalised), as stored in benchmark.json. Without a
    test split (``num_test=0``) these are exactly the parameters of a benchmark made before it existed."""
    params = {"format_version": FORMAT_VERSION, "seed": int(seed), "num_source": int(num_source),
              "num_target": int(num_target), "num_val": int(num_val), "size": [int(size[0]), int(size[1])],
              "train_cities": list(TRAIN_CITIES), "val_cities": list(VAL_CITIES),
              "png": PNG_OPTIONS, "source_style": asdict(source_style), "target_style": asdict(target_style)}
    if num_test:
        params.update(num_test=int(num_test), test_cities=list(TEST_CITIES))
    return json.loads(json.dumps(params))


def _check_args(num_source: int, num_target: int, num_val: int, size: tuple[int, int], workers: int,
                num_test: int = 0) -> None:
    for name, value, low in (("num_source", num_source, 1), ("num_target", num_target, 1),
                             ("num_val", num_val, 1), ("num_test", num_test, 0), ("workers", workers, 1)):
        if int(value) != value or value < low:
            raise ConfigError(f"synthetic benchmark: {name}={value!r} must be an integer >= {low}")
    if len(size) != 2 or min(size) < 32 or max(size) > 4096:
        raise ConfigError(f"synthetic benchmark: size={tuple(size)!r} must be (width, height), each 32..4096")


def _existing(out: Path, params: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """(None, False) when ``out`` is empty/missing or an unfinished run of the same parameters; (the
    stored metadata, False) for a finished identical benchmark; (None, True) for a finished benchmark
    that differs only in lacking the test split (made before it existed: only the test split is
    written); else a DataError (never touch foreign files)."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another --out for the synthetic benchmark")
    if not out.exists() or not any(out.iterdir()):
        return None, False
    meta_path = out / "benchmark.json"
    if not meta_path.is_file():
        raise DataError(f"{out}: folder is not empty and holds no benchmark.json; refusing to write the "
                        "synthetic benchmark into it (choose another --out or empty it)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{meta_path}: unreadable ({exc}); delete the folder and generate again") from None
    stored = meta.get("parameters", {}) if isinstance(meta, dict) else {}
    without_test = {k: v for k, v in params.items() if k not in TEST_KEYS}
    if stored != params and stored == without_test and meta.get("complete"):
        return None, True
    if stored != params:
        keys = sorted(k for k in set(stored) | set(params) if stored.get(k) != params.get(k))
        raise DataError(f"{meta_path}: a benchmark with other parameters ({', '.join(keys)}) is already there; "
                        "choose another --out or delete that folder")
    return (meta if meta.get("complete") else None), False


def write_benchmark(out: str | Path, seed: int = 0, num_source: int = 2000, num_target: int = 1000,
                    num_val: int = 300, size: tuple[int, int] = (256, 128), workers: int = 2,
                    source_style: DomainStyle = SOURCE_STYLE, target_style: DomainStyle = TARGET_STYLE,
                    progress: bool = True, num_test: int = 300) -> dict[str, Any]:
    """Render all images and raw labels (no prepare step) and write ``benchmark.json``.

    Returns the benchmark.json contents plus ``status`` ("generated", "test split added" or
    "already generated"). Raises DataError when ``out`` holds anything but a benchmark of the same
    parameters (or of the same parameters but for the test split, which is then added).
    """
    _check_args(num_source, num_target, num_val, size, workers, num_test)
    check_style(source_style)
    check_style(target_style)
    out = Path(out)
    params = benchmark_parameters(seed, num_source, num_target, num_val, tuple(size), source_style,
                                  target_style, num_test)
    done, add_test = _existing(out, params)
    if done is not None:
        return {**done, "status": "already generated"}
    counts = {"source": num_source, "target_train": num_target, "target_val": num_val}
    if num_test:
        counts["target_test"] = num_test
    meta = {"generator": "iccld.data.synthetic", "parameters": params, "complete": False,
            "counts": counts, "source": "source", "target": "target"}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "benchmark.json", json.dumps(meta, indent=2) + "\n")
    tasks = _tasks(out, num_source, num_target, num_val, num_test)
    if add_test:  # the other splits are there and finished: their files stay untouched
        tasks = [t for t in tasks if t[0] == "test"]
    for folder in sorted({str(Path(p).parent) for t in tasks for p in t[2:]}):
        Path(folder).mkdir(parents=True, exist_ok=True)
    styles = {"source": source_style, "target": target_style}
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="synthetic benchmark", unit="img", disable=not progress)
    if workers == 1:
        _init_worker(seed, tuple(size), styles)
        for task in tasks:
            _make_one(task)
            bar.update()
    else:
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        with ctx.Pool(workers, initializer=_init_worker, initargs=(seed, tuple(size), styles)) as pool:
            for _ in pool.imap_unordered(_make_one, tasks, chunksize=16):
                bar.update()
    bar.close()
    return {**meta, "status": "test split added" if add_test else "generated"}


def _mark_complete(out: Path, meta: dict[str, Any]) -> None:
    stored = {k: v for k, v in meta.items() if k != "status"}
    atomic_write_text(out / "benchmark.json", json.dumps({**stored, "complete": True}, indent=2) + "\n")


def generate(out: str | Path, seed: int = 0, num_source: int = 2000, num_target: int = 1000,
             num_val: int = 300, size: tuple[int, int] = (256, 128), workers: int = 2,
             source_style: DomainStyle = SOURCE_STYLE, target_style: DomainStyle = TARGET_STYLE,
             progress: bool = True, num_test: int = 300) -> dict[str, Any]:
    """Generate the synthetic benchmark into ``out`` and prepare it like GTA5 -> Cityscapes.

    Writes ``out/source`` (GTA5 layout), ``out/target`` (Cityscapes layout), runs
    ``prepare_dataset`` on both, and marks ``out/benchmark.json`` complete. Same arguments -> the
    same bytes. A finished benchmark with the same parameters is left alone ("already generated"),
    one made before the test split existed gets it added ("test split added"); any other non-empty
    ``out`` is refused with a DataError. ``size`` is (width, height); ``num_test`` target images
    form the held-out ``test`` split (0: none).
    """
    start = time.perf_counter()
    out = Path(out)
    meta = write_benchmark(out, seed, num_source, num_target, num_val, size, workers, source_style,
                           target_style, progress, num_test)
    if meta["status"] == "already generated":
        return meta
    prepared = {"gta5": prepare_dataset("gta5", out / "source", workers, progress=progress),
                "cityscapes": prepare_dataset("cityscapes", out / "target", workers, progress=progress)}
    _mark_complete(out, meta)
    return {**meta, "complete": True, "prepared": prepared, "seconds": time.perf_counter() - start}
