"""The networks: E (a backbone + the latent head), eps_theta (U-Net) inside the latent diffusion,
D (a fusion decoder of :data:`DECODERS`), the discriminator. Tensors in, tensors out: nothing here
reads a config or a file (:mod:`iccld.io` builds a network from a ``ModelConfig`` and saves and loads it).
"""

from __future__ import annotations

from torch import nn

from ..diffusion import build_sampler, build_train_scheduler
from ..diffusion.latent import LatentDiffusion
from .backbones import BACKBONES, build_backbone, level_of_stride
from .daformer_decoder import DAFormerDecoder
from .decoder import FusionDecoder
from .denoiser import build_denoiser
from .discriminator import PatchDiscriminator
from .iccld import ICCLD, Prediction
from .latent_head import LatentHead
from .multires import MultiRes

#: ``model.decoder`` -> D's class; each takes (latent_channels, skip_channels, channels, num_classes,
#: dropout=, norm=) and has ``num_skips``, ``features``, ``classify`` and ``forward(z, skips, size)``
DECODERS: dict[str, type[nn.Module]] = {"segformer": FusionDecoder, "daformer": DAFormerDecoder}


def build_model(encoder: nn.Module, *, num_classes: int, latent_channels: int, latent_stride: int,
                skip_strides: list[int], inter_coder: bool = True, decoder: str = "segformer",
                decoder_channels: int = 256, decoder_norm: str = "", dropout: float = 0.1, latent_norm: bool = True,
                unet_channels: list[int] = (128, 256, 256), unet_layers_per_block: int = 2,
                unet_attention: bool = True, unet_mid_block: bool = True, unet_norm_groups: int = 0,
                denoiser_residual: bool = True, num_train_timesteps: int = 1000,
                beta_schedule: str = "squaredcos_cap_v2", prediction_type: str = "sample",
                sampling_steps: int = 4, fast_sampling: bool = True, norm_eval: bool = False,
                multires: dict | None = None) -> ICCLD:
    """The ICCLD network around a built backbone ``encoder`` (see :mod:`iccld.models.backbones`).

    The latent head reads the encoder's two deepest levels and D its levels at ``skip_strides``,
    whatever channels the encoder declares. The arguments mirror the fields of
    :class:`iccld.sections.ModelConfig`, which documents them; the defaults are the paper's.
    Their values are checked once, on the config, by :func:`iccld.io.check_model_config` (and the
    strides against the built encoder's by :func:`iccld.io.build_model_from_config`).
    ``multires``: None (one resolution), or the settings of HRDA's multi-resolution
    (:class:`iccld.sections.MultiResConfig`'s fields but ``enabled``); its scale-attention head, a
    1x1-fusion decoder on D's inputs, is built last, so it changes no other part's initialisation.
    """
    skip_levels = [level_of_stride(encoder, s) for s in skip_strides]
    ch = list(encoder.channels)
    latent_levels = (len(ch) - 2, len(ch) - 1)  # the two deepest levels
    latent_head = LatentHead((ch[-2], ch[-1]), latent_channels, hidden_channels=ch[-2], normalize=latent_norm)
    skip_channels = [ch[i] for i in skip_levels] if inter_coder else []
    norm = {"norm": decoder_norm} if decoder_norm else {}  # "": the decoder's own
    d = DECODERS[decoder](latent_channels, skip_channels, decoder_channels, num_classes, dropout=dropout, **norm)
    # built last, so that the denoiser's settings do not change how E and D are initialised
    denoiser = build_denoiser(latent_channels, list(unet_channels), unet_layers_per_block,
                              mid_attention=unet_attention, mid_block=unet_mid_block,
                              zero_output=denoiser_residual, groups=unet_norm_groups)
    diffusion = LatentDiffusion(denoiser, build_train_scheduler(num_train_timesteps, beta_schedule, prediction_type),
                                build_sampler(num_train_timesteps, beta_schedule, prediction_type),
                                sampling_steps=sampling_steps, residual=denoiser_residual,
                                fast_sampling=fast_sampling)
    mr = None
    if multires is not None:
        settings = dict(multires)
        outputs = num_classes if settings.pop("classwise_attention", True) else 1
        width = settings.pop("attention_channels", 256)
        if width < 1:
            raise ValueError(f"multires.attention_channels: must be >= 1, got {width}")
        attention = FusionDecoder(latent_channels, skip_channels, width, outputs, dropout=dropout)
        mr = MultiRes(attention, **settings)
    return ICCLD(encoder, latent_head, diffusion, d, skip_levels=skip_levels, inter_coder=inter_coder,
                 latent_stride=latent_stride, latent_levels=latent_levels, norm_eval=norm_eval, multires=mr)


__all__ = [
    "BACKBONES", "DAFormerDecoder", "DECODERS", "ICCLD", "FusionDecoder", "LatentDiffusion", "LatentHead",
    "MultiRes", "PatchDiscriminator", "Prediction", "build_backbone", "build_denoiser", "build_model",
]
