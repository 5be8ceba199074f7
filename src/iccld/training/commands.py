"""``iccld train``: resolve the config and the run folder, refuse to clobber, run the trainer."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import yaml

from ..config import Config, from_dict, load_config, to_dict
from ..errors import TrainingError
from ..io.checkpoint import CKPT_NAME, FINAL_DIR, load_checkpoint

# what a run folder holds; --overwrite removes exactly these, nothing else a user put there
RUN_FILES = ("config.yaml", CKPT_NAME, "results.json")
RUN_DIRS = (FINAL_DIR, "logs")
# keys that may change when a run is resumed (to extend it, or to evaluate less often)
RESUMABLE_KEYS = {"trainer.max_iters", "trainer.eval_interval", "trainer.checkpoint_interval",
                  "trainer.log_interval", "trainer.eval_max_images", "data.num_workers",
                  "trainer.skip_nonfinite"}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _same(key: str, x, y) -> bool:
    """Equal values; folders count as equal when they resolve to the same place (``./data`` vs
    an absolute path, or a link to it)."""
    if x == y:
        return True
    if (key.endswith(".root") or key == "method.stage1_checkpoint") and isinstance(x, str) and isinstance(y, str):
        return bool(x) and bool(y) and os.path.realpath(x) == os.path.realpath(y)
    return False


def config_differences(a: Config, b: Config, ignore: set[str] = frozenset()) -> list[str]:
    fa, fb = _flatten(to_dict(a)), _flatten(to_dict(b))
    return [k for k in fa if k not in ignore and not _same(k, fa[k], fb.get(k))]


def _holds_run(run_dir: Path) -> bool:
    return any((run_dir / f).exists() for f in RUN_FILES + RUN_DIRS)


def _clear_run(run_dir: Path) -> None:
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        shutil.rmtree(run_dir / name, ignore_errors=True)


def prepare_run(config: Config, run_dir: Path, *, resume: bool, overwrite: bool,
                main_process: bool = True) -> dict | None:
    """Check the run folder against the request. Returns the checkpoint state to resume from, if any.

    Only the main process clears the folder for ``overwrite``; the others read it at most."""
    if not _holds_run(run_dir):
        return None
    if overwrite:
        if main_process:
            _clear_run(run_dir)
        return None
    saved_cfg_path = run_dir / "config.yaml"
    saved = None
    if saved_cfg_path.is_file():
        saved = from_dict(yaml.safe_load(saved_cfg_path.read_text()) or {}, str(saved_cfg_path))
    ckpt = run_dir / CKPT_NAME
    if saved is not None:
        diff = config_differences(config, saved, ignore=RESUMABLE_KEYS if resume else set())
        if diff:
            shown = ", ".join(diff[:5]) + (" ..." if len(diff) > 5 else "")
            raise TrainingError(f"{run_dir}: holds a run with a different config (differs in {shown}); "
                                "choose another --out, or pass --overwrite to start over")
    if not resume:
        where = ""
        if ckpt.is_file():
            where = f" (checkpoint at iteration {load_checkpoint(ckpt)['iteration']})"
        raise TrainingError(f"{run_dir}: already holds this run{where}; pass --resume to continue it or "
                            "--overwrite to start over")
    if not ckpt.is_file():
        return None  # the folder was made but no checkpoint written yet: start from scratch
    return load_checkpoint(ckpt)


def train_command(args) -> int:
    overrides = list(args.overrides)
    if args.max_iters is not None:
        overrides.append(f"trainer.max_iters={args.max_iters}")
    config = load_config(args.config, overrides)
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    if args.resume and args.overwrite:
        raise TrainingError("--resume and --overwrite contradict each other; pass one")
    return run_training(config, run_dir, resume=args.resume, overwrite=args.overwrite)


def run_training(config: Config, run_dir: Path, *, resume: bool = False, overwrite: bool = False,
                 progress: bool = True) -> int:
    import torch
    from accelerate import PartialState

    from .trainer import Trainer

    # the processes of `accelerate launch` (the Trainer's Accelerator shares this state): every one
    # checks the folder, process 0 alone clears it, the others wait until it has
    processes = PartialState(cpu=not torch.cuda.is_available())
    state = prepare_run(config, run_dir, resume=resume, overwrite=overwrite,
                        main_process=processes.is_main_process)
    processes.wait_for_everyone()
    trainer = Trainer(config, run_dir, progress=progress)
    if state is not None:
        trainer.load_state_dict(state)
        if trainer.is_main:
            print(f"resuming {run_dir} at iteration {trainer.iteration}", file=sys.stderr)
    if trainer.iteration >= config.trainer.max_iters and (run_dir / "results.json").is_file():
        print(f"{run_dir}: already finished ({trainer.iteration} iterations)", file=sys.stderr)
        return 0
    results = trainer.fit()
    if trainer.stopped_by is not None:
        name = signal.Signals(trainer.stopped_by).name
        print(f"{name}: stopped at iteration {trainer.iteration}; checkpoint saved to {run_dir / CKPT_NAME}; "
              f"continue with --resume", file=sys.stderr)
        return 128 + trainer.stopped_by
    if trainer.is_main:
        ema, model = results["ema"]["miou"], results["model"]["miou"]
        print(f"done: {run_dir} — val mIoU ema {ema:.2f}, model {model:.2f}", file=sys.stderr)
        if trainer.skipped_bad_total():
            print(f"skipped {trainer.skipped_bad_total()} unreadable image/label pairs (data.skip_bad=true)",
                  file=sys.stderr)
    return 0
