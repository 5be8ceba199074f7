"""Builders of tiny datasets in each real on-disk format, for tests anywhere in the suite.

    make_gta5(root, n, size)           ROOT/images/NNNNN.png + ROOT/labels/NNNNN.png (palette PNG)
    make_synthia(root, n, size)        ROOT/RGB/NNNNNNN.png + ROOT/GT/LABELS/NNNNNNN.png (16-bit RGB)
    make_cityscapes(root, splits, n, size)
                                       ROOT/leftImg8bit/SPLIT/CITY/*_leftImg8bit.png +
                                       ROOT/gtFine/SPLIT/CITY/*_gtFine_labelIds.png (8-bit gray)
    make_mapillary(root, splits, ...)  ROOT/FOLDER/images/NAME.jpg + ROOT/FOLDER/labels/NAME.png (palette PNG)
    make_bdd100k(root, layout, ...)    ROOT/images/10k/SPLIT/NAME.jpg + ROOT/labels/sem_seg/masks/SPLIT/NAME.png

``size`` is (W, H). Labels are blocky (8x8-pixel cells of random ids drawn from every id the
format knows, including the ones that map to ignore), so crops see several classes. None of the
files is prepared; run ``iccld.data.prepare.prepare_dataset`` for that. The 16-bit PNG encoder here
is written from the PNG specification, independently of the package's reader.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

# The palette GTA5 label files carry: index = Cityscapes label id, colour = its Cityscapes colour.
_GTA5_PALETTE = {
    7: (128, 64, 128), 8: (244, 35, 232), 11: (70, 70, 70), 12: (102, 102, 156), 13: (190, 153, 153),
    17: (153, 153, 153), 19: (250, 170, 30), 20: (220, 220, 0), 21: (107, 142, 35), 22: (152, 251, 152),
    23: (70, 130, 180), 24: (220, 20, 60), 25: (255, 0, 0), 26: (0, 0, 142), 27: (0, 0, 70),
    28: (0, 60, 100), 31: (0, 80, 100), 32: (0, 0, 230), 33: (119, 11, 32),
}
CITIES = ("aachen", "bochum", "zurich")


def blocky_ids(rng: np.random.Generator, height: int, width: int, values: Sequence[int],
               cell: int = 8) -> np.ndarray:
    """(H, W) array of ``values`` constant over cell x cell blocks."""
    grid = rng.choice(np.asarray(values), size=(-(-height // cell), -(-width // cell)))
    return np.kron(grid, np.ones((cell, cell), dtype=grid.dtype))[:height, :width]


def random_rgb(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def encode_png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG (colour type 2 for (H, W, 3), 0 for (H, W)) of a uint16 array.

    Rows use the five PNG filters in turn (None, Sub, Up, Average, Paeth), so a reader that undoes
    a filter with the wrong bytes-per-pixel gets wrong values.
    """
    array = np.asarray(array, dtype=np.uint16)
    channels = 1 if array.ndim == 2 else array.shape[2]
    height, width = array.shape[:2]
    bpp = 2 * channels
    rows = [array[y].astype(">u2").tobytes() for y in range(height)]
    out = bytearray()
    prev = bytes(len(rows[0]))
    for y, row in enumerate(rows):
        kind = y % 5
        filtered = bytearray(len(row))
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            predictor = (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]
            filtered[i] = (x - predictor) & 0xFF
        out += bytes([kind]) + filtered
        prev = row
    colour_type = 2 if channels == 3 else 0
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(bytes(out)))
            + _chunk(b"IEND", b""))


