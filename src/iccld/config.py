"""Typed configuration: one dataclass per component, YAML files, dotted command-line overrides.

Defaults live here and nowhere else. A YAML file may name one ``base:`` file (relative to itself);
the base may not have a base of its own. Overrides are ``key.sub=value`` strings. Unknown keys and
values of the wrong type raise :class:`~iccld.errors.ConfigError` naming the key and the closest
valid one. :func:`validate` checks values that are well-typed but impossible, before any heavy work.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf  # noqa: F401  (MISSING re-exported)
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError


@dataclass
class DatasetConfig:
    """One dataset split. ``kind`` is gta5 | synthia | cityscapes | folder."""

    kind: str = "cityscapes"
    root: str = ""
    split: str = "train"  # cityscapes: train | val | test; folder datasets: a sub-folder or ""
    # (W, H) the image is resized to before cropping; null keeps the original size.
    resize: Optional[list[int]] = None
    # folder datasets only: path of the YAML that describes the layout and label map
    spec: str = ""


@dataclass
class DataConfig:
    source: DatasetConfig = field(default_factory=lambda: DatasetConfig(kind="gta5", resize=[1280, 720]))
    target: DatasetConfig = field(default_factory=lambda: DatasetConfig(kind="cityscapes", resize=[1024, 512]))
    val: DatasetConfig = field(
        default_factory=lambda: DatasetConfig(kind="cityscapes", split="val", resize=[1024, 512]))
    crop_size: list[int] = field(default_factory=lambda: [512, 512])  # (H, W)
    cat_max_ratio: float = 0.75  # at most this share of a crop may be one class (DAFormer)
    flip: bool = True
    num_workers: int = 4
    skip_bad: bool = False  # skip unreadable image/label pairs instead of stopping, and count them
    # rare class sampling of the source (needs sample_class_stats.json from `iccld prepare`)
    rcs_temperature: float = 0.01  # 0 disables
    rcs_min_pixels: int = 3000
    rcs_min_crop_ratio: float = 0.5


@dataclass
class ModelConfig:
    """The ICCLD network (see docs/method.md). Presets fill these in, see iccld.models.presets."""

    backbone: str = "mit-b5"  # mit-b0 .. mit-b5, or mit-tiny for the CPU benchmark
    pretrained: str = ""  # hub id (nvidia/mit-b5), a local folder or a .safetensors/.bin file
    num_classes: int = 19
    latent_channels: int = 32  # Cz
    latent_stride: int = 16  # s: z0 is (B, Cz, H/s, W/s)
    inter_coder: bool = True  # the inter-coder connection: E's shallow features into D
    skip_strides: list[int] = field(default_factory=lambda: [4, 8, 16])
    decoder_channels: int = 256
    dropout: float = 0.1
    # denoiser eps_theta (diffusers.UNet2DModel)
    unet_channels: list[int] = field(default_factory=lambda: [128, 256, 256])
    unet_layers_per_block: int = 2
    unet_attention: bool = True  # self-attention in the U-Net's middle block (diffusers' default)
    unet_mid_block: bool = True  # the U-Net's middle block (two ResNet blocks at the lowest resolution)
    # GroupNorm groups in the U-Net; 0: the most (<= 32) that leave every level >= 4 channels per group.
    # One channel per group would erase the per-channel timestep shift: the U-Net could not see t.
    unet_norm_groups: int = 0
    latent_norm: bool = True  # normalise each latent vector of z0 over its Cz channels
    # eps_theta's output is added to its condition z0 (prediction type "sample" only), with a
    # zero-initialised output layer: the diffusion path starts exactly at the stage-1 path D(z0)
    # and stage 2 learns corrections of it
    denoiser_residual: bool = True
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "sample"  # sample | epsilon | v_prediction
    sampling_steps: int = 4  # K, DDIM steps at inference


@dataclass
class MethodConfig:
    """The training objective. ``name`` is source_only | stage1 | stage2 | oracle."""

    name: str = "stage1"
    ema_alpha: float = 0.999
    pseudo_threshold: float = 0.968
    pl_crop_top: int = 15  # rows of the target crop left out of the pseudo-label loss
    pl_crop_bottom: int = 120
    mix: str = "class"  # class (ClassMix) | none
    color_jitter_strength: float = 0.2
    color_jitter_p: float = 0.2  # as DAFormer: jitter is *skipped* with this probability
    blur: bool = True
    # stage 2
    stage1_checkpoint: str = ""  # run folder, last.ckpt or save_pretrained folder of stage 1
    stage1_weights: str = "ema"  # which stage-1 weights stage 2 starts from: ema | model
    diffusion_weight: float = 1.0
    seg_weight: float = 1.0
    adversarial_weight: float = 1e-3  # 0 gives the "without adversarial term" ablation
    freeze_decoder: bool = True
    decoder_lr_mult: float = 1.0  # with freeze_decoder=false: D's lr is the heads' lr x this
    pseudo_label_path: str = "direct"  # direct: D(z0) | diffusion: D(sample(z0))
    # what the discriminator sees: latent = z0_hat (the paper) | fused = D's fused features of z0_hat
    # and the inter-coder skips, so the alignment also covers what the skip path brings into D
    adversarial_input: str = "latent"
    disc_channels: int = 64
    disc_lr: float = 1e-4
    disc_betas: list[float] = field(default_factory=lambda: [0.9, 0.99])


@dataclass
class OptimConfig:
    lr: float = 6e-5
    head_lr_mult: float = 10.0  # heads (everything but the backbone) train at lr x this
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    poly_power: float = 1.0
    min_lr: float = 0.0
    grad_clip: float = 0.0  # 0 disables


@dataclass
class TrainerConfig:
    max_iters: int = 40000
    batch_size: int = 2  # per device, for each of source and target
    seed: int = 0
    eval_interval: int = 4000
    checkpoint_interval: int = 1000
    log_interval: int = 50
    mixed_precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | no | bf16 | fp16
    eval_slide: bool = False  # sliding-window evaluation instead of whole image
    eval_max_images: int = 0  # 0 = the whole split; periodic evaluation only
    skip_nonfinite: int = 0  # skip up to this many batches with a non-finite loss, then stop
    deterministic: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


# ----------------------------------------------------------------------------------------------
# loading


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        keys.append(name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys.extend(_all_keys(type(default), name + "."))
    return keys


def _suggest(key: str) -> str:
    keys = _all_keys(Config)
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    if not close:  # try the last component alone, e.g. "lrr" -> optim.lr
        leaf = key.split(".")[-1]
        leaves = {k.split(".")[-1]: k for k in keys}
        hit = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
        close = [leaves[hit[0]]] if hit else []
    return f" (did you mean '{close[0]}'?)" if close else ""


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data, model, ...) at the top")
    return data


def _merge_checked(base: DictConfig, update: Any, origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, update)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or ""
        msg = str(exc).splitlines()[0]
        if "not in struct" in msg or "Key '" in msg and "not in" in msg:
            raise ConfigError(f"{origin}: unknown key '{key}'{_suggest(key)}") from None
        raise ConfigError(f"{origin}: bad value for '{key}': {msg}") from None


def _resolve_relative(raw: dict, folder: Path) -> None:
    """Make paths in the YAML that start with ./ or ../ relative to the YAML file."""
    method = raw.get("method") or {}
    ckpt = method.get("stage1_checkpoint") if isinstance(method, dict) else None
    if isinstance(ckpt, str) and ckpt.startswith(("./", "../")):
        method["stage1_checkpoint"] = str((folder / ckpt).resolve())


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (with at most one ``base:``), apply ``key=value`` overrides, validate."""
    cfg = OmegaConf.structured(Config)
    if path is not None:
        path = Path(path)
        raw = _read_yaml(path)
        base_name = raw.pop("base", None)
        if base_name is not None:
            base_path = (path.parent / base_name).resolve()
            base_raw = _read_yaml(base_path)
            if "base" in base_raw:
                raise ConfigError(f"{base_path}: a base config may not have a 'base:' of its own "
                                  "(one level of inheritance only)")
            cfg = _merge_checked(cfg, base_raw, str(base_path))
        cfg = _merge_checked(cfg, raw, str(path))
    config: Config = OmegaConf.to_object(_apply_overrides(cfg, overrides))  # type: ignore[assignment]
    validate(config)
    return config


