"""The run folder of ``iccld train`` and every way a user names a trained model: the one module that
knows their file names, the provenance record and how to load them.

A run folder::

    RUN/
      config.yaml         the resolved config (also inside every checkpoint)
      last.ckpt           the training checkpoint (schema: :mod:`iccld.io.checkpoint`)
      logs/               TensorBoard event files (events.out.tfevents.*)
      results.json        written when the run finishes: final evaluation, history, diagnostics
      final/              the EMA model as a save_pretrained folder (config.json, model.safetensors)
        training.json     its provenance (:class:`Provenance`)
      evaluations.json    later evaluations of the finished run (iccld.evaluation.runs), cached

An exported model folder (``iccld export``, :mod:`iccld.hub`) is a save_pretrained folder with the
run's ``config.yaml`` and a fuller ``training.json`` beside it; a Hub repo id names one.

Provenance (which method made a model, its inference path, iteration, the val resize) is stored in
three places that older readers read: the checkpoint's ``method`` entry, ``final/training.json`` and
``results.json``. :class:`Provenance` is the one shape they are all read into, and written from.

A user may name a run folder, a ``last.ckpt``, a save_pretrained folder (a run's ``final/``, an export)
or a Hub repo id wherever a trained model is expected: :func:`resolve_checkpoint` tells which it is,
:func:`load_source` loads it, and :meth:`ModelSource.weights` picks the ``ema`` or ``model`` weights.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import CheckpointError
from ..utils import atomic_write_text
from .checkpoint import load_checkpoint, save_checkpoint
from .pretrained import CONFIG_FILE, WEIGHTS_FILE, load_pretrained, read_model_config, save_pretrained

CHECKPOINT = "last.ckpt"
CONFIG = "config.yaml"
RESULTS = "results.json"
FINAL = "final"
PROVENANCE = "training.json"  # beside a save_pretrained model: which method made it
LOGS = "logs"
LOG_EVENTS = "events.out.tfevents.*"  # TensorBoard's file names in LOGS
EVALUATIONS = "evaluations.json"

# what a run writes at fixed paths (plus TensorBoard's LOGS/LOG_EVENTS), relative to the run folder
RUN_FILES = (CONFIG, CHECKPOINT, RESULTS)
FINAL_FILES = tuple(f"{FINAL}/{name}" for name in (CONFIG_FILE, WEIGHTS_FILE, PROVENANCE))
RUN_DIRS = (FINAL, LOGS)
EXPORT_MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE)  # what an export copies from FINAL


# provenance ------------------------------------------------------------------------------------

@dataclass
class Provenance:
    """Which method made a model and how to run it: one record, whichever file it was read from."""

    method: str | None  # the registry name; None when no file says
    inference_path: str | None  # "direct" | "diffusion"; None: ask the method (an old checkpoint)
    iteration: int | None = None
    weights: str = "ema_model"  # which of the run's weights a save_pretrained folder holds
    val_resize: list[int] | None = None  # (W, H) of data.val.resize; None: native size
    val_keep_ratio: bool = True  # data.val.keep_ratio

    def record(self) -> dict:
        """``final/training.json`` as the trainer writes it."""
        return {"method": self.method, "inference_path": self.inference_path, "iteration": self.iteration,
                "weights": self.weights, "val_resize": self.val_resize, "val_keep_ratio": self.val_keep_ratio}

    def checkpoint_entry(self) -> dict:
        """The checkpoint's ``method`` entry."""
        return {"name": self.method, "inference_path": self.inference_path}

    def merged(self, other: "Provenance") -> "Provenance":
        """This record, its unknown (None) fields taken from ``other``."""
        return Provenance(*(mine if mine is not None else theirs for mine, theirs in
                            zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    @classmethod
    def of_run(cls, method: str, inference_path: str, iteration: int, config: dict) -> "Provenance":
        """The record of a run with the resolved config ``config`` (plain data)."""
        val = config.get("data", {}).get("val", {})
        return cls(method, inference_path, iteration, val_resize=val.get("resize"),
                   val_keep_ratio=val.get("keep_ratio", True))

    @classmethod
    def from_checkpoint(cls, state: dict) -> "Provenance":
        """A checkpoint's ``method`` entry; one saved before it had one names the method in its config
        only (inference_path None)."""
        config, made_by = state.get("config") or {}, state.get("method") or {}
        name = made_by.get("name", config.get("method", {}).get("name"))
        return cls.of_run(name, made_by.get("inference_path"), state.get("iteration"), config)

    @classmethod
    def from_record(cls, info: dict) -> "Provenance":
        """A ``training.json`` (a run's final/ or an export's) or a ``results.json``."""
        return cls(info.get("method"), info.get("inference_path"), info.get("iteration"),
                   info.get("weights", "ema_model"), info.get("val_resize"), info.get("val_keep_ratio", True))


def read_json(path: Path, what: str) -> dict:
    """A JSON object, or a CheckpointError naming ``path`` and ``what`` it should hold."""
    if not path.is_file():
        raise CheckpointError(f"{path}: not found ({what})")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object ({what})")
    return data


def read_provenance_record(folder: Path) -> dict:
    """The raw ``training.json`` beside a model in ``folder`` ({} when there is none)."""
    info = Path(folder) / PROVENANCE
    if not info.is_file():
        return {}
    try:
        return json.loads(info.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{info}: not valid JSON ({exc})") from None


def read_provenance(folder: Path) -> Provenance:
    """The provenance of the model in a save_pretrained folder (or beside an ONNX file)."""
    return Provenance.from_record(read_provenance_record(folder))


def read_folder_config(folder: Path) -> dict | None:
    """The training config (plain data) an exported folder carries as config.yaml; None without one
    (a run's final/)."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return raw or {}


# the run folder ---------------------------------------------------------------------------------

class RunFolder:
    """The paths of one run folder, and its reads and writes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    checkpoint = property(lambda self: self.path / CHECKPOINT)
    config = property(lambda self: self.path / CONFIG)
    results = property(lambda self: self.path / RESULTS)
    final = property(lambda self: self.path / FINAL)
    provenance = property(lambda self: self.path / FINAL / PROVENANCE)
    logs = property(lambda self: self.path / LOGS)
    evaluations = property(lambda self: self.path / EVALUATIONS)

    def log_files(self) -> list[Path]:
        return list(self.logs.glob(LOG_EVENTS))

    def started(self) -> bool:
        """Holds a run to continue (a checkpoint or a saved config)."""
        return self.checkpoint.is_file() or self.config.is_file()

    def finished(self) -> bool:
        return self.results.is_file()

    def read_results(self) -> dict:
        return read_json(self.results, "written by `iccld train` when the run finishes")

    def save_checkpoint(self, state) -> None:
        save_checkpoint(self.checkpoint, state)

    def write_final(self, model, provenance: Provenance) -> None:
        """The finished run's model as ``final/`` (save_pretrained + its training.json)."""
        save_pretrained(model, self.final)
        atomic_write_text(self.provenance, json.dumps(provenance.record(), indent=2))

    def write_results(self, provenance: Provenance, summary: dict) -> None:
        """``results.json``: the provenance's method, path and iteration, then ``summary``."""
        record = {"iteration": provenance.iteration, "method": provenance.method,
                  "inference_path": provenance.inference_path, **summary}
        atomic_write_text(self.results, json.dumps(record, indent=2))


def is_model_folder(folder: Path) -> bool:
    """A run's final/ or an export: a save_pretrained folder with its provenance."""
    return all((Path(folder) / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE, PROVENANCE))


def run_of(path: Path) -> Path:
    """The run folder a run folder, its checkpoint or its final/ folder belongs to."""
    path = Path(path)
    return path.parent if path.is_file() or path.name == FINAL else path


# naming and loading a trained model -------------------------------------------------------------

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
        raise CheckpointError(f"{path}: no such file or folder (expected a run folder, a {CHECKPOINT} or a "
                              "save_pretrained folder)")
    if path.is_file():
        return CheckpointRef("ckpt", path)
    if (path / CHECKPOINT).is_file():
        return CheckpointRef("ckpt", path / CHECKPOINT)
    if (path / CONFIG_FILE).is_file():
        return CheckpointRef("pretrained", path)
    if (path / FINAL / CONFIG_FILE).is_file():
        return CheckpointRef("pretrained", path / FINAL)
    raise CheckpointError(f"{path}: holds neither {CHECKPOINT} nor a save_pretrained model ({CONFIG_FILE}); "
                          f"point to a run folder of `iccld train` or its {FINAL}/ folder")


@dataclass
class ModelSource:
    """A trained model as a user named it: a training checkpoint (both weights), or a save_pretrained
    folder (one model: the EMA weights of a finished run)."""

    kind: str  # "ckpt" | "pretrained"
    path: Path
    provenance: Provenance
    config: dict | None  # the training config as plain data: the checkpoint's, or an export's config.yaml
    state: dict | None = None  # the checkpoint (kind "ckpt")

    def weights(self, which: str) -> dict:
        """The state dict of ``which`` (ema | model). A save_pretrained folder holds one model."""
        if self.kind == "ckpt":
            return self.state["ema_model" if which == "ema" else "model"]
        return load_pretrained(self.path).state_dict()

    def model_config(self) -> dict:
        """The model section the weights were trained with (plain data)."""
        if self.kind == "ckpt":
            return self.state["config"]["model"]
        return dataclasses.asdict(read_model_config(self.path))

    def unfinished(self) -> tuple[int, int] | None:
        """(iteration, trainer.max_iters) of a checkpoint saved before its run finished, else None."""
        if self.kind != "ckpt" or self.provenance.iteration is None:
            return None
        planned = self.state["config"]["trainer"]["max_iters"]
        return (self.provenance.iteration, planned) if self.provenance.iteration < planned else None


def load_source(where: str | Path) -> ModelSource:
    """Resolve and read what ``where`` names (see :func:`resolve_checkpoint`)."""
    ref = resolve_checkpoint(where)
    if ref.kind == "ckpt":
        state = load_checkpoint(ref.path)
        return ModelSource("ckpt", ref.path, Provenance.from_checkpoint(state), state.get("config"), state)
    return ModelSource("pretrained", ref.path, read_provenance(ref.path), read_folder_config(ref.path))
