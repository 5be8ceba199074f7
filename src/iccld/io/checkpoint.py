"""The training checkpoint's schema: written atomically, read with clear errors, migrated on read.

A training checkpoint holds the complete state of a run (:class:`TrainingState`): model, EMA model,
discriminator, every optimiser and scheduler, the grad scaler, RNG states, the iteration and the
data-sampling position, the evaluation history, the method that made it and the resolved config. It
is loaded with ``torch.load(weights_only=True)``, so it contains only tensors and plain Python values.

Schema versions (the ``format`` key; :data:`FORMAT_VERSION` is the one written):

- 0: no ``format`` key (a state saved before it had one); read as 1.
- 1: the keys of :meth:`TrainingState.to_state`; ``method``, ``history``, ``skipped_nonfinite``,
  ``data`` and ``disc_scheduler`` arrived within it and may be absent (read with their defaults).

Weights saved before the latent diffusion owned eps_theta name it ``denoiser.*`` (now
``diffusion.denoiser.*``); :func:`upgrade_model_state` renames them wherever weights are read (here
and in :mod:`iccld.io.pretrained`), so the network itself knows no old layout.

Where a checkpoint lives in a run folder, and how a user names one, is :mod:`iccld.io.run_folder`'s.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ..utils import atomic_write_bytes

FORMAT_VERSION = 1
MODEL_WEIGHTS = ("model", "ema_model")  # the ICCLD state dicts of a checkpoint


@dataclass
class TrainingState:
    """Everything a run resumes from, in the checkpoint's layout (:meth:`to_state`)."""

    config: dict  # the resolved config, as iccld.config.to_dict gives it
    iteration: int
    model: dict
    ema_model: dict
    optimizer: dict
    scheduler: dict
    scaler: dict
    rng: dict  # see rng_state
    method: dict  # {"name", "inference_path"}: the method that made the run
    bad_pairs: list[str] = field(default_factory=list)  # unreadable training pairs passed over
    skipped_nonfinite: int = 0
    history: list[dict] = field(default_factory=list)  # the periodic evaluations
    discriminator: dict | None = None  # the critic, its optimiser and (poly lr) its scheduler
    disc_optimizer: dict | None = None
    disc_scheduler: dict | None = None

    def to_state(self) -> dict:
        state = {
            "config": self.config,
            "iteration": self.iteration,
            "model": self.model,
            "ema_model": self.ema_model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
            "rng": self.rng,
            "data": {"sampler_iteration": self.iteration, "bad_pairs": sorted(self.bad_pairs)},
            "skipped_nonfinite": self.skipped_nonfinite,
            "history": json.dumps(self.history),
            "method": self.method,
        }
        if self.disc_optimizer is not None:
            state["discriminator"] = self.discriminator
            state["disc_optimizer"] = self.disc_optimizer
        if self.disc_scheduler is not None:
            state["disc_scheduler"] = self.disc_scheduler
        return state

    @classmethod
    def from_state(cls, state: dict) -> "TrainingState":
        """A loaded checkpoint (any version :func:`load_checkpoint` reads) as a TrainingState."""
        return cls(config=state.get("config") or {}, iteration=int(state["iteration"]), model=state["model"],
                   ema_model=state["ema_model"], optimizer=state["optimizer"], scheduler=state["scheduler"],
                   scaler=state["scaler"], rng=state["rng"], method=state.get("method") or {},
                   bad_pairs=list(state.get("data", {}).get("bad_pairs", [])),
                   skipped_nonfinite=int(state.get("skipped_nonfinite", 0)),
                   history=json.loads(state.get("history", "[]")), discriminator=state.get("discriminator"),
                   disc_optimizer=state.get("disc_optimizer"), disc_scheduler=state.get("disc_scheduler"))


def save_checkpoint(path: Path, state: "dict | TrainingState") -> None:
    """Serialise to memory, then write through a temporary file and a rename."""
    if isinstance(state, TrainingState):
        state = state.to_state()
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **state}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path) -> dict:
    """The checkpoint at ``path`` as a dict in the current layout (older versions migrated)."""
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
    if not isinstance(state, dict) or "model" not in state or not isinstance(state.get("format", 0), int):
        raise CheckpointError(f"{path}: not an iccld training checkpoint (no 'format'/'model' entries)")
    if state.get("format", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer iccld (format {state['format']}); upgrade iccld")
    return migrate_checkpoint(state)


def migrate_checkpoint(state: dict) -> dict:
    """``state`` (any schema version) in the current layout, in place; returns it."""
    state["format"] = FORMAT_VERSION  # 0 (no key) reads as 1: the entries 1 added are optional
    for key in MODEL_WEIGHTS:
        if isinstance(state.get(key), dict):
            upgrade_model_state(state[key])
    return state


def upgrade_model_state(state: dict, prefix: str = "") -> dict:
    """Rename, in place, the keys of an ICCLD state dict (under ``prefix``) written before the latent
    diffusion owned eps_theta: ``denoiser.*`` is ``diffusion.denoiser.*`` now. Returns ``state``."""
    old, new = prefix + "denoiser.", prefix + "diffusion.denoiser."
    for key in [k for k in state if k.startswith(old)]:
        state[new + key[len(old):]] = state.pop(key)
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
