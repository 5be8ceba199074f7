"""One GPU check at paper scale: training iteration time and peak memory, predict latency, bf16 sanity.

    bash benchmarks/gpu_check.sh                      # the way to run it (installs wheels/, sets PYTHONPATH)
    python benchmarks/gpu_check.py [--out PATH]       # with iccld importable
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/gpu.json   # tests the code path on a CPU

On CUDA: the ``paper`` model preset (MiT-B5, random init: no hub access needed), 512x512 crops,
batch 2 source + 2 target, bf16 autocast, the method and optimiser settings of
configs/gta5_cityscapes/<method>.yaml. For source_only, stage1 and stage2 (one at a time, freed in
between): warm-up, then the median time per iteration (see common.TrainingStep) and the peak of
torch.cuda.max_memory_allocated (reset before each method; weights, EMA copy, optimiser state and
activations included). Then predict latency on one 1024x512 image for the stage-1 path and K = 1, 4,
10 DDIM steps (N = 1). Every loss of every iteration must be finite (the bf16 sanity check).
Writes benchmarks/results/gpu.json (``--out``) and, on CUDA, the GPU section of docs/benchmarks.md.

Without a CUDA device it prints "no CUDA device; nothing measured" and exits 0. ``--tiny`` uses the
``cpu`` preset, 64x64 crops and a few iterations; its result is marked ``"tiny": true`` and never
rendered as a GPU measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import os
import sys
import time
from pathlib import Path

from common import (DOC, METHODS, REPO, RESULTS, BenchmarkError, TrainingStep, machine_info, paired_ratio,
                    random_batch, time_interleaved, write_json, write_section)
from write_gpu_section import DAFORMER_MEMORY_GB, render_gpu_section

CONFIG_DIR = REPO / "configs" / "gta5_cityscapes"
PREDICT_STEPS = (1, 4, 10)
SETTINGS = {  # preset, crop (H, W), batch per domain, predict size (W, H), (warm-up, repeats) train / predict
    "paper": dict(preset="paper", crop=(512, 512), batch=2, predict_wh=(1024, 512), train=(3, 10), predict=(2, 10)),
    "tiny": dict(preset="cpu", crop=(64, 64), batch=2, predict_wh=(128, 64), train=(1, 2), predict=(1, 2)),
}


def method_config(name: str, preset: str, crop: tuple[int, int], batch: int):
    """configs/gta5_cityscapes/<name>.yaml with the named model preset (no pretrained weights)."""
    from iccld.config import load_config
    from iccld.presets import preset as model_preset

    cfg = load_config(CONFIG_DIR / f"{name}.yaml")
    data = dataclasses.replace(cfg.data, crop_size=list(crop))
    trainer = dataclasses.replace(cfg.trainer, batch_size=batch)
    return dataclasses.replace(cfg, model=model_preset(preset), data=data, trainer=trainer)


def _finite(values: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in values.values())


def _gb(n_bytes: int) -> float:
    return round(n_bytes / 1e9, 3)


def check_training(device, s: dict, bf16: bool) -> dict:
    """Time and peak memory of each method, built and freed one at a time."""
    import torch

    from iccld.utils import seed_everything

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else None
    results, timings = {}, {}
    for name in METHODS:
        cfg = method_config(name, s["preset"], s["crop"], s["batch"])
        seed_everything(cfg.trainer.seed)
        batch = random_batch(s["batch"], s["crop"], cfg.model.num_classes, device)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        step = TrainingStep(cfg, batch, device, bf16=bf16)
        logged = []
        timing = time_interleaved({name: lambda: logged.append(step())}, *s["train"], sync=sync)[name]
        timings[name] = timing
        results[name] = {**timing.as_dict(), "losses_finite": all(_finite(d) for d in logged),
                         "last_losses": {k: round(v, 4) for k, v in logged[-1].items()},
                         "peak_memory_gb": _gb(torch.cuda.max_memory_allocated()) if cuda else 0.0,
                         "peak_reserved_gb": _gb(torch.cuda.max_memory_reserved()) if cuda else 0.0}
        print(f"  {name}: {results[name]['median_ms']:.1f} ms/iteration, peak "
              f"{results[name]['peak_memory_gb']:.2f} GB, finite={results[name]['losses_finite']}", flush=True)
        del step, batch, logged
        gc.collect()
    for name in METHODS:  # methods ran one after the other, so this is a ratio of medians
        results[name]["ratio_to_source_only"] = round(timings[name].median / timings["source_only"].median, 3)
    return results


def check_predict(device, s: dict, bf16: bool) -> dict:
    import torch

    from iccld.io import build_model_from_config
    from iccld.presets import preset as model_preset

    cuda = device.type == "cuda"
    model = build_model_from_config(model_preset(s["preset"])).to(device).eval()
    w, h = s["predict_wh"]
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def call(steps):
        def run():
            with autocast:
                if steps is None:
                    return model.predict(x, diffusion=False)
                return model.predict(x, steps=steps, samples=1, generator=torch.Generator().manual_seed(0))
        return run

    fns = {"stage1_path": call(None), **{f"K{k}": call(k) for k in PREDICT_STEPS}}
    memory, finite = {}, {}
    for name, fn in fns.items():  # peak memory of each, measured alone, and the sanity check
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        finite[name] = bool(torch.isfinite(fn().logits.float()).all())
        memory[name] = _gb(torch.cuda.max_memory_allocated()) if cuda else 0.0
    timings = time_interleaved(fns, *s["predict"], sync=torch.cuda.synchronize if cuda else None)
    base = timings["stage1_path"]
    rows = [{"steps": None if name == "stage1_path" else int(name[1:]), **t.as_dict(),
             "ratio_to_stage1": round(paired_ratio(t, base), 3), "peak_memory_gb": memory[name],
             "logits_finite": finite[name]}
            for name, t in timings.items()]
    return {"size_wh": [w, h], "batch": 1, "draws": 1, "rows": rows}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="paper-scale GPU check of ICCLD (see benchmarks/gpu_check.sh)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny, to test this script)")
    p.add_argument("--tiny", action="store_true", help="cpu preset, 64x64 crops, few iterations")
    p.add_argument("--out", type=Path, default=None,
                   help="result JSON (default benchmarks/results/gpu.json on CUDA; required otherwise)")
    p.add_argument("--doc", type=Path, default=DOC, help="docs file whose GPU section is rewritten (CUDA only)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not args.device.startswith("cuda"):  # a shared CPU: see speed.py
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device; nothing measured")
        return 0
    if device.type != "cuda" and args.out is None:
        print("error: --out is required off CUDA, so a test run never replaces results/gpu.json", file=sys.stderr)
        return 2
    from iccld.errors import ICCLDError

    s = SETTINGS["tiny" if args.tiny else "paper"]
    bf16 = device.type == "cuda"  # CPU code stays fp32
    started = time.time()
    result = {"machine": machine_info(str(device)), "device": device.type, "tiny": args.tiny,
              "precision": "bf16" if bf16 else "fp32",
              "settings": {"preset": s["preset"], "backbone": "", "pretrained": False, "batch_size": s["batch"],
                           "crop_hw": list(s["crop"])},
              "reference": {"daformer_peak_memory_gb": DAFORMER_MEMORY_GB}}
    try:
        from iccld.presets import preset as model_preset

        result["settings"]["backbone"] = model_preset(s["preset"]).backbone
        print(f"training iterations on {result['machine'].get('gpu', device.type)} ...", flush=True)
        result["training"] = check_training(device, s, bf16)
        print("predict latency ...", flush=True)
        result["predict"] = check_predict(device, s, bf16)
    except (BenchmarkError, ICCLDError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finite = all(v["losses_finite"] for v in result["training"].values())
    logits_finite = all(r["logits_finite"] for r in result["predict"]["rows"])
    result["sanity"] = {"cuda": device.type == "cuda", "bf16_autocast": bf16, "all_losses_finite": finite,
                        "all_logits_finite": logits_finite}
    result["wall_s"] = round(time.time() - started, 1)
    out = args.out or RESULTS / "gpu.json"
    write_json(out, result)
    print(f"wrote {out} in {result['wall_s']} s")
    if device.type == "cuda" and not args.tiny:
        write_section("gpu", render_gpu_section(result), args.doc)
        print(f"wrote the gpu section of {args.doc}")
    if not (finite and logits_finite):
        print("error: non-finite losses or logits (see 'sanity' in the result)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
