"""E, the encoder: SegFormer's Mix Transformer (MiT) from ``transformers``.

The encoder *is* a :class:`transformers.SegformerModel`, so ImageNet weights published as
``nvidia/mit-b0`` ... ``nvidia/mit-b5`` load by name (see :mod:`iccld.models.pretrained`).
It returns four feature levels at strides 4, 8, 16 and 32; for an input of size H x W, level ``i``
has spatial size ``(ceil(H / 2**(i+2)), ceil(W / 2**(i+2)))`` (the overlapping patch embeddings pad
symmetrically), so any input size works, e.g. 97 x 131.
"""

from __future__ import annotations

import torch
from transformers import SegformerConfig, SegformerModel

from ..errors import ConfigError, DataError

# Standard MiT sizes (SegFormer, Xie et al. 2021, Table 6 / the nvidia/mit-b* hub configs).
# All share patch sizes (7, 3, 3, 3), strides (4, 2, 2, 2), sr ratios (8, 4, 2, 1), mlp ratio 4.
# "mit-tiny" is ours: a much smaller MiT for the CPU benchmark and the tests.
_MIT_WIDE = [64, 128, 320, 512]
_MIT_HEADS = [1, 2, 5, 8]
MIT_ARCHS: dict[str, dict] = {
    "mit-tiny": dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 2, 4]),
    "mit-b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], num_attention_heads=_MIT_HEADS),
    "mit-b1": dict(hidden_sizes=_MIT_WIDE, depths=[2, 2, 2, 2], num_attention_heads=_MIT_HEADS),
    "mit-b2": dict(hidden_sizes=_MIT_WIDE, depths=[3, 4, 6, 3], num_attention_heads=_MIT_HEADS),
    "mit-b3": dict(hidden_sizes=_MIT_WIDE, depths=[3, 4, 18, 3], num_attention_heads=_MIT_HEADS),
    "mit-b4": dict(hidden_sizes=_MIT_WIDE, depths=[3, 8, 27, 3], num_attention_heads=_MIT_HEADS),
    "mit-b5": dict(hidden_sizes=_MIT_WIDE, depths=[3, 6, 40, 3], num_attention_heads=_MIT_HEADS),
}

#: stride of each of the four MiT feature levels
LEVEL_STRIDES = (4, 8, 16, 32)


def mit_config(backbone: str, drop_path_rate: float = 0.1) -> SegformerConfig:
    """The :class:`SegformerConfig` of a named MiT backbone (``mit-tiny``, ``mit-b0`` ... ``mit-b5``).

    ``drop_path_rate`` 0.1 is DAFormer's setting for MiT-B5.
    """
    if backbone not in MIT_ARCHS:
        raise ConfigError(f"model.backbone: '{backbone}' is not one of {', '.join(MIT_ARCHS)}")
    arch = MIT_ARCHS[backbone]
    return SegformerConfig(
        num_channels=3,
        num_encoder_blocks=4,
        hidden_sizes=list(arch["hidden_sizes"]),
        depths=list(arch["depths"]),
        num_attention_heads=list(arch["num_attention_heads"]),
        sr_ratios=[8, 4, 2, 1],
        patch_sizes=[7, 3, 3, 3],
        strides=[4, 2, 2, 2],
        mlp_ratios=[4, 4, 4, 4],
        drop_path_rate=drop_path_rate,
        reshape_last_stage=True,
    )


def build_encoder(backbone: str, drop_path_rate: float = 0.1) -> SegformerModel:
    """A randomly initialised MiT encoder; load weights with ``pretrained.load_backbone_weights``."""
    return SegformerModel(mit_config(backbone, drop_path_rate))


def encoder_channels(encoder: SegformerModel) -> list[int]:
    """Channels of the four feature levels, e.g. [64, 128, 320, 512] for MiT-B5."""
    return list(encoder.config.hidden_sizes)


def level_of_stride(stride: int) -> int:
    """Index of the MiT feature level with this stride (4 -> 0, ..., 32 -> 3)."""
    if stride not in LEVEL_STRIDES:
        raise ConfigError(f"model.skip_strides: each must be one of {LEVEL_STRIDES}, got {stride}")
    return LEVEL_STRIDES.index(stride)


def min_input_size(encoder: SegformerModel) -> int:
    """The smallest image side the encoder accepts: the sequence-reduction conv of stage i (kernel
    sr_i) needs ceil(H / s_i) >= sr_i, i.e. 29 pixels for the standard MiT (sr 8 at stride 4)."""
    cfg = encoder.config
    return max((sr - 1) * s + 1 for sr, s in zip(cfg.sr_ratios, LEVEL_STRIDES))


def encoder_features(encoder: SegformerModel, x: torch.Tensor) -> list[torch.Tensor]:
    """The four MiT feature maps of a normalised image batch ``x`` (B, 3, H, W).

    Returns ``[f1, f2, f3, f4]`` with shapes (B, C_i, ceil(H/s_i), ceil(W/s_i)), s = 4, 8, 16, 32.
    Raises :class:`DataError` for a batch of the wrong shape or images smaller than
    :func:`min_input_size`.
    """
    if x.ndim != 4 or x.shape[1] != encoder.config.num_channels:
        raise DataError(f"expected an image batch (B, {encoder.config.num_channels}, H, W), "
                        f"got shape {tuple(x.shape)}")
    smallest = min_input_size(encoder)
    if min(x.shape[-2:]) < smallest:
        raise DataError(f"images of {x.shape[-2]}x{x.shape[-1]} pixels are too small for the MiT encoder, "
                        f"which needs at least {smallest}x{smallest}; resize or pad them")
    out = encoder(pixel_values=x, output_hidden_states=True, return_dict=True)
    feats = list(out.hidden_states)
    if len(feats) != 4 or feats[-1].ndim != 4:  # guards against a config without reshape_last_stage
        raise RuntimeError(f"expected 4 feature maps of rank 4 from the MiT encoder, got "
                           f"{[tuple(f.shape) for f in feats]}")
    return feats
