"""Stage 2's recipe: the adversarial weight (fixed or adaptive) and the critic's lr schedule, measured
in both regimes of the embedded benchmark.

    python benchmarks/stage2_recipe.py --out /work/acc                 # both regimes, 3 seeds
    python benchmarks/stage2_recipe.py --regime pretrained --variants fixed adaptive_1 --seeds 0

Each variant is the regime's ``stage2.yaml`` with a few ``method.`` overrides, started from the stage-1
run of its own seed (the run folders of ``benchmarks/accuracy.py`` under the same ``--out``: finished
runs, stage 1 and the plain recipe included, are reused, not retrained). Every run is evaluated on
target val (where the choice is made: the variant with the best mean val mIoU of the EMA model) and on
the held-out test split (what is reported), with paired deltas by seed against stage 1 and against the
fixed weight. Writes ``benchmarks/results/stage2_recipe.json`` and the ``stage2_recipe`` section of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import DEFAULT_WEIGHTS, REGIMES, split_evaluation, train_one  # noqa: E402
from common import machine_info, markdown_table, mean_std_text, write_json, write_section, RESULTS  # noqa: E402

# variant -> (what it is, method overrides on the regime's stage2.yaml)
VARIANTS = {
    "fixed": ("fixed weight (the configs' 5e-2)", ()),
    "fixed_poly": ("fixed weight, critic lr with poly decay",
                   ("method.disc_lr_schedule=poly",)),
    "adaptive_0.3": ("adaptive weight, 0.3 x the seg gradient",
                     ("method.adversarial_weighting=adaptive", "method.adversarial_weight=0.3")),
    "adaptive_1": ("adaptive weight, 1 x the seg gradient",
                   ("method.adversarial_weighting=adaptive", "method.adversarial_weight=1.0")),
    "adaptive_3": ("adaptive weight, 3 x the seg gradient",
                   ("method.adversarial_weighting=adaptive", "method.adversarial_weight=3.0")),
}
STAGE1, FIXED = "stage1", "fixed"


def run_variant(regime: str, out: Path, bench: Path, variant: str, seed: int, weights: str) -> dict:
    configs = REGIMES[regime][0]
    runs = out / "pretrained" / "full" if regime == "pretrained" else out / "full"
    extra = (f"model.pretrained={weights}",) if regime == "pretrained" else ()
    if variant == STAGE1:
        key, config, stage1, overrides = "stage1", "stage1", None, ()
    else:  # "fixed" is the regime's stage2.yaml itself, trained again so that it logs the diagnostics
        key, config, stage1, overrides = f"stage2_{variant}", "stage2", "stage1", VARIANTS[variant][1]
    result = train_one(bench, runs, key, config, stage1, seed, False, 1.0, configs, (*extra, *overrides))
    test = split_evaluation(runs / f"{key}_s{seed}")
    diag = result.get("diagnostics", {})
    return {"regime": regime, "variant": variant, "seed": seed, "test": test["ema"]["miou"],
            "val": result["val"]["ema"]["miou"], "last_step": diag.get("last_step", {}),
            "end_of_run": {k: v for k, v in diag.get("end_of_run", {}).items() if k != "summary"}}


def _paired(runs: list[dict], regime: str, a: str, b: str, split: str = "test") -> list[float]:
    by = {(r["variant"], r["seed"]): r[split] for r in runs if r["regime"] == regime}
    return [by[(a, s)] - by[(b, s)] for (v, s) in by if v == a and (b, s) in by]


def render(result: dict) -> str:
    meta, runs = result["meta"], result["runs"]
    lines = ["Stage 2's adversarial weight and critic schedule (`benchmarks/stage2_recipe.py`): each variant "
             "starts from the stage-1 run of its own seed; EMA model, val (where the choice is made) and "
             "held-out test (what is reported); deltas paired by seed, mean ± std over seeds.", "",
             f"Measured {meta['date']} on {meta['machine']['cpu']} ({meta['machine']['usable_cores']} cores), "
             f"command `{meta['command']}`, {meta['minutes']:.1f} min in this invocation (finished runs reused).", ""]
    for regime in meta["regimes"]:
        rows = []
        for variant in [STAGE1, *VARIANTS]:
            mine = [r for r in runs if r["regime"] == regime and r["variant"] == variant]
            if not mine:
                continue
            label = "stage 1 (the start)" if variant == STAGE1 else VARIANTS[variant][0]
            d1 = _paired(runs, regime, variant, STAGE1) if variant != STAGE1 else []
            df = _paired(runs, regime, variant, FIXED) if variant not in (STAGE1, FIXED) else []
            wins = f"{sum(d > 0 for d in d1)} of {len(d1)}" if d1 else "–"
            ratio = [r["last_step"]["grad_adv"] / r["last_step"]["grad_seg"] for r in mine
                     if r["last_step"].get("grad_seg")]
            moved = [100 * r["end_of_run"]["latent_change"] for r in mine if "latent_change" in r["end_of_run"]]
            rows.append([label, mean_std_text([r["val"] for r in mine]), mean_std_text([r["test"] for r in mine]),
                         mean_std_text(d1), wins, mean_std_text(df),
                         f"{statistics.fmean(ratio):.2g}" if ratio else "–",
                         f"{statistics.fmean(moved):.2g}" if moved else "–"])
        chosen = result["chosen"].get(regime)
        lines += [f"**{REGIMES[regime][3]}** (chosen on val: {chosen})", "",
                  markdown_table(["variant", "val mIoU", "test mIoU", "test Δ vs stage 1", "seeds up",
                                  "test Δ vs fixed", "adv/seg grad (last step)", "latents moved % (val)"], rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/accuracy", help="accuracy.py's --out: run folders are shared")
    parser.add_argument("--regime", nargs="+", choices=list(REGIMES), default=list(REGIMES))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--json", default=str(RESULTS / "stage2_recipe.json"))
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)

    from iccld.data.synthetic import generate

    if "pretrained" in args.regime and not Path(args.weights).exists():
        print(f"stage2_recipe.py: {args.weights}: no such folder (the pretrained regime's MobileNetV2 weights)",
              file=sys.stderr)
        return 2
    out, started = Path(args.out), time.time()
    bench = out / "benchmark"
    generate(out=bench, seed=0, workers=2)
    runs = []
    for regime in args.regime:
        for seed in args.seeds:
            for variant in [STAGE1, *args.variants]:
                print(f"== {regime} seed {seed}: {variant}", file=sys.stderr)
                runs.append(run_variant(regime, out, bench, variant, seed, args.weights))
    chosen = {}
    for regime in args.regime:
        val = {v: statistics.fmean([r["val"] for r in runs if r["regime"] == regime and r["variant"] == v])
               for v in args.variants}
        chosen[regime] = max(val, key=val.get)
    result = {"meta": {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                       "regimes": args.regime, "seeds": args.seeds, "machine": machine_info("cpu"),
                       "command": " ".join(["python benchmarks/stage2_recipe.py",
                                            *(argv if argv is not None else sys.argv[1:])]),
                       "minutes": round((time.time() - started) / 60, 1)},
              "runs": runs, "chosen": chosen}
    write_json(Path(args.json), result)
    text = render(result)
    if not args.no_doc:
        write_section("stage2_recipe", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
