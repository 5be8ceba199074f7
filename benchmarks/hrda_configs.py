"""Time and peak memory of the HRDA configs at their real sizes: each config's training iterations on
a random batch at its crop (1024x1024, batch 2, MiT-B5, DAFormer's decoder, the 512x512 detail crop).

    python benchmarks/hrda_configs.py                                  # every hrda_*.yaml, 2 iterations each
    python benchmarks/hrda_configs.py --configs gta5_cityscapes/hrda_stage1 --batch 1 --max-memory-gb 12

Each config runs in its own process (a clean peak): the method is built as the trainer builds it
(stage 2 from a fresh model: a stage-1 run changes no shape and no cost), without ImageNet weights
(``model.pretrained=``: random weights cost the same), then ``--iters`` iterations of
``common.TrainingStep`` (losses, backward, AdamW, critic, EMA; no data loading) on a random batch of
the config's crop. Reported: seconds of each iteration, the peak resident memory (VmHWM) and the
memory held before the first step. ``--max-memory-gb`` caps the child's address space, so that a run
too large for the machine fails alone (MemoryError) instead of pushing others out. Writes
benchmarks/results/hrda_configs.json; the device is named in every row (CPU here unless ``--device``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, TrainingStep, machine_info, peak_rss_mb, random_batch, rss_mb, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [f"{family}/hrda_{name}" for family in ("gta5_cityscapes", "synthia_cityscapes")
           for name in ("source_only", "stage1", "stage1_mic", "stage2", "stage2_mic", "oracle")]


def child(name: str, args) -> dict:
    import torch

    from iccld.config import load_config

    torch.set_num_threads(args.threads)
    overrides = ["model.pretrained=", f"trainer.batch_size={args.batch}"]
    if name.endswith("stage2") or name.endswith("stage2_mic"):
        overrides.append("method.stage1_checkpoint=unused")  # the model starts fresh (see the docstring)
    config = load_config(REPO / "configs" / f"{name}.yaml", overrides)
    crop = tuple(config.data.crop_size)
    started = time.perf_counter()
    batch = random_batch(args.batch, crop, config.model.num_classes, args.device)
    step = TrainingStep(config, batch, args.device)
    built = time.perf_counter() - started
    before = rss_mb()
    seconds = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        losses = step()
        seconds.append(round(time.perf_counter() - t0, 1))
    return {"config": name, "device": args.device, "threads": args.threads, "batch": args.batch,
            "crop": list(crop), "detail_crop": list(config.model.multires.detail_crop),
            "build_seconds": round(built, 1), "seconds_per_iteration": seconds,
            "rss_before_mb": round(before), "peak_rss_mb": round(peak_rss_mb()),
            "losses": {k: round(float(v), 4) for k, v in (losses or {}).items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=CONFIGS, help="names under configs/, without .yaml")
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-memory-gb", type=float, default=0, help="cap each child's address space (0: none)")
    parser.add_argument("--out", default=str(RESULTS / "hrda_configs.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.max_memory_gb > 0:
            cap = int(args.max_memory_gb * 2 ** 30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        try:
            row = child(args.child, args)
        except (MemoryError, RuntimeError) as exc:  # torch's CPU allocator raises a RuntimeError
            if not isinstance(exc, MemoryError) and "allocate" not in str(exc):
                raise
            row = {"config": args.child, "device": args.device, "batch": args.batch,
                   "error": f"out of memory under a {args.max_memory_gb} GB address-space cap",
                   "peak_rss_mb": round(peak_rss_mb())}
        print(json.dumps(row))
        return 0
    rows = []
    for name in args.configs:
        cmd = [sys.executable, __file__, "--child", name, "--iters", str(args.iters), "--batch", str(args.batch),
               "--threads", str(args.threads), "--device", args.device, "--max-memory-gb", str(args.max_memory_gb)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        row = json.loads(lines[-1]) if lines else {"config": name, "error": done.stderr.strip().splitlines()[-1:]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_json(Path(args.out), {"machine": machine_info(args.device), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
