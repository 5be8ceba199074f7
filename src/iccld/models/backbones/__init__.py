"""E's backbones, found by name.

The protocol: a backbone is an ``nn.Module`` whose ``forward(x)`` takes a normalised image batch
(B, 3, H, W) of any size and returns a list of feature maps, level i of shape
(B, channels[i], ceil(H / strides[i]), ceil(W / strides[i])), finest first. It declares

- ``channels``: tuple of the levels' channels;
- ``strides``: tuple of the levels' strides, increasing;
- ``min_input_size``: the smallest image side it accepts;
- ``input_mean`` and ``input_std``: the normalisation (0..255 scale) its pretrained weights expect.
  Its ``forward`` receives the pipeline's normalisation (ImageNet mean/std) and converts to its own
  (:mod:`.normalization`); a test feeds every registered backbone and checks what its first layer sees;
- ``hf_class`` and ``pretrained_part()``: the ``transformers`` model class whose published
  (ImageNet) weights load into that sub-module; :func:`iccld.io.load_backbone_weights` does the
  loading.

The latent head and D read whatever channels and strides a backbone declares, so the network side
of a new backbone is one file here and its names in :data:`BACKBONES`. Outside this package it also
needs its names among the config's choices (``iccld.config.BACKBONES``, kept equal to this dict by a
test) and, when its published weights sit under a wrapper prefix of their own, that prefix in
:mod:`iccld.io.backbone_weights` (docs/architecture.md, "Adding a backbone").
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .dinov2 import DINOV2_ARCHS, DINOv2, build_dinov2
from .mit import MIT_ARCHS, MiT, build_mit
from .mobilenet import MOBILENET_ARCHS, MobileNetV2, build_mobilenet_v2
from .resnet import RESNET_ARCHS, ResNet, build_resnet

#: backbone name -> builder(name, drop_path_rate, **transformers config overrides)
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    **{name: build_mit for name in MIT_ARCHS},
    **{name: build_dinov2 for name in DINOV2_ARCHS},
    **{name: build_resnet for name in RESNET_ARCHS},
    **{name: build_mobilenet_v2 for name in MOBILENET_ARCHS},
}


def build_backbone(name: str, drop_path_rate: float = 0.1, **config_overrides) -> nn.Module:
    """A randomly initialised backbone by name (see :data:`BACKBONES`); ``config_overrides``
    replace fields of its transformers config."""
    if name not in BACKBONES:
        raise ValueError(f"backbone '{name}' is not one of {', '.join(BACKBONES)}")
    return BACKBONES[name](name, drop_path_rate, **config_overrides)


def level_of_stride(backbone: nn.Module, stride: int) -> int:
    """Index of the backbone's feature level with this stride."""
    strides = tuple(backbone.strides)
    if stride not in strides:
        raise ValueError(f"stride {stride} is not one of the backbone's feature strides {strides}")
    return strides.index(stride)


__all__ = ["BACKBONES", "DINOv2", "MiT", "MobileNetV2", "ResNet", "build_backbone", "level_of_stride"]
