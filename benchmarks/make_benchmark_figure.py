"""Render docs/images/benchmark.png: source and target samples of the synthetic benchmark.

Each row shows one source image ("game-like", GTA5 stand-in) and one target val image
("camera-like", Cityscapes stand-in), each beside its colour-coded label (train ids in the
Cityscapes palette, ignore in black), and a legend of the 19 classes. The samples are exactly the
files ``iccld prepare synthetic --seed SEED`` writes as source/images/00001.png... and the first
target val images, at the default 256x128 size.

    python benchmarks/make_benchmark_figure.py [--out docs/images/benchmark.png] [--seed 0] [--rows 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from iccld.data.labels import CITYSCAPES_ID_TO_TRAINID, CLASSES, PALETTE, colorize, lookup_table  # noqa: E402
from iccld.data.synthetic import SOURCE_STYLE, TARGET_STYLE, image_seed, render_sample  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images/benchmark.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--size", default="256x128", help="WxH")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    lut = lookup_table(CITYSCAPES_ID_TO_TRAINID)  # labelId -> trainId, other ids -> 255

    fig, axes = plt.subplots(args.rows, 4, figsize=(16, 2.5 * args.rows + 1.2))
    axes = np.atleast_2d(axes)
    for row in range(args.rows):
        for col, (style, domain, title) in enumerate(((SOURCE_STYLE, "source", "source (game-like)"),
                                                      (TARGET_STYLE, "val", "target val (camera-like)"))):
            image, label, _ = render_sample(style, image_seed(args.seed, domain, row), size)
            axes[row, 2 * col].imshow(image, interpolation="nearest")
            axes[row, 2 * col + 1].imshow(colorize(lut[label]), interpolation="nearest")
            axes[row, 2 * col].set_title(f"{title} #{row + 1}", fontsize=9)
            axes[row, 2 * col + 1].set_title("label (train ids)", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=np.asarray(c) / 255.0, label=name) for name, c in zip(CLASSES, PALETTE)]
    handles.append(Patch(color="black", label="ignore"))
    fig.legend(handles=handles, loc="lower center", ncol=10, fontsize=8, frameon=False)
    fig.suptitle(f"iccld synthetic benchmark (seed {args.seed}): labelled source -> camera-like target",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, metadata={"Software": None})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
