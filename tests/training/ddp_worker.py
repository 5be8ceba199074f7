"""Trains tiny stage-1 and stage-2 runs on 1 or 2 processes and saves each process's weights.

Run by tests/training/test_ddp.py: ``python ddp_worker.py ...`` (1 process, batch 2) and
``accelerate launch --num_processes 2 ddp_worker.py ...`` (2 processes, batch 1 each). With the
method's random draws made the same for every sample (no ClassMix, no jitter or blur, no dropout or
drop path; stage 2's timesteps and noise fixed), the two must end with the same weights: DDP's
averaged gradient of per-process means is the gradient of the global mean.

Phases (``--phases``): ``stage1``, ``stage2`` (from the stage-1 run given by ``--stage1``, with the
critic) and ``fp16`` (2 processes: the scaler enabled on CPU tensors, an overflow injected on
process 0 only at iteration 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest
from conftest import CONFIGS, tiny_overrides  # noqa: E402

from iccld.config import load_config  # noqa: E402
from iccld.diffusion import latent, sampling, schedule  # noqa: E402
from iccld.training.trainer import Trainer  # noqa: E402

ITERS = 3
GLOBAL_BATCH = 2
NO_RANDOMNESS = ["model.dropout=0", "method.mix=none", "method.color_jitter_p=1", "method.blur=false",
                 "method.pl_crop_top=0", "method.pl_crop_bottom=0", "trainer.eval_max_images=2"]
# BatchNorm normalises each process's share of the batch on CPU processes (torch synchronises it on GPUs
# only: iccld.training.distributed.sync_batchnorm), so the exact comparison runs the BatchNorm-free
# segformer decoder in place of the CPU preset's daformer one
NO_BATCHNORM = ["model.decoder=segformer", "model.skip_strides=[4,8,16]"]


class _SameDraws:
    """``torch`` for iccld.diffusion.latent, .sampling and .schedule (where stage 2's diffusion loss
    draws eps and t), except that every sample gets the same timestep and the same noise, whatever the batch size."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def randint(low, high, size, generator=None, device=None):
        return torch.full(size, (low + high) // 3, dtype=torch.long, device=device)

    @staticmethod
    def randn(size, generator=None, device=None, dtype=None):
        one = torch.randn(size[1:], generator=torch.Generator().manual_seed(7), dtype=dtype)  # (Cz, h, w)
        return one.expand(size).clone().to(device)


def build(config_name: str, run_dir: Path, bench: Path, extra: list[str]) -> Trainer:
    overrides = tiny_overrides(bench, iters=ITERS) + NO_RANDOMNESS + NO_BATCHNORM + extra + [
        f"trainer.batch_size={GLOBAL_BATCH}"]  # the global batch: each process takes its share
    trainer = Trainer(load_config(CONFIGS / "synthetic" / config_name, overrides), run_dir, progress=False)
    for module in trainer.method.modules():  # MiT's stochastic depth (drop_path_rate 0.1)
        if hasattr(module, "drop_prob"):
            module.drop_prob = 0.0
    trainer.start = _parts(trainer)
    return trainer


def _parts(trainer: Trainer) -> dict:
    out = {"model": {k: v.clone() for k, v in trainer.method.model.state_dict().items()}}
    if trainer.disc_optimizer is not None:
        out["discriminator"] = {k: v.clone() for k, v in trainer.method.discriminator.state_dict().items()}
    return out


def weights(trainer: Trainer) -> dict:
    """The trained parts, their values before training ("start") and the loss scale."""
    return {**_parts(trainer), "start": trainer.start, "scale": trainer.scaler.get_scale()}


def fp16(trainer: Trainer) -> dict:
    """Steps with the scaler enabled (CPU tensors, autocast off); iteration 1 overflows on rank 0."""
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, enabled=True)
    params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    unscale = trainer.scaler.unscale_

    def unscale_with_overflow(optimizer):  # an overflow that only process 0 sees, after DDP's sync
        if trainer.rank == 0 and trainer.iteration == 1:
            next(p for p in params if p.grad is not None).grad.view(-1)[0] = float("inf")
        return unscale(optimizer)

    trainer.scaler.unscale_ = unscale_with_overflow
    step = trainer.train_step
    history = []

    def recorded_step(batch):
        before = torch.cat([p.detach().flatten() for p in params]).clone()
        logged = step(batch)
        after = torch.cat([p.detach().flatten() for p in params])
        history.append({"iteration": trainer.iteration, "scale": trainer.scaler.get_scale(),
                        "stepped": not torch.equal(before, after), "finite": bool(after.isfinite().all())})
        return logged

    trainer.train_step = recorded_step
    trainer.fit()
    return {**weights(trainer), "history": history}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stage1", type=Path, required=True, help="stage-1 run folder (made by phase stage1)")
    parser.add_argument("--phases", nargs="+", default=["stage1", "stage2"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for phase in args.phases:
        if phase == "stage1":
            trainer = build("stage1.yaml", args.out / "stage1", args.bench, [])
            trainer.fit()
            result = weights(trainer)
        elif phase == "stage2":
            latent.torch = sampling.torch = schedule.torch = _SameDraws()
            trainer = build("stage2.yaml", args.out / "stage2", args.bench,
                            [f"method.stage1_checkpoint={args.stage1}"])
            trainer.fit()
            latent.torch = sampling.torch = schedule.torch = torch
            result = weights(trainer)
        else:
            result = fp16(build("stage1.yaml", args.out / "fp16", args.bench, []))
        torch.save(result, args.out / f"{phase}_rank{trainer.rank}.pt")


if __name__ == "__main__":
    main()
