"""Evaluate a finished run folder on any labelled split, the results cached in the folder.

The split rule of the embedded benchmark: every setting is chosen on target ``val`` (what the trainer
evaluates during and at the end of a run), and the numbers are reported on the held-out ``test``
split, which nothing in training reads. This module scores a finished run on ``test`` (or on ``val``
another way: another path, other DDIM steps) exactly as the trainer scores its final evaluation.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from ..errors import CheckpointError
from ..io.run_folder import RunFolder
from ..outputs import claim_outputs
from ..utils import atomic_write_text


def _fingerprint(run: Path) -> str:
    """Hash of RUN/results.json: it changes whenever the run is retrained, resumed or extended."""
    results = RunFolder(run).results
    if not results.is_file():
        raise CheckpointError(f"{results}: not found; the run in {run} has not finished")
    return hashlib.sha256(results.read_bytes()).hexdigest()[:16]


def evaluate_run(run: str | Path, split: str | None = None, *, which: Sequence[str] = ("ema",),
                 path: str | None = None, steps: int | None = None, progress: bool = False) -> dict[str, dict]:
    """``{model label: summary}`` of a finished run on ``split`` of its evaluation dataset.

    Args:
        run: the run folder (holds results.json and last.ckpt).
        split: replaces ``data.val.split`` of the run's config (e.g. "test"); None keeps it.
        which: "ema" and/or "model".
        path: "direct" or "diffusion"; None: the run's own inference path.
        steps: DDIM steps K; None: ``model.sampling_steps``.

    Scored as the trainer's final evaluation (noise seeded by ``trainer.seed`` and the image index,
    ``trainer.eval_slide``, the SYNTHIA 16/13-class means for a SYNTHIA run), so ``split="val"``
    gives the numbers of RUN/results.json. Each result is cached in RUN/evaluations.json under a key
    naming split, path, steps and model, and is valid while RUN/results.json is unchanged.
    """
    from ..data.build import build_val_dataset
    from .evaluate import evaluate_model
    from .loading import load_models, pick_device
    from .metrics import subsets_for_source

    run = Path(run)
    fingerprint = _fingerprint(run)
    cache_path = RunFolder(run).evaluations
    cache: dict = {}
    if cache_path.is_file():
        try:
            cache = json.loads(cache_path.read_text())
        except ValueError:
            cache = {}  # a damaged cache only costs a re-evaluation
    if cache.get("results") != fingerprint:
        cache = {"results": fingerprint, "entries": {}}
    loaded = None
    out = {}
    for label in which:
        key = f"split={split}/path={path}/steps={steps}/{label}"
        if key not in cache["entries"]:
            if loaded is None:
                loaded = load_models(str(run), "both")
                config = loaded.config
                dataset = build_val_dataset(config.data, split=split, skip_bad=config.data.skip_bad)
            tc = config.trainer
            device = pick_device()
            cm = evaluate_model(loaded.models[label].to(device), dataset, device=device,
                                path=path or loaded.inference_path, steps=steps,
                                seed=tc.seed, slide=tc.eval_slide, window=tuple(config.data.crop_size),
                                progress=progress)
            cache["entries"][key] = cm.summary(subsets_for_source(config.data.source.kind))
            claim_outputs([cache_path], "evaluate")
            atomic_write_text(cache_path, json.dumps(cache, indent=2))
        out[label] = cache["entries"][key]
    return out
