"""Fault injection: bad inputs and a failing environment, command by command.

Every case runs the CLI in-process and asserts the exit status 2, one line on stderr that names the
path (or setting) at fault, no traceback, and that no file that existed before (the user's files, a
run folder) changed: their hashes are compared before and after. Disk full and read-only cases use
real tmpfs mounts (skipped, with the kernel's reason, where mounting is refused). Signal cases need
real processes and live at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CONFIGS, tiny_overrides
from iccld.cli import main
from iccld.outputs import LOCK, MARKER, RunLock

STAGE1 = str(CONFIGS / "synthetic" / "stage1.yaml")
STAGE2 = str(CONFIGS / "synthetic" / "stage2.yaml")


# shared material --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tiny_benchmark, tmp_path_factory) -> dict:
    """A finished 2-iteration stage-1 run, two odd-sized photos and their predictions."""
    from iccld.config import load_config
    from iccld.training.commands import run_training

    base = tmp_path_factory.mktemp("faults")
    run = base / "run"
    assert run_training(load_config(STAGE1, tiny_overrides(tiny_benchmark)), run, progress=False) == 0
    photos = base / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (30, 41, 3), dtype=np.uint8)).save(photos / f"{name}.png")
    preds = base / "preds"
    assert main(["predict", "--checkpoint", str(run / "final"), str(photos), "--out", str(preds)]) == 0
    return {"bench": tiny_benchmark, "run": run, "photos": photos, "preds": preds,
            "gt": tiny_benchmark / "target" / "gtFine" / "val"}


def _hashes(*roots: Path) -> dict[Path, str]:
    out = {}
    for root in roots:
        for path in ([root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())):
            out[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _mount(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        reason = f"cannot mount a tmpfs ({(result.stderr or result.stdout).strip()[:200]})"
        print(reason, file=sys.stderr)
        pytest.skip(reason)


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def readonly(tmp_path, world):
    """A read-only file system holding a copy of the run; yields its root."""
    root = tmp_path / "ro"
    _mount(root, "size=32m")
    try:
        shutil.copytree(world["run"], root / "run")
        remount = subprocess.run(["mount", "-o", "remount,ro", str(root)], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only ({remount.stderr.strip()[:200]})")
        yield root
    finally:
        _umount(root)


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB file system filled to the last block; yields its root."""
    root = tmp_path / "full"
    _mount(root, "size=1m")
    try:
        with open(root / "ballast", "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
            except OSError:
                pass
        yield root
    finally:
        _umount(root)


# the cases ------------------------------------------------------------------------------------

@dataclass
class Case:
    argv: list[str]
    needles: list[str]  # each must appear in the one line (a path, a setting, the problem)
    protect: list[Path] = field(default_factory=list)  # files and folders that must not change


def copy_run(world, tmp: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(world["run"], tmp / name))


def train(world, out: Path, *extra: str, config: str = STAGE1) -> list[str]:
    flags = [x for x in extra if x.startswith("--")]  # argparse wants the overrides in one block
    overrides = [x for x in extra if not x.startswith("--")]
    return ["train", "--config", config, "--out", str(out), *flags, *tiny_overrides(world["bench"]), *overrides]


def user_file(path: Path, text: str = "mine\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


# --- data loss: writers never replace what they did not make -----------------------------------

@case
def evaluate_json_onto_checkpoint(w, tmp):
    run = copy_run(w, tmp)
    return Case(["evaluate", "--checkpoint", str(run), "--json", str(run / "last.ckpt")],
                [str(run / "last.ckpt"), "written by `iccld train`"], [run])


@case
def evaluate_json_onto_checkpoint_overwrite(w, tmp):
    run = copy_run(w, tmp)
    return Case(["evaluate", "--checkpoint", str(run), "--json", str(run / "last.ckpt"), "--overwrite"],
                [str(run / "last.ckpt"), "never writes over it"], [run])


@case
def evaluate_json_onto_final_weights(w, tmp):
    run = copy_run(w, tmp)
    target = run / "final" / "model.safetensors"
    return Case(["evaluate", "--checkpoint", str(run), "--json", str(target), "--overwrite"],
                [str(target), "written by `iccld train`"], [run])


@case
def evaluate_json_onto_user_file(w, tmp):
    mine = user_file(tmp / "notes.json")
    return Case(["evaluate", "--checkpoint", str(w["run"]), "--json", str(mine)],
                [str(mine), "exists; pass --overwrite"], [mine, w["run"]])


@case
def evaluate_json_is_a_folder(w, tmp):
    (tmp / "out").mkdir()
    mine = user_file(tmp / "out" / "keep.txt")
    return Case(["evaluate", "--checkpoint", str(w["run"]), "--json", str(tmp / "out"), "--overwrite"],
                [str(tmp / "out"), "is a folder"], [mine])


@case
def evaluate_json_under_a_file(w, tmp):
    mine = user_file(tmp / "file.txt")
    return Case(["evaluate", "--checkpoint", str(w["run"]), "--json", str(mine / "x.json")],
                [str(mine), "not a folder"], [mine])


@case
def score_json_onto_prediction(w, tmp):
    preds = Path(shutil.copytree(w["preds"], tmp / "preds"))
    target = preds / "a_trainid.png"
    return Case(["score", "--pred", str(preds), "--gt", str(preds), "--json", str(target)],
                [str(target), "exists; pass --overwrite"], [preds])


@case
def score_json_onto_run_config(w, tmp):
    run = copy_run(w, tmp)
    return Case(["score", "--pred", str(w["preds"]), "--gt", str(w["preds"]), "--json", str(run / "config.yaml"),
                 "--overwrite"], [str(run / "config.yaml"), "written by `iccld train`"], [run, w["preds"]])


@case
def score_json_is_a_folder(w, tmp):
    return Case(["score", "--pred", str(w["preds"]), "--gt", str(w["preds"]), "--json", str(w["preds"])],
                [str(w["preds"]), "is a folder"], [w["preds"]])


@case
def train_into_user_config_folder(w, tmp):
    mine = user_file(tmp / "proj" / "config.yaml", "base: ../mine.yaml\nlr: 3\n")
    return Case(train(w, tmp / "proj"), [str(tmp / "proj"), "config.yaml", "iccld did not write"], [mine])


@case
def train_overwrite_user_config_folder(w, tmp):
    mine = user_file(tmp / "proj" / "config.yaml", "base: ../mine.yaml\nlr: 3\n")
    return Case(train(w, tmp / "proj", "--overwrite"), [str(tmp / "proj"), "iccld did not write"], [mine])


@case
def train_overwrite_user_logs_and_final(w, tmp):
    notes = user_file(tmp / "proj" / "logs" / "notes.txt")
    final = user_file(tmp / "proj" / "final" / "paper.tex")
    return Case(train(w, tmp / "proj", "--overwrite"), [str(tmp / "proj"), "logs/", "final/"], [notes, final])


@case
def train_over_run_with_foreign_final_config(w, tmp):
    run = copy_run(w, tmp)
    files = json.loads((run / MARKER).read_text())
    del files["files"]["final/config.json"]  # as if the user had put their own there
    (run / MARKER).write_text(json.dumps(files))
    return Case(train(w, run, "--overwrite"), [str(run), "final/config.json", "not written by this run"], [run])


@case
def train_into_locked_run(w, tmp):
    run = copy_run(w, tmp)
    lock = RunLock(run).acquire()  # another process's lock: flock is per open file
    CLEANUP.append(lock.release)
    return Case(train(w, run, "--resume", "trainer.max_iters=3"),
                [str(run), "in use by another iccld", f"pid {os.getpid()}", socket.gethostname()],
                [run / "last.ckpt", run / "config.yaml"])


@case
def demo_over_user_report(w, tmp):
    mine = user_file(tmp / "demo" / "report.md")
    return Case(["demo", "--out", str(tmp / "demo"), "--quick"], [str(mine), "exists; pass --overwrite"], [mine])


@case
def demo_over_user_grid(w, tmp):
    mine = png(tmp / "demo" / "grid.png", np.zeros((4, 4, 3), np.uint8))
    return Case(["demo", "--out", str(tmp / "demo"), "--quick"], [str(mine), "exists"], [mine])


@case
def demo_over_user_curves(w, tmp):
    mine = png(tmp / "demo" / "curves.png", np.zeros((4, 4, 3), np.uint8))
    return Case(["demo", "--out", str(tmp / "demo"), "--quick"], [str(mine), "exists"], [mine])


@case
def predict_over_existing_output(w, tmp):
    preds = Path(shutil.copytree(w["preds"], tmp / "preds"))
    return Case(["predict", "--checkpoint", str(w["run"] / "final"), str(w["photos"]), "--out", str(preds)],
                [str(preds / "a_trainid.png"), "exists"], [preds])


@case
def predict_overwrite_user_file_in_a_run_folder(w, tmp):
    run = copy_run(w, tmp)
    mine = png(run / "preds" / "a_trainid.png", np.zeros((30, 41), np.uint8))  # the user's, in the run folder
    return Case(["predict", "--checkpoint", str(run / "final"), str(w["photos"]), "--out", str(run / "preds"),
                 "--overwrite"], [str(mine), "iccld did not write it"], [run])


@case
def evaluate_json_overwrite_user_file_in_a_run_folder(w, tmp):
    run = copy_run(w, tmp)
    mine = user_file(run / "eval.json")
    return Case(["evaluate", "--checkpoint", str(run), "--json", str(mine), "--overwrite", "--max-images", "1"],
                [str(mine), "iccld did not write it"], [run])


@case
def predict_over_input_image(w, tmp):
    photos = Path(shutil.copytree(w["photos"], tmp / "photos"))
    twin = png(photos / "a_color.png", np.zeros((30, 41, 3), np.uint8))
    return Case(["predict", "--checkpoint", str(w["run"] / "final"), str(photos / "a.png"), str(twin),
                 "--out", str(photos), "--overwrite"], [str(twin), "would overwrite an input image"], [photos])


# --- the environment: read-only, full, a file in the way ---------------------------------------

@case
def readonly_train(w, tmp, ro):
    return Case(train(w, ro / "new"), [str(ro / "new"), "read-only file system"], [ro])


@case
def readonly_train_resume(w, tmp, ro):
    return Case(train(w, ro / "run", "--resume", "trainer.max_iters=3"), [str(ro / "run"), "read-only"], [ro])


@case
def readonly_predict(w, tmp, ro):
    return Case(["predict", "--checkpoint", str(w["run"] / "final"), str(w["photos"]), "--out", str(ro / "p")],
                [str(ro / "p"), "read-only file system"], [ro])


@case
def readonly_prepare_synthetic(w, tmp, ro):
    return Case(["prepare", "synthetic", "--out", str(ro / "bench"), "--num-source", "2", "--num-target", "2",
                 "--num-val", "2", "--size", "64x32", "--workers", "1"], [str(ro / "bench"), "read-only"], [ro])


@case
def readonly_demo(w, tmp, ro):
    return Case(["demo", "--out", str(ro / "demo"), "--quick"], [str(ro / "demo"), "read-only file system"], [ro])


@case
def readonly_evaluate_json(w, tmp, ro):
    return Case(["evaluate", "--checkpoint", str(w["run"]), "--json", str(ro / "eval.json")],
                [str(ro), "read-only file system"], [ro, w["run"]])


@case
def readonly_score_json(w, tmp, ro):
    return Case(["score", "--pred", str(w["preds"]), "--gt", str(w["preds"]), "--json", str(ro / "s.json")],
                [str(ro), "read-only file system"], [ro])


@case
def full_evaluate_json(w, tmp, full):
    return Case(["evaluate", "--checkpoint", str(w["run"]), "--json", str(full / "eval.json"), "--max-images", "1"],
                [str(full / "eval.json"), "no space left on device"], [w["run"], full / "ballast"])


@case
def full_score_json(w, tmp, full):
    return Case(["score", "--pred", str(w["preds"]), "--gt", str(w["preds"]), "--json", str(full / "s.json")],
                [str(full / "s.json"), "no space left on device"], [w["preds"]])


@case
def full_predict(w, tmp, full):
    return Case(["predict", "--checkpoint", str(w["run"] / "final"), str(w["photos"]), "--out", str(full / "p")],
                [str(full / "p"), "no space left on device"], [w["photos"]])


@case
def full_train(w, tmp, full):
    return Case(train(w, full / "run"), [str(full / "run"), "no space left on device"], [])


@case
def train_out_is_a_file(w, tmp):
    mine = user_file(tmp / "out")
    return Case(train(w, mine), [str(mine), "not a folder"], [mine])


@case
def train_out_under_a_file(w, tmp):
    mine = user_file(tmp / "out")
    return Case(train(w, mine / "run"), [str(mine), "is a file"], [mine])


@case
def predict_out_is_a_file(w, tmp):
    mine = user_file(tmp / "out")
    return Case(["predict", "--checkpoint", str(w["run"] / "final"), str(w["photos"]), "--out", str(mine)],
                [str(mine), "not a folder"], [mine])


@case
def predict_out_under_a_file(w, tmp):
    mine = user_file(tmp / "out")
    return Case(["predict", "--checkpoint", str(w["run"] / "final"), str(w["photos"]), "--out", str(mine / "p")],
                [str(mine), "is a file"], [mine])


@case
def demo_out_is_a_file(w, tmp):
    mine = user_file(tmp / "out")
    return Case(["demo", "--out", str(mine), "--quick"], [str(mine), "not a folder"], [mine])


@case
def demo_out_under_a_file(w, tmp):
    mine = user_file(tmp / "out")
    return Case(["demo", "--out", str(mine / "demo"), "--quick"], [str(mine), "is a file"], [mine])


@case
def prepare_synthetic_out_is_a_file(w, tmp):
    mine = user_file(tmp / "out")
    return Case(["prepare", "synthetic", "--out", str(mine), "--num-source", "2", "--num-target", "2",
                 "--num-val", "2", "--size", "64x32", "--workers", "1"], [str(mine)], [mine])


# --- damaged checkpoints -----------------------------------------------------------------------

def _damaged(w, tmp, how: str) -> Path:
    run = copy_run(w, tmp)
    ckpt = run / "last.ckpt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(b"" if how == "empty" else data[: len(data) // 2] if how == "half" else b"PK\x03\x04junk")
    return run


def _ckpt_case(kind: str, how: str):
    def make(w, tmp):
        run = _damaged(w, tmp, how)
        ckpt = str(run / "last.ckpt")
        argv = {"resume": train(w, run, "--resume", "trainer.max_iters=3"),
                "evaluate": ["evaluate", "--checkpoint", str(run)],
                "predict": ["predict", "--checkpoint", ckpt, str(w["photos"]), "--out", str(tmp / "p")],
                "stage2": train(w, tmp / "s2", f"method.stage1_checkpoint={ckpt}", config=STAGE2)}[kind]
        return Case(argv, [ckpt, "empty file" if how == "empty" else "not a readable iccld checkpoint"], [run])
    make.__name__ = f"{how}_checkpoint_{kind}"
    return case(make)


for _kind in ("resume", "evaluate", "predict", "stage2"):
    for _how in ("empty", "half", "garbage"):
        _ckpt_case(_kind, _how)


# --- validation at load ------------------------------------------------------------------------

def _override_case(name: str, override: str, needle: str):
    def make(w, tmp):
        return Case(train(w, tmp / "run", override), [needle], [])
    make.__name__ = name
    return case(make)


_override_case("lr_nan", "optim.lr=nan", "optim.lr: must be a finite number")
_override_case("lr_inf", "optim.lr=inf", "optim.lr: must be a finite number")
_override_case("lr_minus_inf", "optim.lr=-inf", "optim.lr: must be a finite number")
_override_case("ema_alpha_nan", "method.ema_alpha=nan", "method.ema_alpha")
_override_case("betas_nan", "optim.betas=[0.9,nan]", "optim.betas")
_override_case("unknown_key", "trainer.max_iterz=3", "did you mean 'trainer.max_iters'")
_override_case("wrong_type", "trainer.max_iters=many", "trainer.max_iters")
_override_case("cat_max_ratio_above_one", "data.cat_max_ratio=2", "data.cat_max_ratio: must be in (0, 1]")
_override_case("unknown_method", "method.name=stage3", "method.name: 'stage3'")
_override_case("missing_source_root", "data.source.root=/nonexistent/gta", "/nonexistent/gta")
_override_case("zero_batch", "trainer.batch_size=0", "trainer.batch_size: must be > 0")


def _config_case(name: str, text: str, needle: str):
    def make(w, tmp):
        cfg = user_file(tmp / "cfg.yaml", text)
        return Case(["train", "--config", str(cfg), "--out", str(tmp / "run")], [str(cfg), needle], [cfg])
    make.__name__ = name
    return case(make)


_config_case("empty_config", "", "empty config")
_config_case("comment_only_config", "# nothing yet\n\n# still nothing\n", "empty config")
_config_case("empty_mapping_config", "{}\n", "empty config")
_config_case("invalid_yaml", "trainer: [1,\n", "not valid YAML")
_config_case("config_not_a_mapping", "- 1\n- 2\n", "expected a mapping")
_config_case("config_unknown_section", "trainr:\n  max_iters: 3\n", "unknown key 'trainr'")


@case
def binary_config(w, tmp):  # bytes that are not UTF-8
    cfg = tmp / "cfg.yaml"
    cfg.write_bytes(b"\xff\xfe\x00junk")
    return Case(["train", "--config", str(cfg), "--out", str(tmp / "run")], [str(cfg)], [cfg])


@case
def missing_config(w, tmp):
    return Case(["train", "--config", str(tmp / "nope.yaml")], [str(tmp / "nope.yaml"), "not found"], [])


@case
def base_chain_with_a_cycle(w, tmp):
    user_file(tmp / "a.yaml", "base: b.yaml\n")
    user_file(tmp / "b.yaml", "base: a.yaml\ntrainer:\n  seed: 1\n")
    cfg = user_file(tmp / "c.yaml", "base: a.yaml\n")
    return Case(["train", "--config", str(cfg), "--out", str(tmp / "run")], ["a.yaml", "b.yaml", "cycle"],
                [tmp / "a.yaml", tmp / "b.yaml"])


@case
def resume_missing_folder(w, tmp):
    return Case(train(w, tmp / "nothing", "--resume"), [str(tmp / "nothing"), "no run to resume"], [])


@case
def resume_empty_folder(w, tmp):
    (tmp / "empty").mkdir()
    return Case(train(w, tmp / "empty", "--resume"), [str(tmp / "empty"), "no run to resume"], [])


@case
def resume_and_overwrite(w, tmp):
    run = copy_run(w, tmp)
    return Case(train(w, run, "--resume", "--overwrite"), ["--resume and --overwrite"], [run])


@case
def run_already_there(w, tmp):
    run = copy_run(w, tmp)
    return Case(train(w, run), [str(run), "already holds this run", "--resume"], [run])


@case
def run_with_other_config(w, tmp):
    run = copy_run(w, tmp)
    return Case(train(w, run, "optim.lr=1e-3"), [str(run), "different config", "optim.lr"], [run])


@case
def damaged_marker(w, tmp):
    run = copy_run(w, tmp)
    (run / MARKER).write_text("{not json")
    return Case(train(w, run, "--resume"), [str(run / MARKER), "damaged iccld marker"], [run])


@case
def stage2_without_stage1(w, tmp):
    return Case(train(w, tmp / "s2", config=STAGE2), ["method.stage1_checkpoint"], [])


@case
def stage2_from_missing_stage1(w, tmp):
    return Case(train(w, tmp / "s2", f"method.stage1_checkpoint={tmp / 'gone'}", config=STAGE2),
                [str(tmp / "gone"), "no such file or folder"], [])


def _sampling_case(name: str, command: str, checkpoint: str, flags: list[str], needle: str):
    def make(w, tmp):
        ckpt = str(w["run"] / checkpoint) if checkpoint else str(w["run"])
        argv = [command, "--checkpoint", ckpt, *flags]
        if command == "predict":
            argv += [str(w["photos"]), "--out", str(tmp / "p")]
        return Case(argv, [needle], [w["run"]])
    make.__name__ = name
    return case(make)


# the run is a stage-1 model: its direct path draws no noise
_sampling_case("evaluate_steps_on_stage1", "evaluate", "", ["--steps", "2"], "--steps: apply to the diffusion path")
_sampling_case("evaluate_samples_on_stage1", "evaluate", "", ["--samples", "2"], "stage-1 model")
_sampling_case("predict_steps_on_stage1", "predict", "last.ckpt", ["--steps", "2"], "--steps")
_sampling_case("predict_samples_on_stage1", "predict", "last.ckpt", ["--samples", "3"], "--samples")
_sampling_case("evaluate_direct_with_steps", "evaluate", "", ["--direct", "--steps", "4"], "--direct is given")
_sampling_case("evaluate_steps_negative", "evaluate", "", ["--steps", "-1"], "--steps: must be >= 1")
_sampling_case("evaluate_samples_zero", "evaluate", "", ["--samples", "0"], "--samples: must be >= 1")
_sampling_case("predict_steps_zero", "predict", "final", ["--steps", "0"], "--steps: must be >= 1")
_sampling_case("predict_samples_negative", "predict", "final", ["--samples", "-1"], "--samples: must be >= 1")


# --- data errors, in the main process and in DataLoader workers --------------------------------

@case
def worker_data_error(w, tmp):
    bench = Path(shutil.copytree(w["bench"], tmp / "bench"))
    for image in (bench / "source" / "images").glob("*.png"):
        image.write_bytes(b"not a png")
    argv = ["train", "--config", STAGE1, "--out", str(tmp / "run"), *tiny_overrides(bench), "data.num_workers=1"]
    return Case(argv, [str(bench / "source" / "images"), "cannot read image"], [bench / "target"])


@case
def unprepared_labels(w, tmp):
    bench = Path(shutil.copytree(w["bench"], tmp / "bench"))
    for label in (bench / "source" / "labels").glob("*_labelTrainIds.png"):
        label.unlink()
    return Case(["train", "--config", STAGE1, "--out", str(tmp / "run"), *tiny_overrides(bench)],
                ["prepared label not found", "iccld prepare"], [bench / "source" / "images"])


@case
def evaluate_missing_checkpoint(w, tmp):
    return Case(["evaluate", "--checkpoint", str(tmp / "missing")], [str(tmp / "missing")], [])


@case
def evaluate_unknown_override_of_the_checkpoint_config(w, tmp):
    # overrides without --config apply to the checkpoint's own config: an unknown key is refused
    return Case(["evaluate", "--checkpoint", str(w["run"]), "data.val.splt=test"], ["data.val.splt", "unknown key"],
                [w["run"]])


@case
def predict_missing_image(w, tmp):
    return Case(["predict", "--checkpoint", str(w["run"] / "final"), str(tmp / "nope.png"), "--out", str(tmp / "p")],
                [str(tmp / "nope.png"), "no such image"], [])


@case
def predict_empty_folder(w, tmp):
    (tmp / "none").mkdir()
    return Case(["predict", "--checkpoint", str(w["run"] / "final"), str(tmp / "none"), "--out", str(tmp / "p")],
                [str(tmp / "none"), "no images"], [])


@case
def predict_corrupt_image(w, tmp):
    bad = tmp / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return Case(["predict", "--checkpoint", str(w["run"] / "final"), str(bad), "--out", str(tmp / "p")],
                [str(bad), "cannot read image"], [bad])


@case
def score_missing_prediction_folder(w, tmp):
    return Case(["score", "--pred", str(tmp / "none"), "--gt", str(w["gt"])], [str(tmp / "none")], [])


@case
def score_unpaired(w, tmp):
    png(tmp / "p" / "zzz_trainid.png", np.zeros((4, 4), np.uint8))
    return Case(["score", "--pred", str(tmp / "p"), "--gt", str(w["gt"])], ["unpaired files", "zzz"], [tmp / "p"])


@case
def score_size_mismatch(w, tmp):
    png(tmp / "p" / "x_trainid.png", np.zeros((4, 4), np.uint8))
    png(tmp / "g" / "x_gtFine_labelTrainIds.png", np.zeros((5, 4), np.uint8))
    return Case(["score", "--pred", str(tmp / "p"), "--gt", str(tmp / "g")], ["size mismatch", "x_trainid.png"],
                [tmp / "p", tmp / "g"])


@case
def score_colour_label(w, tmp):
    png(tmp / "p" / "x_trainid.png", np.zeros((4, 4, 3), np.uint8))
    png(tmp / "g" / "x_gtFine_labelTrainIds.png", np.zeros((4, 4), np.uint8))
    return Case(["score", "--pred", str(tmp / "p"), "--gt", str(tmp / "g")], [str(tmp / "p" / "x_trainid.png"), "mode"],
                [tmp / "p"])


@case
def score_bad_values(w, tmp):
    png(tmp / "p" / "x_trainid.png", np.full((4, 4), 40, np.uint8))
    png(tmp / "g" / "x_gtFine_labelTrainIds.png", np.zeros((4, 4), np.uint8))
    return Case(["score", "--pred", str(tmp / "p"), "--gt", str(tmp / "g")], [str(tmp / "p" / "x_trainid.png"), "40"],
                [tmp / "p"])



# --- files handed to us: markers, locks, configs and checkpoints from elsewhere (#26) -----------

def _add_to_marker(run: Path, entries: dict) -> None:
    data = json.loads((run / MARKER).read_text())
    data["files"].update(entries)
    (run / MARKER).write_text(json.dumps(data))


@case
def marker_entry_outside_the_run(w, tmp):
    run, victim = copy_run(w, tmp), user_file(tmp / "victim.txt")
    _add_to_marker(run, {"../victim.txt": "train"})
    return Case(train(w, run, "--overwrite"), [str(run / MARKER), "../victim.txt", "outside"], [victim, run])


@case
def marker_entry_absolute(w, tmp):
    run, victim = copy_run(w, tmp), user_file(tmp / "victim.txt")
    _add_to_marker(run, {str(victim): "train"})
    return Case(train(w, run, "--overwrite"), [str(run / MARKER), str(victim)], [victim, run])


@case
def marker_entry_through_a_link_out_of_the_run(w, tmp):
    run, victim = copy_run(w, tmp), user_file(tmp / "elsewhere" / "victim.txt")
    (run / "door").symlink_to(tmp / "elsewhere")
    _add_to_marker(run, {"door/victim.txt": "train"})
    return Case(train(w, run, "--overwrite"), [str(run / MARKER), "door/victim.txt"], [victim])


@case
def run_lock_is_a_link(w, tmp):
    run, victim = copy_run(w, tmp), user_file(tmp / "victim.txt", "precious\n")
    (run / LOCK).unlink(missing_ok=True)
    (run / LOCK).symlink_to(victim)
    return Case(train(w, run, "--resume"), [str(run / LOCK), "symbolic link"], [victim])


@case
def export_into_its_own_run(w, tmp):
    run = copy_run(w, tmp)
    user_file(run / "final" / "mine.txt")
    return Case(["export", str(run), "--out", str(run / "final"), "--overwrite"],
                [str(run / "final"), "inside the run"], [run])


@case
def export_over_its_own_run(w, tmp):
    run = copy_run(w, tmp)
    return Case(["export", str(run), "--out", str(run), "--overwrite"], [str(run), "inside the run"], [run])


@case
def stage2_out_is_its_stage1_run(w, tmp):
    run = copy_run(w, tmp)
    return Case(train(w, run, "--overwrite", f"method.stage1_checkpoint={run}", config=STAGE2),
                [str(run), "stage-1 run"], [run])


@case
def train_out_inside_a_runs_final(w, tmp):
    run = copy_run(w, tmp)
    return Case(train(w, run / "final" / "again"), [str(run / "final"), "lies inside the iccld run"], [run])


@case
def train_out_inside_a_data_root(w, tmp):
    bench = Path(shutil.copytree(w["bench"], tmp / "bench"))
    argv = train(w, bench / "source" / "run")
    argv = [a.replace(str(w["bench"]), str(bench)) for a in argv]
    return Case(argv, [str(bench / "source"), "data.source.root"], [bench])


@case
def config_with_a_key_twice(w, tmp):
    cfg = tmp / "twice.yaml"
    cfg.write_text(f"base: {STAGE1}\ntrainer:\n  max_iters: 1\n  seed: 3\nmodel:\n  dropout: 0.1\ntrainer:\n  max_iters: 1000\n")
    return Case(["train", "--config", str(cfg), "--out", str(tmp / "run"), *tiny_overrides(w["bench"])],
                [str(cfg), "'trainer' is given twice", "lines 2 and 7"], [cfg])


@case
def config_base_with_a_nul(w, tmp):
    cfg = tmp / "nul.yaml"
    cfg.write_text('base: "a\\0b.yaml"\n')
    return Case(["train", "--config", str(cfg), "--out", str(tmp / "run")], [str(cfg), "not a file name"], [cfg])


@case
def config_is_a_folder(w, tmp):
    (tmp / "cfg").mkdir()
    return Case(["train", "--config", str(tmp / "cfg"), "--out", str(tmp / "run")], [str(tmp / "cfg"), "is a folder"], [])


@case
def train_seed_too_large(w, tmp):
    return Case(train(w, tmp / "run", "trainer.seed=100000000000000000000000"), ["trainer.seed", "2**63"], [])


@case
def predict_seed_too_large(w, tmp):
    return Case(["predict", "--checkpoint", str(w["run"] / "final"), str(w["photos"]), "--out", str(tmp / "p"),
                 "--seed", str(10 ** 20)], ["--seed", "2**63"], [w["photos"]])


PYTHON_TAG = "!!python/object/apply:os.system ['echo pwned']\n"


@case
def resume_with_a_python_tag_in_the_saved_config(w, tmp):
    run = copy_run(w, tmp)
    (run / "config.yaml").write_text(PYTHON_TAG)
    return Case(train(w, run, "--resume"), [str(run / "config.yaml"), "not valid YAML"], [run])


@case
def export_with_a_python_tag_in_the_saved_config(w, tmp):
    run = copy_run(w, tmp)
    (run / "config.yaml").write_text(PYTHON_TAG)
    return Case(["export", str(run), "--out", str(tmp / "m")], [str(run / "config.yaml"), "not valid YAML"], [run])


@case
def export_with_invalid_yaml_in_the_saved_config(w, tmp):
    run = copy_run(w, tmp)
    (run / "config.yaml").write_text("data: [unclosed\n")
    return Case(["export", str(run), "--out", str(tmp / "m")], [str(run / "config.yaml"), "not valid YAML"], [run])


@case
def resume_with_a_checkpoint_from_another_run(w, tmp):
    import torch

    run = copy_run(w, tmp)
    state = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    state["config"]["optim"]["lr"] = 0.5  # the other run's lr, saved inside its last.ckpt
    torch.save(state, run / "last.ckpt")
    return Case(train(w, run, "--resume"), [str(run), "last.ckpt", "optim.lr"], [run])



# --- inputs from the real world: metadata, sizes, special files (#26) ----------------------------

def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height RGB pixels and whose data is missing."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@case
def predict_a_huge_image(w, tmp):
    big = _png_header_only(tmp / "huge.png", 12000, 12000)
    return Case(["predict", "--checkpoint", str(w["run"] / "final"), str(big), "--out", str(tmp / "p")],
                [str(big), "12000x12000", "too large"], [big])


@case
def predict_a_device(w, tmp):
    return Case(["predict", "--checkpoint", str(w["run"] / "final"), "/dev/zero", "--out", str(tmp / "p")],
                ["/dev/zero", "not a regular file"], [])


@case
def config_alias_bomb(w, tmp):
    cfg = tmp / "laughs.yaml"
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    cfg.write_text("\n".join(lines) + "\n")
    return Case(["train", "--config", str(cfg), "--out", str(tmp / "run")], [str(cfg), "alias"], [cfg])


@case
def prepare_labels_that_hold_no_class(w, tmp):
    root = tmp / "gta5"
    for i in range(3):
        png(root / "images" / f"{i:05d}.png", np.zeros((8, 8, 3), np.uint8))
        png(root / "labels" / f"{i:05d}.png", np.zeros((8, 8), np.uint8))  # id 0: unlabelled -> 255
    return Case(["prepare", "gta5", "--root", str(root), "--workers", "1"],
                [str(root), "holds a class", "ignore"], [root / "images", root / "labels"])


CLEANUP: list = []
ENV_CASES = {"ro": "readonly", "full": "full_disk"}


# --- item by item: what was accepted, misleading or a traceback ----------------------------------

_override_case("val_resize_below_the_coarsest_stride", "data.val.resize=[4,4]", "data.val.resize: 4x4 (WxH)")


@case
def score_json_inside_the_scored_predictions(w, tmp):
    preds = Path(shutil.copytree(w["preds"], tmp / "preds"))
    target = preds / "a_trainid.png"
    return Case(["score", "--pred", str(preds), "--gt", str(preds), "--json", str(target), "--overwrite"],
                [str(target), "lies inside --pred"], [preds])


@case
def resume_a_stage1_run_holding_a_stage2_checkpoint(w, tmp):
    stage2 = tmp / "stage2"
    assert main(train(w, stage2, f"method.stage1_checkpoint={w['run']}", config=STAGE2)) == 0
    run = copy_run(w, tmp)
    shutil.copy(stage2 / "last.ckpt", run / "last.ckpt")  # copied from the wrong run
    return Case(train(w, run, "--resume"), [str(run), "last.ckpt", "method.name"], [run])


@pytest.mark.parametrize("name", sorted(CASES))
def test_fault_gives_one_line_and_changes_nothing(name, world, tmp_path, capsys, request, monkeypatch):
    fn = CASES[name]
    extra = [request.getfixturevalue(ENV_CASES[arg]) for arg in fn.__code__.co_varnames[2:fn.__code__.co_argcount]]
    if name == "readonly_evaluate_json":  # the output is checked before the evaluation runs
        import iccld.evaluation.evaluate as evaluate

        monkeypatch.setattr(evaluate, "evaluate_model", lambda *a, **k: pytest.fail("evaluated before checking --json"))
    try:
        c = fn(world, tmp_path, *extra)
        before = _hashes(*[p for p in c.protect if p.exists()])
        out = Path(c.argv[c.argv.index("--out") + 1]) if c.argv[0] == "train" and "--out" in c.argv else None
        out_existed = out is not None and out.exists()
        capsys.readouterr()
        code = main(c.argv)
        err = capsys.readouterr().err.strip()
    finally:
        while CLEANUP:
            CLEANUP.pop()()
    assert code == 2, err
    assert "Traceback" not in err, err
    if out is not None and not out_existed and out.exists():  # a run that failed before starting leaves no folder
        assert (out / "config.yaml").is_file(), sorted(p.name for p in out.iterdir())
    # a progress bar may come first (it ends in a carriage return); the error is one line, the last
    segments = [s.strip() for s in err.replace("\r", "\n").split("\n") if s.strip()]
    line = segments[-1]
    assert line.startswith(f"iccld {c.argv[0]}: error: "), err
    assert sum("error:" in s for s in segments) == 1, err
    for needle in c.needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    after = _hashes(*[p for p in c.protect if p.exists()])
    assert {p: h for p, h in after.items() if p in before} == before


def test_the_matrix_has_at_least_60_cases():
    assert len(CASES) >= 60


# the environment fails mid-run: the previous checkpoint survives ---------------------------------

def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(world, tmp_path, capsys):
    size = sum(p.stat().st_size for p in world["run"].rglob("*") if p.is_file())
    root = tmp_path / "small"
    _mount(root, f"size={size + 512 * 1024}")  # room for the run, not for a second last.ckpt
    try:
        run = Path(shutil.copytree(world["run"], root / "run"))
        before = _hashes(run / "last.ckpt", run / "final", run / "results.json")
        capsys.readouterr()
        code = main(train(world, run, "--resume", "trainer.max_iters=3"))
        err = capsys.readouterr().err
        line = err.replace("\r", "\n").strip().splitlines()[-1]
        assert code == 2 and "Traceback" not in err, err
        assert line.startswith("iccld train: error: ") and str(run / "last.ckpt") in line, line
        assert "no space left on device" in line and "previous last.ckpt (iteration 2) is intact" in line
        assert _hashes(run / "last.ckpt", run / "final", run / "results.json") == before
        assert not list(run.glob(".last.ckpt.*.tmp"))  # the partial write was removed
    finally:
        _umount(root)


# what the policy still allows -----------------------------------------------------------------

def test_overwrite_removes_only_what_the_run_wrote(world, tmp_path, capsys):
    run = copy_run(world, tmp_path)
    mine = [user_file(run / "notes.txt"), user_file(run / "logs" / "notes.txt"), user_file(run / "final" / "mine.txt")]
    old_events = sorted((run / "logs").glob("events.out.tfevents.*"))
    assert main(train(world, run, "--overwrite", "trainer.max_iters=1")) == 0
    assert all(p.read_text() == "mine\n" for p in mine)
    assert not any(p.exists() for p in old_events)  # the earlier run's logs went
    files = json.loads((run / MARKER).read_text())["files"]
    assert "notes.txt" not in files and "logs/notes.txt" not in files and files["last.ckpt"] == "train"
    from iccld.io.checkpoint import load_checkpoint

    assert load_checkpoint(run / "last.ckpt")["iteration"] == 1


def test_outputs_written_into_a_run_folder_are_claimed_and_may_be_replaced(world, tmp_path, capsys):
    """predict and evaluate --json inside a run folder list their files in its marker, so their next
    --overwrite replaces them (a user's file there never is: see the matrix); train --overwrite
    leaves them alone."""
    run = copy_run(world, tmp_path)
    predict = ["predict", "--checkpoint", str(run / "final"), str(world["photos"]), "--out", str(run / "preds")]
    evaluate = ["evaluate", "--checkpoint", str(run), "--json", str(run / "eval.json"), "--max-images", "1"]
    assert main(predict) == 0 and main(evaluate) == 0
    files = json.loads((run / MARKER).read_text())["files"]
    assert files["preds/a_trainid.png"] == "predict" and files["preds/b_overlay.png"] == "predict"
    assert files["eval.json"] == "evaluate" and files["last.ckpt"] == "train"
    assert main(predict) == 2  # without --overwrite: refused
    assert main(predict + ["--overwrite"]) == 0 and main(evaluate + ["--overwrite"]) == 0
    assert main(train(world, run, "--overwrite", "trainer.max_iters=1")) == 0
    assert (run / "preds" / "a_trainid.png").is_file() and (run / "eval.json").is_file()


def test_a_run_of_a_killed_process_is_taken_over_and_its_temporaries_removed(world, tmp_path, capsys):
    run = copy_run(world, tmp_path)
    (run / LOCK).write_text(json.dumps({"pid": 2 ** 22 + 7, "host": "gone"}))  # nobody holds the flock
    orphans = [user_file(run / ".last.ckpt.ab12cd34.tmp", "partial"), user_file(run / "final" / ".model.safetensors.x1y2z3w4.tmp")]
    theirs = user_file(run / ".notes.tmp", "the user's")
    capsys.readouterr()
    assert main(train(world, run, "--resume")) == 0
    err = capsys.readouterr().err
    assert f"pid {2 ** 22 + 7} on gone ended without releasing {LOCK}; taking over" in err
    assert "removed 2 temporary files" in err and "already finished" in err
    assert not any(p.exists() for p in orphans) and theirs.read_text() == "the user's"
    assert (run / LOCK).read_text() == ""  # released: emptied, kept (see RunLock)


def test_a_legacy_run_without_marker_is_adopted(world, tmp_path, capsys):
    run = copy_run(world, tmp_path)
    (run / MARKER).unlink()
    assert main(train(world, run, "--resume")) == 0
    files = json.loads((run / MARKER).read_text())["files"]
    assert {"config.yaml", "last.ckpt", "results.json", "final/model.safetensors"} <= set(files)


def test_a_second_process_sees_the_lock(world, tmp_path):
    """flock across processes, not only across open files of one process."""
    run = copy_run(world, tmp_path)
    code = ("import sys; from pathlib import Path; from iccld.outputs import RunLock\n"
            "lock = RunLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(Exception, match=f"in use by another iccld \\(pid {holder.pid} on "):
            RunLock(run).acquire()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    RunLock(run).acquire().release()  # free again once the holder is gone


def test_sixteen_bit_gray_images_are_scaled_not_white(world, tmp_path):
    from iccld.data.io import read_image

    rng = np.random.default_rng(1)
    gray8 = rng.integers(0, 256, (30, 41), dtype=np.uint8)
    png(tmp_path / "in8" / "x.png", gray8)
    png(tmp_path / "in16" / "x.png", gray8.astype(np.uint16) * 257)  # the same picture in 16 bits
    assert np.array_equal(read_image(tmp_path / "in16" / "x.png"), np.repeat(gray8[:, :, None], 3, axis=2))
    for bits in ("8", "16"):
        assert main(["predict", "--checkpoint", str(world["run"] / "final"), str(tmp_path / f"in{bits}"),
                     "--out", str(tmp_path / f"out{bits}")]) == 0
    a, b = (np.asarray(Image.open(tmp_path / f"out{bits}" / "x_trainid.png")) for bits in ("8", "16"))
    assert np.array_equal(a, b)


def test_skip_bad_counts_distinct_pairs(world, tmp_path):
    from torch.utils.data import default_collate

    from iccld.data.gta5 import GTA5Dataset
    from iccld.data.transforms import EvalTransform

    source = Path(shutil.copytree(world["bench"] / "source", tmp_path / "source"))
    first = sorted((source / "images").glob("*.png"))[0]
    first.write_bytes(b"broken")
    ds = GTA5Dataset(source, EvalTransform(), skip_bad=True)
    batch = default_collate([ds[(0, seed)] for seed in range(5)])  # the bad pair is met five times
    assert ds.num_skipped == 5 and ds.bad_pairs == {str(first)}
    assert batch["skipped"].tolist() == [1] * 5 and set(batch["bad_pairs"]) == {str(first)}


def test_a_run_reports_distinct_skipped_pairs(world, tmp_path, capsys):
    """Two unreadable val images are met 6 times (index 0 skips both, index 1 one; model and EMA are
    evaluated): the run reports 2."""
    target = Path(shutil.copytree(world["bench"] / "target", tmp_path / "target"))
    for image in sorted((target / "leftImg8bit" / "val").rglob("*.png"))[:2]:
        image.write_bytes(b"broken")
    capsys.readouterr()
    assert main(train(world, tmp_path / "run", f"data.val.root={target}", "data.skip_bad=true")) == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["skipped_bad_samples"] == 2
    assert "skipped 2 unreadable image/label pairs" in capsys.readouterr().err


# signals to the whole process group (what `timeout`, SLURM and `kill -- -PGID` send) ----------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_process_group_saves_a_stop_checkpoint(world, tmp_path, signum):
    from iccld.io.checkpoint import load_checkpoint

    out = tmp_path / "run"
    argv = train(world, out, "trainer.max_iters=400", "trainer.checkpoint_interval=1000", "data.num_workers=2")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "iccld.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not list((out / "logs").glob("events.out.tfevents.*")) and time.time() < deadline:
            time.sleep(0.2)  # the loop has started
        time.sleep(1)  # workers are up and batches flow
        os.killpg(proc.pid, signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signum, err[-2000:]
    assert f"{signal.Signals(signum).name}: stopped at iteration" in err and "Traceback" not in err, err[-2000:]
    assert 0 < load_checkpoint(out / "last.ckpt")["iteration"] < 400


def test_debug_keeps_the_traceback_of_an_environment_error(world, tmp_path):
    mine = user_file(tmp_path / "out")
    with pytest.raises(OSError) as exc:
        main(["--debug", *train(world, mine / "run")])
    assert exc.value.filename == str(mine) and mine.read_text() == "mine\n"


@pytest.mark.parametrize("error", [OSError(28, "No space left on device", "/data/x.png"),
                                   PermissionError(13, "Permission denied", "/data/x.png")])
def test_an_environment_error_in_a_worker_is_one_line_too(error):
    from torch._utils import ExceptionWrapper

    from iccld.cli import one_line

    try:
        raise error
    except OSError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(OSError) as caught:
        wrapped.reraise()  # what the DataLoader does in the main process
    line = one_line(caught.value)
    assert "\n" not in line and "/data/x.png" in line and error.strerror in line and "Traceback" not in line


def test_prepare_synthetic_checks_its_folder_before_generating(tmp_path, capsys, monkeypatch):
    import iccld.data.synthetic as synthetic

    def never(**kwargs):
        raise AssertionError("generated before the folder was checked")

    monkeypatch.setattr(synthetic, "generate", never)
    mine = user_file(tmp_path / "file.txt")
    assert main(["prepare", "synthetic", "--out", str(mine / "bench")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(mine) in err[0]
    assert mine.read_text() == "mine\n"


# --- separate checks for #26's data-loss items ---------------------------------------------------

def test_export_overwrite_replaces_only_an_earlier_exports_files(world, tmp_path, capsys):
    out = tmp_path / "hub-clone"
    assert main(["export", str(world["run"]), "--out", str(out)]) == 0
    git = user_file(out / ".git" / "HEAD", "ref: refs/heads/main\n")
    notes = user_file(out / "NOTES.md", "my notes\n")
    before = _hashes(git, notes)
    (out / "model.safetensors").write_bytes(b"stale")
    assert main(["export", str(world["run"]), "--out", str(out), "--overwrite"]) == 0
    assert _hashes(git, notes) == before  # a Hub clone keeps its history and the user's notes
    assert (out / "model.safetensors").read_bytes() == (world["run"] / "final" / "model.safetensors").read_bytes()


def test_push_uploads_exactly_the_exports_files(world, tmp_path, monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub import constants

    from iccld import hub

    out = tmp_path / "model"
    assert main(["export", str(world["run"]), "--out", str(out)]) == 0
    user_file(out / ".env", "HF_TOKEN=hf_secret\n")
    user_file(out / "private" / "notes.txt")
    uploads = []

    class FakeApi:
        def __init__(self, **kwargs):
            pass

        def create_repo(self, repo_id, **kwargs):
            pass

        def upload_folder(self, **kwargs):
            uploads.append(kwargs)
            return "https://huggingface.co/someone/m/commit/abc"

    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    capsys.readouterr()
    assert main(["push", str(out), "--repo-id", "someone/m"]) == 0
    assert uploads[0]["allow_patterns"] == sorted(hub.EXPORT_FILES)
    assert ".env" not in uploads[0]["allow_patterns"]
    assert "not part of the export: .env, private/notes.txt" in capsys.readouterr().err


def test_a_predict_that_fails_part_way_claims_only_what_it_wrote(world, tmp_path, capsys):
    run = copy_run(world, tmp_path)
    photos = tmp_path / "photos"
    shutil.copytree(world["photos"], photos)
    (photos / "c.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")  # read after a.png and b.png
    out = run / "preds"
    assert main(["predict", "--checkpoint", str(run / "final"), str(photos), "--out", str(out)]) == 2
    listed = json.loads((run / MARKER).read_text())["files"]
    assert "preds/a_color.png" in listed and "preds/b_color.png" in listed
    assert not any(name.startswith("preds/c_") for name in listed)  # never written, never claimed
    mine = user_file(out / "c_color.png", "the user's own file\n")
    (photos / "c.png").unlink()
    shutil.copy(photos / "a.png", photos / "c.png")
    assert main(["predict", "--checkpoint", str(run / "final"), str(photos), "--out", str(out), "--overwrite"]) == 2
    assert mine.read_text() == "the user's own file\n"
    assert "did not write it" in capsys.readouterr().err


def test_marker_paths_must_stay_inside_their_folder(tmp_path):
    from iccld.outputs import is_inside

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "link").symlink_to(tmp_path)
    run = tmp_path / "run"
    assert is_inside(run, "last.ckpt") and is_inside(run, "final/model.safetensors")
    for bad in ("../x", "/etc/passwd", "", ".", "a/../../x", "link/x", "a\0b"):
        assert not is_inside(run, bad), bad


def test_two_predicts_into_one_folder_are_refused(world, tmp_path, capsys):
    out = tmp_path / "preds"
    out.mkdir()
    code = ("import sys; from pathlib import Path; from iccld.outputs import RunLock\n"
            "lock = RunLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "locked"  # another predict writing into the folder
        capsys.readouterr()
        assert main(["predict", "--checkpoint", str(world["run"] / "final"), str(world["photos"]),
                     "--out", str(out)]) == 2
        assert f"in use by another iccld (pid {holder.pid}" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [LOCK]  # nothing written
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert main(["predict", "--checkpoint", str(world["run"] / "final"), str(world["photos"]), "--out", str(out)]) == 0


def test_a_phone_photo_is_read_upright(world, tmp_path):
    from iccld.data.io import image_size, read_image

    rng = np.random.default_rng(2)
    sensor = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)  # as the sensor stored it: 60 wide, 40 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    Image.fromarray(sensor).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    upright = read_image(tmp_path / "phone.jpg")
    assert upright.shape == (60, 40, 3) and image_size(tmp_path / "phone.jpg") == (40, 60)
    stored = np.asarray(Image.open(tmp_path / "phone.jpg").convert("RGB"))
    assert np.array_equal(upright, np.rot90(stored, k=-1))  # the viewer's picture, not the sensor's
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(tmp_path / "phone.jpg", photos / "phone.jpg")
    out = tmp_path / "p"
    assert main(["predict", "--checkpoint", str(world["run"] / "final"), str(photos), "--out", str(out)]) == 0
    assert Image.open(out / "phone_color.png").size == (40, 60)  # written upright, at the viewer's size


def test_special_files_in_a_predict_folder_are_skipped(world, tmp_path, capsys):
    photos = Path(shutil.copytree(world["photos"], tmp_path / "photos"))
    os.mkfifo(photos / "pipe.png")  # reading it would block forever
    (photos / "sub.png").mkdir()  # a folder with an image's name
    out = tmp_path / "p"
    assert main(["predict", "--checkpoint", str(world["run"] / "final"), str(photos), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*_color.png")) == ["a_color.png", "b_color.png"]


def test_training_on_labels_that_hold_no_class_names_the_folder(world, tmp_path, capsys):
    bench = Path(shutil.copytree(world["bench"], tmp_path / "bench"))
    stats = bench / "source" / "sample_class_stats.json"
    entries = json.loads(stats.read_text())
    stats.write_text(json.dumps([{"file": e["file"]} for e in entries]))  # as prepare writes all-255 labels
    argv = [a.replace(str(world["bench"]), str(bench)) for a in train(world, tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds no class" in err or "hold no class" in err
    assert str(bench / "source") in err and "rcs_min_pixels" not in err


@pytest.mark.parametrize("error", [RuntimeError("[enforce fail at alloc_cpu.cpp:119] . DefaultCPUAllocator: can't "
                                                "allocate memory: you tried to allocate 85899345920 bytes."),
                                   MemoryError()])
def test_out_of_memory_is_one_line_saying_what_to_lower(world, tmp_path, capsys, monkeypatch, error):
    import iccld.training.commands as commands

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(commands, "_run_locked", fail)
    assert main(train(world, tmp_path / "run", "trainer.batch_size=100000")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "out of memory" in err and "trainer.batch_size" in err


def test_too_many_open_files_names_the_limit_and_the_setting(world, tmp_path, capsys, monkeypatch):
    import errno as errno_

    import iccld.training.commands as commands

    def fail(*args, **kwargs):
        raise OSError(errno_.EMFILE, "Too many open files")

    monkeypatch.setattr(commands, "_run_locked", fail)
    assert main(train(world, tmp_path / "run", "data.num_workers=16")) == 2
    err = capsys.readouterr().err.strip()
    assert "too many open files" in err and "ulimit -n" in err and "data.num_workers" in err


def _argparse_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "usage:" not in err, err  # one line, no usage block
    return err


def test_a_negative_max_images_is_refused(world, capsys):
    err = _argparse_error(["evaluate", "--checkpoint", str(world["run"]), "--max-images", "-3"], capsys)
    assert err.startswith("iccld evaluate: error: argument --max-images") and "'-3'" in err


def test_an_input_named_like_an_option_gets_the_two_ways_to_pass_it(world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    png(tmp_path / "-dash.png", np.zeros((40, 40, 3), np.uint8))
    err = _argparse_error(["predict", "--checkpoint", str(world["run"]), "-dash.png", "--out", "o"], capsys)
    assert "-dash.png is a file: write ./-dash.png, or put it after --" in err
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(world["run"] / "final"), "--out", "o", "--", "-dash.png"]) == 0
    assert (tmp_path / "o" / "-dash_trainid.png").is_file()


def test_a_half_written_export_is_completed_by_export_overwrite(world, tmp_path, monkeypatch):
    import iccld.hub as hub

    out = tmp_path / "model"

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:  # the export stops after the weights, before its training.json
        m.setattr(hub, "model_card", crash)
        assert main(["export", str(world["run"]), "--out", str(out)]) == 2
    assert (out / "model.safetensors").is_file() and (out / hub.PARTIAL_EXPORT).is_file()
    assert main(["export", str(world["run"]), "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(hub.EXPORT_FILES)  # complete, marker gone


def test_a_tiny_address_space_limit_is_one_line_before_torch_loads(world, capsys, monkeypatch):
    import iccld.cli as cli

    monkeypatch.setattr(cli, "_address_space_limit", lambda: 600 * 2**20)
    assert main(["evaluate", "--checkpoint", str(world["run"])]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("iccld evaluate: error: the address-space limit (ulimit -v) is 600 MiB; PyTorch needs at "
                   "least 1 GiB to load: raise the limit")


def test_a_read_only_home_gets_matplotlib_a_private_config_folder(tmp_path, monkeypatch):
    import os

    from iccld.evaluation import demo_report

    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "ro"))
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).startswith(str(tmp_path)) else real(p, mode))
    demo_report.pyplot()
    assert "iccld-matplotlib-" in os.environ["MPLCONFIGDIR"]
