"""evaluate / predict / score from the command line, on tiny models and the tiny benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CONFIGS, tiny_overrides
from iccld.cli import main
from iccld.config import load_config
from iccld.io import build_model_from_config, save_pretrained
from iccld.presets import preset
from iccld.training.commands import run_training


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("model") / "iccld"
    save_pretrained(build_model_from_config(preset("cpu")), out)
    return out


@pytest.fixture(scope="module")
def tiny_run(tiny_benchmark, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "stage1"
    config = load_config(CONFIGS / "synthetic" / "stage1.yaml", tiny_overrides(tiny_benchmark))
    assert run_training(config, out, progress=False) == 0
    return out


def odd_image(path: Path, size=(83, 61)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_predict_writes_every_output_for_an_odd_sized_image(pretrained_dir, tmp_path):
    image = odd_image(tmp_path / "street.png")
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(pretrained_dir), str(image), "--out", str(out),
                 "--samples", "3", "--steps", "2"]) == 0
    label = np.asarray(Image.open(out / "street_trainid.png"))
    assert label.shape == (61, 83) and label.max() < 19
    for name, shape in (("color", (61, 83, 3)), ("overlay", (61, 83, 3)), ("uncertainty", (61, 83, 3))):
        assert np.asarray(Image.open(out / f"street_{name}.png")).shape == shape
    # the same seed gives the same labels; existing outputs are not overwritten without being asked
    assert main(["predict", "--checkpoint", str(pretrained_dir), str(image), "--out", str(out),
                 "--samples", "3", "--steps", "2"]) == 2
    assert main(["predict", "--checkpoint", str(pretrained_dir), str(image), "--out", str(out),
                 "--samples", "3", "--steps", "2", "--overwrite"]) == 0
    assert np.array_equal(label, np.asarray(Image.open(out / "street_trainid.png")))


def test_predict_never_writes_over_an_input(pretrained_dir, tmp_path, capsys):
    image = odd_image(tmp_path / "x_color.png")
    twin = odd_image(tmp_path / "x.png")
    code = main(["predict", "--checkpoint", str(pretrained_dir), str(twin), str(image), "--out", str(tmp_path),
                 "--overwrite"])
    assert code == 2 and "would overwrite an input image" in capsys.readouterr().err
    assert np.asarray(Image.open(image)).shape == (61, 83, 3)


def test_evaluate_writes_json_and_score_agrees_with_predict(tiny_run, tiny_benchmark, tmp_path):
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(tiny_run), "--which", "ema", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert set(result) >= {"miou", "per_class", "pixel_accuracy"} and len(result["per_class"]) == 19
    both = tmp_path / "both.json"
    assert main(["evaluate", "--checkpoint", str(tiny_run / "last.ckpt"), "--which", "both", "--json", str(both)]) == 0
    assert set(json.loads(both.read_text())) == {"model", "ema"}
    # predict the val images with the same model, score them: the same confusion, so the same mIoU
    val_images = sorted((tiny_benchmark / "target" / "leftImg8bit" / "val").rglob("*.png"))
    pred = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(tiny_run / "final"), *map(str, val_images), "--out", str(pred)]) == 0
    scored = tmp_path / "score.json"
    assert main(["score", "--pred", str(pred), "--gt", str(tiny_benchmark / "target" / "gtFine" / "val"),
                 "--json", str(scored), "--confusion"]) == 0
    scored = json.loads(scored.read_text())
    assert scored["miou"] == pytest.approx(result["miou"], abs=1e-6)
    # --confusion: the same matrix seen from the rows; correct share = recall of each class
    confused = tmp_path / "confusion.json"
    assert main(["evaluate", "--checkpoint", str(tiny_run), "--json", str(confused), "--confusion"]) == 0
    rows = json.loads(confused.read_text())["confusion"]
    assert rows == scored["confusion"] and rows
    for row in rows:
        assert row["correct"] + sum(p["share"] for p in row["predicted_as"]) <= 100.0 + 1e-6


def test_evaluate_errors_are_one_line(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and err.count("\n") == 1
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["evaluate", "--checkpoint", str(bad)]) == 2
    assert "not a readable iccld checkpoint" in capsys.readouterr().err
