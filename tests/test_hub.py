"""export / push and Hub repo ids, offline: a hand-built Hub cache stands in for the Hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import CONFIGS, REPO, tiny_overrides
from hub_cache import add_to_cache
from iccld import hub
from iccld.cli import main
from iccld.config import load_config
from iccld.errors import CheckpointError
from iccld.training.commands import run_training

COMMIT = "0123456789abcdef0123456789abcdef01234567"
COMMIT_V1 = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture(scope="module")
def finished_run(tiny_benchmark, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hubrun") / "stage1"
    config = load_config(CONFIGS / "synthetic" / "stage1.yaml", tiny_overrides(tiny_benchmark))
    assert run_training(config, out, progress=False) == 0
    return out


@pytest.fixture(scope="module")
def exported(finished_run, tmp_path_factory) -> Path:
    return hub.export_run(finished_run, tmp_path_factory.mktemp("export") / "tiny-stage1", repo_id="someone/tiny")


@pytest.fixture
def cache(exported, tmp_path, monkeypatch) -> Path:
    """An offline Hub cache holding someone/tiny (main) in place of the user's own."""
    from huggingface_hub import constants

    root = tmp_path / "hf" / "hub"
    add_to_cache(exported, root, "someone/tiny", COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    return root


def test_export_writes_a_complete_model_folder(finished_run, exported):
    from huggingface_hub import ModelCard

    assert hub.check_export(exported) == sorted(hub.EXPORT_FILES)
    # the EMA weights of the run, byte for byte
    assert (exported / "model.safetensors").read_bytes() == (finished_run / "final" / "model.safetensors").read_bytes()
    results = json.loads((finished_run / "results.json").read_text())
    info = json.loads((exported / "training.json").read_text())
    assert info["method"] == "stage1" and info["iteration"] == 2 and info["inference_path"] == "direct"
    assert info["val_miou"] == round(results["val"]["ema"]["miou"], 2)
    assert info["benchmark"] == {"name": "GTA5 -> Cityscapes", "source": "gta5", "target": "cityscapes",
                                 "val": "cityscapes", "val_split": "val"}
    assert info["command"] == "iccld evaluate --checkpoint someone/tiny --which ema"
    assert yaml.safe_load((exported / "config.yaml").read_text()) == yaml.safe_load(
        (finished_run / "config.yaml").read_text())
    labels = json.loads((exported / "labels.json").read_text())
    assert labels["classes"][0] == "road" and labels["palette"][0] == [128, 64, 128]
    assert labels["cityscapes_label_ids"][:3] == [7, 8, 11] and len(labels["classes"]) == 19
    card = ModelCard.load(exported / "README.md")
    assert card.data.library_name == "iccld" and card.data.metrics == ["mean_iou"]
    assert card.data.datasets == ["cityscapes", "gta5"] and "domain-adaptation" in card.data.tags
    result = card.data.eval_results[0]
    assert result.metric_type == "mean_iou" and result.metric_value == info["val_miou"]
    assert result.dataset_type == "cityscapes" and result.dataset_split == "val"
    assert "model-index" in (exported / "README.md").read_text().split("---")[1]


def test_export_writes_what_a_gradio_space_needs(exported):
    """The folder is also a Space: its header names the SDK and the entry point, app.py serves the
    folder with `iccld app`'s launch, requirements.txt installs iccld with the app extra (tests/test_app.py
    runs that app.py)."""
    import ast

    from huggingface_hub import ModelCard

    from iccld import __version__

    card = ModelCard.load(exported / "README.md")
    assert (card.data.sdk, card.data.app_file, card.data.sdk_version) == ("gradio", "app.py", hub.SPACE_GRADIO_VERSION)
    assert card.data.title == "tiny" and card.data.library_name == "iccld"  # still the model card
    tree = ast.parse((exported / "app.py").read_text())
    imports = [(n.module, [a.name for a in n.names]) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert ("iccld.app", ["launch"]) in imports
    assert (exported / "requirements.txt").read_text() == f"iccld[app]=={__version__}\n"
    assert "iccld app someone/tiny" in (exported / "README.md").read_text()


def test_export_refuses_to_replace_unless_asked(finished_run, tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(finished_run), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # --overwrite replaces an earlier export, never a folder of something else
    assert main(["export", str(finished_run), "--out", str(out), "--overwrite"]) == 2
    assert (out / "notes.txt").read_text() == "mine"
    assert main(["export", str(finished_run), "--out", str(tmp_path / "m2")]) == 0
    assert main(["export", str(finished_run), "--out", str(tmp_path / "m2"), "--overwrite"]) == 0


def test_export_of_an_unfinished_run_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not finished" in err and "--resume" in err


def test_repo_id_resolves_from_the_offline_cache(cache, exported, tmp_path, monkeypatch):
    snapshot = hub.resolve_model_source("someone/tiny")
    assert snapshot == cache / "models--someone--tiny" / "snapshots" / COMMIT
    assert (snapshot / "model.safetensors").read_bytes() == (exported / "model.safetensors").read_bytes()
    # a revision: a tag in refs/ and a commit hash
    add_to_cache(exported, cache, "someone/tiny", COMMIT_V1, refs=("v1",))
    assert hub.resolve_model_source("someone/tiny@v1").name == COMMIT_V1
    assert hub.resolve_model_source(f"someone/tiny@{COMMIT}").name == COMMIT
    # a local path of the same spelling wins over the repo id
    monkeypatch.chdir(tmp_path)
    (tmp_path / "someone" / "tiny").mkdir(parents=True)
    assert hub.resolve_model_source("someone/tiny") == Path("someone/tiny")
    # not repo ids: returned as given, for the caller to report
    assert hub.parse_repo_id("runs/stage1/last.ckpt") is None and hub.parse_repo_id("/abs/path") is None


def test_missing_repo_offline_is_one_line(cache, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(image)
    assert main(["predict", str(image), "--checkpoint", "nobody/nothing", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nobody/nothing" in err and "not in the cache" in err
    with pytest.raises(CheckpointError, match="no revision|not in the cache"):
        hub.resolve_model_source("someone/tiny@nope")


def test_evaluate_and_predict_from_a_repo_id_match_the_local_folder(cache, exported, tiny_benchmark, tmp_path):
    config = str(CONFIGS / "synthetic" / "stage1.yaml")
    over = tiny_overrides(tiny_benchmark)
    runs = {}
    for name, where in (("hub", "someone/tiny"), ("local", str(exported))):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "--checkpoint", where, "--config", config, *over, "--max-images", "2",
                     "--json", str(out)]) == 0
        runs[name] = json.loads(out.read_text())
        image = tiny_benchmark / "target" / "leftImg8bit" / "val"
        assert main(["predict", str(next(image.rglob("*.png"))), "--checkpoint", where,
                     "--out", str(tmp_path / f"pred_{name}")]) == 0
    assert runs["hub"]["miou"] == runs["local"]["miou"] and runs["hub"]["miou"] is not None
    hub_pred = next((tmp_path / "pred_hub").glob("*_trainid.png"))
    local_pred = tmp_path / "pred_local" / hub_pred.name
    assert np.array_equal(np.asarray(Image.open(hub_pred)), np.asarray(Image.open(local_pred)))


def test_a_hub_model_evaluates_with_its_own_config(cache, finished_run, tiny_benchmark, tmp_path):
    """No --config: the exported config.yaml gives the val settings; the run's own final evaluation
    (results.json, every val image) is what `iccld evaluate` measures again."""
    out = tmp_path / "own.json"
    assert main(["evaluate", "--checkpoint", "someone/tiny", "--json", str(out)]) == 0
    expected = json.loads((finished_run / "results.json").read_text())["val"]["ema"]["miou"]
    assert json.loads(out.read_text())["miou"] == pytest.approx(expected, abs=1e-6)
    # key=value overrides apply to that config (here: a split that does not exist)
    assert main(["evaluate", "--checkpoint", "someone/tiny", "data.val.split=nosuch"]) == 2


def test_stage2_starts_from_a_repo_id(cache, exported, tiny_benchmark):
    from safetensors.torch import load_file

    from iccld.methods.stage2 import stage1_weights

    config = load_config(CONFIGS / "synthetic" / "stage2.yaml",
                         tiny_overrides(tiny_benchmark) + ["method.stage1_checkpoint=someone/tiny"])
    weights = stage1_weights(config, "stage2")
    saved = load_file(exported / "model.safetensors")
    assert set(weights) == set(saved) and all(torch.equal(weights[k], saved[k]) for k in saved)


def test_hf_home_is_honoured_by_the_command_line(exported, tmp_path):
    """A fresh process with HF_HOME and HF_HUB_OFFLINE=1 finds the model where the Hub puts it."""
    add_to_cache(exported, tmp_path / "home" / "hub", "someone/tiny", COMMIT)
    image = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(image)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "iccld.cli", "predict", str(image), "--checkpoint",
                             "someone/tiny", "--out", str(tmp_path / "p")], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert np.asarray(Image.open(tmp_path / "p" / "street_trainid.png")).shape == (40, 56)


def test_push_checks_the_folder_and_uploads_it(exported, tmp_path, monkeypatch, capsys):
    import shutil

    import huggingface_hub
    from huggingface_hub import constants

    # offline (the test suite's setting): refused before any request
    assert main(["push", str(exported), "--repo-id", "someone/tiny"]) == 2
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().err
    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert main(["push", str(exported), "--repo-id", "someone/tiny"]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err

    calls = []

    class FakeApi:
        def __init__(self, **kwargs):
            calls.append(("init", kwargs.get("token")))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id, kwargs.get("private")))

        def upload_folder(self, **kwargs):
            calls.append(("upload", kwargs))
            return type("Info", (), {"commit_url": "https://huggingface.co/someone/tiny/commit/abc"})()

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert main(["push", str(exported), "--repo-id", "someone/tiny", "--private"]) == 0
    assert calls[0] == ("init", "hf_test") and calls[1] == ("create", "someone/tiny", True)
    upload = calls[2][1]
    assert upload["folder_path"] == str(exported) and upload["repo_id"] == "someone/tiny"
    assert upload["allow_patterns"] == sorted(hub.EXPORT_FILES)
    # a damaged folder is named file by file, before anything is sent
    broken = Path(shutil.copytree(exported, tmp_path / "broken"))
    (broken / "labels.json").unlink()
    assert main(["push", str(broken), "--repo-id", "someone/tiny"]) == 2
    assert "labels.json: missing" in capsys.readouterr().err
    (broken / "labels.json").write_text("{}")
    (broken / "model.safetensors").write_bytes(b"not weights")
    assert main(["push", str(broken), "--repo-id", "someone/tiny"]) == 2
    assert "model.safetensors: not readable" in capsys.readouterr().err
    assert len(calls) == 3
