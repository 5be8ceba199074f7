"""A ``ModelConfig`` -> the network: the one place that reads the model section of a config.

:func:`build_model_from_config` checks the settings (errors name the config field), builds the
backbone by name, loads its ImageNet weights when ``model.pretrained`` is set, and passes plain
arguments to :func:`iccld.models.build_model`.
"""

from __future__ import annotations

from ..sections import ModelConfig
from ..diffusion import BETA_SCHEDULES, PREDICTION_TYPES
from ..errors import ConfigError, one_of
from ..models import BACKBONES, DECODERS, ICCLD, build_backbone, build_model
from ..models.latent_head import NORMS
from .backbone_weights import load_backbone_weights


# the strides any backbone's feature levels may have; each backbone has some of them (checked once
# it is built, :func:`_check_strides`)
STRIDES = (4, 8, 16, 32)
# the levels DAFormer's head fuses: all of every encoder's four
DAFORMER_SKIP_STRIDES = (4, 8, 16, 32)


def check_model_config(cfg: ModelConfig) -> None:
    """Raise :class:`ConfigError` naming the field for a setting no network can be built from.

    The one check of a ``ModelConfig``: the config loader calls it before any heavy work (so
    ``iccld train`` fails at once), and :func:`build_model_from_config` for a config read from a
    file. The choices are the registries' (:data:`iccld.models.BACKBONES`, :data:`~iccld.models.DECODERS`,
    the schedules and prediction types of :mod:`iccld.diffusion`)."""
    one_of("model.backbone", cfg.backbone, tuple(BACKBONES))
    if cfg.num_classes < 1:
        raise ConfigError(f"model.num_classes: must be >= 1, got {cfg.num_classes}")
    if cfg.latent_channels < 1:
        raise ConfigError(f"model.latent_channels: must be >= 1, got {cfg.latent_channels}")
    one_of("model.prediction_type", cfg.prediction_type, PREDICTION_TYPES)
    one_of("model.beta_schedule", cfg.beta_schedule, BETA_SCHEDULES)
    if not isinstance(cfg.sampling_steps, int) or not 1 <= cfg.sampling_steps <= cfg.num_train_timesteps:
        raise ConfigError(f"model.sampling_steps: must be in 1..{cfg.num_train_timesteps} "
                          f"(model.num_train_timesteps), got {cfg.sampling_steps}")
    if cfg.denoiser_residual and cfg.prediction_type != "sample":
        raise ConfigError(f"model.denoiser_residual: only for model.prediction_type=sample (got "
                          f"{cfg.prediction_type}); set model.denoiser_residual=false")
    if cfg.latent_stride not in STRIDES:
        raise ConfigError(f"model.latent_stride: must be 4, 8, 16 or 32, got {cfg.latent_stride}")
    bad = [s for s in cfg.skip_strides if s not in STRIDES]
    if bad:
        raise ConfigError(f"model.skip_strides: each must be 4, 8, 16 or 32, got {bad}")
    if len(set(cfg.skip_strides)) != len(cfg.skip_strides):
        raise ConfigError(f"model.skip_strides: repeated strides in {cfg.skip_strides}")
    one_of("model.decoder", cfg.decoder, tuple(DECODERS))
    if cfg.decoder_norm:
        one_of("model.decoder_norm", cfg.decoder_norm, NORMS)
    if cfg.decoder_channels < 1:
        raise ConfigError(f"model.decoder_channels: must be >= 1, got {cfg.decoder_channels}")
    if not 0 <= cfg.dropout < 1:
        raise ConfigError(f"model.dropout: must be in [0, 1), got {cfg.dropout}")
    if (cfg.decoder == "daformer" and cfg.inter_coder
            and sorted(cfg.skip_strides) != list(DAFORMER_SKIP_STRIDES)):
        raise ConfigError(f"model.skip_strides: the daformer decoder fuses all four encoder levels, as DAFormer's "
                          f"head does; set model.skip_strides=[4,8,16,32] (got {list(cfg.skip_strides)})")


def _check_strides(cfg: ModelConfig, strides: tuple[int, ...]) -> None:
    if cfg.latent_stride not in strides:
        raise ConfigError(f"model.latent_stride: must be one of {strides} (the strides of {cfg.backbone}), "
                          f"got {cfg.latent_stride}")
    for s in cfg.skip_strides:
        if s not in strides:
            raise ConfigError(f"model.skip_strides: each must be one of {strides} (the strides of "
                              f"{cfg.backbone}), got {s}")


def build_model_from_config(cfg: ModelConfig, load_weights: bool = True) -> ICCLD:
    """The ICCLD network described by ``cfg``; loads ``cfg.pretrained`` into E when set and
    ``load_weights`` (a checkpoint that holds every weight passes False). The network records
    ``cfg`` as ``model.config``, which :func:`iccld.io.save_pretrained` writes."""
    check_model_config(cfg)
    encoder = build_backbone(cfg.backbone)
    _check_strides(cfg, tuple(encoder.strides))
    if cfg.pretrained and load_weights:
        load_backbone_weights(encoder, cfg.pretrained)
    try:
        model = _build(cfg, encoder)
    except ValueError as exc:  # the network names the argument, which is the field of ModelConfig
        raise ConfigError(f"model.{exc}") from None
    model.config = cfg
    return model


def _build(cfg: ModelConfig, encoder) -> ICCLD:
    return build_model(
        encoder, num_classes=cfg.num_classes, latent_channels=cfg.latent_channels,
        latent_stride=cfg.latent_stride, skip_strides=list(cfg.skip_strides), inter_coder=cfg.inter_coder,
        decoder=cfg.decoder, decoder_channels=cfg.decoder_channels, decoder_norm=cfg.decoder_norm,
        dropout=cfg.dropout, latent_norm=cfg.latent_norm,
        unet_channels=list(cfg.unet_channels), unet_layers_per_block=cfg.unet_layers_per_block,
        unet_attention=cfg.unet_attention, unet_mid_block=cfg.unet_mid_block,
        unet_norm_groups=cfg.unet_norm_groups, denoiser_residual=cfg.denoiser_residual,
        num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type, sampling_steps=cfg.sampling_steps, norm_eval=cfg.norm_eval,
        multires=_multires_settings(cfg))


def _multires_settings(cfg: ModelConfig) -> dict | None:
    """``model.multires`` as :func:`build_model`'s ``multires`` argument (None while not enabled)."""
    mr = cfg.multires
    if not mr.enabled:
        return None
    return dict(context_scale=mr.context_scale, detail_crop=tuple(mr.detail_crop), crop_divisible=mr.crop_divisible,
                detail_loss_weight=mr.detail_loss_weight, classwise_attention=mr.classwise_attention,
                attention_channels=mr.attention_channels)
