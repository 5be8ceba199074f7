"""SegFormer's Mix Transformer (MiT) from ``transformers``: the paper's backbone.

:class:`MiT` *is* a :class:`transformers.SegformerModel` (a subclass that only adds the backbone
protocol), so its state dict keeps SegformerModel's names and ImageNet weights published as
``nvidia/mit-b0`` ... ``nvidia/mit-b5`` load into it (see :mod:`iccld.io.backbone_weights`).
It returns four feature levels at strides 4, 8, 16 and 32; for an input of size H x W, level ``i``
has spatial size ``(ceil(H / 2**(i+2)), ceil(W / 2**(i+2)))`` (the overlapping patch embeddings pad
symmetrically), so any input size works, e.g. 97 x 131.
"""

from __future__ import annotations

import torch
from transformers import SegformerConfig, SegformerModel

from ...errors import DataError
from .normalization import IMAGENET_MEAN, IMAGENET_STD

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


def mit_config(variant: str, drop_path_rate: float = 0.1) -> SegformerConfig:
    """The :class:`SegformerConfig` of a named MiT (``mit-tiny``, ``mit-b0`` ... ``mit-b5``).

    ``drop_path_rate`` 0.1 is DAFormer's setting for MiT-B5.
    """
    if variant not in MIT_ARCHS:
        raise ValueError(f"MiT variant '{variant}' is not one of {', '.join(MIT_ARCHS)}")
    arch = MIT_ARCHS[variant]
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


class MiT(SegformerModel):
    """E's backbone: a SegformerModel whose ``forward(x)`` returns its four feature maps.

    Protocol (see :mod:`iccld.models.backbones`): ``channels`` and ``strides`` of the levels,
    ``hf_class`` (the transformers class whose weights load into ``pretrained_part()``).
    """

    hf_class = SegformerModel
    strides = LEVEL_STRIDES
    input_mean = IMAGENET_MEAN  # the ImageNet weights' (and the pipeline's) normalisation
    input_std = IMAGENET_STD

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of the four feature levels, e.g. (64, 128, 320, 512) for MiT-B5."""
        return tuple(self.config.hidden_sizes)

    def pretrained_part(self) -> SegformerModel:
        return self

    @property
    def min_input_size(self) -> int:
        """The smallest image side accepted: the sequence-reduction conv of stage i (kernel sr_i)
        needs ceil(H / s_i) >= sr_i, i.e. 29 pixels for the standard MiT (sr 8 at stride 4)."""
        return max((sr - 1) * s + 1 for sr, s in zip(self.config.sr_ratios, LEVEL_STRIDES))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        """The four MiT feature maps of a normalised image batch ``x`` (B, 3, H, W).

        Returns ``[f1, f2, f3, f4]`` with shapes (B, C_i, ceil(H/s_i), ceil(W/s_i)), s = 4, 8, 16, 32.
        Raises :class:`DataError` for a batch of the wrong shape or images smaller than
        :attr:`min_input_size`.
        """
        if x.ndim != 4 or x.shape[1] != self.config.num_channels:
            raise DataError(f"expected an image batch (B, {self.config.num_channels}, H, W), "
                            f"got shape {tuple(x.shape)}")
        smallest = self.min_input_size
        if min(x.shape[-2:]) < smallest:
            raise DataError(f"images of {x.shape[-1]}x{x.shape[-2]} pixels (WxH) are too small for the MiT encoder, "
                            f"which needs at least {smallest}x{smallest}; resize or pad them")
        out = super().forward(pixel_values=x, output_hidden_states=True, return_dict=True)
        feats = list(out.hidden_states)
        if len(feats) != 4 or feats[-1].ndim != 4:  # guards against a config without reshape_last_stage
            raise RuntimeError(f"expected 4 feature maps of rank 4 from the MiT encoder, got "
                               f"{[tuple(f.shape) for f in feats]}")
        return feats


def build_mit(variant: str, drop_path_rate: float = 0.1, **config_overrides) -> MiT:
    """A randomly initialised MiT; ``config_overrides`` replace fields of its SegformerConfig
    (e.g. a tiny ``hidden_sizes`` in the tests)."""
    config = mit_config(variant, drop_path_rate)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    return MiT(config)
