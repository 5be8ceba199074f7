"""Backbone sizes against the published ones (MiT: SegFormer, Xie et al. 2021, Table 1: encoder params)."""

import pytest

from iccld.models.backbones import build_backbone

PUBLISHED_M = {"mit-b0": 3.4, "mit-b5": 81.4}  # millions, encoder only (3.7M for B0 with classifier)


@pytest.mark.parametrize("backbone", ["mit-b0", "mit-b5"])
def test_mit_encoder_parameter_counts(backbone):
    n = sum(p.numel() for p in build_backbone(backbone).parameters()) / 1e6
    print(f"{backbone}: {n:.2f}M encoder parameters (published {PUBLISHED_M[backbone]}M)")
    assert n == pytest.approx(PUBLISHED_M[backbone], rel=0.05)


# without the ImageNet classifier: ResNet-50/101 have 25.6M/44.5M with their 2048 x 1000 fc layer
# (He et al. 2016), i.e. 23.5M/42.5M without; DINOv2 ViT-S/14 has 22.1M (21M in Oquab et al. 2023, Table 1)
BACKBONE_M = {"resnet-50": 23.5, "resnet-101": 42.5, "dinov2-small": 22.1}


@pytest.mark.parametrize("backbone", sorted(BACKBONE_M))
def test_other_backbone_parameter_counts(backbone):
    part = build_backbone(backbone).pretrained_part()  # the part ImageNet weights load into
    n = sum(p.numel() for p in part.parameters()) / 1e6
    assert n == pytest.approx(BACKBONE_M[backbone], rel=0.01)