def with_overrides(config: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """``config`` (e.g. the one saved with a checkpoint) with ``key=value`` overrides, validated."""
    cfg = _merge_checked(OmegaConf.structured(Config), to_dict(config), "config")
    result: Config = OmegaConf.to_object(_apply_overrides(cfg, overrides))  # type: ignore[assignment]
    validate(result)
    return result


def _apply_overrides(cfg: DictConfig, overrides: list[str] | tuple[str, ...]) -> DictConfig:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value, e.g. trainer.max_iters=100")
        key, _, value = item.partition("=")
        key = key.strip()
        try:
            OmegaConf.select(cfg, key, throw_on_missing=False)
            node_exists = key in _all_keys(Config)
        except OmegaConfBaseException:
            node_exists = False
        if not node_exists:
            raise ConfigError(f"override '{item}': unknown key '{key}'{_suggest(key)}")
        if value.strip() == "":  # `model.pretrained=` means the empty string, not null
            value = "''"
        cfg = _merge_checked(cfg, OmegaConf.from_dotlist([f"{key}={value}"]), f"override '{item}'")
    return cfg


def to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def from_dict(data: dict, origin: str = "checkpoint") -> Config:
    cfg = _merge_checked(OmegaConf.structured(Config), data, origin)
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def save_config(config: Config, path: str | Path) -> None:
    from .utils import atomic_write_text

    atomic_write_text(Path(path), to_yaml(config))


# ----------------------------------------------------------------------------------------------
# validation of values that are well-typed but impossible

METHODS = ("source_only", "stage1", "stage2", "oracle")
DATASET_KINDS = ("gta5", "synthia", "cityscapes", "folder")
BACKBONES = ("mit-tiny", "mit-b0", "mit-b1", "mit-b2", "mit-b3", "mit-b4", "mit-b5")


def _choice(field_name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{field_name}: '{value}' is not one of {', '.join(choices)}{hint}")


def _positive(field_name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{field_name}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def validate(c: Config) -> None:
    """Raise ConfigError for values no run could use."""
    _choice("method.name", c.method.name, METHODS)
    _choice("model.backbone", c.model.backbone, BACKBONES)
    for part in ("source", "target", "val"):
        _choice(f"data.{part}.kind", getattr(c.data, part).kind, DATASET_KINDS)
        resize = getattr(c.data, part).resize
        if resize is not None and (len(resize) != 2 or min(resize) <= 0):
            raise ConfigError(f"data.{part}.resize: expected [width, height] > 0, got {resize}")
    if len(c.data.crop_size) != 2 or min(c.data.crop_size) <= 0:
        raise ConfigError(f"data.crop_size: expected [height, width] > 0, got {c.data.crop_size}")
    for part in ("source", "target"):
        resize = getattr(c.data, part).resize
        if resize is not None and (c.data.crop_size[0] > resize[1] or c.data.crop_size[1] > resize[0]):
            raise ConfigError(
                f"data.crop_size: crop {c.data.crop_size[0]}x{c.data.crop_size[1]} (HxW) is larger than "
                f"data.{part}.resize {resize[0]}x{resize[1]} (WxH); lower the crop or raise the resize")
    if not 0 < c.data.cat_max_ratio <= 1:
        raise ConfigError(f"data.cat_max_ratio: must be in (0, 1], got {c.data.cat_max_ratio}")
    _positive("data.rcs_temperature", c.data.rcs_temperature, allow_zero=True)
    _positive("data.num_workers", c.data.num_workers, allow_zero=True)
    _positive("trainer.max_iters", c.trainer.max_iters)
    _positive("trainer.batch_size", c.trainer.batch_size)
    _positive("trainer.eval_interval", c.trainer.eval_interval, allow_zero=True)
    _positive("trainer.checkpoint_interval", c.trainer.checkpoint_interval)
    _positive("trainer.log_interval", c.trainer.log_interval)
    _choice("trainer.mixed_precision", c.trainer.mixed_precision, ("auto", "no", "bf16", "fp16"))
    _positive("optim.lr", c.optim.lr)
    _positive("optim.warmup_iters", c.optim.warmup_iters, allow_zero=True)
    _positive("model.latent_channels", c.model.latent_channels)
    _choice("model.prediction_type", c.model.prediction_type, ("sample", "epsilon", "v_prediction"))
    if not 1 <= c.model.sampling_steps <= c.model.num_train_timesteps:
        raise ConfigError(f"model.sampling_steps: must be in 1..{c.model.num_train_timesteps} "
                          f"(model.num_train_timesteps), got {c.model.sampling_steps}")
    if c.model.denoiser_residual and c.model.prediction_type != "sample":
        raise ConfigError(f"model.denoiser_residual: only for model.prediction_type=sample (got "
                          f"{c.model.prediction_type}); set model.denoiser_residual=false")
    if c.model.latent_stride not in (4, 8, 16, 32):
        raise ConfigError(f"model.latent_stride: must be 4, 8, 16 or 32, got {c.model.latent_stride}")
    bad = [s for s in c.model.skip_strides if s not in (4, 8, 16, 32)]
    if bad:
        raise ConfigError(f"model.skip_strides: each must be 4, 8, 16 or 32, got {bad}")
    if not 0 <= c.method.ema_alpha < 1:
        raise ConfigError(f"method.ema_alpha: must be in [0, 1), got {c.method.ema_alpha}")
    if not 0 <= c.method.pseudo_threshold <= 1:
        raise ConfigError(f"method.pseudo_threshold: must be in [0, 1], got {c.method.pseudo_threshold}")
    _choice("method.mix", c.method.mix, ("class", "none"))
    _choice("method.stage1_weights", c.method.stage1_weights, ("ema", "model"))
    _choice("method.pseudo_label_path", c.method.pseudo_label_path, ("direct", "diffusion"))
    _choice("method.adversarial_input", c.method.adversarial_input, ("latent", "fused"))
    if c.method.name == "stage2" and not c.method.stage1_checkpoint:
        raise ConfigError("method.stage1_checkpoint: stage2 starts from a stage-1 run; set it to that "
                          "run's folder, its last.ckpt or its final/ folder")
