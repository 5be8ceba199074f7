"""Accuracy on the embedded benchmark: every method and ablation, several seeds, one table.

    python benchmarks/accuracy.py            # 3 seeds, the CPU configs' full schedules
    python benchmarks/accuracy.py --quick    # a shorter schedule that still separates the methods
    python benchmarks/accuracy.py --schedule 2 --methods oracle source_only stage2 --no-doc \
        --json benchmarks/results/accuracy_x2.json   # every schedule twice as long (own run folders)
    python benchmarks/accuracy.py --regime pretrained   # ImageNet MobileNetV2 encoder (configs/synthetic_pretrained)

Two regimes: ``scratch`` (``configs/synthetic``: a tiny MiT trained from scratch, the table since the
first benchmark) and ``pretrained`` (``configs/synthetic_pretrained``: the same rows and recipe with the
ImageNet MobileNetV2 1.0 encoder users start from; its weights come from ``--weights``, by default the
local copy in ``../shared/weights/mobilenet_v2_1.0_224``, and the script stops with one line saying so
when they are absent). Each regime has its own run folders, results file and section of
``docs/benchmarks.md``.

Trains (or reuses, when a run folder already finished) oracle, source-only, stage 1, ICCLD without
the adversarial term, ICCLD without the inter-coder connection (with and without the adversarial
term), full ICCLD, and the paper's missing pieces (stage 1 and ICCLD with MIC, ICCLD with the mixed
domain in the critic, stage 1 and ICCLD with FD, and the mixed-critic row with FD) for each seed on one
benchmark (generated with seed 0), evaluates ``model`` and
``ema_model`` on the held-out target **test** split on each method's default path (target val, where
the settings were chosen and what each run scores itself on, beside it), and writes
``benchmarks/results/accuracy.json`` and the accuracy section of ``docs/benchmarks.md``. Nothing is
selected on either split: every run is reported at its last iteration.

Resumable and splittable: finished run folders are reused and their evaluations are cached in the run
folder (``evaluations.json``, keyed by split, path, steps and model), so several processes may each
run some ``--seeds``/``--methods`` and one last plain run writes the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, RESULTS, machine_info, markdown_table, write_json, write_section  # noqa: E402

CONFIGS = REPO / "configs" / "synthetic"
# (method key, config, stage-1 run it starts from, label). The rows before MIC, FD and the mixed critic
# keep their keys and configs, and those switches are left out of a resolved config while off, so
# their finished run folders and cached evaluations are reused when the new rows are added.
METHODS = [
    ("oracle", "oracle", None, "Oracle (target labels)"),
    ("source_only", "source_only", None, "Source only"),
    ("stage1", "stage1", None, "Stage 1 (no diffusion)"),
    ("stage1_no_intercoder", "stage1_no_intercoder", None, "Stage 1 without inter-coder"),
    ("stage1_mic", "stage1_mic", None, "Stage 1 + MIC"),
    ("stage1_fd", "stage1_fd", None, "Stage 1 + FD (towards the initial encoder)"),
    ("stage2_no_adv", "stage2_no_adv", "stage1", "ICCLD without adversarial term"),
    ("stage2_no_intercoder", "stage2_no_intercoder", "stage1_no_intercoder", "ICCLD without inter-coder"),
    ("stage2_no_intercoder_no_adv", "stage2_no_intercoder_no_adv", "stage1_no_intercoder",
     "ICCLD without inter-coder, without adversarial term"),
    ("stage2", "stage2", "stage1", "ICCLD (full)"),
    ("stage2_mic", "stage2_mic", "stage1_mic", "ICCLD + MIC (both stages)"),
    ("stage2_mixed", "stage2_mixed", "stage1", "ICCLD with the mixed-domain critic"),
    ("stage2_fd", "stage2_fd", "stage1_fd", "ICCLD from stage 1 + FD"),
    ("stage2_mixed_fd", "stage2_mixed_fd", "stage1_fd", "ICCLD with the mixed-domain critic, from stage 1 + FD"),
]
# rows only the pretrained regime has: the BatchNorm choice of the pretrained encoder (norm_eval off)
PRETRAINED_ROWS = [
    ("oracle_bn_batch", "oracle_bn_batch", None, "Oracle, E's BatchNorm on batch statistics"),
    ("stage1_bn_batch", "stage1_bn_batch", None, "Stage 1, E's BatchNorm on batch statistics"),
]
REGIMES = {  # regime -> (configs, results file, docs section, what the table's encoder is)
    "scratch": (REPO / "configs" / "synthetic", RESULTS / "accuracy.json", "accuracy",
                "a tiny MiT trained from scratch (`configs/synthetic/`)"),
    "pretrained": (REPO / "configs" / "synthetic_pretrained", RESULTS / "accuracy_pretrained.json",
                   "accuracy_pretrained", "the ImageNet MobileNetV2 1.0 encoder (`configs/synthetic_pretrained/`)"),
}
ROWS = METHODS + PRETRAINED_ROWS  # what the summaries and tables look for, in table order
DEFAULT_WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_v2_1.0_224"
QUICK_FACTOR = 0.4  # --quick: this share of every schedule
REPORT_SPLIT = "test"  # the held-out split the table reports; val is where settings were chosen
# what a table measured with each decoder is, said above it
DECODER_NOTES = {
    "segformer": "Measured with the segformer-style decoder, the CPU configs' default until 2026-12-06; they now "
                 "use DAFormer's decoder with its teacher on batch statistics, chosen on val (\"D's decoder\" "
                 "below). Rerun the script to measure the current default.",
    "daformer": "Measured with the CPU configs' current default: DAFormer's decoder over all four levels, its "
                "teacher on batch statistics (`method.teacher_norm: batch`).",
}


def train_one(bench: Path, runs: Path, key: str, config_name: str, stage1: str | None, seed: int,
              quick: bool, schedule: float = 1.0, configs: Path = CONFIGS, extra: tuple[str, ...] = ()) -> dict:
    import json

    from iccld.config import load_config
    from iccld.training.commands import run_started, run_training

    overrides = [f"data.source.root={bench / 'source'}", f"data.target.root={bench / 'target'}",
                 f"data.val.root={bench / 'target'}", f"trainer.seed={seed}", *extra]
    if stage1:
        overrides.append(f"method.stage1_checkpoint={runs / f'{stage1}_s{seed}'}")
    base = load_config(configs / f"{config_name}.yaml", overrides)
    if schedule != 1.0:  # every schedule (iterations, evaluations, checkpoints) scaled; warm-up kept
        t = base.trainer
        overrides += [f"trainer.max_iters={round(t.max_iters * schedule)}",
                      f"trainer.eval_interval={round(t.eval_interval * schedule)}",
                      f"trainer.checkpoint_interval={round(t.checkpoint_interval * schedule)}"]
    if quick:
        iters = max(10, int(base.trainer.max_iters * QUICK_FACTOR))
        overrides += [f"trainer.max_iters={iters}", f"trainer.eval_interval={iters // 2}",
                      f"optim.warmup_iters={min(base.optim.warmup_iters, iters // 10)}"]
    config = load_config(configs / f"{config_name}.yaml", overrides)
    out = runs / f"{key}_s{seed}"
    started = time.time()
    code = run_training(config, out, resume=run_started(out))
    if code != 0:
        raise SystemExit(f"{out}: training stopped with status {code}")
    result = json.loads((out / "results.json").read_text())
    result["seconds"] = round(time.time() - started, 1)
    return result


EXTRA_STEPS = (1, 10)  # sampling steps K also evaluated for full ICCLD (the runs themselves use K=4)


def split_evaluation(run: Path, split: str = REPORT_SPLIT) -> dict[str, dict]:
    """``{"ema": summary, "model": summary}`` of a finished run on ``split`` on its own path
    (cached in the run folder, see iccld.evaluation.runs)."""
    from iccld.evaluation.runs import evaluate_run

    return evaluate_run(run, split, which=("ema", "model"))


def extra_evaluations(run: Path, split: str = REPORT_SPLIT) -> dict[str, float]:
    """EMA-model mIoU on ``split`` of a finished stage-2 run read other ways than its own K=4 diffusion
    path: ``"direct"`` through D(z0), which says what the sampling adds at test time, and
    ``"K1"``/``"K10"`` with other numbers of DDIM steps. Cached in the run folder (the cache key
    names the split) so that a rerun of the script reuses them."""
    from iccld.evaluation.runs import evaluate_run

    variants = {"direct": dict(path="direct"), **{f"K{k}": dict(path="diffusion", steps=k) for k in EXTRA_STEPS}}
    return {name: evaluate_run(run, split, **kw)["ema"]["miou"] for name, kw in variants.items()}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for key, *_ in ROWS:
        for which in ("ema", "model"):
            values = [r["miou"][which] for r in runs if r["method"] == key]
            if values:
                m, s = mean_std(values)
                summary.setdefault(key, {})[which] = {"mean": round(m, 2), "std": round(s, 2), "n": len(values)}
        if key in summary:
            summary[key]["mean"], summary[key]["std"] = summary[key]["ema"]["mean"], summary[key]["ema"]["std"]
            val = [r["miou_val"]["ema"] for r in runs if r["method"] == key and r.get("miou_val")]
            if val:  # the EMA model on val, where the settings were chosen
                m, s = mean_std(val)
                summary[key]["val"] = {"mean": round(m, 2), "std": round(s, 2), "n": len(val)}
    return summary


def paired_deltas(runs: list[dict], with_key: str, without_key: str) -> list[float]:
    """EMA mIoU of ``with_key`` minus ``without_key`` for each seed both ran (a stage-2 run starts
    from the stage-1 run of its own seed, so the pair shares everything but the component)."""
    by = {(r["method"], r["seed"]): r["miou"]["ema"] for r in runs}
    return [by[(with_key, s)] - by[(without_key, s)] for m, s in by if m == with_key and (without_key, s) in by]


GAP_TARGET = 65  # % of the source-only -> oracle gap the best ICCLD row should close on test
GAP_GOAL = 75  # the long-run goal


def _closure(summary: dict, key: str, which: str = "ema") -> float | None:
    so, orc, row = (summary.get(k, {}).get(which) for k in ("source_only", "oracle", key))
    if not (so and orc and row) or orc["mean"] <= so["mean"]:
        return None
    return 100 * (row["mean"] - so["mean"]) / (orc["mean"] - so["mean"])


def findings(summary: dict, runs: list[dict] | None = None) -> list[str]:
    def get(key, which="ema"):
        return summary.get(key, {}).get(which)

    runs = runs or []
    lines = []
    so, orc = get("source_only"), get("oracle")
    closed = _closure(summary, "stage2")
    if closed is not None:
        verdict = "reached" if closed >= GAP_TARGET else "NOT reached"
        lines.append(f"- Full ICCLD closes **{closed:.0f}%** of the source-only -> oracle gap on test "
                     f"(target: at least {GAP_TARGET}%, {verdict}; long-run goal {GAP_GOAL}%).")
        rows = {k: _closure(summary, k) for k, *_ in ROWS if k.startswith("stage2")}
        best = max((k for k, v in rows.items() if v is not None), key=lambda k: rows[k])
        if best != "stage2":
            lines.append(f"- The best ICCLD row on test is {best}, closing {rows[best]:.0f}%.")
        on_val = _closure(summary, "stage2", "val")
        if on_val is not None:
            lines.append(f"- On val, where the settings were chosen, full ICCLD closes {on_val:.0f}% of the gap "
                         f"({'more' if on_val > closed else 'less'} than the {closed:.0f}% on test).")
        lines.append(f"- Source-only keeps {100 * so['mean'] / orc['mean']:.0f}% of the oracle's mIoU "
                     "(the benchmark's domain gap).")
    for name, with_key, without_key in (("the inter-coder connection", "stage2", "stage2_no_intercoder"),
                                        ("the adversarial term", "stage2", "stage2_no_adv"),
                                        ("the adversarial term without the inter-coder connection",
                                         "stage2_no_intercoder", "stage2_no_intercoder_no_adv"),
                                        ("the diffusion stage (no adversarial term) over stage 1",
                                         "stage2_no_adv", "stage1"),
                                        ("full ICCLD (stage 2) over stage 1", "stage2", "stage1"),
                                        ("MIC in stage 1", "stage1_mic", "stage1"),
                                        ("MIC in both stages (ICCLD + MIC over ICCLD)", "stage2_mic", "stage2"),
                                        ("the mixed domain in the critic", "stage2_mixed", "stage2"),
                                        ("FD in stage 1", "stage1_fd", "stage1"),
                                        ("FD in stage 1, after stage 2", "stage2_fd", "stage2"),
                                        ("FD in stage 1, after stage 2 with the mixed-domain critic",
                                         "stage2_mixed_fd", "stage2_mixed"),
                                        ("stage 1 over source-only", "stage1", "source_only"),
                                        ("E's BatchNorm on its stored ImageNet statistics (norm_eval) over batch "
                                         "statistics, oracle", "oracle", "oracle_bn_batch"),
                                        ("E's BatchNorm on its stored ImageNet statistics (norm_eval) over batch "
                                         "statistics, stage 1", "stage1", "stage1_bn_batch")):
        a, b = get(with_key), get(without_key)
        if a and b:
            delta, spread = a["mean"] - b["mean"], max(a["std"], b["std"])
            if min(a["n"], b["n"]) < 2:
                detail = "one seed: the spread across seeds is not measured"
            else:
                verdict = "beyond the seeds' spread" if delta > spread else "NOT beyond the seeds' spread"
                detail = f"largest std {spread:.2f}; {verdict}"
                paired = paired_deltas(runs, with_key, without_key)
                if len(paired) > 1:
                    m, s = mean_std(paired)
                    detail += (f"; paired by seed {m:+.2f} ± {s:.2f}, "
                               f"{sum(d > 0 for d in paired)} of {len(paired)} seeds better")
            va, vb = get(with_key, "val"), get(without_key, "val")
            if va and vb:
                val_delta = va["mean"] - vb["mean"]
                detail += f"; on val {val_delta:+.2f}"
                if val_delta > 0 >= delta:
                    detail += ": chosen on val, it does worse on test"
            lines.append(f"- {name[0].upper() + name[1:]}: {delta:+.2f} mIoU on test ({detail}).")
    extra = [r for r in runs if r["method"] == "stage2" and r.get("extra_ema")]
    direct = [(r["miou"]["ema"], r["extra_ema"]["direct"]) for r in extra]
    if direct:
        deltas = [a - b for a, b in direct]
        m, s = mean_std(deltas)
        lines.append(f"- The sampling itself: full ICCLD through its diffusion path against the same models' D(z0) "
                     f"(no denoiser at test time): {m:+.2f}" + (f" ± {s:.2f}" if len(deltas) > 1 else "")
                     + f" mIoU, {sum(d > 0 for d in deltas)} of {len(deltas)} seeds better (D(z0): "
                     + " / ".join(f"{b:.1f}" for _, b in direct) + ").")
        steps = {4: [r["miou"]["ema"] for r in extra],
                 **{k: [r["extra_ema"][f"K{k}"] for r in extra if f"K{k}" in r["extra_ema"]] for k in EXTRA_STEPS}}
        lines.append("- Sampling steps K for full ICCLD (trained and reported at K=4), mean over seeds: "
                     + ", ".join(f"K={k} {statistics.fmean(v):.2f}" for k, v in sorted(steps.items()) if v)
                     + f"; D(z0) {statistics.fmean(b for _, b in direct):.2f}.")
    if get("stage2"):
        lines.append("- Read the stage-2 rows with care: the CPU configs fine-tune D at a low lr in stage 2, and a "
                     "control that trains D alone, with eps_theta held still, got most of the gain of stage 2 without its "
                     "adversarial term on the two seeds it ran, with the earlier CPU denoiser (docs/method.md, "
                     "\"Stage 2 on the embedded benchmark\").")
    return lines


def render(result: dict) -> str:
    summary, runs = result["summary"], result["runs"]
    seeds = sorted({r["seed"] for r in runs})
    rows = []
    for key, _, _, label in ROWS:
        if key not in summary:
            continue
        path = next(r["inference_path"] for r in runs if r["method"] == key)
        e, m, v = summary[key]["ema"], summary[key]["model"], summary[key].get("val")
        rows.append([label, path, f"{e['mean']:.2f} ± {e['std']:.2f}", f"{m['mean']:.2f} ± {m['std']:.2f}",
                     " / ".join(f"{r['miou']['ema']:.1f}" for r in runs if r["method"] == key),
                     f"{v['mean']:.2f} ± {v['std']:.2f}" if v else "-"])
    table = markdown_table(["method", "inference path", "test mIoU EMA model", "test mIoU model",
                            "test per seed (EMA)", "val mIoU EMA model"], rows)
    classes = [c for c in next(iter(runs))["per_class"]]
    per_class_rows = []
    for key, _, _, label in ROWS:
        chosen = [r for r in runs if r["method"] == key]
        if not chosen:
            continue
        cells = []
        for c in classes:
            vals = [r["per_class"][c] for r in chosen if r["per_class"][c] is not None]
            cells.append(f"{statistics.fmean(vals):.1f}" if vals else "-")
        per_class_rows.append([label] + cells)
    per_class = markdown_table(["method"] + classes, per_class_rows)
    meta = result["meta"]
    regime = meta.get("regime", "scratch")
    decoder = meta.get("decoder", "segformer")  # results written before the field existed: segformer's
    return "\n".join([
        "## Accuracy on the embedded benchmark" + (", ImageNet-pretrained encoder" if regime == "pretrained" else
                                                   ", encoders trained from scratch") + f", {decoder} decoder",
        "",
        DECODER_NOTES.get(decoder, ""),
        "",
        f"Target **test** mIoU (%, 19 classes, classes absent from both prediction and ground truth left out) on the "
        f"synthetic GTA5-like -> Cityscapes-like benchmark (2,000 source / 1,000 target train / 300 target val / "
        f"300 held-out target test images at 256x128, generator seed 0; every setting was chosen on val, shown "
        f"beside), "
        f"encoder: {REGIMES[regime][3]}, D: the {decoder} decoder, CPU schedules{' at ' + str(int(QUICK_FACTOR * 100)) + '% of their schedules (--quick)' if meta['quick'] else ''}, "
        f"seeds {', '.join(map(str, seeds))}; "
        + ("mean ± standard deviation over seeds" if len(seeds) > 1 else
           "**one seed only, so no spread is reported** (the script's default is 3 seeds)")
        + ", each run at its last iteration (no checkpoint picked on val).",
        "",
        f"Measured {meta['date']} on {meta['machine']['cpu']} ({meta['machine']['usable_cores']} cores), "
        f"torch {meta['machine'].get('torch', '')}, command `{meta['command']}`, {meta['minutes']:.1f} min in "
        f"this invocation (run folders that had already finished are reused, not retrained).",
        "",
        table,
        "",
        "What the numbers show:",
        "",
        *findings(summary, runs),
        "",
        "<details><summary>Per-class test IoU (EMA model, mean over seeds)</summary>",
        "",
        per_class,
        "",
        "</details>",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--schedule", type=float, default=1.0,
                        help="scale every method's schedule (iterations, evaluation and checkpoint intervals) by this; "
                             "runs go to their own folder (full_x2 for 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(REPO / "runs" / "accuracy"))
    parser.add_argument("--methods", nargs="+", choices=[m[0] for m in ROWS])
    parser.add_argument("--regime", choices=list(REGIMES), default="scratch",
                        help="scratch: configs/synthetic (tiny MiT from scratch); pretrained: configs/synthetic_pretrained "
                             "(ImageNet MobileNetV2 1.0)")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS),
                        help="the pretrained regime's MobileNetV2 weights: a save_pretrained folder or a Hub id")
    parser.add_argument("--json", help="results file (default: benchmarks/results/accuracy.json, "
                                       "accuracy_pretrained.json for --regime pretrained)")
    parser.add_argument("--no-doc", action="store_true", help="do not touch docs/benchmarks.md")
    parser.add_argument("--section", help="the docs/benchmarks.md section to write (default: accuracy, "
                                          "accuracy_pretrained for --regime pretrained)")
    args = parser.parse_args(argv)

    from iccld.data.synthetic import generate

    if args.schedule <= 0 or (args.quick and args.schedule != 1.0):
        parser.error("--schedule: a positive factor, not with --quick")
    configs, default_json, section, _ = REGIMES[args.regime]
    rows = METHODS + (PRETRAINED_ROWS if args.regime == "pretrained" else [])
    if args.methods and not set(args.methods) <= {m[0] for m in rows}:
        parser.error(f"--methods: {sorted(set(args.methods) - {m[0] for m in rows})} exist only in another regime")
    regime_overrides: tuple[str, ...] = ()
    if args.regime == "pretrained":
        weights = Path(args.weights)
        if not weights.exists() and ("/" not in args.weights or args.weights.startswith((".", "/"))):
            print(f"accuracy.py: {weights}: no such folder; the pretrained regime needs MobileNetV2 ImageNet weights "
                  "(a save_pretrained folder, or the Hub id google/mobilenet_v2_1.0_224 with internet)", file=sys.stderr)
            return 2
        regime_overrides = (f"model.pretrained={args.weights}",)
    out = Path(args.out) / ("pretrained" if args.regime == "pretrained" else "") / (
        "quick" if args.quick else "full" if args.schedule == 1.0 else f"full_x{args.schedule:g}")
    bench = Path(args.out) / "benchmark"
    started = time.time()
    generate(out=bench, seed=0, workers=2)
    wanted = set(args.methods or [m[0] for m in rows])
    for m in rows:  # a stage-2 ablation needs its stage-1 run
        if m[0] in wanted and m[2]:
            wanted.add(m[2])
    runs = []
    for seed in args.seeds:
        for key, config_name, stage1, _ in rows:
            if key not in wanted:
                continue
            print(f"== seed {seed}: {key}", file=sys.stderr)
            r = train_one(bench, out, key, config_name, stage1, seed, args.quick, args.schedule, configs,
                          regime_overrides)
            test = split_evaluation(out / f"{key}_s{seed}")
            extra = extra_evaluations(out / f"{key}_s{seed}") if key == "stage2" else None
            runs.append({"method": key, "seed": seed, "split": REPORT_SPLIT,
                         "miou": {w: test[w]["miou"] for w in ("ema", "model")},
                         "miou_val": {w: r["val"][w]["miou"] for w in ("ema", "model")},
                         "extra_ema": extra,
                         "per_class": test["ema"]["per_class"], "per_class_model": test["model"]["per_class"],
                         "inference_path": r["inference_path"], "iterations": r["iteration"],
                         "seconds": r["seconds"]})
    from iccld.config import load_config

    result = {
        "meta": {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "quick": args.quick, "schedule": args.schedule,
                 "regime": args.regime, "weights": args.weights if args.regime == "pretrained" else None,
                 "decoder": load_config(configs / "stage1.yaml").model.decoder,
                 "seeds": args.seeds, "machine": machine_info("cpu"),
                 "command": " ".join(["python benchmarks/accuracy.py", *(argv if argv is not None else sys.argv[1:])]),
                 "minutes": round((time.time() - started) / 60, 1)},
        "runs": runs,
        "summary": summarise(runs),
    }
    result["meta"]["machine"].setdefault("torch", __import__("torch").__version__)
    write_json(Path(args.json or default_json), result)
    if not args.no_doc and args.schedule == 1.0:  # a scaled schedule's table is rendered by schedule.py
        write_section(args.section or section, render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
