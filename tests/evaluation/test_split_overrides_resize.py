"""evaluate's split and overrides of a checkpoint's own config, predict's resize, SYNTHIA's 16/13-class
means in a run's results and logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import CONFIGS, REPO, tiny_overrides
from iccld.cli import main
from iccld.config import load_config, with_overrides
from iccld.data.labels import SYNTHIA13, SYNTHIA16
from iccld.errors import ConfigError
from iccld.io import build_model_from_config, load_pretrained, save_pretrained
from iccld.models import ICCLD
from iccld.presets import preset
from iccld.training.commands import run_training


@pytest.fixture(scope="module")
def tiny_run(tiny_benchmark, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "stage1"
    config = load_config(CONFIGS / "synthetic" / "stage1.yaml", tiny_overrides(tiny_benchmark))
    assert run_training(config, out, progress=False) == 0
    return out


def test_evaluate_split_defaults_to_the_configs_and_overrides_reach_the_saved_config(tiny_run, tmp_path, capsys):
    # no flag: the saved config's split (val, 6 images)
    assert main(["evaluate", "--checkpoint", str(tiny_run), "--json", str(tmp_path / "val.json")]) == 0
    assert "6 images of" in capsys.readouterr().out
    # an override of the checkpoint's own config (no --config): the held-out test split, 4 images
    assert main(["evaluate", "--checkpoint", str(tiny_run), "data.val.split=test",
                 "--json", str(tmp_path / "test.json")]) == 0
    out = capsys.readouterr().out
    assert "4 images of" in out and " test]" in out
    # --split given: it wins over the config
    assert main(["evaluate", "--checkpoint", str(tiny_run), "data.val.split=test", "--split", "val",
                 "--json", str(tmp_path / "val2.json")]) == 0
    assert "6 images of" in capsys.readouterr().out
    val, test = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("val", "test"))
    assert json.loads((tmp_path / "val2.json").read_text())["miou"] == val["miou"]
    assert test["per_class"] != val["per_class"]  # other images, other confusion
    # a bad override names the key
    assert main(["evaluate", "--checkpoint", str(tiny_run), "data.val.spilt=test"]) == 2
    assert "data.val.split" in capsys.readouterr().err


def test_with_overrides_keeps_everything_else_and_validates(tiny_run):
    from iccld.evaluation.loading import load_models

    saved = load_models(str(tiny_run), "ema").config
    changed = with_overrides(saved, ["data.val.split=test", "data.val.resize=[64,32]"])
    assert changed.data.val.split == "test" and changed.data.val.resize == [64, 32]
    assert changed.model == saved.model and changed.data.val.root == saved.data.val.root
    with pytest.raises(ConfigError, match="data.val.resize"):
        with_overrides(saved, ["data.val.resize=[0,32]"])


def test_the_documented_camvid_command_evaluates_the_checkpoint_on_camvid(tiny_run, tmp_path, capsys):
    """docs/datasets.md: iccld evaluate --checkpoint RUN data.val.kind=folder data.val.root=...
    data.val.spec=configs/datasets/camvid.yaml 'data.val.split=""' data.val.resize=null"""
    spec_path = REPO / "configs" / "datasets" / "camvid.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    palette = np.asarray([c["value"] for c in spec["classes"]], dtype=np.uint8)
    root = tmp_path / "camvid"
    rng = np.random.default_rng(0)
    for folder in (spec["images"], spec["labels"]):
        (root / folder).mkdir(parents=True)
    for name in ("0001TP_006690", "0001TP_006720", "Seq05VD_f00000"):
        Image.fromarray(rng.integers(0, 256, (40, 72, 3), dtype=np.uint8)).save(root / spec["images"] / f"{name}.png")
        Image.fromarray(palette[rng.integers(0, len(palette), (40, 72))]).save(root / spec["labels"] / f"{name}_L.png")
    assert main(["prepare", "folder", "--root", str(root), "--spec", str(spec_path), "--workers", "1"]) == 0
    docs = (REPO / "docs" / "datasets.md").read_text()
    assert "data.val.kind=folder data.val.root=data/camvid data.val.spec=configs/datasets/camvid.yaml" in docs
    assert """'data.val.split=""' data.val.resize=null""" in docs
    capsys.readouterr()
    result = tmp_path / "camvid.json"
    assert main(["evaluate", "--checkpoint", str(tiny_run), "data.val.kind=folder", f"data.val.root={root}",
                 f"data.val.spec={spec_path}", 'data.val.split=""', "data.val.resize=null",
                 "--json", str(result)]) == 0
    assert f"3 images of {root}" in capsys.readouterr().out
    summary = json.loads(result.read_text())
    # no CamVid class maps to terrain: never in the labels, so its IoU is 0 (predicted) or undefined
    assert summary["per_class"]["terrain"] in (None, 0.0)
    assert all(summary["per_class"][c] is not None for c in ("road", "sidewalk", "building", "car", "sky"))


@pytest.fixture(scope="module")
def pretrained_with_resize(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("model") / "iccld"
    save_pretrained(build_model_from_config(preset("cpu")), out)
    (out / "training.json").write_text(json.dumps({"method": "stage1", "inference_path": "direct",
                                                   "val_resize": [48, 32]}))
    return out


def test_predict_resizes_to_the_training_resolution_and_writes_at_the_inputs_size(pretrained_with_resize, tmp_path,
                                                                                 monkeypatch, capsys):
    seen = []
    original = ICCLD.predict

    def spy(self, x, **kwargs):
        seen.append(tuple(x.shape[-2:]))
        return original(self, x, **kwargs)

    monkeypatch.setattr(ICCLD, "predict", spy)
    image = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (61, 83, 3), dtype=np.uint8)).save(image)
    # 83x61 fitted into 48x32 keeping its aspect ratio (data.val.keep_ratio): scale min(48/83, 32/61)
    for flag, expected in (([], (32, 44)), (["--native-size"], (61, 83))):
        out = tmp_path / f"pred{len(flag)}"
        assert main(["predict", "--checkpoint", str(pretrained_with_resize), str(image), "--out", str(out),
                     *flag]) == 0
        assert seen[-1] == expected
        for name, shape in (("trainid", (61, 83)), ("color", (61, 83, 3)), ("overlay", (61, 83, 3))):
            assert np.asarray(Image.open(out / f"frame_{name}.png")).shape == shape
    assert "fitted into 48x32" in capsys.readouterr().err


def test_predict_at_the_training_size_matches_evaluation_upsampling(pretrained_with_resize, tmp_path):
    """The written labels are argmax of the logits at 48x32, bilinearly upsampled to the input size."""
    import torch.nn.functional as F

    from iccld.data.transforms import normalize, resize_image

    rgb = np.random.default_rng(2).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert main(["predict", "--checkpoint", str(pretrained_with_resize), str(tmp_path / "a.png"),
                 "--out", str(tmp_path / "out"), "--direct"]) == 0
    model = load_pretrained(pretrained_with_resize).eval()
    with torch.no_grad():
        logits = model.predict(normalize(resize_image(rgb, (48, 32))).unsqueeze(0), diffusion=False).logits
    expected = F.interpolate(logits, size=(64, 96), mode="bilinear", align_corners=False).argmax(1)[0].numpy()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "a_trainid.png")), expected)


def test_a_synthia_run_reports_the_16_and_13_class_means(tiny_benchmark, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from data.fixtures import make_synthia
    from iccld.data.prepare import prepare_dataset

    synthia = make_synthia(tmp_path / "synthia", 4, (96, 72))
    prepare_dataset("synthia", synthia, workers=1, progress=False)
    overrides = tiny_overrides(tiny_benchmark) + [f"data.source.root={synthia}", "data.source.kind=synthia",
                                                  "trainer.eval_interval=1"]
    config = load_config(CONFIGS / "synthetic" / "source_only.yaml", overrides)
    assert run_training(config, tmp_path / "run", progress=False) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())["val"]
    per_class = list(results["ema"]["per_class"].values())
    for key, ids in (("miou16", SYNTHIA16), ("miou13", SYNTHIA13)):
        defined = [per_class[i] for i in ids if per_class[i] is not None]
        assert results["ema"][key] == pytest.approx(sum(defined) / len(defined))
    acc = EventAccumulator(str(tmp_path / "run" / "logs"))
    acc.Reload()
    assert {"val/miou_ema", "val/miou16_ema", "val/miou13_ema", "val/miou16_model"} <= set(acc.Tags()["scalars"])
