"""MiT encoder sizes against the published ones (SegFormer, Xie et al. 2021, Table 1: encoder params)."""

import pytest

from iccld.models.backbones import build_backbone

PUBLISHED_M = {"mit-b0": 3.4, "mit-b5": 81.4}  # millions, encoder only (3.7M for B0 with classifier)


@pytest.mark.parametrize("backbone", ["mit-b0", "mit-b5"])
def test_mit_encoder_parameter_counts(backbone):
    n = sum(p.numel() for p in build_backbone(backbone).parameters()) / 1e6
    print(f"{backbone}: {n:.2f}M encoder parameters (published {PUBLISHED_M[backbone]}M)")
    assert n == pytest.approx(PUBLISHED_M[backbone], rel=0.05)
