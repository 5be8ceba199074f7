"""D's two decoders on the embedded benchmark: the segformer-style 1x1 fusion (the CPU preset's default)
against DAFormer's context-aware fusion of all four encoder levels, for stage 1 and full ICCLD, in
both regimes.

    python benchmarks/decoder.py --out /work/acc                  # both regimes, 3 seeds
    python benchmarks/decoder.py --regime scratch --seeds 0        # one run of each

Each row is the regime's own config (``stage1.yaml``, ``stage2.yaml``) with, for the daformer rows,
``model.decoder=daformer`` and ``model.skip_strides=[4,8,16,32]`` (DAFormer fuses strides 4 to 32); the
preset's width (``decoder_channels``) is kept; the ``_gn`` rows add ``model.decoder_norm=group``
(GroupNorm in place of DAFormer's BatchNorm), the ``_tb`` row ``method.teacher_norm=batch`` (DAFormer's
teacher: its BatchNorm layers normalise the target batch by its own statistics). ICCLD starts from
the stage-1 run of its own seed and decoder. The segformer rows are the run folders of ``benchmarks/accuracy.py`` and
``benchmarks/stage2_recipe.py`` under the same ``--out`` (``stage1``, ``stage2_fixed``): finished runs
are reused, not retrained. Every run is evaluated on target val and on the held-out test split (what
is reported), with paired deltas by seed and the per-class IoU of the thin classes. Writes
``benchmarks/results/decoder.json`` and the ``decoder`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import DEFAULT_WEIGHTS, REGIMES, split_evaluation, train_one  # noqa: E402
from common import RESULTS, machine_info, markdown_table, mean_std_text, write_json, write_section  # noqa: E402

DAFORMER = ("model.decoder=daformer", "model.skip_strides=[4,8,16,32]")
DAFORMER_GN = (*DAFORMER, "model.decoder_norm=group")  # GroupNorm in BatchNorm's place
DAFORMER_TB = (*DAFORMER, "method.teacher_norm=batch")  # BatchNorm; the EMA teacher on batch statistics
# row -> (label, run key, config, stage-1 row it starts from, overrides)
ROWS = {
    "stage1": ("stage 1, segformer decoder", "stage1", "stage1", None, ()),
    "stage1_daformer": ("stage 1, daformer decoder", "stage1_daformer", "stage1", None, DAFORMER),
    "stage2": ("ICCLD, segformer decoder", "stage2_fixed", "stage2", "stage1", ()),
    "stage2_daformer": ("ICCLD, daformer decoder", "stage2_daformer", "stage2", "stage1_daformer", DAFORMER),
    "stage1_daformer_gn": ("stage 1, daformer decoder, GroupNorm", "stage1_daformer_gn", "stage1", None, DAFORMER_GN),
    "stage2_daformer_gn": ("ICCLD, daformer decoder, GroupNorm", "stage2_daformer_gn", "stage2", "stage1_daformer_gn",
                           DAFORMER_GN),
    "stage1_daformer_tb": ("stage 1, daformer decoder, teacher on batch statistics", "stage1_daformer_tb", "stage1",
                           None, DAFORMER_TB),
}
PAIRS = (("stage1_daformer", "stage1"), ("stage2_daformer", "stage2"), ("stage1_daformer_gn", "stage1"),
         ("stage2_daformer_gn", "stage2"), ("stage1_daformer_tb", "stage1"))
THIN = ("pole", "traffic light", "traffic sign", "person", "rider", "bicycle")


def run_row(regime: str, out: Path, bench: Path, row: str, seed: int, weights: str) -> dict:
    configs = REGIMES[regime][0]
    runs = out / "pretrained" / "full" if regime == "pretrained" else out / "full"
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
    lines = ["D's decoder (`benchmarks/decoder.py`): the CPU preset's segformer-style fusion against "
             "DAFormer's context-aware fusion of strides 4-32 (`model.decoder=daformer`, same width); EMA "
             "model, val beside the held-out test; deltas paired by seed, mean ± std over seeds.", "",
             f"Measured {meta['date']} on {meta['machine']['cpu']} ({meta['machine']['logical_cores']} cores), "
             f"command `{meta['command']}`, {meta['minutes']} min in this invocation (finished runs reused).", ""]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/accuracy", help="accuracy.py's --out: run folders are shared")
    parser.add_argument("--regime", nargs="+", choices=list(REGIMES), default=list(REGIMES))
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--json", default=str(RESULTS / "decoder.json"))
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--finished-only", action="store_true",
                        help="train nothing: the table from the runs already finished under --out")
    args = parser.parse_args(argv)

    from iccld.data.synthetic import generate

    if "pretrained" in args.regime and not Path(args.weights).exists():
        print(f"decoder.py: {args.weights}: no such folder (the pretrained regime's MobileNetV2 weights)",
              file=sys.stderr)
        return 2
    out, started = Path(args.out), time.time()
    bench = out / "benchmark"
    generate(out=bench, seed=0, workers=2)
    wanted = list(args.rows)
    for row in list(wanted):  # ICCLD needs the stage-1 run of its decoder
        if ROWS[row][3] and ROWS[row][3] not in wanted:
            wanted.insert(0, ROWS[row][3])
    runs = []
    for regime in args.regime:
        folder = out / "pretrained" / "full" if regime == "pretrained" else out / "full"
        for seed in args.seeds:
            for row in [r for r in ROWS if r in wanted]:
                if args.finished_only and not (folder / f"{ROWS[row][1]}_s{seed}" / "results.json").exists():
                    continue
                print(f"== {regime} seed {seed}: {row}", file=sys.stderr)
                runs.append(run_row(regime, out, bench, row, seed, args.weights))
    result = {"meta": {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                       "regimes": args.regime, "seeds": args.seeds, "machine": machine_info("cpu"),
                       "command": " ".join(["python benchmarks/decoder.py",
                                            *(argv if argv is not None else sys.argv[1:])]),
                       "minutes": round((time.time() - started) / 60, 1)},
              "runs": runs}
    write_json(Path(args.json), result)
    text = render(result)
    if not args.no_doc:
        write_section("decoder", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
