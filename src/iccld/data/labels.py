"""Class names, the Cityscapes palette and the standard label maps, in one place.

Train ids 0..18 are the 19 Cityscapes evaluation classes; 255 is "ignore" everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError
from .io import read_image, read_label

IGNORE_INDEX = 255
NUM_CLASSES = 19

CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)

PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

# Cityscapes labelId -> trainId. GTA5 labels use the same labelId scheme.
CITYSCAPES_ID_TO_TRAINID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
# Every Cityscapes/GTA5 labelId that exists (0..33); the ones not above map to ignore.
CITYSCAPES_KNOWN_IDS: frozenset[int] = frozenset(range(34))

# SYNTHIA-RAND-CITYSCAPES class id -> trainId (as in DACS/DAFormer). 0 void, 13 parking-slot,
# 14 road-work and 22 lane-marking are known ids that map to ignore.
SYNTHIA_ID_TO_TRAINID: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12,
    8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}
SYNTHIA_KNOWN_IDS: frozenset[int] = frozenset(range(23))

# SYNTHIA evaluation subsets (train ids). Models always predict 19 classes.
SYNTHIA16: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
SYNTHIA13: tuple[int, ...] = (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
# as a metrics summary reports them: 16 without terrain, truck and train (SYNTHIA lacks them); 13 also
# without wall, fence and pole, as DAFormer and the papers report it
SYNTHIA_SUBSETS: dict[str, tuple[int, ...]] = {"miou16": SYNTHIA16, "miou13": SYNTHIA13}


def lookup_table(mapping: dict[int, int], known: frozenset[int] | None = None,
                 size: int = 256) -> np.ndarray:
    """A ``size``-entry uint8 table: ``table[label_value] = train_id``.

    Values in ``known`` but not in ``mapping`` go to 255 (ignore). Values in neither are marked
    with the sentinel 254 so callers can report an unmapped label instead of silently ignoring it.
    """
    table = np.full(size, 254 if known is not None else IGNORE_INDEX, dtype=np.uint8)
    if known is not None:
        for value in known:
            if value < size:
                table[value] = IGNORE_INDEX
    for value, train_id in mapping.items():
        table[value] = train_id
    return table


UNMAPPED = 254  # sentinel written by lookup_table for label values nobody declared


def colorize(label: np.ndarray) -> np.ndarray:
    """(H, W) train ids -> (H, W, 3) uint8 RGB in the Cityscapes palette; ignore is black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = np.asarray(PALETTE, dtype=np.uint8)
    return lut[label.astype(np.uint8)]


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
