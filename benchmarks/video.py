"""Video prediction: flicker with and without temporal smoothing, and peak memory against length.

    python benchmarks/video.py                       # about 5 minutes on 2 shared cores
    python benchmarks/video.py --checkpoint RUN      # a trained run instead of the oracle trained here
    python benchmarks/video.py --part flicker        # or: --part memory (the other part's numbers are kept)

Both parts run ``iccld predict`` itself (``iccld.cli.main``) on clips made by
``iccld.data.synthetic.panning_clip``: one target-style street scene, the view moving a fixed number
of pixels per frame, fresh camera noise (sigma 2 grey levels) on every frame, encoded as H.264 mp4.

1. **Flicker**: a 256x128 clip (the benchmark's image size) of 60 frames at 25 fps panning 1 pixel
   per frame, predicted with ``--frames`` at ``--smooth`` 0 (off), 0.3, 0.5, 0.7 and 0.9. Flicker =
   the mean, over consecutive frame pairs, of the share of pixels whose predicted label changes (the
   ground truth's own is what the pan moves); motion-compensated flicker compares each frame with the
   previous one moved by the pan, which the ground truth never changes (0). mIoU and pixel accuracy of
   all frames against the clip's labels show what smoothing costs (its lag behind the motion).
   The model: by default an oracle (configs/synthetic/oracle.yaml, target labels) trained
   ``--iters`` iterations on a small generated benchmark in ``--work``; ``--checkpoint`` takes any run.
2. **Memory**: 1280x720 clips of 2 s and 10 s at 25 fps (50 and 250 frames, panning 2 pixels per
   frame), each predicted with ``--frames`` in a fresh process at its native size; peak resident set
   size (VmHWM) of that process, and its RSS before ``main`` (libraries imported).

Writes benchmarks/results/video.json and the "video" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (REPO, RESULTS, BenchmarkError, machine_info, markdown_table, peak_rss_mb,  # noqa: E402
                    rss_mb, write_json, write_section)

RESULT = RESULTS / "video.json"
SMOOTH = (0.0, 0.3, 0.5, 0.7, 0.9)
FLICKER_CLIP = dict(size=(256, 128), frames=60, rate=25, pan=1, noise=2.0, seed=0)
MEMORY_CLIPS = {"2 s": dict(size=(1280, 720), frames=50, rate=25, pan=2, noise=2.0, seed=0),
                "10 s": dict(size=(1280, 720), frames=250, rate=25, pan=2, noise=2.0, seed=0)}
BENCH = dict(seed=0, num_source=16, num_target=200, num_val=8, num_test=4, size=(256, 128))


# ------------------------------------------------------------------------------------------------
# clips and the model

def write_clip(path: Path, clip: dict) -> list:
    """Encode the panning clip ``clip`` to ``path`` (mp4); returns its labels (train ids), one per frame."""
    from fractions import Fraction

    from iccld.data.synthetic import panning_clip
    from iccld.evaluation.video import VideoWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = VideoWriter(path.parent, path.suffix, *clip["size"], Fraction(clip["rate"]))
    labels = []
    for frame, label in panning_clip(clip["size"], clip["frames"], pan=clip["pan"], seed=clip["seed"],
                                     noise=clip["noise"]):
        writer.write(frame)
        labels.append(label)
    writer.finish(path)
    return labels


def train_oracle(work: Path, iters: int) -> Path:
    """An oracle run of ``iters`` iterations on a small generated benchmark (reused when finished)."""
    from iccld.config import load_config
    from iccld.data.synthetic import generate
    from iccld.training.commands import run_training

    bench, run = work / "benchmark", work / f"oracle_{iters}"
    if (run / "final").is_dir():
        return run
    generate(out=bench, workers=2, progress=False, **BENCH)
    overrides = [f"data.source.root={bench / 'source'}", f"data.target.root={bench / 'target'}",
                 f"data.val.root={bench / 'target'}", f"trainer.max_iters={iters}", "trainer.eval_interval=0",
                 f"trainer.checkpoint_interval={iters}", "data.num_workers=0"]
    config = load_config(REPO / "configs" / "synthetic" / "oracle.yaml", overrides)
    if run_training(config, run, progress=False, overwrite=True) != 0:
        raise BenchmarkError(f"{run}: training the oracle failed")
    return run


def model_ref(args) -> tuple[str, str]:
    """(checkpoint for iccld predict, words for the docs)."""
    if args.checkpoint:
        return args.checkpoint, f"`{args.checkpoint}`"
    run = train_oracle(Path(args.work), args.iters)
    return str(run / "final"), (f"an oracle (configs/synthetic/oracle.yaml: target labels, cpu preset) trained "
                                f"{args.iters} iterations on a generated benchmark of {BENCH['num_target']} "
                                f"target images at {BENCH['size'][0]}x{BENCH['size'][1]}")


# ------------------------------------------------------------------------------------------------
# flicker

def flicker(labels: list, pan: int = 0) -> float:
    """Mean share of pixels whose label changes between consecutive frames; with ``pan``, frame t is
    compared with frame t-1 moved ``pan`` pixels left (the scene's motion), on the columns both show."""
    import numpy as np

    w = labels[0].shape[1]
    return float(np.mean([(b[:, : w - pan] != a[:, pan:]).mean() for a, b in zip(labels, labels[1:])]))


def measure_flicker(checkpoint: str, work: Path) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from iccld.cli import main
    from iccld.evaluation.metrics import ConfusionMatrix

    clip = work / "flicker" / "pan.mp4"
    truth = write_clip(clip, FLICKER_CLIP)
    rows = []
    for alpha in SMOOTH:
        out = work / "flicker" / f"smooth_{alpha:g}"
        started = time.perf_counter()
        code = main(["predict", str(clip), "--checkpoint", checkpoint, "--out", str(out), "--frames",
                     "--overwrite", "--smooth", str(alpha)])
        seconds = time.perf_counter() - started
        if code != 0:
            raise BenchmarkError(f"iccld predict --smooth {alpha} failed with status {code}")
        labels = [np.asarray(Image.open(p)) for p in sorted((out / "pan_frames").glob("*_trainid.png"))]
        if len(labels) != len(truth):
            raise BenchmarkError(f"{out}: {len(labels)} frame PNGs for {len(truth)} frames")
        cm = ConfusionMatrix()
        for pred, gt in zip(labels, truth):
            cm.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(gt.astype(np.int64)))
        summary = cm.summary()
        rows.append({"smooth": alpha, "flicker_pct": round(100 * flicker(labels), 2),
                     "compensated_flicker_pct": round(100 * flicker(labels, FLICKER_CLIP["pan"]), 2),
                     "miou": round(summary["miou"], 2), "pixel_accuracy": round(100 * cm.pixel_accuracy(), 2),
                     "seconds": round(seconds, 1)})
        print(f"  smooth {alpha:g}: {rows[-1]}", file=sys.stderr, flush=True)
    return {"clip": {k: list(v) if isinstance(v, tuple) else v for k, v in FLICKER_CLIP.items()},
            "truth_flicker_pct": round(100 * flicker(truth), 2),
            "truth_compensated_flicker_pct": round(100 * flicker(truth, FLICKER_CLIP["pan"]), 2), "rows": rows}


