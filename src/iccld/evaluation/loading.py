"""Load trained models for inference from whatever names one (:func:`iccld.io.load_source`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import Config, from_dict
from ..errors import CheckpointError
from ..io import build_model_from_config, load_pretrained, load_source
from ..io.run_folder import CHECKPOINT, CONFIG, Provenance, read_folder_config, read_provenance


@dataclass
class LoadedModels:
    models: dict[str, nn.Module]  # "model" and/or "ema"
    config: Config | None  # the training config, when the checkpoint has one
    inference_path: str  # "direct" (D(z0)) or "diffusion" (D(sample(z0)))
    method: str
    # (W, H) the evaluation images were resized to in training (data.val.resize); None: native size
    val_resize: list[int] | None = None
    val_keep_ratio: bool = True  # data.val.keep_ratio: fit into val_resize keeping the aspect ratio


def load_models(checkpoint: str, which: str = "ema") -> LoadedModels:
    """``which`` is model | ema | both. A save_pretrained folder holds one model (the EMA model of a
    finished run), which serves every ``which`` but ``both``; so does a ``.onnx`` file of ``iccld
    export --onnx`` (run with onnxruntime; the export's config and provenance beside it give the
    dataset config and the method)."""
    if str(checkpoint).lower().endswith(".onnx"):
        return _load_onnx(Path(checkpoint), which)
    source = load_source(checkpoint)
    wanted = ("model", "ema") if which == "both" else (which,)
    made_by = source.provenance
    if source.kind == "pretrained":
        if which == "both":
            raise CheckpointError(f"{source.path}: a save_pretrained folder holds one model; use --which ema "
                                  f"or point to the run folder's {CHECKPOINT} for both")
        model = load_pretrained(source.path)
        config = _config(source.config, source.path)
        return LoadedModels({which: model.eval()}, config, made_by.inference_path or "diffusion",
                            made_by.method or "unknown", *_val_size(config, made_by))
    config = from_dict(source.config, str(source.path))
    models = {}
    for label in wanted:
        model = build_model_from_config(config.model, load_weights=False)
        try:
            model.load_state_dict(source.weights(label))
        except RuntimeError as exc:
            raise CheckpointError(f"{source.path}: weights do not fit the saved model config "
                                  f"({str(exc).splitlines()[0][:160]})") from None
        models[label] = model.eval()
    # the checkpoint says which method made it and its path; one saved before it did: ask the method
    path = made_by.inference_path or _describe(config.method.name)["inference_path"]
    return LoadedModels(models, config, path, made_by.method, config.data.val.resize, config.data.val.keep_ratio)


def _load_onnx(file: Path, which: str) -> LoadedModels:
    from ..io.onnx import load_onnx

    if which == "both":
        raise CheckpointError(f"{file}: an ONNX file holds one model; use --which ema")
    predictor = load_onnx(file)
    config = _config(read_folder_config(file.parent), file.parent)
    made_by = read_provenance(file.parent)
    return LoadedModels({which: predictor}, config, predictor.path, made_by.method or "unknown",
                        *_val_size(config, made_by))


def _config(raw: dict | None, folder: Path) -> Config | None:
    """The training config an ``iccld export`` folder (or its Hub snapshot) carries; None for a plain
    save_pretrained folder such as a run's final/."""
    return None if raw is None else from_dict(raw, str(folder / CONFIG))


def _val_size(config: Config | None, made_by: Provenance) -> tuple[list[int] | None, bool]:
    """(data.val.resize, data.val.keep_ratio): the config's, else the provenance's."""
    if config is not None:
        return config.data.val.resize, config.data.val.keep_ratio
    return made_by.val_resize, made_by.val_keep_ratio


def _describe(name: str) -> dict:
    from ..methods import method_class

    return method_class(name).describe()


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
