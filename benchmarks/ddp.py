"""Gradient synchronisation on 2 CPU processes: the trainer's DDP against the former all-reduce.

    python benchmarks/ddp.py            # about 2 minutes on 2 shared cores
    python benchmarks/ddp.py --quick    # fewer repeats

Times one stage-1 iteration (``Trainer.train_step`` on a random batch at configs/synthetic's batch
size and crop; the data loader is not measured) for:
- 1 process, the whole batch (no synchronisation);
- 2 processes (``accelerate launch``, gloo), half of the batch each, gradients averaged
  (a) by the trainer's DDP (bucketed, overlapping the backward pass) and
  (b) by the former hand-written path: after backward, one flat copy of every gradient,
  one all-reduce, copied back (restated here, in ``AllReduceTrainer``).
(a) and (b) run in the same 2 processes, round-robin, so the machine's load hits both alike; the
ratio is taken per round. One thread per process.

Writes benchmarks/results/ddp.json and the "ddp" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from common import (RESULTS, BenchmarkError, machine_info, markdown_table, paired_ratio, random_batch,
                    time_interleaved, write_json, write_section)

REPEATS = {"default": (3, 20), "quick": (1, 5)}  # (warm-up rounds, measured rounds)


def _trainer_classes():
    import torch
    import torch.distributed as dist

    from iccld.training.distributed import Processes, SyncedLosses
    from iccld.training.trainer import Trainer

    class PlainProcesses(Processes):
        def synced(self, trainable, *, find_unused):  # each loss call as on one process: no DDP
            return SyncedLosses(trainable, find_unused=find_unused, world_size=1, device=self.device)

    class AllReduceTrainer(Trainer):
        """The trainer before DDP: no wrapper, one flat all-reduce of the gradients after backward."""

        processes_class = PlainProcesses

        def _step(self, params, optimizer, loss):
            optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(optimizer)
            grads = [p.grad for p in params if p.grad is not None]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for g in grads:
                g.copy_(flat[offset: offset + g.numel()].view_as(g))
                offset += g.numel()
            if self.config.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, self.config.optim.grad_clip)
            self.scaler.step(optimizer)

    return Trainer, AllReduceTrainer


def worker(args) -> None:
    """One process of a timed run; process 0 writes its timings to ``args.worker_out``."""
    import torch

    from iccld.config import load_config

    torch.set_num_threads(1)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    bench = Path(args.bench)
    config_file = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "stage1.yaml"
    base = load_config(config_file)
    batch_size, crop = base.trainer.batch_size, tuple(base.data.crop_size)
    if batch_size % world_size:
        raise BenchmarkError(f"{config_file}: batch size {batch_size} does not split over {world_size} processes")
    overrides = [f"data.source.root={bench / 'source'}", f"data.target.root={bench / 'target'}",
                 f"data.val.root={bench / 'target'}", f"trainer.batch_size={batch_size}",  # global
                 "data.num_workers=0", "optim.warmup_iters=1"]
    config = load_config(config_file, overrides)
    Trainer, AllReduceTrainer = _trainer_classes()
    kinds = {"ddp": Trainer} if world_size == 1 else {"ddp": Trainer, "allreduce": AllReduceTrainer}
    steps = {}
    for name, cls in kinds.items():
        trainer = cls(config, Path(args.bench) / "unused_run", progress=False)
        batch = random_batch(batch_size // world_size, crop, config.model.num_classes, trainer.device,
                             seed=rank)
        steps[name] = (lambda t=trainer, b=batch: t.train_step(b))
    warmup, repeats = REPEATS[args.mode]
    timings = time_interleaved(steps, warmup, repeats)
    if rank == 0:
        out = {name: t.as_dict() for name, t in timings.items()}
        if "allreduce" in timings:
            out["ratio_ddp_to_allreduce"] = round(paired_ratio(timings["ddp"], timings["allreduce"]), 3)
        out.update(world_size=world_size, batch_per_process=batch_size // world_size, crop=list(crop))
        Path(args.worker_out).write_text(json.dumps(out))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(processes: int, args, bench: Path, out: Path) -> dict:
    script = [str(Path(__file__).resolve()), "--worker", "--bench", str(bench), "--worker-out", str(out),
              *(["--quick"] if args.mode == "quick" else [])]
    if processes == 1:
        cmd = [sys.executable, *script]
    else:  # --multi_gpu: on a machine without GPUs, accelerate starts CPU processes (gloo)
        launcher = str(Path(sys.executable).parent / "accelerate")
        cmd = [launcher, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               *script]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchmarkError(f"{processes}-process run failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", dest="mode", action="store_const", const="quick", default="default")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bench", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        if args.worker:
            worker(args)
            return 0
        from iccld.data.synthetic import generate

        info = machine_info("cpu")
        with tempfile.TemporaryDirectory() as tmp:
            bench = Path(tmp) / "benchmark"
            generate(out=bench, seed=0, num_source=8, num_target=8, num_val=2, size=(256, 128), workers=1)
            one = _run(1, args, bench, Path(tmp) / "one.json")
            two = _run(2, args, bench, Path(tmp) / "two.json")
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = {"machine": info, "one_process": one, "two_processes": two}
    write_json(RESULTS / "ddp.json", results)
    write_section("ddp", render(results))
    print(render(results))
    return 0


def render(results: dict) -> str:
    m, one, two = results["machine"], results["one_process"], results["two_processes"]
    batch = one["batch_per_process"]
    rows = [["1 process", f"{batch}", "none", f"{one['ddp']['median_ms']:.0f}",
             f"{one['ddp']['min_ms']:.0f}-{one['ddp']['max_ms']:.0f}"]]
    for name, label in (("allreduce", "former all-reduce"), ("ddp", "DDP (the trainer)")):
        t = two[name]
        rows.append(["2 processes", f"{two['batch_per_process']} each", label, f"{t['median_ms']:.0f}",
                     f"{t['min_ms']:.0f}-{t['max_ms']:.0f}"])
    table = markdown_table(["run", "batch", "gradient sync", "median ms / iteration", "range ms"], rows)
    return f"""## Multi-process gradient synchronisation (cpu)

Measured {m['date']} on {m['cpu']} ({m['usable_cores']} usable cores, load average
{m['load_average_1m']} at the start), torch {m['torch']}; command `{m['command']}`. One stage-1
iteration of `Trainer.train_step` at configs/synthetic's batch ({batch} images, crop
{one['crop'][0]}x{one['crop'][1]}, random tensors, no data loading), one thread per process, 2
processes through `accelerate launch` (gloo). The two 2-process rows ran in the same processes,
round-robin, {two['ddp']['repeats']} rounds after {two['ddp']['warmup']} warm-up rounds.

{table}

DDP / former all-reduce, median of the per-round ratios: **{two['ratio_ddp_to_allreduce']:.2f}**
(DDP as the trainer sets it up: `find_unused_parameters=True`, `gradient_as_bucket_view=True`).
On two shared CPU cores the 2-process runs compete with each other and with other jobs (a load
average above 2 means other jobs were running), so the absolute times are noisy and the 2-process
rows are not a speed-up over 1 process; the ratio of the two synchronisations is the number to read:
on CPU they cost about the same. What DDP brings on GPUs (bucketed all-reduce overlapping the
backward pass) is not measured here.
"""


if __name__ == "__main__":
    sys.exit(main())
