"""Speed of ICCLD at the synthetic benchmark's settings (the ``cpu`` model preset).

    python benchmarks/speed.py              # about 2 minutes on 2 shared cores
    python benchmarks/speed.py --quick      # fewer repeats
    python benchmarks/speed.py --device cuda

Measures, on random tensors (the data loader is not measured):
1. time per training iteration of source_only, stage1 and stage2 (see common.TrainingStep), with the
   batch size and crop of configs/synthetic/*.yaml, as a ratio to source_only;
2. latency of predict as the commands run it (``iccld.evaluation.inference.model_predict``:
   ``ICCLD.predict`` with the CLI's thread choice) on one 256x128 image (the synthetic val size) for the stage-1 path
   and for K DDIM steps x N noise draws, as a ratio to the stage-1 path, plus a breakdown into
   encoder, decoder, one generic denoiser call and the K=4 sampling loop; on the CPU, the K=4 ratio
   again under other OpenMP wait policies and thread counts (one fresh process each);
3. peak memory of each training method and of three predict settings (CPU: the growth of the peak
   resident set size of a fresh process while it runs the workload; CUDA: max_memory_allocated);
4. predict latency against image size, on one thread, on all of them and with the commands' choice
   (where ``SMALL_INPUT_PIXELS`` comes from);
5. the same K=4 / stage-1 ratio for the ``paper`` preset (MiT-B5, the full-size denoiser) on one
   512x512 image (the paper's crop), randomly initialised: the scale the method is designed for.
Workloads of one table are timed round-robin and ratios are taken per round, so load from other
jobs on a shared machine inflates absolute times but hardly the ratios.

Writes benchmarks/results/speed.json and the "speed" and "gpu" sections of docs/benchmarks.md
(the gpu section is rendered from benchmarks/results/gpu.json, see write_gpu_section.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from common import (DOC, METHODS, REPO, RESULTS, BenchmarkError, TrainingStep, machine_info, markdown_table,
                    paired_ratio, peak_rss_mb, random_batch, reset_peak_rss, rss_mb, time_interleaved,
                    write_json, write_section)
from write_gpu_section import load_gpu_result, render_gpu_section

CONFIG_DIR = REPO / "configs" / "synthetic"
STEPS = (1, 2, 4, 10, 50)  # K
DRAWS = (1, 4)  # N
PREDICT_SIZE = (256, 128)  # (W, H): the synthetic validation images
SIZES = ((128, 64), (256, 128), (512, 256), (1024, 512))  # (W, H)
STAGE2_TARGET = 3.0  # stage-2 iteration <= this x a source-only one
K4_TARGET = 1.3  # predict with K=4, N=1 <= this x the stage-1 path
MEMORY_PROBES = ("train_source_only", "train_stage1", "train_stage2",
                 "predict_stage1_path", "predict_K4_N1", "predict_K4_N4")
PAPER_SIZE = (512, 512)  # (W, H): the paper's training crop
PAPER_STEPS = (1, 4, 10)
REPEATS = {  # (warm-up rounds, measured rounds)
    "default": {"training": (3, 10), "predict": (1, 7), "sizes": (1, 5), "paper": (1, 5)},
    "quick": {"training": (1, 3), "predict": (1, 2), "sizes": (1, 2), "paper": (1, 1)},
}


# ------------------------------------------------------------------------------------------------
# workloads

def synthetic_configs() -> dict:
    """Config of each timed method, from configs/synthetic/<name>.yaml."""
    from iccld.config import load_config

    configs = {name: load_config(CONFIG_DIR / f"{name}.yaml") for name in METHODS}
    shapes = {(c.trainer.batch_size, tuple(c.data.crop_size)) for c in configs.values()}
    if len(shapes) != 1:
        raise BenchmarkError(f"{CONFIG_DIR}: the methods use different batch sizes or crops {sorted(shapes)}")
    return configs


def _sync(device):
    import torch

    return torch.cuda.synchronize if str(device).startswith("cuda") else None


def _predict_model(device):
    from iccld.io import build_model_from_config

    return build_model_from_config(synthetic_configs()["stage2"].model).to(device).eval()


def _predict_fn(model, x, steps: int | None, draws: int, threads: int | None = None):
    """A predict call as the commands make it (model_predict: one CPU thread for a small input): the
    stage-1 path when ``steps`` is None, else K steps x N draws. ``threads``: call ``model.predict``
    itself on that many threads instead."""
    import torch

    from iccld.evaluation.inference import model_predict

    kwargs = dict(diffusion=False) if steps is None else dict(steps=steps, samples=draws)
    if threads is None:
        return lambda: model_predict(model, x, generator=torch.Generator().manual_seed(0), **kwargs)

    def call():
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return model.predict(x, generator=torch.Generator().manual_seed(0), **kwargs)
        finally:
            torch.set_num_threads(before)
    return call


def _image(size: tuple[int, int], device):
    import torch

    w, h = size
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(device)


def measure_training(device, warmup: int, repeats: int) -> dict:
    from iccld.utils import seed_everything

    configs = synthetic_configs()
    first = configs["source_only"]
    batch_size, crop = first.trainer.batch_size, tuple(first.data.crop_size)
    batch = random_batch(batch_size, crop, first.model.num_classes, device)
    steps, losses = {}, {}
    for name, cfg in configs.items():
        seed_everything(cfg.trainer.seed)
        step = TrainingStep(cfg, batch, device)
        steps[name] = (lambda s=step, n=name: losses.setdefault(n, []).append(s()))
    timings = time_interleaved(steps, warmup, repeats, _sync(device))
    methods = {}
    for name, timing in timings.items():
        ratio = round(paired_ratio(timing, timings["source_only"]), 3)
        finite = all(math.isfinite(v) for d in losses[name] for v in d.values())
        methods[name] = {**timing.as_dict(), "ratio_to_source_only": ratio, "losses_finite": finite}
    ratio = methods["stage2"]["ratio_to_source_only"]
    return {"batch_size": batch_size, "crop_hw": list(crop), "model": "cpu preset (configs/synthetic/base.yaml)",
            "methods": methods,
            "target": {"what": f"stage2 iteration <= {STAGE2_TARGET}x source_only", "value": ratio,
                       "met": ratio <= STAGE2_TARGET}}


def measure_predict(device, warmup: int, repeats: int) -> dict:
    import torch

    model = _predict_model(device)
    x = _image(PREDICT_SIZE, device)
    fns = {"stage1_path": _predict_fn(model, x, None, 1)}
    for k in STEPS:
        for n in DRAWS:
            fns[f"K{k}_N{n}"] = _predict_fn(model, x, k, n)
    timings = time_interleaved(fns, warmup, repeats, _sync(device))
    base = timings["stage1_path"]
    rows = [{"path": "stage1", "steps": None, "draws": None, **base.as_dict(), "ratio_to_stage1": 1.0}]
    for k in STEPS:
        for n in DRAWS:
            t = timings[f"K{k}_N{n}"]
            rows.append({"path": "diffusion", "steps": k, "draws": n, **t.as_dict(),
                         "ratio_to_stage1": round(paired_ratio(t, base), 3)})

    # where the time goes: E (+ latent head), D, one denoiser call, the K=4 sampling loop
    with torch.no_grad():
        z0, skips = model.encode(x)
        t_mid = model.diffusion.num_train_timesteps // 2
        parts = {"encode": lambda: model.encode(x),
                 "decode": lambda: model.decode(z0, skips, x.shape[-2:]),
                 "denoiser_call": lambda: model.diffusion.denoise(z0, z0, t_mid),
                 "sample_K4": lambda: model.sample(z0, 4, torch.Generator().manual_seed(0))}
        breakdown = time_interleaved(parts, warmup, 3 * repeats, _sync(device))  # cheap: more rounds
    k4 = next(r for r in rows if r["steps"] == 4 and r["draws"] == 1)
    return {"size_wh": list(PREDICT_SIZE), "batch": 1, "latent_hw": list(z0.shape[-2:]), "rows": rows,
            "breakdown": {k: v.as_dict() for k, v in breakdown.items()},
            "target": {"what": f"predict K=4, N=1 <= {K4_TARGET}x the stage-1 path",
                       "value": k4["ratio_to_stage1"], "met": k4["ratio_to_stage1"] <= K4_TARGET}}


def measure_sizes(device, warmup: int, repeats: int) -> dict:
    """Per image size: the commands' predict (stage-1 path and K=4), and on the CPU ``model.predict``
    on one thread and on all the process's threads, which is where SMALL_INPUT_PIXELS comes from."""
    import torch

    from iccld.evaluation.inference import SMALL_INPUT_PIXELS

    model = _predict_model(device)
    cpu = not str(device).startswith("cuda")
    many = torch.get_num_threads()
    settings = {"command": None, **({"1": 1, str(many): many} if cpu and many > 1 else {})}
    fns = {}
    for size in SIZES:
        x = _image(size, device)
        for name, threads in settings.items():
            fns[f"{size}_{name}_stage1"] = _predict_fn(model, x, None, 1, threads)
            fns[f"{size}_{name}_K4"] = _predict_fn(model, x, 4, 1, threads)
    timings = time_interleaved(fns, warmup, repeats, _sync(device))
    rows = []
    for size in SIZES:
        s1, k4 = timings[f"{size}_command_stage1"], timings[f"{size}_command_K4"]
        row = {"size_wh": list(size), "pixels": size[0] * size[1], "stage1_ms": s1.as_dict()["median_ms"],
               "K4_ms": k4.as_dict()["median_ms"], "K4_over_stage1": round(paired_ratio(k4, s1), 3),
               "one_thread": size[0] * size[1] <= SMALL_INPUT_PIXELS and cpu and many > 1}
        for name in settings:
            if name != "command":
                row[f"threads_{name}"] = {w: timings[f"{size}_{name}_{w}"].as_dict()["median_ms"]
                                          for w in ("stage1", "K4")}
        rows.append(row)
    return {"rows": rows, "repeats": repeats, "warmup": warmup, "threads": many,
            "small_input_pixels": SMALL_INPUT_PIXELS}


