"""Checkpoints: written atomically, read with clear errors, found from whatever path a user gives.

A training checkpoint (``last.ckpt``) holds the complete state of a run: model, EMA model,
discriminator, every optimiser and scheduler, the grad scaler, RNG states, the iteration and the
data-sampling position, and the resolved config. It is loaded with ``torch.load(weights_only=True)``,
so it contains only tensors and plain Python values.

A user may name a run folder, a ``last.ckpt``, a ``save_pretrained`` folder or a Hugging Face Hub repo
id wherever a checkpoint is expected; :func:`resolve_checkpoint` tells which it is.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ..utils import atomic_write_bytes

FORMAT_VERSION = 1
CKPT_NAME = "last.ckpt"
FINAL_DIR = "final"
TRAINING_INFO = "training.json"  # beside a save_pretrained model: which method made it


def save_checkpoint(path: Path, state: dict) -> None:
    """Serialise to memory, then write through a temporary file and a rename."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **state}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint (copied before it was "
                              "complete?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (some with no message) for a truncated or foreign file
        reason = (str(exc).strip().splitlines() or [""])[0][:120]
        raise CheckpointError(f"{path}: not a readable iccld checkpoint ({type(exc).__name__}"
                              f"{': ' + reason if reason else ''}; truncated or not a checkpoint)") from None
    if not isinstance(state, dict) or "format" not in state or "model" not in state:
        raise CheckpointError(f"{path}: not an iccld training checkpoint (no 'format'/'model' entries)")
    if state["format"] > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer iccld (format {state['format']}); upgrade iccld")
    return state


# RNG states as tensors and plain values, so weights_only loading accepts them --------------------

def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# finding checkpoints --------------------------------------------------------------------------

@dataclass
class CheckpointRef:
    kind: str  # "ckpt" (a training checkpoint file) or "pretrained" (a save_pretrained folder)
    path: Path


def resolve_checkpoint(path: str | Path) -> CheckpointRef:
    """A run folder (-> its last.ckpt), a .ckpt file, a save_pretrained folder, or a Hub repo id
    ``USER/NAME[@REV]`` (-> its snapshot folder in the Hub cache; a local path of that name wins)."""
    from .hub import resolve_model_source

    path = resolve_model_source(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder (expected a run folder, a last.ckpt or a "
                              "save_pretrained folder)")
    if path.is_file():
        return CheckpointRef("ckpt", path)
    if (path / CKPT_NAME).is_file():
        return CheckpointRef("ckpt", path / CKPT_NAME)
    if (path / "config.json").is_file():
        return CheckpointRef("pretrained", path)
    if (path / FINAL_DIR / "config.json").is_file():
        return CheckpointRef("pretrained", path / FINAL_DIR)
    raise CheckpointError(f"{path}: holds neither {CKPT_NAME} nor a save_pretrained model (config.json); "
                          "point to a run folder of `iccld train` or its final/ folder")


def read_training_info(folder: Path) -> dict:
    info = Path(folder) / TRAINING_INFO
    if not info.is_file():
        return {}
    try:
        return json.loads(info.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{info}: not valid JSON ({exc})") from None
