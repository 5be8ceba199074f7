"""D's two decoders on the embedded benchmark: the segformer-style 1x1 fusion (the CPU preset's default
until this comparison chose DAFormer's) against DAFormer's context-aware fusion of all four encoder
levels, for stage 1 and full ICCLD, in both regimes.

    python benchmarks/decoder.py --out /work/acc                  # both regimes, 3 seeds
    python benchmarks/decoder.py --regime scratch --seeds 0        # one run of each

Each row is the regime's own config (``stage1.yaml``, ``stage2.yaml``) with every setting the rows
differ in spelled out, so a row means the same whatever the preset's default: the segformer rows
``model.decoder=segformer`` with ``model.skip_strides=[4,8,16]``; the daformer rows
``model.decoder=daformer`` with ``model.skip_strides=[4,8,16,32]`` (DAFormer fuses strides 4 to 32); the
preset's width (``decoder_channels``) is kept; the ``_gn`` rows add ``model.decoder_norm=group``
(GroupNorm in place of DAFormer's BatchNorm); the ``_tb`` rows have ``method.teacher_norm=batch``
(DAFormer's teacher: its BatchNorm layers normalise the target batch by its own statistics; stage 2's
pseudo-labels too), the others ``running``. The ``_tb`` daformer rows are the CPU configs' defaults
now. ICCLD starts from the stage-1 run of its own seed and decoder. Finished runs are reused, not
retrained (the loop and ``--merge`` are ``benchmarks/comparison.py``'s). Every run is evaluated on
target val and on the held-out test split (what is reported), with paired deltas by seed and the
per-class IoU of the thin classes. Writes ``benchmarks/results/decoder.json`` and the ``decoder``
section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import comparison  # noqa: E402
from accuracy import REGIMES, split_evaluation, train_one  # noqa: E402
from common import RESULTS, markdown_table, mean_std_text  # noqa: E402
from comparison import Comparison, provenance  # noqa: E402

SEGFORMER = ("model.decoder=segformer", "model.skip_strides=[4,8,16]", "method.teacher_norm=running")
DAFORMER = ("model.decoder=daformer", "model.skip_strides=[4,8,16,32]", "method.teacher_norm=running")
DAFORMER_GN = (*DAFORMER, "model.decoder_norm=group")  # GroupNorm in BatchNorm's place
DAFORMER_TB = (*DAFORMER[:2], "method.teacher_norm=batch")  # BatchNorm; the EMA teacher on batch statistics
# row -> (label, run key, config, stage-1 row it starts from, overrides)
ROWS = {
    "stage1": ("stage 1, segformer decoder", "stage1_segformer", "stage1", None, SEGFORMER),
    "stage1_daformer": ("stage 1, daformer decoder", "stage1_daformer", "stage1", None, DAFORMER),
    "stage2": ("ICCLD, segformer decoder", "stage2_segformer", "stage2", "stage1", SEGFORMER),
    "stage2_daformer": ("ICCLD, daformer decoder", "stage2_daformer", "stage2", "stage1_daformer", DAFORMER),
    "stage1_daformer_gn": ("stage 1, daformer decoder, GroupNorm", "stage1_daformer_gn", "stage1", None, DAFORMER_GN),
    "stage2_daformer_gn": ("ICCLD, daformer decoder, GroupNorm", "stage2_daformer_gn", "stage2", "stage1_daformer_gn",
                           DAFORMER_GN),
    "stage1_daformer_tb": ("stage 1, daformer decoder, teacher on batch statistics", "stage1_daformer_tb", "stage1",
                           None, DAFORMER_TB),
    "stage2_daformer_tb": ("ICCLD, daformer decoder, teacher on batch statistics", "stage2_daformer_tb", "stage2",
                           "stage1_daformer_tb", DAFORMER_TB),
}
PAIRS = (("stage1_daformer", "stage1"), ("stage2_daformer", "stage2"), ("stage1_daformer_gn", "stage1"),
         ("stage2_daformer_gn", "stage2"), ("stage1_daformer_tb", "stage1"), ("stage2_daformer_tb", "stage2"))
THIN = ("pole", "traffic light", "traffic sign", "person", "rider", "bicycle")


def run_row(regime: str, out: Path, bench: Path, row: str, seed: int, weights: str) -> dict:
    configs = REGIMES[regime][0]
    runs = _folder(out, regime)
    extra = (f"model.pretrained={weights}",) if regime == "pretrained" else ()
    _, key, config, stage1, overrides = ROWS[row]
    stage1_key = ROWS[stage1][1] if stage1 else None
    result = train_one(bench, runs, key, config, stage1_key, seed, False, 1.0, configs, (*extra, *overrides))
    test = split_evaluation(runs / f"{key}_s{seed}")
    return {"regime": regime, "row": row, "seed": seed, "test": test["ema"]["miou"],
            "val": result["val"]["ema"]["miou"],
            "thin": {c: test["ema"]["per_class"][c] for c in THIN}, "seconds": result["seconds"]}


def _paired(runs: list[dict], regime: str, a: str, b: str) -> list[float]:
    by = {(r["row"], r["seed"]): r["test"] for r in runs if r["regime"] == regime}
    return [by[(a, s)] - by[(b, s)] for (v, s) in by if v == a and (b, s) in by]


def render(result: dict) -> str:
    meta, runs = result["meta"], result["runs"]
    lines = ["D's decoder (`benchmarks/decoder.py`): the segformer-style fusion against DAFormer's "
             "context-aware fusion of strides 4-32 (`model.decoder=daformer`, same width); EMA model, val "
             "beside the held-out test; deltas paired by seed, mean ± std over seeds. The last two rows of "
             "each regime (daformer, teacher on batch statistics) are the CPU configs' default since "
             "this comparison.", "",
             provenance(meta, runs), ""]
    for regime in meta["regimes"]:
        lines += [f"**{REGIMES[regime][3]}**", ""]
        rows = []
        for row, (label, *_rest) in ROWS.items():
            mine = [r for r in runs if r["regime"] == regime and r["row"] == row]
            if not mine:
                continue
            delta = next((_paired(runs, regime, a, b) for a, b in PAIRS if a == row), None)
            rows.append([label, mean_std_text([r["val"] for r in mine]), mean_std_text([r["test"] for r in mine]),
                         mean_std_text(delta) if delta else "",
                         f"{sum(d > 0 for d in delta)} of {len(delta)}" if delta else "",
                         *[mean_std_text([r["thin"][c] for r in mine]) for c in THIN]])
        lines += [markdown_table(["row", "val mIoU", "test mIoU", "test Δ daformer − segformer", "seeds up",
                                  *[f"{c} IoU" for c in THIN]], rows), ""]
    return "\n".join(lines)


def _benchmark(out: Path) -> Path:
    from iccld.data.synthetic import generate

    generate(out=out / "benchmark", seed=0, workers=2)
    return out / "benchmark"


def _folder(out: Path, regime: str) -> Path:
    return out / "pretrained" / "full" if regime == "pretrained" else out / "full"


COMPARISON = Comparison(script="decoder.py", section="decoder", rows=ROWS, default_json=RESULTS / "decoder.json",
                        benchmark=_benchmark, folder=_folder, run_row=run_row, render=render)


def main(argv: list[str] | None = None) -> int:
    return comparison.main(COMPARISON, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
