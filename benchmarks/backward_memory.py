"""Peak memory of one training step: one backward of the summed losses against each term
back-propagated as soon as it is computed (``trainer.backward=per_term``, DAFormer's order).

    python benchmarks/backward_memory.py             # MiT-B0, 512x512 crops, batch 2: ~2 minutes
    python benchmarks/backward_memory.py --crop 256 --backbone mit-tiny   # quicker

Stage 1 with MIC (three terms, each its own forward pass: source, mixed batch, masked target) on
images generated at 1024x512. Each mode runs in its own process: the networks and one batch are
built, the peak resident memory is reset, then one warm-up step (the optimiser's state is allocated,
alike in both modes) and ``--steps`` timed steps run. Reported: the peak above the memory held before
the first step (activations, gradients and the optimiser's state), the process's peak, and the
seconds per timed step. Writes benchmarks/results/backward_memory.json
and the ``backward_memory`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS, machine_info, markdown_table, peak_rss_mb, reset_peak_rss, rss_mb,  # noqa: E402
                    write_json, write_section)

REPO = Path(__file__).resolve().parents[1]
MODES = ("sum", "per_term")


def overrides(data: Path, args) -> list[str]:
    return [f"data.source.root={data / 'source'}", f"data.target.root={data / 'target'}",
            f"data.val.root={data / 'target'}", f"model.backbone={args.backbone}",
            f"data.crop_size=[{args.crop},{args.crop}]", f"trainer.batch_size={args.batch}",
            "data.num_workers=0", "data.rcs_temperature=0", "method.pseudo_threshold=0.0"]


def child(mode: str, data: Path, args) -> dict:
    """One mode in this process: the numbers as a dict."""
    import torch

    from iccld.config import load_config
    from iccld.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    config = load_config(REPO / "configs" / "synthetic" / "stage1_mic.yaml",
                         overrides(data, args) + [f"trainer.backward={mode}"])
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(config, Path(run), progress=False)
        batch = trainer.data.first_batch()
        before = rss_mb()  # the networks and the batch, before any step
        if not reset_peak_rss():
            raise SystemExit("this kernel cannot reset the peak RSS (/proc/self/clear_refs)")
        trainer.train_step(batch)  # warm-up: the optimiser's state is allocated (alike in both modes)
        started = time.perf_counter()
        for _ in range(args.steps):
            losses = trainer.train_step(batch)
        seconds = (time.perf_counter() - started) / args.steps
        peak = peak_rss_mb()  # freed memory stays in the allocator's heap: the peak of every step
    return {"mode": mode, "rss_before_mb": round(before, 1), "peak_mb": round(peak, 1),
            "peak_above_mb": round(peak - before, 1), "seconds_per_step": round(seconds, 2),
            "losses": {k: round(v, 6) for k, v in losses.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mit-b0")
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.data), args)))
        return 0

    from iccld.data.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "benchmark"
        generate(out=data, seed=0, num_source=8, num_target=8, num_val=2, num_test=2, size=(1024, 512), workers=1)
        rows = {}
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--data", str(data),
                                  "--backbone", args.backbone, "--crop", str(args.crop), "--batch", str(args.batch),
                                  "--steps", str(args.steps), "--threads", str(args.threads)],
                                 check=True, capture_output=True, text=True)
            rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    saved = rows["sum"]["peak_above_mb"] - rows["per_term"]["peak_above_mb"]
    setup = (f"stage 1 + MIC (`configs/synthetic/stage1_mic.yaml`), {args.backbone}, {args.crop}x{args.crop} "
             f"crops, batch {args.batch}, images generated at 1024x512, {args.threads} threads, "
             f"one warm-up step and {args.steps} timed steps")
    result = {"machine": machine_info(), "setup": setup, "modes": rows, "saved_mb": round(saved, 1)}
    write_json(RESULTS / "backward_memory.json", result)
    table = markdown_table(
        ["trainer.backward", "peak above the built model (MiB)", "process peak (MiB)", "s / step"],
        [[f"`{m}`", rows[m]["peak_above_mb"], rows[m]["peak_mb"], rows[m]["seconds_per_step"]] for m in MODES])
    m = result["machine"]
    body = (f"## Peak memory of a step: one backward against per-term backward ({m['device']})\n\n"
            f"{setup}. `per_term` back-propagates the source terms before the mixed batch's forward pass and "
            f"the mix before MIC's, so at most one term's graph is alive; the gradients equal those of one "
            f"backward of the sum (tests/training/test_anchor_details.py). Saved: **{saved:.0f} MiB** of the "
            f"peak above the built model.\n\n{table}\n\nLogged at the last step (the same in both modes): "
            f"`{json.dumps(rows['sum']['losses'])}` / `{json.dumps(rows['per_term']['losses'])}`.\n\n"
            f"Machine: {m['cpu']}, {m['usable_cores']} cores, torch {m['torch']}, load average "
            f"{m['load_average_1m']} at the start; {m['date']}. Command: `{m['command']}`.\n")
    write_section("backward_memory", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
