"""Load trained models for inference from a run folder, a last.ckpt or a save_pretrained folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from ..config import Config, from_dict
from ..errors import CheckpointError
from ..io import build_model_from_config, load_checkpoint, load_pretrained, read_training_info, resolve_checkpoint


@dataclass
class LoadedModels:
    models: dict[str, nn.Module]  # "model" and/or "ema"
    config: Config | None  # the training config, when the checkpoint has one
    inference_path: str  # "direct" (D(z0)) or "diffusion" (D(sample(z0)))
    method: str
    # (W, H) the evaluation images were resized to in training (data.val.resize); None: native size
    val_resize: list[int] | None = None
    # data.val.keep_ratio: resized by one factor within val_resize's bounds (iccld.data.transforms.fit_size)
    val_keep_ratio: bool = False


def load_models(checkpoint: str, which: str = "ema") -> LoadedModels:
    """``which`` is model | ema | both. A save_pretrained folder holds one model (the EMA model of a
    finished run), which serves every ``which`` but ``both``."""
    ref = resolve_checkpoint(checkpoint)
    wanted = ("model", "ema") if which == "both" else (which,)
    if ref.kind == "pretrained":
        if which == "both":
            raise CheckpointError(f"{ref.path}: a save_pretrained folder holds one model; use --which ema "
                                  "or point to the run folder's last.ckpt for both")
        model = load_pretrained(ref.path)
        info = read_training_info(ref.path)
        config = _exported_config(ref.path)
        resize = config.data.val.resize if config is not None else info.get("val_resize")
        keep_ratio = config.data.val.keep_ratio if config is not None else bool(info.get("val_keep_ratio", False))
        return LoadedModels({which: model.eval()}, config, info.get("inference_path", "diffusion"),
                            info.get("method", "unknown"), resize, keep_ratio)
    state = load_checkpoint(ref.path)
    config = from_dict(state["config"], str(ref.path))
    models = {}
    for label in wanted:
        model = build_model_from_config(config.model, load_weights=False)
        try:
            model.load_state_dict(state["ema_model" if label == "ema" else "model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{ref.path}: weights do not fit the saved model config "
                                  f"({str(exc).splitlines()[0][:160]})") from None
        models[label] = model.eval()
    # the checkpoint says which method made it and its path; one saved before it did: ask the method
    made_by = state.get("method") or _describe(config.method.name)
    return LoadedModels(models, config, made_by["inference_path"], made_by["name"], config.data.val.resize,
                        config.data.val.keep_ratio)


def _exported_config(folder: Path) -> Config | None:
    """The training config an ``iccld export`` folder (or its Hub snapshot) carries as config.yaml;
    None for a plain save_pretrained folder such as a run's final/."""
    path = folder / "config.yaml"
    if not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return from_dict(raw or {}, str(path))


def _describe(name: str) -> dict:
    from ..methods import method_class

    return method_class(name).describe()


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
