"""Typed configuration: one dataclass per component, YAML files, dotted command-line overrides.

The sections' defaults live in :mod:`iccld.sections` (data, model, optim, trainer) and nowhere else,
except the ``method:`` section's: each method declares its own dataclass (``Method.Config`` in
:mod:`iccld.methods`), and ``method.name`` picks it, so a method's settings are checked against that
method alone. This module sits above the methods for that reason (docs/architecture.md).

A YAML file may name a ``base:`` file, or a list of them merged in order, relative to the YAML file;
a base may have bases of its own, to any depth (a cycle is an error; a file two bases share is applied
once, at its first place). Every other path in a YAML (dataset roots, ``spec``,
``method.stage1_checkpoint``, ``model.pretrained``) is used as written: a relative one is relative to
the working directory of the command, as on the command line, so the shipped configs run from the
repository root. Overrides are ``key.sub=value`` strings. Unknown keys and values of the wrong type
raise :class:`~iccld.errors.ConfigError` naming the key and the closest valid one. :func:`validate`
checks values that are well-typed but impossible, before any heavy work.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError, did_you_mean, one_of
from .utils import asdict_without_switches
from .sections import DataConfig, DatasetConfig, ModelConfig, OptimConfig, TrainerConfig  # noqa: F401 (re-exported)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # the section of the method ``method.name`` names: its own dataclass (``Method.Config``, in
    # iccld.methods), chosen by the loader before the rest of the section is read
    method: Any = field(default_factory=lambda: method_section(None))
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


# ----------------------------------------------------------------------------------------------
# loading


def method_section(name: str | None) -> Any:
    """The default ``method:`` section of method ``name`` (None: the default method)."""
    from .methods import DEFAULT_METHOD, method_class

    name = DEFAULT_METHOD if name is None else name
    return method_class(name).Config(name=name)


def _schema(method_name: str | None) -> Config:
    return Config(method=method_section(method_name))


def _all_keys(obj: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):
        name = f"{prefix}{f.name}"
        keys.append(name)
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys.extend(_all_keys(value, name + "."))
    return keys


def _suggest(key: str, schema: Config) -> str:
    keys = _all_keys(schema)
    if key.startswith("method."):  # a setting of another method, e.g. a stage-2 key in a stage-1 config
        from .methods import METHODS

        owners = [n for n, cls in METHODS.items() if key[len("method."):] in _all_keys(cls.Config())]
        if owners:
            verb = "has" if len(owners) == 1 else "have"
            return f" (method {schema.method.name} has no such setting; {', '.join(owners)} {verb})"
    leaves = {k.split(".")[-1]: k for k in keys}  # else the last component alone, e.g. "lrr" -> optim.lr
    return did_you_mean(key, keys, cutoff=0.5) or did_you_mean(key.split(".")[-1], leaves, show=leaves)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no ``!!python`` tags) that refuses a key given twice in one mapping,
    where PyYAML would keep the last one silently (a second ``trainer:`` block replacing the first)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"'{key}' is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


# the most values a config may hold once its YAML aliases are expanded: real configs hold a few
# hundred; a "billion laughs" file of nested aliases would expand to billions in the merge
MAX_CONFIG_VALUES = 100_000


def _expanded_size(obj, memo: dict) -> int:
    """How many values ``obj`` holds with every alias expanded, in time linear in the distinct nodes."""
    if id(obj) in memo:
        return memo[id(obj)]
    children = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else ()
    memo[id(obj)] = size = 1 + sum(_expanded_size(c, memo) for c in children)
    return size


def read_yaml_text(text: str):
    """Safe YAML with unique keys (see :class:`_UniqueKeyLoader`) and a bounded expansion; raises
    yaml.YAMLError."""
    data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    size = _expanded_size(data, {})
    if size > MAX_CONFIG_VALUES:
        raise yaml.YAMLError(f"expands to {size:.3g} values through its aliases (at most {MAX_CONFIG_VALUES}; "
                             "an alias bomb?)")
    return data


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found" + (" (it is a folder; name a .yaml file)"
                                                               if path.is_dir() else ""))
    try:
        data = read_yaml_text(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a config is YAML)") from None
    if data is None or data == {}:  # an empty run would silently train the paper-scale defaults
        raise ConfigError(f"{path}: empty config (no settings, only comments or nothing); start from "
                          "one in configs/, e.g. configs/synthetic/stage1.yaml")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data, model, ...) at the top")
    return data


def _read_chain(path: Path, _stack: tuple[Path, ...] = ()) -> list[tuple[str, dict]]:
    """``path`` and its ``base:`` files, the deepest base first: [(file, its sections without base)].

    ``base:`` is one file or a list of files, merged in their order before ``path`` itself; each base
    brings its own chain. A file reached twice (two bases sharing a base) is applied once, at its
    first place, so an overlay can sit on a file whose chain it shares.
    """
    resolved = path.resolve()
    if resolved in _stack:
        cycle = " -> ".join(str(p) for p in _stack + (resolved,))
        raise ConfigError(f"{_stack[-1]}: its base: chain is a cycle ({cycle})")
    raw = _read_yaml(path)
    base = raw.pop("base", None)
    bases = [base] if isinstance(base, str) else base
    if base is not None and (not isinstance(bases, list) or not bases
                             or not all(isinstance(b, str) for b in bases)):
        raise ConfigError(f"{path}: base: must be a file name or a list of file names, got {base!r}")
    chain: list[tuple[str, dict]] = []
    seen: set[str] = set()
    for b in bases or []:
        if "\0" in b or not b.strip():
            raise ConfigError(f"{path}: base: {b!r} is not a file name")
        for origin, sections in _read_chain((path.parent / b).resolve(), _stack + (resolved,)):
            if origin not in seen:
                seen.add(origin)
                chain.append((origin, sections))
    return chain + [(str(path), raw)]


def _method_name(sections: list[dict], default: str | None = None) -> str | None:
    """The ``method.name`` the last of ``sections`` that sets one gives (None: the default method)."""
    name = default
    for raw in sections:
        method = raw.get("method")
        if isinstance(method, dict) and "name" in method:
            name = method["name"]
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"method.name: expected a method's name, got {name!r}")
    return name


def _merge_checked(base: DictConfig, update: Any, origin: str, schema: Config) -> DictConfig:
    try:
        return OmegaConf.merge(base, update)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or ""
        msg = str(exc).splitlines()[0]
        if "not in struct" in msg or "Key '" in msg and "not in" in msg:
            raise ConfigError(f"{origin}: unknown key '{key}'{_suggest(key, schema)}") from None
        raise ConfigError(f"{origin}: bad value for '{key}': {msg}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (and its ``base:`` chain), apply ``key=value`` overrides, validate."""
    return _build(_read_chain(Path(path)) if path is not None else [], overrides)