def measure_paper(device, warmup: int, repeats: int) -> dict:
    """K-step predict against the stage-1 path for the paper preset (random weights: speed only)."""
    from iccld.io import build_model_from_config
    from iccld.presets import preset

    cfg = preset("paper")
    model = build_model_from_config(cfg).to(device).eval()
    x = _image(PAPER_SIZE, device)
    fns = {"stage1_path": _predict_fn(model, x, None, 1)}
    fns.update({f"K{k}_N1": _predict_fn(model, x, k, 1) for k in PAPER_STEPS})
    timings = time_interleaved(fns, warmup, repeats, _sync(device))
    base = timings["stage1_path"]
    rows = [{"steps": None, **base.as_dict(), "ratio_to_stage1": 1.0}]
    rows += [{"steps": k, **timings[f"K{k}_N1"].as_dict(),
              "ratio_to_stage1": round(paired_ratio(timings[f"K{k}_N1"], base), 3)} for k in PAPER_STEPS]
    k4 = next(r for r in rows if r["steps"] == 4)["ratio_to_stage1"]
    del model
    gc.collect()
    return {"size_wh": list(PAPER_SIZE), "batch": 1, "backbone": cfg.backbone,
            "unet_channels": list(cfg.unet_channels), "unet_layers_per_block": cfg.unet_layers_per_block,
            "unet_attention": cfg.unet_attention, "rows": rows,
            "target": {"what": f"paper preset: predict K=4, N=1 <= {K4_TARGET}x the stage-1 path",
                       "value": k4, "met": k4 <= K4_TARGET}}


