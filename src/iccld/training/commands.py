"""``iccld train``: resolve the config and the run folder, refuse to clobber, run the trainer.

A run folder is iccld's when its marker (:data:`~iccld.outputs.MARKER`) lists what ``train`` wrote
there; ``--overwrite`` removes exactly those files, and a file at a path the run would write that the
marker does not list (a user's own ``config.yaml``) stops the run whatever the flags. One process at a
time writes a run folder (:class:`~iccld.outputs.RunLock`).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from pathlib import Path

import yaml

from ..config import Config, from_dict, load_config
from ..errors import CheckpointError, TrainingError
from ..io.checkpoint import load_checkpoint
from ..io.run_folder import FINAL_FILES, RUN_DIRS, RUN_FILES, RunFolder, is_model_folder, run_of
from ..outputs import LOCK, MARKER, OutputError, RunLock, check_output_dir, forget_outputs, read_marker, record_outputs
from ..utils import remove_stale_temporaries

COMMAND = "train"  # the name runs' files carry in the marker
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
    # every field, switches at their off default included (``to_dict`` leaves those out), so a run
    # saved with MIC on is never taken for the same config with MIC off
    fa, fb = _flatten(dataclasses.asdict(a)), _flatten(dataclasses.asdict(b))
    return [k for k in fa if k not in ignore and not _same(k, fa[k], fb.get(k))]


def _run_files(run_dir: Path) -> dict[str, str]:
    """The marker's entries, adopting a run written before markers existed (its checkpoint loads)."""
    files = read_marker(run_dir)
    if files is not None:
        return files
    present = [name for name in RUN_FILES + RUN_DIRS if (run_dir / name).exists()]
    if not present:
        return {}
    try:
        load_checkpoint(RunFolder(run_dir).checkpoint)
    except CheckpointError:
        shown = ", ".join(name + ("/" if name in RUN_DIRS else "") for name in present)
        raise TrainingError(f"{run_dir}: holds {shown}, which iccld did not write (no {MARKER}); "
                            "choose another --out (--overwrite never deletes your files)") from None
    ours = [name for name in RUN_FILES + FINAL_FILES if (run_dir / name).is_file()]
    ours += [p.relative_to(run_dir) for p in RunFolder(run_dir).log_files()]
    record_outputs(run_dir, ours, COMMAND)
    return read_marker(run_dir) or {}


def _clear_run(run_dir: Path, files: dict[str, str]) -> None:
    """Remove the files the marker lists as the run's, and their folders once empty; nothing else."""
    ours = [name for name, command in files.items() if command == COMMAND]
    for name in ours:
        (run_dir / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        folder = run_dir / name
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    forget_outputs(run_dir, ours)


def prepare_run(config: Config, run_dir: Path, *, resume: bool, overwrite: bool,
                main_process: bool = True) -> dict | None:
    """Check the run folder against the request. Returns the checkpoint state to resume from, if any.

    Only the main process clears the folder for ``overwrite``; the others read it at most."""
    files, run = _run_files(run_dir), RunFolder(run_dir)
    foreign = [name for name in RUN_FILES + FINAL_FILES
               if (run_dir / name).exists() and files.get(name) != COMMAND]
    if foreign:
        raise TrainingError(f"{run_dir}: {', '.join(foreign)} not written by this run (not listed in "
                            f"{MARKER}); move it away or choose another --out")
    held = any(command == COMMAND and (run_dir / name).is_file() for name, command in files.items())
    if not held:
        if resume:
            raise TrainingError(f"{run_dir}: no run to resume (no {run.checkpoint.name}, no {run.config.name}); "
                                "drop --resume to start one")
        return None
    if overwrite:
        if main_process:
            _clear_run(run_dir, files)
        return None
    saved_cfg_path = run.config
    saved = None
    if saved_cfg_path.is_file():
        saved = _saved_config(saved_cfg_path)
    ckpt = run.checkpoint
    ignore = RESUMABLE_KEYS if resume else set()
    if saved is not None:
        _refuse_differences(run_dir, config, saved, ignore, "holds a run with a different config")
    if not resume:
        where = ""
        if ckpt.is_file():
            where = f" (checkpoint at iteration {load_checkpoint(ckpt)['iteration']})"
        raise TrainingError(f"{run_dir}: already holds this run{where}; pass --resume to continue it or "
                            "--overwrite to start over")
    if not ckpt.is_file():
        return None  # the folder was made but no checkpoint written yet: start from scratch
    state = load_checkpoint(ckpt)
    if isinstance(state.get("config"), dict):  # a last.ckpt copied from another run carries that run's config
        inside = from_dict(state["config"], f"{ckpt} (the config saved in it)")
        _refuse_differences(run_dir, config, inside, ignore,
                            f"holds a {ckpt.name} whose saved config is not this run's (copied from another run?)")
    return state


def _saved_config(path: Path) -> Config:
    """A run's ``config.yaml``: safe YAML only; anything unreadable is one line naming the file."""
    from ..config import read_yaml_text

    try:
        data = read_yaml_text(path.read_text())
    except yaml.YAMLError as exc:
        raise TrainingError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); it is the run's saved config: "
                            "restore it, or start the run over with --overwrite") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingError(f"{path}: cannot read the run's saved config ({exc})") from None
    if not isinstance(data, dict):
        raise TrainingError(f"{path}: not a run's config (expected a mapping of sections)")
    return from_dict(data, str(path))


