"""What the web demo's tests share: the check for their optional tools and a tiny exported model."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from conftest import CONFIGS, tiny_overrides


def need(*modules: str, programs: tuple[str, ...] = ()) -> None:
    """Skip the test, with the reason, when a Python module or a program is missing; under CI=true fail
    instead, so that CI really runs the web demo's tests (its .ci/run installs the programs)."""
    missing = [f"Python package {m} (pip install -e '.[test]')" for m in modules
               if importlib.util.find_spec(m) is None]
    missing += [f"{p} (apt-get install chromium chromium-driver)" for p in programs if not os.access(p, os.X_OK)]
    if not missing:
        return
    reason = "the web demo's test needs " + ", ".join(missing)
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (CI=true: not skipped)")
    pytest.skip(reason)


def tiny_stage2_export(bench: Path, root: Path) -> Path:
    """A stage-1 then a stage-2 run of 2 iterations each on the tiny benchmark (so the model takes the
    diffusion path and draws noise), exported as ``iccld export`` does; returns the exported folder."""
    from iccld import hub
    from iccld.config import load_config
    from iccld.training.commands import run_training

    stage1, stage2 = root / "stage1", root / "stage2"
    assert run_training(load_config(CONFIGS / "synthetic" / "stage1.yaml", tiny_overrides(bench)), stage1,
                        progress=False) == 0
    config = load_config(CONFIGS / "synthetic" / "stage2.yaml",
                         tiny_overrides(bench) + [f"method.stage1_checkpoint={stage1}"])
    assert run_training(config, stage2, progress=False) == 0
    return hub.export_run(stage2, root / "export" / "tiny-iccld", repo_id="someone/tiny-iccld")
