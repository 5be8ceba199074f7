"""The run folder has one owner (iccld.io.run_folder): its file names, the checkpoint schema and
its migrations, the provenance record and loading whatever names a trained model."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from iccld.errors import CheckpointError
from iccld.evaluation.loading import load_models
from iccld.io import build_model_from_config, load_source, save_pretrained
from iccld.io import run_folder
from iccld.io.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from iccld.presets import preset

SRC = Path(__file__).resolve().parents[2] / "src" / "iccld"
RUN_FOLDER_NAMES = {run_folder.CHECKPOINT, run_folder.CONFIG, run_folder.RESULTS, run_folder.FINAL,
                    run_folder.PROVENANCE, run_folder.LOGS, run_folder.LOG_EVENTS, run_folder.EVALUATIONS}


def test_no_module_but_the_run_folder_names_a_run_folder_file():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "io" / "run_folder.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                value = node.value
                if value in RUN_FOLDER_NAMES or any(value.startswith(n + "/") or value.endswith("/" + n)
                                                    for n in RUN_FOLDER_NAMES):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} {value!r}")
    assert not found, found


def tiny_model():
    torch.manual_seed(0)
    return build_model_from_config(preset("cpu"), load_weights=False)


def config_of(model) -> dict:
    import dataclasses

    return {"model": dataclasses.asdict(model.config), "method": {"name": "stage1"},
            "trainer": {"max_iters": 4}, "data": {"val": {"resize": [64, 32]}}}


def test_a_checkpoint_of_schema_0_with_old_weight_names_loads_through_io(tmp_path):
    model = tiny_model()
    old = {k.replace("diffusion.denoiser.", "denoiser.", 1): v for k, v in model.state_dict().items()}
    assert any(k.startswith("denoiser.") for k in old)
    # schema 0: no "format" and no "method" entry, eps_theta's weights under their old names
    torch.save({"config": config_of(model), "iteration": 4, "model": old, "ema_model": dict(old)},
               tmp_path / "old.ckpt")
    state = load_checkpoint(tmp_path / "old.ckpt")
    assert state["format"] == FORMAT_VERSION
    assert state["ema_model"].keys() == model.state_dict().keys()
    source = load_source(tmp_path / "old.ckpt")
    assert (source.provenance.method, source.provenance.inference_path) == ("stage1", None)
    assert source.provenance.val_resize == [64, 32] and source.unfinished() is None
    fresh = build_model_from_config(preset("cpu"), load_weights=False)
    fresh.load_state_dict(source.weights("model"))
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_a_newer_schema_is_refused_in_one_line(tmp_path):
    torch.save({"format": FORMAT_VERSION + 1, "model": {}}, tmp_path / "new.ckpt")
    with pytest.raises(CheckpointError, match=f"new.ckpt: written by a newer iccld \\(format {FORMAT_VERSION + 1}\\)"):
        load_checkpoint(tmp_path / "new.ckpt")


def test_run_folder_model_sources_pick_their_weights_and_read_one_provenance(tmp_path):
    model, other = tiny_model(), build_model_from_config(preset("cpu"), load_weights=False)
    run = run_folder.RunFolder(tmp_path / "run")
    provenance = run_folder.Provenance("stage1", "direct", 3, val_resize=[64, 32])
    run.path.mkdir()
    save_checkpoint(run.checkpoint,
                    {"config": config_of(model), "iteration": 3, "model": other.state_dict(),
                     "ema_model": model.state_dict(), "method": provenance.checkpoint_entry()})
    run.write_final(model, provenance)
    run.write_results(provenance, {"val": {}})
    # a run folder names its checkpoint, which holds both weights; an unfinished one says so
    source = load_source(run.path)
    assert source.kind == "ckpt" and source.unfinished() == (3, 4)
    assert torch.equal(next(iter(source.weights("model").values())), next(iter(other.state_dict().values())))
    assert torch.equal(next(iter(source.weights("ema").values())), next(iter(model.state_dict().values())))
    # final/ is a save_pretrained folder with the same provenance; results.json repeats it
    final = load_source(run.final)
    assert final.kind == "pretrained" and final.provenance == provenance == source.provenance
    assert run_folder.Provenance.from_record(run.read_results()) == run_folder.Provenance("stage1", "direct", 3)
    assert json.loads(run.provenance.read_text()) == {
        "method": "stage1", "inference_path": "direct", "iteration": 3, "weights": "ema_model",
        "val_resize": [64, 32], "val_keep_ratio": True}
    loaded = load_models(str(run.final))
    assert (loaded.method, loaded.inference_path, loaded.val_resize) == ("stage1", "direct", [64, 32])
    # a bare save_pretrained folder has no provenance: every field unknown, completed from another record
    bare = save_pretrained(model, tmp_path / "bare")
    unknown = load_source(bare).provenance
    assert unknown.method is None and unknown.merged(provenance).method == "stage1"
