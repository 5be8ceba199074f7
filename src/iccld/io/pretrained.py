"""An ICCLD network as a folder: ``config.json`` (format version + the ModelConfig) and
``model.safetensors`` (every weight), as ``transformers``' ``save_pretrained`` writes a model.

:func:`save_pretrained` / :func:`load_pretrained` are the entry points; the folder needs no training
state and no network access to load (``model.pretrained`` is recorded but not re-fetched).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from ..sections import ModelConfig, MultiResConfig
from ..errors import CheckpointError
from ..models import ICCLD
from ..utils import asdict_without_switches, atomic_write_bytes, atomic_write_text
from .build import build_model_from_config
from .checkpoint import upgrade_model_state

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_pretrained(model: ICCLD, directory: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory``, each atomically. Refuses
    to overwrite a ``config.json`` that is not an ICCLD one. Returns ``directory``."""
    from safetensors.torch import save

    if not isinstance(model.config, ModelConfig):
        raise CheckpointError("this ICCLD was built without a ModelConfig; build it with "
                              "iccld.io.build_model_from_config to save it")
    directory = Path(directory)
    cfg_path = directory / CONFIG_FILE
    if cfg_path.exists() and not _is_iccld_config(cfg_path):
        raise CheckpointError(f"{cfg_path}: exists and is not an ICCLD config; not overwriting it, "
                              "choose another folder")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(directory / WEIGHTS_FILE, save(state, metadata={"format": "pt"}))
    meta = {"format": "iccld", "format_version": FORMAT_VERSION, "model": asdict_without_switches(model.config)}
    atomic_write_text(cfg_path, json.dumps(meta, indent=2) + "\n")
    return directory


def load_pretrained(directory: str | Path, map_location: str | torch.device = "cpu") -> ICCLD:
    """Rebuild a network written by :func:`save_pretrained` (also by the ``ICCLD.save_pretrained``
    of earlier versions: their weight names are upgraded on load)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg = read_model_config(directory)
    model = build_model_from_config(cfg, load_weights=False)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: not found; the folder has a config.json but no weights")
    try:
        state = load_file(str(weights), device=str(map_location))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{weights}: cannot read the weights ({type(exc).__name__}); "
                              "the file is corrupt or truncated") from None
    state = upgrade_model_state(state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or bad:
        what = (missing and f"missing {missing[0]}") or (unexpected and f"unexpected {unexpected[0]}") \
            or f"shape of {bad[0]}"
        raise CheckpointError(f"{weights}: does not match the architecture in {directory / CONFIG_FILE} "
                              f"({len(missing)} missing, {len(unexpected)} unexpected, {len(bad)} "
                              f"wrong shape; first: {what})")
    model.load_state_dict(state)
    return model.to(map_location)


def _is_iccld_config(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == "iccld"


def read_model_config(directory: str | Path) -> ModelConfig:
    """The ModelConfig stored in a :func:`save_pretrained` folder."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not found; expected a folder written by save_pretrained "
                              f"({CONFIG_FILE} + {WEIGHTS_FILE})")
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; {directory} is not a save_pretrained folder")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != "iccld" or not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{path}: not an ICCLD config (expected keys format='iccld', format_version, model)")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {version!r} is not supported by this version of "
                              f"iccld (expects {FORMAT_VERSION})")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(data["model"]) - known)
    if unknown:
        raise CheckpointError(f"{path}: unknown model config keys {unknown}; saved by a newer iccld?")
    try:
        model = dict(data["model"])
        if isinstance(model.get("multires"), dict):  # a section of its own
            model["multires"] = MultiResConfig(**model["multires"])
        return ModelConfig(**model)
    except TypeError as exc:
        raise CheckpointError(f"{path}: bad model config ({exc})") from None