# ------------------------------------------------------------------------------------------------
# thread settings: OpenMP reads its wait policy once, so each setting runs in a fresh process

POLICIES = (("PASSIVE", 2), ("ACTIVE", 2), ("PASSIVE", 1))  # (OMP_WAIT_POLICY, torch threads)
POLICY_ROUNDS = 30


def ratio_probe(device) -> dict:
    """The K=4, N=1 / stage-1 predict ratio in this process's thread settings."""
    import torch

    model = _predict_model(device)
    x = _image(PREDICT_SIZE, device)
    n = torch.get_num_threads()  # ICCLD.predict itself, on the process's threads
    timings = time_interleaved({"stage1_path": _predict_fn(model, x, None, 1, n), "K4": _predict_fn(model, x, 4, 1, n)},
                               3, POLICY_ROUNDS, _sync(device))
    return {"policy": os.environ.get("OMP_WAIT_POLICY"), "threads": torch.get_num_threads(),
            "stage1_ms": timings["stage1_path"].as_dict()["median_ms"], "K4_ms": timings["K4"].as_dict()["median_ms"],
            "ratio": round(paired_ratio(timings["K4"], timings["stage1_path"]), 3)}


def measure_policies() -> dict:
    rows = []
    for policy, threads in POLICIES:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--ratio-probe", "--threads", str(threads)]
        env = {**os.environ, "OMP_WAIT_POLICY": policy}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
        if proc.returncode != 0:
            raise BenchmarkError(f"ratio probe {policy}/{threads} failed: {proc.stderr.strip().splitlines()[-1:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {"rounds": POLICY_ROUNDS, "rows": rows}


# ------------------------------------------------------------------------------------------------
# memory: each probe runs in a fresh process (CPU) so peaks do not hide each other

def run_probe(name: str, device) -> dict:
    """Build the workload, then run it three times (the first includes one-off allocations, e.g.
    AdamW's state); returns the memory it took."""
    import torch

    if name.startswith("train_"):
        from iccld.utils import seed_everything

        cfg = synthetic_configs()[name[len("train_"):]]
        seed_everything(cfg.trainer.seed)
        batch = random_batch(cfg.trainer.batch_size, tuple(cfg.data.crop_size), cfg.model.num_classes, device)
        work = TrainingStep(cfg, batch, device)
    else:
        model = _predict_model(device)
        setting = name[len("predict_"):]
        steps, draws = (None, 1) if setting == "stage1_path" else (int(setting[1:].split("_")[0]),
                                                                    int(setting.split("_N")[1]))
        work = _predict_fn(model, _image(PREDICT_SIZE, device), steps, draws)
    gc.collect()
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        if not reset_peak_rss():
            raise BenchmarkError("cannot reset the peak RSS (/proc/self/clear_refs); use --no-memory")
        before = rss_mb()
    for _ in range(3):
        work()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
        return {"peak_mb": round(peak, 1), "before_mb": round(before, 1), "growth_mb": round(peak - before, 1)}
    peak = peak_rss_mb()
    return {"peak_mb": round(peak, 1), "before_mb": round(before, 1), "growth_mb": round(peak - before, 1)}


def measure_memory(device, threads: int) -> dict:
    out = {}
    if str(device).startswith("cuda"):
        for name in MEMORY_PROBES:
            out[name] = run_probe(name, device)
            gc.collect()
        what = ("torch.cuda.max_memory_allocated over 3 runs of the workload (weights, EMA copy, "
                "optimiser state, activations); growth = peak minus what was allocated before the first run")
        return {"what": what, "probes": out}
    for name in MEMORY_PROBES:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", name, "--threads", str(threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
        if proc.returncode != 0:
            raise BenchmarkError(f"memory probe {name} failed: {proc.stderr.strip().splitlines()[-1:]}")
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    what = ("A fresh process per workload builds it (model, EMA copy, batch), resets its peak resident set "
            "size to the current one (/proc/self/clear_refs) and runs it 3 times; peak = the highest RSS "
            "(VmHWM) during those runs, growth = peak minus the RSS just before them: gradients, optimiser "
            "state, activations and what the allocator keeps. 'before' is mostly the torch, transformers "
            "and diffusers libraries any process importing iccld holds")
    return {"what": what, "probes": out}


# ------------------------------------------------------------------------------------------------
# the docs section

def _met(target: dict) -> str:
    return "**met**" if target["met"] else "**not met**"


def render_speed_section(r: dict) -> str:
    """The "Speed" section of docs/benchmarks.md from a speed.json result."""
    m, tr, pr = r["machine"], r["training"], r["predict"]
    t2, tk = tr["target"], pr["target"]
    k4_over = tk["value"] / K4_TARGET
    s2_over = t2["value"] / STAGE2_TARGET
    lines = [
        f"## Speed ({m['device']})", "",
        f"Measured {m['date']} with `{m['command']}` on {m['cpu']}, {m['usable_cores']} usable cores, "
        f"torch {m['torch']} with {m['torch_threads']} threads"
        + (f" (OMP_WAIT_POLICY={r['omp_wait_policy']})" if r.get("omp_wait_policy") else "")
        + f"; load average {m['load_average_1m']} at the start"
        + (f", {r['load_average_1m_end']} at the end" if "load_average_1m_end" in r else "")
        + (f"; {r['wall_s']:.0f} s in all." if "wall_s" in r else "."), "",
        "The machine is shared with other jobs, which inflates absolute times. The workloads of each table "
        "were timed round-robin and every ratio is the median of per-round ratios, so ratios measured in "
        "the same run are the numbers to read. Inputs are random tensors already in memory: the data "
        "loader is not measured.", "",
        "**Targets**", "",
        f"- stage-2 iteration <= {STAGE2_TARGET:g}x a source-only one: {_met(t2)} ({t2['value']:.2f}x"
        + ("" if t2["met"] else f", {s2_over:.2f}x the target") + ").",
        f"- predict with K=4 steps, N=1 draw <= {K4_TARGET:g}x the stage-1 path: {_met(tk)} "
        f"({tk['value']:.2f}x" + ("" if tk["met"] else f", {k4_over:.2f}x the target") + ").", "",
        f"### Training iteration (batch {tr['batch_size']} source + {tr['batch_size']} target, "
        f"{tr['crop_hw'][0]}x{tr['crop_hw'][1]} crops, {tr['model']})", "",
        "One iteration = losses, backward, AdamW step (+ discriminator step), EMA update, as "
        "`Trainer.train_step`. oracle is source_only's computation on target images and is not timed.", "",
    ]
    mem = r.get("memory", {}).get("probes", {})
    rows = []
    for name, v in tr["methods"].items():
        growth = mem.get(f"train_{name}", {}).get("growth_mb", "-")
        rows.append([name, f"{v['median_ms']:.1f}", f"{v['min_ms']:.1f}-{v['max_ms']:.1f}",
                     f"{v['ratio_to_source_only']:.2f}x", growth])
    lines += [markdown_table(["method", "ms / iteration (median)", "min-max", "x source_only",
                              "peak memory growth (MiB)"], rows), ""]
    w, h = pr["size_wh"]
    lines += [f"### Inference latency (predict as `iccld predict`/`evaluate` run it, batch 1, {w}x{h} W x H, latent "
              f"{pr['latent_hw'][1]}x{pr['latent_hw'][0]})", "",
              "`ICCLD.predict` through the commands' `model_predict`, which runs an input of at most "
              f"{r['sizes'].get('small_input_pixels', 32768)} pixels on one CPU thread (see the image-size table).", ""]
    rows = []
    for row in pr["rows"]:
        path = "stage-1 path D(z0)" if row["path"] == "stage1" else "diffusion"
        rows.append([path, row["steps"] or "-", row["draws"] or "-", f"{row['median_ms']:.1f}",
                     f"{row['ratio_to_stage1']:.2f}x"])
    lines += [markdown_table(["path", "K steps", "N draws", "ms (median)", "x stage-1 path"], rows), ""]
    b = {k: v["median_ms"] for k, v in pr["breakdown"].items()}
    share = b["sample_K4"] / max(b["encode"] + b["decode"], 1e-9)
    lines += ["Where the time goes (ms, median, timed apart): "
              + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in b.items())
              + f". A denoiser call is the generic U-Net forward (as in training); the K=4 sampling loop "
              "(4 denoiser calls through the fixed-step runner, and DDIM updates, on the latent) costs "
              f"{share:.2f}x encoder + decoder, which puts the K=4 path near {1 + share:.2f}x the stage-1 "
              "path; E and D run once whatever K is.", ""]
    if "policies" in r:
        rows = [[q["policy"], q["threads"], f"{q['stage1_ms']:.1f}", f"{q['K4_ms']:.1f}", f"{q['ratio']:.2f}x"]
                for q in r["policies"]["rows"]]
        lines += ["### The K=4 ratio under other thread settings", "",
                  "Each setting in a fresh process (OpenMP reads its wait policy once), "
                  f"{r['policies']['rounds']} round-robin rounds. The CLI sets `OMP_WAIT_POLICY=PASSIVE` "
                  "unless the environment says otherwise: idle OpenMP threads sleep, which keeps jobs that "
                  "share the cores from stalling each other, but wakes them for every parallel region. "
                  "`ACTIVE` (spinning) is faster for a job alone on the machine. `ICCLD.predict` itself at "
                  "each thread count (the commands' one-thread choice is not applied here).", "",
                  markdown_table(["OMP_WAIT_POLICY", "threads", "stage-1 path ms", "K=4 ms", "K=4 / stage-1"],
                                 rows), ""]
    sz = r["sizes"]
    many = sz.get("threads")
    lines += ["### Time against image size (batch 1)", "",
              "E and D grow with the number of pixels; the denoiser runs on the stride-16 latent grid, "
              "so the K=4 path costs E and D plus a sampling loop "
              "that stays small at every size. On small images most of the time is waking OpenMP threads: "
              "the commands run an input of at most "
              f"{sz.get('small_input_pixels', 32768)} pixels on one thread (`model_predict`). "
              "The first columns are the commands' times; the last ones `ICCLD.predict` itself on one thread "
              f"and on {many}, which is where that limit comes from.", ""]
    header = ["W x H", "pixels", "threads", "stage-1 path ms", "K=4 ms", "K=4 / stage-1"]
    if many and many > 1 and "threads_1" in sz["rows"][0]:
        header += ["stage-1 / K=4 ms, 1 thread", f"stage-1 / K=4 ms, {many} threads"]
    rows = []
    for s in sz["rows"]:
        row = [f"{s['size_wh'][0]}x{s['size_wh'][1]}", s["pixels"], 1 if s.get("one_thread") else (many or "-"),
               f"{s['stage1_ms']:.1f}", f"{s['K4_ms']:.1f}", f"{s['K4_over_stage1']:.2f}x"]
        if len(header) > 6:
            row += [f"{s[k]['stage1']:.1f} / {s[k]['K4']:.1f}" for k in ("threads_1", f"threads_{many}")]
        rows.append(row)
    lines += [markdown_table(header, rows), ""]
    if "paper" in r:
        pp = r["paper"]
        w, h = pp["size_wh"]
        lines += [f"### The paper preset ({pp['backbone']}, denoiser channels {pp['unet_channels']}, "
                  f"{w}x{h}, batch 1, random weights)", "",
                  "The same comparison at the scale the method is designed for, on the same CPU: the "
                  "encoder's cost grows with the image and the backbone, the denoiser's with the stride-16 "
                  f"latent grid only. K=4, N=1 against the stage-1 path: {_met(pp['target'])} "
                  f"({pp['target']['value']:.2f}x; target {K4_TARGET:g}x).", ""]
        rows = [["stage-1 path D(z0)" if q["steps"] is None else "diffusion", q["steps"] or "-",
                 f"{q['median_ms']:.0f}", f"{q['ratio_to_stage1']:.2f}x"] for q in pp["rows"]]
        lines += [markdown_table(["path", "K steps", "ms (median)", "x stage-1 path"], rows), ""]
    if mem:
        rows = [[k, v["before_mb"], v["peak_mb"], v["growth_mb"]] for k, v in mem.items()]
        lines += ["### Peak memory", "", f"{r['memory']['what']}.", "",
                  markdown_table(["workload", "before (MiB)", "peak (MiB)", "growth (MiB)"], rows), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=2, help="torch threads on the CPU (default 2)")
    p.add_argument("--quick", action="store_true", help="fewer repeats (a smoke test, noisy numbers)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    p.add_argument("--no-paper", action="store_true",
                   help="skip the paper-preset (MiT-B5, 512x512) predict comparison (about 1 minute on a CPU)")
    p.add_argument("--json", type=Path, default=None,
                   help="result file (default benchmarks/results/speed.json; speed_cuda.json on CUDA)")
    p.add_argument("--doc", type=Path, default=None,
                   help="docs file whose speed/gpu sections are rewritten (default docs/benchmarks.md on "
                        "the CPU; on CUDA only when given)")
    p.add_argument("--no-policies", action="store_true",
                   help="skip the K=4 ratio under other OpenMP thread settings (CPU only)")
    p.add_argument("--probe", choices=MEMORY_PROBES, help=argparse.SUPPRESS)  # internal: one memory probe
    p.add_argument("--ratio-probe", action="store_true", help=argparse.SUPPRESS)  # internal: ratio_probe
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # Set before torch loads OpenMP: with the default (spinning) wait policy, 2 threads on 2 cores
    # shared with other jobs stall at every barrier and timings swing 20x between runs.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from iccld.errors import ICCLDError

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("no CUDA device; nothing measured")
        return 0
    torch.set_num_threads(args.threads)
    try:
        if args.probe:
            print(json.dumps(run_probe(args.probe, args.device)))
            return 0
        if args.ratio_probe:
            print(json.dumps(ratio_probe(args.device)))
            return 0
        reps = REPEATS["quick" if args.quick else "default"]
        started = time.time()
        result = {"machine": machine_info(args.device), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                  "quick": args.quick}
        print("training iterations ...", file=sys.stderr, flush=True)
        result["training"] = measure_training(args.device, *reps["training"])
        print("predict latency ...", file=sys.stderr, flush=True)
        result["predict"] = measure_predict(args.device, *reps["predict"])
        if not cuda and not args.no_policies:
            print("thread settings ...", file=sys.stderr, flush=True)
            result["policies"] = measure_policies()
        print("image sizes ...", file=sys.stderr, flush=True)
        result["sizes"] = measure_sizes(args.device, *reps["sizes"])
        if not args.no_paper:
            print("paper preset ...", file=sys.stderr, flush=True)
            result["paper"] = measure_paper(args.device, *reps["paper"])
        if not args.no_memory:
            print("memory ...", file=sys.stderr, flush=True)
            result["memory"] = measure_memory(args.device, args.threads)
        result["wall_s"] = round(time.time() - started, 1)
        result["load_average_1m_end"] = round(os.getloadavg()[0], 2)
        json_path = args.json or RESULTS / ("speed_cuda.json" if cuda else "speed.json")
        write_json(json_path, result)
        section = render_speed_section(result)
        print(section)
        doc = args.doc or (None if cuda else DOC)
        if doc is not None:
            write_section("speed", section, doc)
            write_section("gpu", render_gpu_section(load_gpu_result()), doc)
        print(f"wrote {json_path}" + (f" and {doc}" if doc else "") + f" in {result['wall_s']} s", file=sys.stderr)
    except (BenchmarkError, ICCLDError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
