"""The networks: E (MiT + latent head), eps_theta (U-Net), D (fusion decoder), the discriminator.

:func:`build_model` is the one place that reads a :class:`~iccld.config.ModelConfig`.
"""

from __future__ import annotations

from ..config import ModelConfig
from ..diffusion import build_sampler, build_train_scheduler, check_steps
from ..errors import ConfigError
from .decoder import FusionDecoder
from .denoiser import build_denoiser
from .discriminator import PatchDiscriminator
from .encoder import LEVEL_STRIDES, build_encoder, encoder_channels, level_of_stride
from .iccld import ICCLD, Prediction, read_model_config
from .latent_head import LatentHead
from .presets import PRESETS, preset
from .pretrained import LoadReport, load_backbone_weights


def build_model(cfg: ModelConfig) -> ICCLD:
    """The ICCLD network described by ``cfg``; loads ``cfg.pretrained`` into E when set.

    Every architectural choice is a field of ``cfg``; see :class:`~iccld.config.ModelConfig`.
    """
    if cfg.num_classes < 1:
        raise ConfigError(f"model.num_classes: must be >= 1, got {cfg.num_classes}")
    if cfg.latent_channels < 1:
        raise ConfigError(f"model.latent_channels: must be >= 1, got {cfg.latent_channels}")
    if cfg.latent_stride not in LEVEL_STRIDES:
        raise ConfigError(f"model.latent_stride: must be one of {LEVEL_STRIDES}, got {cfg.latent_stride}")
    if cfg.decoder_channels < 1:
        raise ConfigError(f"model.decoder_channels: must be >= 1, got {cfg.decoder_channels}")
    if not 0 <= cfg.dropout < 1:
        raise ConfigError(f"model.dropout: must be in [0, 1), got {cfg.dropout}")
    if len(set(cfg.skip_strides)) != len(cfg.skip_strides):
        raise ConfigError(f"model.skip_strides: repeated strides in {cfg.skip_strides}")
    check_steps(cfg.sampling_steps, cfg.num_train_timesteps)
    skip_levels = [level_of_stride(s) for s in cfg.skip_strides]

    encoder = build_encoder(cfg.backbone)
    if cfg.pretrained:
        load_backbone_weights(encoder, cfg.pretrained)
    ch = encoder_channels(encoder)  # channels of the stride 4, 8, 16, 32 levels
    latent_head = LatentHead((ch[2], ch[3]), cfg.latent_channels, hidden_channels=ch[2], normalize=cfg.latent_norm)
    skip_channels = [ch[i] for i in skip_levels] if cfg.inter_coder else []
    decoder = FusionDecoder(cfg.latent_channels, skip_channels, cfg.decoder_channels, cfg.num_classes,
                            dropout=cfg.dropout)
    # built last, so that the denoiser's settings do not change how E and D are initialised
    denoiser = build_denoiser(cfg.latent_channels, list(cfg.unet_channels), cfg.unet_layers_per_block,
                              mid_attention=cfg.unet_attention, mid_block=cfg.unet_mid_block,
                              zero_output=cfg.denoiser_residual, groups=cfg.unet_norm_groups)
    scheduler = build_train_scheduler(cfg.num_train_timesteps, cfg.beta_schedule, cfg.prediction_type)
    sampler = build_sampler(cfg.num_train_timesteps, cfg.beta_schedule, cfg.prediction_type)
    return ICCLD(encoder, latent_head, denoiser, decoder, scheduler, sampler, skip_levels=skip_levels,
                 inter_coder=cfg.inter_coder, latent_stride=cfg.latent_stride,
                 sampling_steps=cfg.sampling_steps, residual=cfg.denoiser_residual, config=cfg)


__all__ = [
    "ICCLD", "FusionDecoder", "LatentHead", "LoadReport", "PRESETS", "PatchDiscriminator", "Prediction",
    "build_denoiser", "build_encoder", "build_model", "load_backbone_weights", "preset", "read_model_config",
]