# ------------------------------------------------------------------------------------------------
# memory: one fresh process per clip

def memory_probe(clip: Path, checkpoint: str, out: Path) -> dict:
    """Run ``iccld predict --frames`` on ``clip`` in this process; RSS before, peak, and the RSS
    sampled every 0.2 s while it runs."""
    import av  # noqa: F401 (imported now: counted in "before")

    import iccld.cli
    import iccld.evaluation.video  # noqa: F401

    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            samples.append(rss_mb())

    before = rss_mb()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started = time.perf_counter()
    code = iccld.cli.main(["predict", str(clip), "--checkpoint", checkpoint, "--out", str(out), "--frames",
                           "--overwrite"])
    seconds = time.perf_counter() - started
    done.set()
    thread.join()
    quarters = [round(max(samples[len(samples) * q // 4: len(samples) * (q + 1) // 4] or [0.0]), 1) for q in range(4)]
    return {"status": code, "before_mb": round(before, 1), "peak_mb": round(peak_rss_mb(), 1),
            "peak_by_quarter_mb": quarters, "seconds": round(seconds, 1)}


def measure_memory(checkpoint: str, work: Path) -> dict:
    rows = {}
    for name, spec in MEMORY_CLIPS.items():
        clip = work / "memory" / f"clip_{spec['frames']}.mp4"
        write_clip(clip, spec)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", str(clip), "--checkpoint", checkpoint,
               "--work", str(work / "memory" / f"out_{spec['frames']}")]
        print(f"  {name}: {spec['frames']} frames of {spec['size'][0]}x{spec['size'][1]} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=REPO)
        if proc.returncode != 0:
            raise BenchmarkError(f"memory probe {name} failed: {proc.stderr.strip().splitlines()[-1:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if result["status"] != 0:
            raise BenchmarkError(f"memory probe {name}: iccld predict exited with {result['status']}")
        rows[name] = {"frames": spec["frames"], "size_wh": list(spec["size"]), "rate": spec["rate"],
                      **{k: v for k, v in result.items() if k != "status"},
                      "seconds_per_frame": round(result["seconds"] / spec["frames"], 2)}
        print(f"  {name}: {rows[name]}", file=sys.stderr, flush=True)
    return {"rows": rows}


# ------------------------------------------------------------------------------------------------
# the docs section

def _measured(m: dict) -> str:
    return (f"Measured {m['date']} with `{m['command']}` on {m['cpu']}, {m['usable_cores']} usable cores shared "
            f"with other jobs (load average {m['load_average_1m']} at the start, {m['load_average_1m_end']} at "
            f"the end), torch {m['torch']}, PyAV {m['av']}.")


def render_section(r: dict) -> str:
    lines = ["## Video prediction (cpu)", "",
             f"Model: {r['model']}. Both parts run `iccld predict` on clips of `iccld.data.synthetic.panning_clip` (one target-style street scene, the view moving a "
             "fixed number of pixels per frame, camera noise of sigma 2 grey levels on every frame), encoded as "
             "H.264 mp4.", ""]
    if "flicker" in r:
        f = r["flicker"]
        c = f["clip"]
        lines += ["### Flicker against `--smooth`", "", _measured(f["machine"]), "",
                  f"A {c['size'][0]}x{c['size'][1]} clip of {c['frames']} frames at {c['rate']} fps panning "
                  f"{c['pan']} pixel per frame. Flicker = share of pixels whose predicted label changes between "
                  "consecutive frames (mean over the pairs); the ground truth's own is "
                  f"{f['truth_flicker_pct']:.2f} %: the pan moves every boundary (the predictions change less, "
                  "being coarser: thin objects they miss do not move). Motion-compensated flicker compares "
                  f"each frame with the previous one moved by the pan; the ground truth's is "
                  f"{f['truth_compensated_flicker_pct']:.2f} %, so all of it is the model's inconsistency. "
                  "mIoU (19 classes, classes absent from both left out) and pixel accuracy over all frames "
                  "against the clip's labels; time = the whole `iccld predict` call (model loading included).", ""]
        off = f["rows"][0]
        rows = [[("off (0)" if q["smooth"] == 0 else f"{q['smooth']:g}"), f"{q['flicker_pct']:.2f}",
                 f"{q['compensated_flicker_pct']:.2f}",
                 f"{q['compensated_flicker_pct'] / max(off['compensated_flicker_pct'], 1e-9):.2f}x",
                 f"{q['miou']:.1f}", f"{q['pixel_accuracy']:.1f}", f"{q['seconds']:.1f}"] for q in f["rows"]]
        lines += [markdown_table(["--smooth", "flicker %", "motion-compensated flicker %", "x off", "mIoU %",
                                  "pixel accuracy %", "time s"], rows), ""]
    if "memory" in r:
        rows = []
        for name, q in r["memory"]["rows"].items():
            rows.append([name, q["frames"], f"{q['size_wh'][0]}x{q['size_wh'][1]} @ {q['rate']} fps",
                         f"{q['before_mb']:.0f}", f"**{q['peak_mb']:.0f}**",
                         " / ".join(f"{x:.0f}" for x in q["peak_by_quarter_mb"]), f"{q['seconds_per_frame']:.2f}"])
        lines += ["### Peak memory against video length", "", _measured(r["memory"]["machine"]), "",
                  "`iccld predict CLIP --frames` in a fresh process per clip, at the clip's native size: frames are "
                  "decoded, predicted and encoded one at a time. before = RSS with the libraries imported, "
                  "before `main`; peak = the process's peak RSS (VmHWM); the quarters are the highest RSS "
                  "sampled (every 0.2 s) in each quarter of the run. The x264 encoder holds a fixed window "
                  "of frames (its look-ahead), so a clip shorter than that window peaks a little lower; "
                  "beyond it the peak no longer depends on the length.", "",
                  markdown_table(["clip", "frames", "size", "before MiB", "peak MiB", "peak by quarter MiB",
                                  "s / frame"], rows), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="a run, final/ or exported model (default: train an oracle in --work)")
    p.add_argument("--iters", type=int, default=400, help="iterations of the oracle trained here (default 400)")
    p.add_argument("--work", default=str(REPO / "runs" / "bench_video"), help="benchmark, run and outputs")
    p.add_argument("--part", choices=["all", "flicker", "memory"], default="all")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--no-doc", action="store_true", help="do not touch docs/benchmarks.md")
    p.add_argument("--memory-probe", metavar="CLIP", help=argparse.SUPPRESS)  # internal: one memory probe
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(Path(args.memory_probe), args.checkpoint, Path(args.work))))
        return 0
    import av

    started = time.time()
    result = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    checkpoint, result["model"] = model_ref(args)
    work = Path(args.work)
    for part, measure in (("flicker", measure_flicker), ("memory", measure_memory)):
        if args.part in ("all", part):
            print(f"{part} ...", file=sys.stderr, flush=True)
            machine = {**machine_info("cpu"), "av": av.__version__}
            result[part] = {"machine": machine, **measure(checkpoint, work)}
            machine["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    result["wall_s"] = round(time.time() - started)
    write_json(RESULT, result)
    if not args.no_doc:
        write_section("video", render_section(result))
    print(f"wrote {RESULT}" + ("" if args.no_doc else " and the video section of docs/benchmarks.md"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkError as exc:
        print(f"video.py: {exc}", file=sys.stderr)
        sys.exit(2)