def _refuse_differences(run_dir: Path, config: Config, other: Config, ignore: set[str], what: str) -> None:
    diff = config_differences(config, other, ignore=ignore)
    if diff:
        shown = ", ".join(diff[:5]) + (" ..." if len(diff) > 5 else "")
        raise TrainingError(f"{run_dir}: {what}; it differs in {shown}; choose another --out, "
                            "or pass --overwrite to start over")


def run_started(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run to continue (for callers that resume when they can: the demo,
    the benchmarks); ``--resume`` itself is an error without one."""
    return RunFolder(run_dir).started()


def train_command(args) -> int:
    overrides = list(args.overrides)
    if args.max_iters is not None:
        overrides.append(f"trainer.max_iters={args.max_iters}")
    config = load_config(args.config, overrides)
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    if args.resume and args.overwrite:
        raise TrainingError("--resume and --overwrite contradict each other; pass one")
    return run_training(config, run_dir, resume=args.resume, overwrite=args.overwrite)


def _is_run_or_export(folder: Path) -> bool:
    """A folder ``train`` filled (its marker lists a run file) or ``export`` wrote."""
    try:
        files = read_marker(folder) or {}
    except (OSError, OutputError):  # unreadable or damaged: not a run of ours to protect
        files = {}
    if any(command == COMMAND for command in files.values()):
        return True
    return is_model_folder(folder)


def check_run_location(config: Config, run_dir: Path) -> None:
    """Refuse a run folder that is, or lies inside, something the run reads (a data root, the stage-1
    run, the pretrained weights) or another run or exported model: ``--overwrite`` would clear an
    input before the run reads it, and a run inside another's ``final/`` is loaded in its place."""
    out = Path(os.path.realpath(run_dir))
    inputs = {f"data.{part}.root": getattr(config.data, part).root for part in ("source", "target", "val")}
    inputs["model.pretrained"] = config.model.pretrained
    stage1 = getattr(config.method, "stage1_checkpoint", "")
    if stage1 and Path(stage1).exists():  # a run folder, its last.ckpt or its final/ folder
        s1 = run_of(Path(os.path.realpath(stage1)))
        if out == s1 or s1 in out.parents or out in s1.parents:
            raise TrainingError(f"{run_dir}: is, holds or lies inside the stage-1 run {stage1} "
                                "(method.stage1_checkpoint) that this run starts from; choose another --out")
    for key, value in inputs.items():
        if value and Path(value).exists():
            src = Path(os.path.realpath(value))
            if out == src or src in out.parents:
                raise TrainingError(f"{run_dir}: is or lies inside {value} ({key}), which the run reads; "
                                    "choose another --out")
    for parent in out.parents:
        if _is_run_or_export(parent):
            raise TrainingError(f"{run_dir}: lies inside the iccld run or exported model {parent}; "
                                "choose an --out outside it")


def run_training(config: Config, run_dir: Path, *, resume: bool = False, overwrite: bool = False,
                 progress: bool = True) -> int:
    run_dir = Path(run_dir)
    check_run_location(config, run_dir)
    if resume and not run_dir.is_dir():
        raise TrainingError(f"{run_dir}: no run to resume (no such folder); drop --resume to start one")
    created = not run_dir.exists()
    check_output_dir(run_dir)  # a file in the way, a read-only disk: fail before building anything
    if os.environ.get("RANK", "0") != "0":  # accelerate launch: process 0 holds the lock
        return _run_locked(config, run_dir, resume=resume, overwrite=overwrite, progress=progress)
    try:
        with RunLock(run_dir) as lock:
            if lock.stale:
                print(f"{run_dir}: the run of pid {lock.stale.get('pid', '?')} on {lock.stale.get('host', '?')} "
                      f"ended without releasing {LOCK}; taking over", file=sys.stderr)
            temporaries = remove_stale_temporaries(run_dir, RUN_FILES + (MARKER,))
            temporaries += remove_stale_temporaries(RunFolder(run_dir).final, [Path(f).name for f in FINAL_FILES])
            if temporaries:
                print(f"{run_dir}: removed {len(temporaries)} temporary files of interrupted writes",
                      file=sys.stderr)
            return _run_locked(config, run_dir, resume=resume, overwrite=overwrite, progress=progress)
    except BaseException:
        if created and [p.name for p in run_dir.iterdir()] == [LOCK]:  # failed before writing: leave no trace
            (run_dir / LOCK).unlink()
            run_dir.rmdir()
        raise


def _run_locked(config: Config, run_dir: Path, *, resume: bool, overwrite: bool, progress: bool) -> int:
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
    if trainer.iteration >= config.trainer.max_iters and RunFolder(run_dir).finished():
        print(f"{run_dir}: already finished ({trainer.iteration} iterations)", file=sys.stderr)
        return 0
    results = trainer.fit()
    if trainer.stopped_by is not None:
        name = signal.Signals(trainer.stopped_by).name
        print(f"{name}: stopped at iteration {trainer.iteration}; checkpoint saved to {RunFolder(run_dir).checkpoint}; "
              f"continue with --resume", file=sys.stderr)
        return 128 + trainer.stopped_by
    if trainer.is_main:
        ema, model = results["ema"]["miou"], results["model"]["miou"]
        print(f"done: {run_dir} — val mIoU ema {ema:.2f}, model {model:.2f}", file=sys.stderr)
        if trainer.skipped_bad_total():
            print(f"skipped {trainer.skipped_bad_total()} unreadable image/label pairs (data.skip_bad=true)",
                  file=sys.stderr)
    return 0
