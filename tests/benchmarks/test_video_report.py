"""The video benchmark's flicker measure and its docs section, rendered from the committed results."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import video  # noqa: E402


def test_flicker_counts_changed_pixels_and_compensates_a_known_pan():
    scene = np.arange(10)[None, :].repeat(2, axis=0)  # (2, 10): every column its own label
    frames = [scene[:, t: t + 6] for t in range(3)]  # the view moves 1 column per frame
    assert video.flicker(frames) == pytest.approx(1.0)  # every pixel changes
    assert video.flicker(frames, pan=1) == 0.0  # but none against the moved previous frame
    noisy = [f.copy() for f in frames]
    noisy[2][0, 0] = 99  # one pixel of 10 compared (2 rows x 5 columns) in the second pair
    assert video.flicker(noisy, pan=1) == pytest.approx(0.5 * 1 / 10)


def test_section_renders_the_committed_results():
    result = json.loads((BENCH / "results" / "video.json").read_text())
    text = video.render_section(result)
    off = result["flicker"]["rows"][0]
    assert f"| off (0) | {off['flicker_pct']:.2f} | {off['compensated_flicker_pct']:.2f} | 1.00x |" in text
    for name, row in result["memory"]["rows"].items():
        assert f"| {name} | {row['frames']} | 1280x720 @ 25 fps |" in text and f"**{row['peak_mb']:.0f}**" in text
