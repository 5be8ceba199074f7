"""Two real processes (gloo, through ``accelerate launch``) against one: DDP's gradients, the fp16
overflow decision, mixed-precision choice and fp32 evaluation, rank-0-only --overwrite.

fp16 autocast needs CUDA; on CPU the fp16 test runs the real GradScaler on CPU tensors (scaler
enabled, autocast off), which exercises the same unscale / overflow-agreement / skip / update path.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import CONFIGS, tiny_overrides

WORKER = Path(__file__).with_name("ddp_worker.py")
LAUNCHER = Path(sys.executable).parent / "accelerate"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
needs_launcher = pytest.mark.skipif(not LAUNCHER.exists() and shutil.which("accelerate") is None,
                                    reason="accelerate CLI not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(*args: str) -> list[str]:
    """``accelerate launch`` of 2 processes; ``--multi_gpu`` on a machine without GPUs starts CPU
    processes with gloo (``--cpu`` would start one process only)."""
    return [str(LAUNCHER), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), *args]


@pytest.fixture(scope="module")
def runs(tiny_benchmark, tmp_path_factory) -> dict[str, Path]:
    """The worker's stage-1 and stage-2 runs on 1 process x batch 2 and 2 processes x batch 1 (and,
    on 2 processes, the fp16 run); stage 2 of both starts from the 1-process stage-1 run."""
    root = tmp_path_factory.mktemp("ddp")
    one, two = root / "one", root / "two"
    common = ["--bench", str(tiny_benchmark), "--stage1", str(one / "stage1")]
    result = subprocess.run([sys.executable, str(WORKER), "--out", str(one), *common], env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    result = subprocess.run(launch_two(str(WORKER), "--out", str(two), *common, "--phases", "stage1", "stage2",
                                       "fp16"), env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"one": one, "two": two}


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@needs_launcher
@pytest.mark.parametrize("phase,parts", [("stage1", ("model",)), ("stage2", ("model", "discriminator"))])
def test_two_processes_of_batch_1_match_one_process_of_batch_2(runs, phase, parts):
    one = torch.load(runs["one"] / f"{phase}_rank0.pt")
    rank0, rank1 = (torch.load(runs["two"] / f"{phase}_rank{r}.pt") for r in (0, 1))
    for part in parts:
        assert _max_difference(rank0[part], rank1[part]) == 0.0, part  # every process steps alike
        assert _max_difference(one[part], rank0[part]) < 5e-6, part  # DDP's mean = the batch's mean
        # the comparison means something: 3 iterations moved the weights far beyond the tolerance
        # (measured: 1 vs 2 processes differ by 0.4e-7 to 3.7e-7; the critic moved 3e-4, the rest more)
        assert _max_difference(one[part], one["start"][part]) > 1e-4, part
    if phase == "stage1":  # eps_theta gets no gradient in stage 1: DDP leaves it None, AdamW skips it
        denoiser = [k for k in rank0["model"] if k.startswith("diffusion.denoiser.")]
        assert denoiser and all(torch.equal(rank0["model"][k], rank0["start"]["model"][k]) for k in denoiser)


@needs_launcher
def test_fp16_overflow_on_one_process_skips_the_step_on_every_process(runs):
    rank0, rank1 = (torch.load(runs["two"] / f"fp16_rank{r}.pt") for r in (0, 1))
    assert rank0["history"] == rank1["history"]  # same skip decisions, same scale, every iteration
    assert [h["stepped"] for h in rank0["history"]] == [True, False, True]  # iteration 1 overflowed on rank 0
    assert [h["scale"] for h in rank0["history"]] == [2.0**10, 2.0**9, 2.0**9]
    assert all(h["finite"] for h in rank0["history"])
    assert _max_difference(rank0["model"], rank1["model"]) == 0.0


def test_batchnorm_becomes_syncbatchnorm_on_gpus_only():
    """On several GPU processes D's BatchNorm layers normalise the global batch (the DDP comparison
    above runs without BatchNorm: CPU processes cannot synchronise it)."""
    from iccld.io import build_model_from_config
    from iccld.presets import preset
    from iccld.training.distributed import sync_batchnorm

    torch.manual_seed(0)
    model = build_model_from_config(preset("cpu"), load_weights=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [id(p) for p in model.parameters()]
    assert sync_batchnorm(model, torch.device("cpu")) == 0
    layers = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert layers == 8  # the daformer decoder's: its ASPP branches (1 + 3 x 2) and the bottleneck
    assert sync_batchnorm(model, torch.device("cuda", 0)) == layers  # converting needs no GPU, running does
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()) == layers
    assert not any(type(m) is torch.nn.BatchNorm2d for m in model.modules())
    assert [id(p) for p in model.parameters()] == params  # the optimiser's parameters, unchanged
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert sync_batchnorm(model, torch.device("cuda", 0)) == 0  # once only


def test_auto_precision_is_bf16_only_on_gpus_with_native_bf16(monkeypatch):
    from iccld.training.trainer import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # true on Turing too
    for capability, expected in (((7, 5), "no"), ((8, 0), "bf16"), ((9, 0), "bf16")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, c=capability: c)
        assert resolve_precision("auto") == expected, capability
    assert resolve_precision("fp16") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto") == "no"


def test_evaluation_during_bf16_training_is_fp32_like_iccld_evaluate(tiny_benchmark, tmp_path, monkeypatch):
    from iccld.config import load_config
    from iccld.evaluation.evaluate import evaluate_model
    from iccld.training.trainer import Trainer

    trainer = Trainer(load_config(CONFIGS / "synthetic" / "stage1.yaml", tiny_overrides(tiny_benchmark)),
                      tmp_path / "run", progress=False)
    # training under bf16 autocast (accelerate's state is one per process: patched, not rebuilt)
    monkeypatch.setattr(trainer.accelerator, "autocast",
                        lambda *a, **k: torch.autocast("cpu", dtype=torch.bfloat16))
    torch.manual_seed(1)
    with torch.no_grad():  # a model whose bf16 and fp32 argmax differ somewhere (checked: mIoU differs)
        for p in trainer.method.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    got = trainer.evaluate(max_images=0)["model"]
    reference = evaluate_model(trainer.method.model, trainer.datasets["val"], path="direct",
                               seed=trainer.config.trainer.seed, progress=False).summary()
    assert got == reference
    under_bf16 = evaluate_model(trainer.method.model, trainer.datasets["val"], path="direct",
                                seed=trainer.config.trainer.seed, progress=False,
                                autocast=trainer.accelerator.autocast).summary()
    assert under_bf16 != reference  # what evaluating under the training autocast would have given


def test_only_the_main_process_clears_a_run_folder_for_overwrite(tmp_path):
    from iccld.config import Config, save_config
    from iccld.outputs import record_outputs
    from iccld.training.commands import prepare_run

    run = tmp_path / "run"
    run.mkdir()
    record_outputs(run, ["config.yaml"], "train")  # a run's own file, as the trainer lists it
    save_config(Config(), run / "config.yaml")
    assert prepare_run(Config(), run, resume=False, overwrite=True, main_process=False) is None
    assert (run / "config.yaml").is_file()  # another process's: left to process 0
    assert prepare_run(Config(), run, resume=False, overwrite=True, main_process=True) is None
    assert not (run / "config.yaml").exists()
