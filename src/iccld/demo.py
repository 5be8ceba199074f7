"""``iccld demo`` / ``make demo``: the main job on the embedded benchmark.

1. generate the synthetic GTA5-like -> Cityscapes-like benchmark (skipped when present);
2. train ``source_only``, ``stage1`` and ``stage2`` (ICCLD) with the CPU configs (finished runs are
   reused, interrupted ones resumed): a tiny MiT from scratch (``configs/synthetic``, offline), or with
   ``--pretrained WEIGHTS`` the ImageNet MobileNetV2 encoder (``configs/synthetic_pretrained``, runs in
   ``OUT/runs-pretrained``);
3. evaluate each on the held-out target test split (each run scored itself on val, where the
   settings were chosen: shown beside) and write ``report.md`` with the per-class table, learning
   curves and a qualitative grid.

The report files are listed in the folder's marker as the demo's, so a rerun refreshes them; a
``report.md``, ``grid.png`` or ``curves.png`` of the user's is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .config import load_config
from .errors import TrainingError
from .io.run_folder import RunFolder

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CONFIG_DIR = CONFIGS / "synthetic"  # from scratch; "synthetic_pretrained" with --pretrained
# the runs, in order: config file in configs/synthetic (its stem names the run folder), title, and the
# config of the earlier run this one starts from (its method.stage1_checkpoint)
RUNS = (("source_only.yaml", "Source only", None), ("stage1.yaml", "Stage 1 (no diffusion)", None),
        ("stage2.yaml", "ICCLD (stage 2)", "stage1.yaml"))

# the default benchmark and a tiny one for tests (--quick)
FULL = dict(num_source=2000, num_target=1000, num_val=300, num_test=300, size=(256, 128))
QUICK = dict(num_source=24, num_target=16, num_val=8, num_test=6, size=(128, 64))


def _config_dir(name: str = "synthetic") -> Path:
    if (CONFIGS / name).is_dir():
        return CONFIGS / name
    here = Path.cwd() / "configs" / name
    if here.is_dir():
        return here
    raise TrainingError(f"{CONFIGS / name}: the demo's configs are missing; run the demo from an iccld checkout")


def method_overrides(bench: Path, runs: Path, starts_from: str | None, quick: bool, seed: int) -> list[str]:
    overrides = [f"data.source.root={bench / 'source'}", f"data.target.root={bench / 'target'}",
                 f"data.val.root={bench / 'target'}", f"trainer.seed={seed}"]
    if starts_from is not None:
        overrides.append(f"method.stage1_checkpoint={runs / Path(starts_from).stem}")
    if quick:
        overrides += ["trainer.max_iters=3", "trainer.eval_interval=0", "trainer.checkpoint_interval=2",
                      "data.crop_size=[64,64]", "data.num_workers=0", "trainer.batch_size=2",
                      "data.rcs_min_pixels=10"]
    return overrides


REPORT_FILES = ("report.md", "grid.png", "curves.png")


def demo_command(args) -> int:
    from .data.synthetic import generate
    from .outputs import check_output_file, record_outputs
    from .training.commands import run_started, run_training

    out = Path(args.out)
    weights = getattr(args, "pretrained", None)
    bench, runs = out / "benchmark", out / ("runs-pretrained" if weights else "runs")
    configs = _config_dir("synthetic_pretrained" if weights else "synthetic")
    encoder = (f"ImageNet MobileNetV2 1.0 (`mobilenet-v2`), weights from `{weights}`, configs in "
               "`configs/synthetic_pretrained/`" if weights else
               "a tiny MiT (`mit-tiny`) trained from scratch, configs in `configs/synthetic/`")
    for name in REPORT_FILES:  # before hours of training, not after
        check_output_file(out / name, overwrite=getattr(args, "overwrite", False), command="demo",
                          replace_own=True)
    started = time.time()
    sizes = QUICK if args.quick else FULL
    print(f"[1/3] synthetic benchmark in {bench}", file=sys.stderr)
    generate(out=bench, seed=args.seed, workers=2, **sizes)
    names = [Path(config_file).stem for config_file, _, _ in RUNS]
    for i, ((config_file, title, starts_from), name) in enumerate(zip(RUNS, names), 1):
        print(f"[2/3] training {title} ({i}/{len(RUNS)}) in {runs / name}", file=sys.stderr)
        overrides = method_overrides(bench, runs, starts_from, args.quick, args.seed)
        config = load_config(configs / config_file, overrides + ([f"model.pretrained={weights}"] if weights else []))
        code = run_training(config, runs / name, resume=run_started(runs / name))
        if code != 0:
            return code
    print(f"[3/3] report in {out / 'report.md'}", file=sys.stderr)
    from .evaluation.demo_report import write_report

    record_outputs(out, REPORT_FILES, "demo")
    titles = {name: title for name, (_, title, _) in zip(names, RUNS)}
    report = write_report(out, runs, names, titles, quick=args.quick, elapsed=time.time() - started,
                          encoder=encoder)
    from .evaluation.runs import evaluate_run

    val = RunFolder(runs / names[-1]).read_results()["val"]["ema"]["miou"]
    test = evaluate_run(runs / names[-1], "test")["ema"]["miou"]  # cached by write_report
    print(f"done in {(time.time() - started) / 60:.1f} min: ICCLD test mIoU {test:.2f} (val {val:.2f}); "
          f"see {report}", file=sys.stderr)
    return 0
