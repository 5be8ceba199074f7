"""Time per image on the CPU: PyTorch against onnxruntime, for the exported ONNX predictors.

    python benchmarks/onnx_speed.py                  # trains a short stage-1 run itself (~1 minute in all)
    python benchmarks/onnx_speed.py --run runs/stage1 # a finished run's final/ model instead
    python benchmarks/onnx_speed.py --quick          # fewer repeats

The model is the ``cpu`` preset of the embedded benchmark (configs/synthetic/*.yaml). Without
``--run`` a small synthetic benchmark at the preset's 256x128 is generated in a temporary folder
and configs/synthetic/stage1.yaml trains ``--iters`` iterations on it: weights do not change the
cost of a forward pass. The model is exported with :func:`iccld.io.onnx.export_onnx` (as ``iccld
export --onnx`` does) and, for each image size and thread count, four workloads run round-robin on
one normalised image (batch 1): the stage-1 path and the diffusion path (K = the model's sampling
steps, one noise draw) in PyTorch (``ICCLD.predict``) and in onnxruntime (:class:`OnnxPredictor`,
the same noise). Both sides get the same thread count (torch.set_num_threads and the session's
intra-op threads), idle threads sleeping on both (OMP_WAIT_POLICY=PASSIVE; onnxruntime without
spinning, as ``iccld`` runs them). Ratios are medians of per-round ratios, so load from other jobs
on a shared machine hits both sides alike.

Writes benchmarks/results/onnx_speed.json and the ``onnx_speed`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP, as the CLI does

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (REPO, RESULTS, machine_info, markdown_table, paired_ratio, time_interleaved,  # noqa: E402
                    write_json, write_section)

SIZES = ((256, 128), (1024, 512))  # (W, H): the embedded benchmark's images, and Cityscapes' eval size
REPEATS = {"default": (2, 10), "quick": (1, 3)}  # (warm-up rounds, measured rounds)


def train_short_run(folder: Path, iters: int) -> Path:
    """A stage-1 run of ``iters`` iterations of configs/synthetic/stage1.yaml on a small generated
    benchmark at the preset's size; returns the run folder."""
    from iccld.config import load_config
    from iccld.data.synthetic import generate
    from iccld.training.commands import run_training

    bench = folder / "benchmark"
    generate(out=bench, seed=0, num_source=32, num_target=16, num_val=8, num_test=4, size=(256, 128),
             workers=1, progress=False)
    overrides = [f"data.source.root={bench / 'source'}", f"data.target.root={bench / 'target'}",
                 f"data.val.root={bench / 'target'}", f"trainer.max_iters={iters}", "trainer.eval_interval=0",
                 f"trainer.checkpoint_interval={iters}", "data.num_workers=0", "optim.warmup_iters=1",
                 "data.rcs_min_pixels=10"]
    config = load_config(REPO / "configs" / "synthetic" / "stage1.yaml", overrides)
    run = folder / "stage1"
    if run_training(config, run, progress=False) != 0:
        raise SystemExit(f"{run}: the short training failed")
    return run


def measure(model, files: dict, threads: list[int], warmup: int, repeats: int) -> list[dict]:
    import torch

    from iccld.io.onnx import load_onnx

    steps = model.sampling_steps
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        onnx = {path: load_onnx(file, threads=t) for path, file in files.items()}
        for w, h in SIZES:
            x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))

            def draw():
                return torch.Generator().manual_seed(1)
            fns = {
                "pytorch_direct": lambda: model.predict(x, diffusion=False),
                "onnx_direct": lambda: onnx["direct"].predict(x, diffusion=False),
                "pytorch_diffusion": lambda: model.predict(x, steps=steps, generator=draw()),
                "onnx_diffusion": lambda: onnx["diffusion"].predict(x, steps=steps, generator=draw()),
            }
            timings = time_interleaved(fns, warmup, repeats)
            for path in ("direct", "diffusion"):
                ours, theirs = (fns[f"{side}_{path}"]().logits for side in ("onnx", "pytorch"))
                pt, ox = timings[f"pytorch_{path}"], timings[f"onnx_{path}"]
                rows.append({"size_wh": [w, h], "threads": t, "path": path, "steps": steps if path == "diffusion" else None,
                             "pytorch": pt.as_dict(), "onnxruntime": ox.as_dict(),
                             "onnx_over_pytorch": round(paired_ratio(ox, pt), 3),
                             "max_abs_logit_diff": float(f"{float((ours - theirs).abs().max()):.3g}"),
                             "argmax_identical_percent": round(100 * float((ours.argmax(1) == theirs.argmax(1)).float().mean()), 4)})
                print(f"{w}x{h} {t} thread(s) {path}: PyTorch {pt.median * 1e3:.1f} ms, onnxruntime "
                      f"{ox.median * 1e3:.1f} ms ({rows[-1]['onnx_over_pytorch']:.2f}x)", file=sys.stderr)
    return rows


