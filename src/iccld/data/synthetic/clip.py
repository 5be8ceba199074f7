"""A slowly panning video clip of one synthetic street scene, for the video tests and benchmarks.

One target-style scene (:func:`~iccld.data.synthetic.generate.render_sample`) is rendered wide
enough for the whole pan; frame ``i`` is the window of it that starts ``i * pan`` pixels from the
left, with fresh camera noise added to every frame (so an unchanged pixel still varies a little
between frames, as in a camera). Its label is the same window of the scene's label map, in train ids.

    for frame, label in panning_clip((256, 128), 60, pan=1, seed=0):
        ...  # frame (H, W, 3) uint8, label (H, W) uint8 train ids (255 = ignore)

Frames are made one at a time: only the wide scene, (H, W + pan * (frames - 1), 3), is held.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..labels import CITYSCAPES_ID_TO_TRAINID, lookup_table
from .generate import render_sample
from .style import TARGET_STYLE, DomainStyle

CLIP_CODE = 7  # in the scene's seed: a clip's scene never equals a benchmark image (domain codes 0..3)


def panning_clip(size: tuple[int, int], frames: int, *, pan: int = 1, seed: int = 0, noise: float = 2.0,
                 style: DomainStyle = TARGET_STYLE) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``frames`` (frame, label) pairs of a scene panning ``pan`` pixels to the left per frame
    (the camera turns right).

    Args:
        size: (W, H) of every frame.
        frames: number of frames (>= 1).
        pan: pixels the view moves per frame (>= 0).
        seed: the scene and the noise; the same arguments give the same clip.
        noise: standard deviation of the Gaussian camera noise, in grey levels (0: none).
        style: the domain's look (default: the camera-like target).
    """
    if frames < 1 or pan < 0:
        raise ValueError(f"frames must be >= 1 and pan >= 0, got {frames} and {pan}")
    w, h = size
    scene, label_ids, _ = render_sample(style, np.random.SeedSequence([int(seed), CLIP_CODE]),
                                        (w + pan * (frames - 1), h))  # (H, W', 3), (H, W')
    train_ids = lookup_table(CITYSCAPES_ID_TO_TRAINID)[label_ids]  # (H, W') uint8, 255 = ignore
    rng = np.random.default_rng([int(seed), CLIP_CODE, 1])
    for i in range(frames):
        window = np.s_[:, i * pan: i * pan + w]
        frame = scene[window]
        if noise > 0:
            frame = np.clip(frame + rng.normal(0.0, noise, frame.shape), 0, 255).round().astype(np.uint8)
        yield np.ascontiguousarray(frame), np.ascontiguousarray(train_ids[window])
