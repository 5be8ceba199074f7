"""Training objectives. Each is a :class:`~iccld.methods.base.Method` run by the one trainer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import Config, ModelConfig
from ..errors import CheckpointError, ConfigError
from .base import Method
from .stage1 import Stage1
from .stage2 import Stage2
from .supervised import Oracle, SourceOnly

# fields of ModelConfig that change the shape or the meaning of some weight (denoiser_residual: what
# eps_theta's output is added to); the rest (pretrained, dropout,
# sampling_steps) may differ between stage 1 and stage 2
ARCHITECTURE_FIELDS = ("backbone", "num_classes", "latent_channels", "latent_stride", "inter_coder",
                       "skip_strides", "decoder_channels", "unet_channels", "unet_layers_per_block",
                        "unet_attention", "unet_mid_block", "unet_norm_groups", "latent_norm", "denoiser_residual")


def _stage1_weights(config: Config) -> dict:
    """State dict of the stage-1 model stage 2 starts from, after checking the architecture."""
    from ..models import ICCLD
    from ..training.checkpoint import load_checkpoint, read_training_info, resolve_checkpoint

    where = config.method.stage1_checkpoint
    try:
        ref = resolve_checkpoint(where)
    except CheckpointError as exc:
        raise ConfigError(f"method.stage1_checkpoint: {exc}") from None
    if ref.kind == "ckpt":
        state = load_checkpoint(ref.path)
        model_cfg = state["config"]["model"]
        done, planned = state.get("iteration"), state["config"]["trainer"]["max_iters"]
        if Path(where).is_dir() and done is not None and done < planned:
            raise ConfigError(f"method.stage1_checkpoint: the stage-1 run {where} is not finished (iteration "
                              f"{done} of {planned}); resume it with `iccld train --resume`, or name "
                              f"{ref.path} itself to start stage 2 from this intermediate checkpoint")
        info = {"method": state["config"]["method"]["name"]}
        weights = state["ema_model" if config.method.stage1_weights == "ema" else "model"]
    else:
        loaded = ICCLD.from_pretrained(ref.path)
        model_cfg, weights = dataclasses.asdict(loaded.config), loaded.state_dict()
        info = read_training_info(ref.path)
    if info.get("method") == "stage2":
        raise ConfigError(f"method.stage1_checkpoint: {ref.path} is a stage-2 run; name a stage-1 run")
    current = dataclasses.asdict(config.model)
    defaults = dataclasses.asdict(ModelConfig())  # a field added since the stage-1 run had its default
    diff = [f"{k}: {model_cfg.get(k, defaults[k])} vs {current[k]}" for k in ARCHITECTURE_FIELDS
            if model_cfg.get(k, defaults[k]) != current[k]]
    if diff:
        raise ConfigError(f"method.stage1_checkpoint: {ref.path} has a different architecture "
                          f"({'; '.join(diff)}); use the same model settings as stage 1")
    return weights


def build_method(config: Config) -> Method:
    """Config -> method with its networks. The only place method settings are read."""
    from ..models import PatchDiscriminator, build_model

    m = config.method
    model = build_model(config.model)
    if m.name == "source_only":
        return SourceOnly(model, ema_alpha=m.ema_alpha)
    if m.name == "oracle":
        return Oracle(model, ema_alpha=m.ema_alpha)
    stage1_kwargs = dict(ema_alpha=m.ema_alpha, pseudo_threshold=m.pseudo_threshold,
                         pl_crop_top=m.pl_crop_top, pl_crop_bottom=m.pl_crop_bottom, mix_mode=m.mix,
                         color_jitter_strength=m.color_jitter_strength,
                         color_jitter_p=m.color_jitter_p, blur=m.blur)
    if m.name == "stage1":
        return Stage1(model, **stage1_kwargs)
    if m.name == "stage2":
        model.load_state_dict(_stage1_weights(config))
        disc_in = config.model.latent_channels if m.adversarial_input == "latent" else config.model.decoder_channels
        disc = PatchDiscriminator(disc_in, m.disc_channels) if m.adversarial_weight > 0 else None
        return Stage2(model, disc, diffusion_weight=m.diffusion_weight, seg_weight=m.seg_weight,
                      adversarial_weight=m.adversarial_weight, freeze_decoder=m.freeze_decoder,
                      pseudo_label_path=m.pseudo_label_path, decoder_lr_mult=m.decoder_lr_mult,
                      adversarial_input=m.adversarial_input,
                      **stage1_kwargs)
    raise ConfigError(f"method.name: unknown method '{m.name}' (choices: source_only, stage1, stage2, oracle)")


__all__ = ["Method", "SourceOnly", "Oracle", "Stage1", "Stage2", "build_method", "ARCHITECTURE_FIELDS"]