def render(r: dict) -> str:
    m, model = r["machine"], r["model"]
    lines = ["## ONNX export: time per image on the CPU, PyTorch against onnxruntime", "",
             f"Measured {m['date']} with `{m['command']}` on {m['cpu']}, {m['usable_cores']} usable cores, torch "
             f"{m['torch']}, onnxruntime {r['onnxruntime']}; load average {m['load_average_1m']} at the start, "
             f"{r['load_average_1m_end']} at the end; {r['wall_s']:.0f} s in all. The machine was shared with "
             "other jobs running on its 2 cores, which inflates absolute times; the workloads of a row were timed "
             "round-robin and the ratio is the median of per-round ratios.", "",
             f"Model: the `cpu` preset ({model['what']}), exported with `iccld export --onnx`'s "
             f"`export_onnx` (opset {r['opset']}). Batch 1, one normalised image; the diffusion path is "
             f"K={model['steps']} DDIM steps, one noise draw, the same noise on both sides. PyTorch is "
             "`ICCLD.predict`, onnxruntime the `OnnxPredictor` that `iccld evaluate/predict` run for a `.onnx` "
             "file, both on the thread count of the row (the commands run PyTorch on one thread for inputs "
             "up to 512x256, see the speed section). Without `--run`, eps_theta is a stage-1 run's zero "
             "initialisation: the diffusion path costs what it costs after stage 2, and its logits equal the direct "
             "path's (tests/test_onnx.py checks a perturbed eps_theta).", ""]
    rows = []
    for q in r["rows"]:
        rows.append([f"{q['size_wh'][0]}x{q['size_wh'][1]}", q["threads"],
                     "stage-1 D(z0)" if q["path"] == "direct" else f"diffusion, K={q['steps']}",
                     f"{q['pytorch']['median_ms']:.1f}", f"{q['onnxruntime']['median_ms']:.1f}",
                     f"{q['onnx_over_pytorch']:.2f}x", f"{q['max_abs_logit_diff']:.1g}",
                     f"{q['argmax_identical_percent']:.2f}"])
    lines += [markdown_table(["W x H", "threads", "path", "PyTorch ms (median)", "onnxruntime ms (median)",
                              "onnxruntime / PyTorch", "max abs logit diff", "identical argmax %"], rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="a finished run folder (its final/ model); default: train a short one")
    p.add_argument("--iters", type=int, default=30, help="iterations of the short run (without --run)")
    p.add_argument("--threads", type=int, nargs="+", help="thread counts (default: 1 and the usable cores, at most 2)")
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument("--json", default=str(RESULTS / "onnx_speed.json"))
    args = p.parse_args(argv)

    import onnxruntime
    import torch

    from iccld.io import load_pretrained
    from iccld.io.onnx import OPSET, export_onnx

    start = time.time()
    machine = machine_info("cpu")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = args.threads or sorted({1, min(2, cores)})
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else train_short_run(Path(tmp), args.iters)
        model = load_pretrained(run / "final").eval()
        files = export_onnx(model, Path(tmp))
        warmup, repeats = REPEATS["quick" if args.quick else "default"]
        with torch.no_grad():
            rows = measure(model, files, threads, warmup, repeats)
    what = (f"{model.config.backbone}, Cz {model.config.latent_channels}, U-Net {model.config.unet_channels}; "
            + (f"the run {args.run}" if args.run else f"a {args.iters}-iteration stage-1 run on a generated 256x128 benchmark"))
    result = {"machine": machine, "onnxruntime": onnxruntime.__version__, "opset": OPSET,
              "model": {"what": what, "steps": model.sampling_steps}, "repeats": {"warmup": warmup, "measured": repeats},
              "rows": rows, "wall_s": round(time.time() - start, 1),
              "load_average_1m_end": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    write_json(Path(args.json), result)
    text = render(result)
    if not args.no_doc:
        write_section("onnx_speed", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