def write_palette_png(path: Path, ids: np.ndarray) -> None:
    """GTA5-style label: mode P, pixel = label id, palette = the Cityscapes colours."""
    ids = np.ascontiguousarray(ids, dtype=np.uint8)
    im = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.tobytes())
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index, colour in _GTA5_PALETTE.items():
        palette[index] = colour
    im.putpalette(palette.ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def make_gta5(root: Path, n: int = 4, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """``n`` GTA5 pairs of ``size`` (W, H); label ids from 0..33 (all Cityscapes ids)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        Image.fromarray(random_rgb(rng, size[1], size[0])).save(root / "images" / f"{i:05d}.png")
        write_palette_png(root / "labels" / f"{i:05d}.png", blocky_ids(rng, size[1], size[0], range(34)))
    return root


def make_synthia(root: Path, n: int = 4, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """``n`` SYNTHIA pairs of ``size`` (W, H): 16-bit RGB labels, class ids 0..22 in channel 0,
    instance ids up to 2000 in channel 1 (so the high byte is used there), 0 in channel 2."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "RGB").mkdir(parents=True, exist_ok=True)
    (root / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
    w, h = size
    for i in range(n):
        Image.fromarray(random_rgb(rng, h, w)).save(root / "RGB" / f"{i:07d}.png")
        label = np.zeros((h, w, 3), dtype=np.uint16)
        label[..., 0] = blocky_ids(rng, h, w, range(23))
        label[..., 1] = blocky_ids(rng, h, w, range(0, 2000, 7))
        (root / "GT" / "LABELS" / f"{i:07d}.png").write_bytes(encode_png16(label))
    return root


def cityscapes_name(index: int) -> tuple[str, str]:
    city = CITIES[index % len(CITIES)]
    return city, f"{city}_{index:06d}_000019"


def make_cityscapes(root: Path, splits: Sequence[str] = ("train", "val"), n: int = 3,
                    size: tuple[int, int] = (64, 32), seed: int = 0, images: bool = True) -> Path:
    """``n`` Cityscapes pairs per split of ``size`` (W, H), spread over cities; label ids 0..33.
    ``images=False`` writes the gtFine labels only (for timing ``prepare``)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    w, h = size
    for split in splits:
        for i in range(n):
            city, name = cityscapes_name(i)
            if images:
                folder = root / "leftImg8bit" / split / city
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(random_rgb(rng, h, w)).save(folder / f"{name}_leftImg8bit.png")
            folder = root / "gtFine" / split / city
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(blocky_ids(rng, h, w, range(34)).astype(np.uint8)).save(
                folder / f"{name}_gtFine_labelIds.png")
    return root


def _anon_frame(rng: np.random.Generator, image_dir: Path, label_dir: Path | None, seq: str, frame: int,
                size: tuple[int, int], label_ids: bool) -> None:
    """One ``SEQ_frame_NNNNNN_rgb_anon.png`` and, with ``label_dir``, its ``_gt_labelTrainIds.png``
    (and ``_gt_labelIds.png`` when ``label_ids``), the two consistent as in the real download."""
    from iccld.data.labels import CITYSCAPES_ID_TO_TRAINID, CITYSCAPES_KNOWN_IDS, lookup_table

    w, h = size
    name = f"{seq}_frame_{frame:06d}"
    (image_dir / seq).mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_rgb(rng, h, w)).save(image_dir / seq / f"{name}_rgb_anon.png")
    if label_dir is None:
        return
    ids = blocky_ids(rng, h, w, range(34)).astype(np.uint8)
    (label_dir / seq).mkdir(parents=True, exist_ok=True)
    train = lookup_table(CITYSCAPES_ID_TO_TRAINID, CITYSCAPES_KNOWN_IDS)[ids]
    Image.fromarray(train).save(label_dir / seq / f"{name}_gt_labelTrainIds.png")
    if label_ids:
        Image.fromarray(ids).save(label_dir / seq / f"{name}_gt_labelIds.png")


def make_acdc(root: Path, conditions: Sequence[str] = ("fog", "night", "rain", "snow"),
              splits: Sequence[str] = ("train", "val", "test"), n: int = 2, size: tuple[int, int] = (64, 36),
              seed: int = 0, label_ids: bool = True) -> Path:
    """``n`` ACDC frames per condition and split, in two GoPro sequences:
    ROOT/rgb_anon/COND/SPLIT/SEQ/SEQ_frame_NNNNNN_rgb_anon.png, labels in ROOT/gt/COND/SPLIT/SEQ/
    for train and val (test has none, as in the download), plus a ``train_ref`` folder that must be
    left alone."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for c, condition in enumerate(conditions):
        for split in splits:
            for i in range(n):
                seq = f"GOPR{475 + 10 * c + i % 2:04d}"
                labels = None if split == "test" else root / "gt" / condition / split
                _anon_frame(rng, root / "rgb_anon" / condition / split, labels, seq, 41 + 7 * i, size, label_ids)
        ref = root / "rgb_anon" / condition / "train_ref" / "GOPR0001"
        ref.mkdir(parents=True, exist_ok=True)
        Image.fromarray(random_rgb(rng, size[1], size[0])).save(ref / "GOPR0001_frame_000001_rgb_ref_anon.png")
    return root


def make_darkzurich(root: Path, n: int = 2, size: tuple[int, int] = (64, 36), seed: int = 0,
                    label_ids: bool = True) -> Path:
    """``n`` Dark Zurich frames for train/{day,twilight,night}, val/night (labelled, in gt/val/night)
    and test/night: ROOT/rgb_anon/SPLIT/TIME/SEQ/SEQ_frame_NNNNNN_rgb_anon.png."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    folders = [("train", "day", False), ("train", "twilight", False), ("train", "night", False),
               ("val", "night", True), ("test", "night", False)]
    for k, (split, time, labelled) in enumerate(folders):
        for i in range(n):
            labels = root / "gt" / split / time if labelled else None
            _anon_frame(rng, root / "rgb_anon" / split / time, labels, f"GOPR{356 + k:04d}", 321 + i, size,
                        label_ids)
    return root


# Mapillary keys are 22 URL-safe characters and may start with "-"
MAPILLARY_NAMES = ("-0C1J9CvgFP4BTVLXNeNZA", "0035fkbjWljhaftpVM37-g", "_1Gn_xkw7sa_i9GU4mkxxQ", "zzy2-vhJq4KbkxL3ph4nsQ")


def write_vistas_label(path: Path, ids: np.ndarray) -> None:
    """A Mapillary Vistas v1.2 label: mode P, pixel = class index 0..65, palette = the v1.2 colours."""
    from iccld.data.mapillary import V12_CLASSES

    ids = np.ascontiguousarray(ids, dtype=np.uint8)
    im = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.tobytes())
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(V12_CLASSES)] = [colour for _, colour in V12_CLASSES]
    im.putpalette(palette.ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def make_mapillary(root: Path,
                   splits: Sequence[tuple[str, int]] = (("training", 2), ("validation", 3), ("testing", 1)),
                   sizes: Sequence[tuple[int, int]] = ((80, 60), (60, 80), (96, 54)), seed: int = 0,
                   classes: Sequence[int] = tuple(range(66)), labels: str = "labels") -> Path:
    """Mapillary Vistas v1.2: ROOT/FOLDER/images/NAME.jpg and, but for testing, the palette label
    ROOT/FOLDER/<labels>/NAME.png (``labels="v1.2/labels"``: the Vistas 2.0 download's place).
    Image i has ``sizes[i % len(sizes)]`` (W, H): landscape, portrait and wide by default; label
    values are blocks of ``classes``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for folder, n in splits:
        (root / folder / "images").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            w, h = sizes[i % len(sizes)]
            name = MAPILLARY_NAMES[i % len(MAPILLARY_NAMES)] + ("" if i < len(MAPILLARY_NAMES) else str(i))
            Image.fromarray(random_rgb(rng, h, w)).save(root / folder / "images" / f"{name}.jpg", quality=95)
            if folder != "testing":
                write_vistas_label(root / folder / labels / f"{name}.png", blocky_ids(rng, h, w, classes))
    return root


def make_bdd100k(root: Path, layout: str = "current",
                 splits: Sequence[tuple[str, int]] = (("train", 2), ("val", 3), ("test", 1)),
                 size: tuple[int, int] = (80, 45), seed: int = 0) -> Path:
    """BDD100K 10K in the ``current`` layout (ROOT/images/10k/SPLIT/NAME.jpg,
    ROOT/labels/sem_seg/masks/SPLIT/NAME.png) or the ``older`` one (ROOT/seg/images/SPLIT/NAME.jpg,
    ROOT/seg/labels/SPLIT/NAME_train_id.png, plus the colour labels in seg/color_labels/). Labels are
    8-bit train ids 0..18 and 255; test has none, as in the download."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    w, h = size
    for split, n in splits:
        for i in range(n):
            name = f"{rng.integers(16**8):08x}-{rng.integers(16**8):08x}"
            ids = blocky_ids(rng, h, w, [*range(19), 255]).astype(np.uint8)
            if layout == "current":
                image = root / "images" / "10k" / split / f"{name}.jpg"
                label = root / "labels" / "sem_seg" / "masks" / split / f"{name}.png"
            else:
                image = root / "seg" / "images" / split / f"{name}.jpg"
                label = root / "seg" / "labels" / split / f"{name}_train_id.png"
                colour = root / "seg" / "color_labels" / split / f"{name}_train_color.png"
            image.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(random_rgb(rng, h, w)).save(image, quality=95)
            if split != "test":
                label.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(ids).save(label)
                if layout != "current":
                    colour.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(random_rgb(rng, h, w)).save(colour)
    return root