def with_overrides(config: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """``config`` (e.g. the one saved with a checkpoint) with ``key=value`` overrides, validated."""
    return _build([("config", to_dict(config))], overrides)


def _build(chain: list[tuple[str, dict]], overrides: list[str] | tuple[str, ...]) -> Config:
    """The config of the YAML sections ``chain`` ((origin, section), base first) and ``overrides``."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value, e.g. trainer.max_iters=100")
        key, _, value = item.partition("=")
        parsed.append((item, key.strip(), value))
    # the method's name first: it decides which settings the method: section may hold
    name = _method_name([raw for _, raw in chain])
    for _, key, value in parsed:
        if key == "method.name":
            name = _method_name([OmegaConf.to_container(OmegaConf.from_dotlist([f"{key}={value}"]))])
    schema = _schema(name)  # ConfigError listing the methods if the name is none of them
    cfg = OmegaConf.structured(schema)
    for origin, raw in chain:
        cfg = _merge_checked(cfg, raw, origin, schema)
    keys = set(_all_keys(schema))
    for item, key, value in parsed:
        if key not in keys:
            raise ConfigError(f"override '{item}': unknown key '{key}'{_suggest(key, schema)}")
        if value.strip() == "":  # `model.pretrained=` means the empty string, not null
            value = "''"
        cfg = _merge_checked(cfg, OmegaConf.from_dotlist([f"{key}={value}"]), f"override '{item}'", schema)
    config: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    validate(config)
    return config


def to_dict(config: Config) -> dict:
    """The config as plain data. Switches at their default (:func:`iccld.utils.switch`, in any
    section) are left out, so that a setting added later, left at its default, reproduces an earlier
    run's config exactly."""
    return asdict_without_switches(config)


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


# the one flat ``method:`` section of runs saved before each method had its own: every method's
# settings, whatever the method. Saved runs drop the keys their method does not have.
LEGACY_METHOD_KEYS = frozenset({
    "ema_alpha", "pseudo_threshold", "pl_crop_top", "pl_crop_bottom", "mix", "color_jitter_strength",
    "color_jitter_p", "blur", "stage1_checkpoint", "stage1_weights", "diffusion_weight", "seg_weight",
    "adversarial_weight", "freeze_decoder", "decoder_lr_mult", "pseudo_label_path", "adversarial_input",
    "disc_channels", "disc_lr", "disc_betas"})


def from_dict(data: dict, origin: str = "checkpoint") -> Config:
    """A config saved by iccld (a run's config.yaml, a checkpoint's ``config``), old runs included."""
    data = dict(data)
    schema = _schema(_method_name([data]))
    method = data.get("method")
    if isinstance(method, dict):
        own = set(_all_keys(schema.method))
        data["method"] = {k: v for k, v in method.items() if k in own or k not in LEGACY_METHOD_KEYS}
    cfg = _merge_checked(OmegaConf.structured(schema), data, origin, schema)
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def save_config(config: Config, path: str | Path) -> None:
    from .utils import atomic_write_text

    atomic_write_text(Path(path), to_yaml(config))


# ----------------------------------------------------------------------------------------------
# validation of values that are well-typed but impossible

MIN_IMAGE_SIDE = 32  # every encoder's coarsest feature stride: a smaller image has no deepest level


def _positive(field_name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{field_name}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _check_method_section(section: Any) -> None:
    from .methods import method_class

    cls = method_class(section.name)  # ConfigError listing the methods
    if not isinstance(section, cls.Config):
        raise ConfigError(f"method: a {type(section).__name__} section for method {section.name}, which "
                          f"reads a {cls.Config.__name__}; build the config with load_config")
    section.validate()


def _finite(d: dict, prefix: str = "") -> None:
    for k, v in d.items():
        if isinstance(v, dict):
            _finite(v, f"{prefix}{k}.")
        for item in (v if isinstance(v, list) else [v]):
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{prefix}{k}: must be a finite number, got {v}")


def validate(c: Config) -> None:
    """Raise ConfigError for values no run could use."""
    from .data.kinds import dataset_kind, kind_names  # the dataset kinds' registry
    from .io.build import check_model_config  # the one check of the model section

    _finite(dataclasses.asdict(c))  # nan and inf pass every comparison below
    _check_method_section(c.method)
    for part in ("source", "target", "val"):
        conditions, kind = getattr(c.data, part).conditions, getattr(c.data, part).kind
        declared = dataset_kind(kind, f"data.{part}.kind:")  # ConfigError listing the kinds
        if conditions is not None:
            if declared.conditions is None:
                having = kind_names("conditions")
                raise ConfigError(f"data.{part}.conditions: only {' and '.join(having)} datasets have conditions "
                                  f"(this one is {kind}); remove it")
            for value in conditions or [""]:
                one_of(f"data.{part}.conditions", value, declared.conditions)
        resize = getattr(c.data, part).resize
        if resize is not None and (len(resize) != 2 or min(resize) <= 0):
            raise ConfigError(f"data.{part}.resize: expected [width, height] > 0, got {resize}")
        if resize is not None and min(resize) < MIN_IMAGE_SIDE:
            raise ConfigError(f"data.{part}.resize: {resize[0]}x{resize[1]} (WxH) is smaller than the encoders' "
                              f"coarsest stride ({MIN_IMAGE_SIDE} px); every image would be too small to segment")
    if len(c.data.crop_size) != 2 or min(c.data.crop_size) <= 0:
        raise ConfigError(f"data.crop_size: expected [height, width] > 0, got {c.data.crop_size}")
    for part in ("source", "target"):
        resize = getattr(c.data, part).resize
        if resize is not None and (c.data.crop_size[0] > resize[1] or c.data.crop_size[1] > resize[0]):
            raise ConfigError(
                f"data.crop_size: crop {c.data.crop_size[0]}x{c.data.crop_size[1]} (HxW) is larger than "
                f"data.{part}.resize {resize[0]}x{resize[1]} (WxH); lower the crop or raise the resize")
    margins = c.data.pl_margins
    if margins is not None and (len(margins) != 4 or min(margins) < 0):
        raise ConfigError(f"data.pl_margins: expected [top, bottom, left, right] >= 0 pixels, got {margins}")
    if not 0 < c.data.cat_max_ratio <= 1:
        raise ConfigError(f"data.cat_max_ratio: must be in (0, 1], got {c.data.cat_max_ratio}")
    _positive("data.rcs_temperature", c.data.rcs_temperature, allow_zero=True)
    _positive("data.num_workers", c.data.num_workers, allow_zero=True)
    if not 0 <= c.trainer.seed < 2 ** 63:  # torch.Generator takes a 64-bit seed
        raise ConfigError(f"trainer.seed: must be in 0..2**63-1, got {c.trainer.seed}")
    _positive("trainer.max_iters", c.trainer.max_iters)
    _positive("trainer.batch_size", c.trainer.batch_size)
    _positive("trainer.eval_interval", c.trainer.eval_interval, allow_zero=True)
    _positive("trainer.checkpoint_interval", c.trainer.checkpoint_interval)
    _positive("trainer.log_interval", c.trainer.log_interval)
    one_of("trainer.mixed_precision", c.trainer.mixed_precision, ("auto", "no", "bf16", "fp16"))
    one_of("trainer.backward", c.trainer.backward, ("sum", "per_term"))
    _positive("optim.lr", c.optim.lr)
    _positive("optim.warmup_iters", c.optim.warmup_iters, allow_zero=True)
    one_of("optim.no_decay", c.optim.no_decay, ("one_dim", "norms"))
    check_model_config(c.model)
    _check_multires(c)


def _check_multires(c: Config) -> None:
    """``model.multires``: settings HRDA's two branches could not run with (only while enabled)."""
    mr = c.model.multires
    if not mr.enabled:
        return
    if not 0 < mr.context_scale <= 1:
        raise ConfigError(f"model.multires.context_scale: must be in (0, 1], got {mr.context_scale}")
    if len(mr.detail_crop) != 2 or min(mr.detail_crop) < MIN_IMAGE_SIDE:
        raise ConfigError(f"model.multires.detail_crop: expected [height, width], each >= {MIN_IMAGE_SIDE} px "
                          f"(the encoders' coarsest stride), got {mr.detail_crop}")
    crop = c.data.crop_size
    if mr.detail_crop[0] > crop[0] or mr.detail_crop[1] > crop[1]:
        raise ConfigError(f"model.multires.detail_crop: {mr.detail_crop[0]}x{mr.detail_crop[1]} (HxW) is larger than "
                          f"data.crop_size {crop[0]}x{crop[1]}; the detail crop lies inside the training crop")
    if min(crop) * mr.context_scale < MIN_IMAGE_SIDE:
        raise ConfigError(f"model.multires.context_scale: {mr.context_scale} makes the context of a "
                          f"{crop[0]}x{crop[1]} crop smaller than {MIN_IMAGE_SIDE} px; raise it or the crop")
    if not 0 <= mr.detail_loss_weight < 1:
        raise ConfigError(f"model.multires.detail_loss_weight: must be in [0, 1), got {mr.detail_loss_weight}")
    _positive("model.multires.crop_divisible", mr.crop_divisible)
    _positive("model.multires.attention_channels", mr.attention_channels)
