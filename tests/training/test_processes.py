"""Real processes: SIGKILL mid-run then --resume, SIGTERM saves and exits, 2-process accelerate launch
(SIGTERM to one of them stops both at the same iteration, and --resume continues bitwise)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
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


LAUNCHER = Path(sys.executable).parent / "accelerate"
needs_launcher = pytest.mark.skipif(shutil.which("accelerate") is None and not LAUNCHER.exists(),
                                    reason="accelerate CLI not installed")
TWO_ITERS = 20  # long enough that a signal sent after iteration 3 lands mid-run (2 processes: ~0.3 s each)


def launch_two(*args: str) -> list[str]:
    """``accelerate launch`` of 2 processes running the CLI. ``--multi_gpu`` on a machine without
    GPUs (CUDA_VISIBLE_DEVICES is emptied) starts 2 CPU processes with gloo; ``--cpu`` would start
    one process only."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [str(LAUNCHER), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
            "-m", "iccld.cli", *args]


TWO_ENV = {**ENV, "CUDA_VISIBLE_DEVICES": ""}


def _process_of_rank(launcher: subprocess.Popen, rank: int, timeout: float = 60) -> int:
    """The pid of the training process of ``rank`` among the launcher's descendants."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        parents = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(stat.parent.name)] = int(fields[1])
        for pid in parents:
            ancestor = parents.get(pid)
            while ancestor is not None and ancestor != launcher.pid:
                ancestor = parents.get(ancestor)
            if ancestor is None:
                continue
            try:
                env = dict(e.split("=", 1) for e in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in e)
                cmdline = Path(f"/proc/{pid}/cmdline").read_text()
            except OSError:
                continue
            if env.get("RANK") == str(rank) and "iccld.cli" in cmdline:
                return pid
        time.sleep(0.2)
    raise AssertionError(f"no training process of rank {rank} under pid {launcher.pid}")


@pytest.fixture(scope="module")
def two_process_run(tiny_benchmark, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two") / "run"
    cmd = launch_two("train", "--config", CONFIG, "--out", str(out),
                     *tiny_overrides(tiny_benchmark, iters=TWO_ITERS), "trainer.batch_size=1")
    result = subprocess.run(cmd, env=TWO_ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@needs_launcher
def test_two_process_cpu_training_through_accelerate_launch(two_process_run):
    state = load_checkpoint(two_process_run / "last.ckpt")
    assert state["iteration"] == TWO_ITERS
    assert (two_process_run / "final" / "model.safetensors").is_file()


@needs_launcher
def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_iteration(two_process_run, tiny_benchmark,
                                                                          tmp_path):
    out = tmp_path / "term"
    cmd = launch_two("train", "--config", CONFIG, "--out", str(out),
                     *tiny_overrides(tiny_benchmark, iters=TWO_ITERS), "trainer.batch_size=1")
    proc = subprocess.Popen(cmd, env=TWO_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(out / "last.ckpt", proc, minimum=3)
        os.kill(_process_of_rank(proc, 1), signal.SIGTERM)  # process 1 only: process 0 saves
        _, err = proc.communicate(timeout=120)  # ends: no process waits for the other
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped = {int(m) for m in re.findall(r"SIGTERM: stopped at iteration (\d+)", err)}
    state = load_checkpoint(out / "last.ckpt")
    assert len(stopped) == 1 and stopped == {state["iteration"]}, err[-3000:]  # both ranks alike
    assert 3 <= state["iteration"] < TWO_ITERS
    result = subprocess.run(cmd + ["--resume"], env=TWO_ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = load_checkpoint(two_process_run / "last.ckpt"), load_checkpoint(out / "last.ckpt")
    assert a["iteration"] == b["iteration"] == TWO_ITERS
    for part in ("model", "ema_model"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"
