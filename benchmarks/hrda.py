"""HRDA's multi-resolution against single resolution on the embedded benchmark made at twice the
usual size (512x256), for stage 1 and full ICCLD, in both regimes, with the IoU of the thin classes.

    python benchmarks/hrda.py --out /work/acc                        # both regimes, 3 seeds
    python benchmarks/hrda.py --regime pretrained --seeds 0 --no-doc  # one worker's share
    python benchmarks/hrda.py --out /work/acc --finished-only --merge benchmarks/results/hrda.json

Why a second benchmark: at the usual 256x128 images and 128x128 crops a detail crop has no finer
pixels to look at. Here the same generator draws the same kind of scenes at 512x256 (its own folder,
``--out``/benchmark_512), and the two rows are the two ways of using them that HRDA compares:

- **single resolution**: the images resized to half (256x128) and 128x128 crops, as DAFormer trains
  on Cityscapes at 1024x512 -- the usual CPU benchmark's input size;
- **HRDA**: the full 512x256 images and 256x256 crops; the context branch sees the crop at 0.5
  (128x128, the single-resolution row's input), the detail branch a 128x128 full-resolution crop
  inside it; HRDA's settings scaled by the crop (1024 -> 256): context scale 0.5, detail loss weight
  0.1, rare-class crop ratio 2.0, the pseudo-label margins doubled with the crop (top 8, bottom 32),
  the scale attention as wide as D (64 channels, HRDA's 256 on a 256-wide head); inference with the
  context on the whole image and the detail branch as 128x128 windows at stride 64.

Both rows are scored against the full-resolution 512x256 labels (the single-resolution logits are
resized up, as mmseg does), on target val and on the held-out test split (what is reported), EMA
model, deltas paired by seed. Rare-class sampling counts pixels on the 512x256 labels in both rows
(``data.rcs_min_pixels=200``, the usual 50 scaled by the area). ICCLD starts from the stage-1 run of
its own seed and row. The loop, the reuse of finished runs and ``--merge`` are
``benchmarks/comparison.py``'s. Writes ``benchmarks/results/hrda.json`` and the ``hrda`` section of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import comparison  # noqa: E402
from accuracy import REGIMES, split_evaluation, train_one  # noqa: E402
from common import RESULTS, markdown_table, mean_std_text  # noqa: E402
from comparison import Comparison, provenance  # noqa: E402

SIZE = (512, 256)  # (W, H) of the benchmark this script makes
COMMON = ("data.rcs_min_pixels=200",)
SINGLE = ("data.source.resize=[256,128]", "data.target.resize=[256,128]", "data.val.resize=[256,128]")
HRDA = ("data.crop_size=[256,256]", "data.rcs_min_crop_ratio=2.0", "method.pl_crop_top=8", "method.pl_crop_bottom=32",
        "model.multires.enabled=true", "model.multires.context_scale=0.5", "model.multires.detail_crop=[128,128]",
        "model.multires.detail_loss_weight=0.1", "model.multires.attention_channels=64")
# row -> (label, run key, config, stage-1 row it starts from, overrides)
ROWS = {
    "stage1": ("stage 1, single resolution", "stage1_single", "stage1", None, SINGLE),
    "stage1_hrda": ("stage 1, HRDA", "stage1_hrda", "stage1", None, HRDA),
    "stage2": ("ICCLD, single resolution", "stage2_single", "stage2", "stage1", SINGLE),
    "stage2_hrda": ("ICCLD, HRDA", "stage2_hrda", "stage2", "stage1_hrda", HRDA),
}
PAIRS = (("stage1_hrda", "stage1"), ("stage2_hrda", "stage2"))
THIN = ("pole", "traffic light", "traffic sign", "person", "rider", "bicycle")


def run_row(regime: str, out: Path, bench: Path, row: str, seed: int, weights: str) -> dict:
    configs = REGIMES[regime][0]
    runs = _folder(out, regime)
    extra = (f"model.pretrained={weights}",) if regime == "pretrained" else ()
    _, key, config, stage1, overrides = ROWS[row]
    stage1_key = ROWS[stage1][1] if stage1 else None
    result = train_one(bench, runs, key, config, stage1_key, seed, False, 1.0, configs, (*extra, *COMMON, *overrides))
    test = split_evaluation(runs / f"{key}_s{seed}")
    return {"regime": regime, "row": row, "seed": seed, "test": test["ema"]["miou"],
            "val": result["val"]["ema"]["miou"], "per_class": test["ema"]["per_class"],
            "seconds": result["seconds"]}


def _paired(runs: list[dict], regime: str, a: str, b: str) -> list[float]:
    by = {(r["row"], r["seed"]): r["test"] for r in runs if r["regime"] == regime}
    return [by[(a, s)] - by[(b, s)] for (v, s) in by if v == a and (b, s) in by]


def _paired_class(runs: list[dict], regime: str, a: str, b: str, name: str) -> list[float]:
    by = {(r["row"], r["seed"]): r["per_class"][name] for r in runs if r["regime"] == regime}
    return [by[(a, s)] - by[(b, s)] for (v, s) in by if v == a and (b, s) in by]


def render(result: dict) -> str:
    meta, runs = result["meta"], result["runs"]
    lines = ["HRDA's multi-resolution against single resolution (`benchmarks/hrda.py`) on the embedded "
             f"benchmark made at {SIZE[0]}x{SIZE[1]}: single resolution trains on the images resized to half "
             "with 128x128 crops; HRDA on the full images with 256x256 crops, the context at 0.5 and a "
             "128x128 full-resolution detail crop (the script's docstring lists every setting). Both scored "
             "on the full-resolution labels; EMA model, val beside the held-out test; deltas paired by seed, "
             "mean ± std over seeds.", "",
             provenance(meta, runs) + " The runs themselves were trained by workers of the same script, two "
             "at a time, one thread each.", ""]
    for regime in meta["regimes"]:
        rows = []
        for row, (label, *_rest) in ROWS.items():
            mine = [r for r in runs if r["regime"] == regime and r["row"] == row]
            if not mine:
                continue
            delta = next((_paired(runs, regime, a, b) for a, b in PAIRS if a == row), None)
            rows.append([label, str(len(mine)), mean_std_text([r["val"] for r in mine]),
                         mean_std_text([r["test"] for r in mine]),
                         mean_std_text(delta) if delta else "",
                         f"{sum(d > 0 for d in delta)} of {len(delta)}" if delta else "",
                         *[mean_std_text([r["per_class"][c] for r in mine]) for c in THIN]])
        if not rows:
            continue
        lines += [f"**{REGIMES[regime][3]}**", "",
                  markdown_table(["row", "seeds", "val mIoU", "test mIoU", "test Δ HRDA − single", "seeds up",
                                  *[f"{c} IoU" for c in THIN]], rows), ""]
        for a, b in PAIRS:
            if _paired(runs, regime, a, b):
                cells = [f"{c} {mean_std_text(_paired_class(runs, regime, a, b, c))}" for c in THIN]
                lines.append(f"- {ROWS[a][0]} − {ROWS[b][0]}, test IoU by thin class: " + "; ".join(cells) + ".")
        lines.append("")
    return "\n".join(lines)


def _benchmark(out: Path) -> Path:
    from iccld.data.synthetic import generate

    generate(out=out / "benchmark_512", seed=0, size=SIZE, workers=2)
    return out / "benchmark_512"


def _folder(out: Path, regime: str) -> Path:
    return out / "hrda" / regime


COMPARISON = Comparison(script="hrda.py", section="hrda", rows=ROWS, default_json=RESULTS / "hrda.json",
                        benchmark=_benchmark, folder=_folder, run_row=run_row, render=render)


def main(argv: list[str] | None = None) -> int:
    return comparison.main(COMPARISON, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
