"""The embedded benchmark: a procedurally generated synthetic-to-real street-scene domain shift.

A labelled "game-like" source domain (GTA5 layout) and an unlabelled "camera-like" target domain
(Cityscapes layout, with labelled val and held-out test splits) of the same kind of street scene, differing in
appearance and layout statistics as described by two ``DomainStyle`` instances. See
docs/synthetic.md.

    from iccld.data.synthetic import generate
    generate("bench", seed=0)  # ~3600 images at 256x128, then prepare_dataset on both domains
"""

from ..kinds import DatasetKind
from .clip import panning_clip
from .generate import (LABEL_ID_COLORS, benchmark_parameters, generate, image_seed, render_sample,
                       write_benchmark)
from .style import MATERIALS, SOURCE_STYLE, TARGET_STYLE, DomainStyle, check_style

# `iccld prepare synthetic --out DIR` generates the benchmark (iccld.data.commands); a config reads
# its two domains as the kinds whose layouts they have (gta5, cityscapes)
KIND = DatasetKind(name="synthetic", display_name="synthetic benchmark")

__all__ = [
    "DomainStyle", "SOURCE_STYLE", "TARGET_STYLE", "MATERIALS", "check_style", "generate",
    "write_benchmark", "render_sample", "image_seed", "benchmark_parameters", "LABEL_ID_COLORS",
    "panning_clip",
]
