"""``iccld predict --format submission``: the files a benchmark server scores, and a zip to upload.

What each server expects, and where it comes from (details and open points in docs/datasets.md):

- **Cityscapes** (pixel-level semantic labeling, test split, 1,525 images): one 8-bit PNG per test
  image holding Cityscapes **label ids** (road = 7, not train id 0), at the input resolution
  (2048x1024). The server runs cityscapesscripts' ``evalPixelLevelSemanticLabeling``, which finds
  the prediction of ``CITY_SEQ_FRAME`` as the one file matching ``CITY_SEQ_FRAME*.png`` anywhere
  under the results folder. Files here keep the input's name (``CITY_SEQ_FRAME_leftImg8bit.png``).
- **ACDC** (semantic segmentation, test split, 2,000 images of the four conditions): one PNG per
  test image holding **train ids** (road = 0), at the input resolution (1920x1080), named like the
  input image (``SEQ_frame_NNNNNN_rgb_anon.png``), as the dataset's authors' own prediction code
  writes them.

The PNGs go to ``OUT/labelIds/`` (Cityscapes) or ``OUT/labelTrainIds/`` (ACDC) and, all at the top
level of the archive, into ``OUT/submission.zip``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.io import read_image, read_label, write_png
from ..data.labels import CITYSCAPES_ID_TO_TRAINID, IGNORE_INDEX, NUM_CLASSES
from ..errors import DataError
from ..outputs import check_output_dir, check_output_file, claim_outputs
from ..utils import atomic_write_bytes


@dataclass(frozen=True)
class Benchmark:
    name: str
    image_suffix: str  # how the benchmark's test images are named
    encoding: str  # label_ids | train_ids
    folder: str  # OUT/<folder>/ holds the PNGs
    test_images: int  # images in the test split the server expects
    size: tuple[int, int]  # (W, H) of the test images


BENCHMARKS = {
    "cityscapes": Benchmark("Cityscapes", "_leftImg8bit.png", "label_ids", "labelIds", 1525, (2048, 1024)),
    "acdc": Benchmark("ACDC", "_rgb_anon.png", "train_ids", "labelTrainIds", 2000, (1920, 1080)),
}
ZIP_NAME = "submission.zip"


def trainid_to_labelid() -> np.ndarray:
    """256-entry uint8 table: train id -> Cityscapes label id; ignore (255) -> 0 ("unlabeled",
    which the evaluation leaves out)."""
    table = np.zeros(256, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAINID.items():
        table[train_id] = label_id
    table[IGNORE_INDEX] = 0
    return table


def encode(label: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W) uint8 train ids -> (H, W) uint8 in the benchmark's encoding."""
    if encoding == "label_ids":
        return trainid_to_labelid()[label]
    if encoding == "train_ids":
        return label.astype(np.uint8, copy=False)
    raise ValueError(encoding)


def detect_benchmark(images: list[Path]) -> str:
    """The benchmark whose test images these are, from their names."""
    for key, bench in BENCHMARKS.items():
        if images and all(p.name.endswith(bench.image_suffix) for p in images):
            return key
    odd = next((p for p in images if not any(p.name.endswith(b.image_suffix) for b in BENCHMARKS.values())),
               images[0] if images else None)
    raise DataError(f"{odd}: not a Cityscapes (*_leftImg8bit.png) or ACDC (*_rgb_anon.png) test image, or the "
                    "inputs mix the two; pass the test images of one benchmark (or --benchmark)")


def check_submission_inputs(images: list[Path], benchmark: str | None = None) -> str:
    """The benchmark the images are the test images of (``benchmark`` or detected from their names);
    a one-line DataError when the server could not match every one to a test image."""
    key = benchmark or detect_benchmark(images)
    bench = BENCHMARKS[key]
    bad = [p for p in images if not p.name.endswith(bench.image_suffix)]
    if bad:
        raise DataError(f"{bad[0]}: not named *{bench.image_suffix}, so the {bench.name} server cannot match it "
                        "to a test image")
    return key


def write_submission(model, images: list[Path], out: Path, *, benchmark: str | None = None,
                     path: str = "diffusion", steps: int | None = None, samples: int = 1, seed: int = 0,
                     overwrite: bool = False, resize: tuple[int, int] | None = None,
                     keep_ratio: bool = False) -> dict:
    """Predict every image and write the benchmark's PNGs and ``OUT/submission.zip``.

    Returns ``{"benchmark", "folder", "zip", "images", "notes"}``; ``notes`` says where the
    submission differs from what the server will score (image count, image size).
    """
    from .predict import predict_images

    key = check_submission_inputs(images, benchmark)
    bench = BENCHMARKS[key]
    out = Path(out)
    folder, archive = out / bench.folder, out / ZIP_NAME
    names: dict[str, Path] = {}
    for img in images:
        if img.name in names:
            raise DataError(f"{img} and {names[img.name]} have the same name; a submission holds one file per name")
        names[img.name] = img
    outputs = [archive, *(folder / n for n in names)]
    for p in outputs:
        check_output_file(p, overwrite=overwrite, command="predict", check_dir=False)
    check_output_dir(out)
    work = Path(tempfile.mkdtemp(dir=out, prefix=".predict-"))
    notes = []
    try:
        # the shared prediction path (train-id PNG per image); only its train ids are kept
        predict_images(model, images, work, path=path, steps=steps, samples=samples, seed=seed, resize=resize,
                       keep_ratio=keep_ratio)
        folder.mkdir(exist_ok=True)
        sizes = set()
        for img in images:
            label = read_label(work / f"{img.stem}_trainid.png")  # (H, W) train ids
            h, w = read_image(img).shape[:2]
            if label.shape != (h, w) or label.max(initial=0) >= NUM_CLASSES:
                raise DataError(f"{img}: the prediction is {label.shape[1]}x{label.shape[0]} with values up to "
                                f"{int(label.max())}, expected {w}x{h} train ids")
            sizes.add((w, h))
            claim_outputs([folder / img.name], "predict")  # as it is written, not before
            write_png(folder / img.name, encode(label, bench.encoding))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with tempfile.SpooledTemporaryFile() as buffer:
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
            for name in sorted(names):
                zf.write(folder / name, arcname=name)
        buffer.seek(0)
        claim_outputs([archive], "predict")
        atomic_write_bytes(archive, buffer.read())
    if len(images) != bench.test_images:
        notes.append(f"{len(images)} images; the {bench.name} server scores all {bench.test_images} test images")
    if sizes != {bench.size}:
        notes.append(f"image sizes {sorted(sizes)} differ from the {bench.name} test images' "
                     f"{bench.size[0]}x{bench.size[1]}")
    return {"benchmark": key, "folder": str(folder), "zip": str(archive), "images": len(images), "notes": notes}


def submission_command(args, model, images: list[Path], path: str, *, steps: int | None, samples: int,
                       resize: tuple[int, int] | None = None, keep_ratio: bool = False) -> int:
    """``iccld predict --format submission``; ``steps``/``samples``/``resize``/``keep_ratio`` as the predict command
    checked them (the PNGs are at each test image's own size either way)."""
    result = write_submission(model, images, Path(args.out), benchmark=args.benchmark, path=path,
                              steps=steps, samples=samples, seed=args.seed, overwrite=args.overwrite,
                              resize=resize, keep_ratio=keep_ratio)
    print(f"{BENCHMARKS[result['benchmark']].name} submission: {result['images']} PNGs in {result['folder']}, "
          f"upload {result['zip']}", file=sys.stderr)
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    return 0
