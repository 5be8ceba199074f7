"""Shared fixtures: a tiny synthetic benchmark and tiny training overrides."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import pytest  # noqa: E402
import torch  # noqa: E402

# one thread per test process: `make test` runs two processes (pytest -n 2) on two cores, and
# oversubscribed OpenMP threads make small convolutions an order of magnitude slower
torch.set_num_threads(1)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory) -> Path:
    """A 16/8/6/4-image (source/train/val/test) synthetic benchmark at 128x64, prepared like GTA5 -> Cityscapes."""
    from iccld.data.synthetic import generate

    out = tmp_path_factory.mktemp("bench") / "benchmark"
    generate(out=out, seed=0, num_source=16, num_target=8, num_val=6, size=(128, 64), workers=1,
             num_test=4)
    return out


def tiny_overrides(bench: Path, iters: int = 2) -> list[str]:
    """Data roots of the tiny benchmark and a schedule of a few iterations on 64x64 crops."""
    return [f"data.source.root={bench / 'source'}", f"data.target.root={bench / 'target'}",
            f"data.val.root={bench / 'target'}", f"trainer.max_iters={iters}", "trainer.batch_size=2",
            "data.crop_size=[64,64]", "data.num_workers=0", "trainer.eval_interval=0",
            "trainer.checkpoint_interval=1", "trainer.log_interval=1", "data.rcs_min_pixels=10",
            "optim.warmup_iters=1"]
