"""Real processes: SIGKILL mid-run then --resume, SIGTERM saves and exits, 2-process accelerate launch."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, tiny_overrides
from iccld.io.checkpoint import load_checkpoint

CONFIG = str(CONFIGS / "synthetic" / "stage1.yaml")
ITERS = 60  # long enough that the kill lands mid-run (one tiny iteration takes 0.05-0.2 s)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def iccld(*args: str) -> list[str]:
    return [sys.executable, "-m", "iccld.cli", *args]


def _wait_for_checkpoint(path: Path, proc: subprocess.Popen, minimum: int, timeout: float = 240) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stderr.read()}")
        if path.is_file():
            try:
                iteration = load_checkpoint(path)["iteration"]
            except Exception:  # noqa: BLE001 - being replaced right now; atomic writes make this rare
                iteration = -1
            if iteration >= minimum:
                return iteration
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at iteration >= {minimum} after {timeout}s")


@pytest.fixture(scope="module")
def straight_run(tiny_benchmark, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    cmd = iccld("train", "--config", CONFIG, "--out", str(out), *tiny_overrides(tiny_benchmark, iters=ITERS))
    subprocess.run(cmd, check=True, env=ENV, capture_output=True, timeout=600)
    return out


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(straight_run, tiny_benchmark, tmp_path):
    out = tmp_path / "killed"
    cmd = iccld("train", "--config", CONFIG, "--out", str(out), *tiny_overrides(tiny_benchmark, iters=ITERS))
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        reached = _wait_for_checkpoint(out / "last.ckpt", proc, minimum=3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(out / "last.ckpt")["iteration"]  # still readable after the kill
    assert 3 <= killed_at < ITERS and killed_at >= reached
    subprocess.run(cmd + ["--resume"], check=True, env=ENV, capture_output=True, timeout=600)
    a, b = load_checkpoint(straight_run / "last.ckpt"), load_checkpoint(out / "last.ckpt")
    assert a["iteration"] == b["iteration"] == ITERS
    for part in ("model", "ema_model"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tiny_benchmark, tmp_path):
    out = tmp_path / "term"
    overrides = tiny_overrides(tiny_benchmark, iters=400) + ["trainer.checkpoint_interval=1000"]
    proc = subprocess.Popen(iccld("train", "--config", CONFIG, "--out", str(out), *overrides), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (out / "config.yaml").is_file() and time.time() < deadline:  # training has started
            time.sleep(0.2)
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "SIGTERM: stopped at iteration" in err and "--resume" in err and "Traceback" not in err
    state = load_checkpoint(out / "last.ckpt")
    assert 0 < state["iteration"] < 400


@pytest.mark.skipif(shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
                    reason="accelerate CLI not installed")
def test_two_process_cpu_training_through_accelerate_launch(tiny_benchmark, tmp_path):
    launcher = str(Path(sys.executable).parent / "accelerate")
    out = tmp_path / "ddp"
    cmd = [launcher, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "iccld.cli", "train", "--config", CONFIG, "--out", str(out),
           *tiny_overrides(tiny_benchmark, iters=3), "trainer.batch_size=1"]
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    state = load_checkpoint(out / "last.ckpt")
    assert state["iteration"] == 3
    assert (out / "final" / "model.safetensors").is_file()
