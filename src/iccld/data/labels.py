"""Class names, the Cityscapes palette and the standard label maps, in one place.

Train ids 0..18 are the 19 Cityscapes evaluation classes; 255 is "ignore" everywhere.
"""

from __future__ import annotations

import numpy as np

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
