"""The main job end to end, on a tiny benchmark and a 3-iteration schedule (`iccld demo --quick`)."""

from __future__ import annotations

import json

from iccld.cli import main


def test_demo_quick_runs_end_to_end_and_reuses_finished_steps(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    for name in ("Source only", "Stage 1", "ICCLD", "curves.png", "grid.png", "Target **test** IoU"):
        assert name in report
    # the held-out test split (6 images in --quick) is what the report's table shows; val beside it
    from iccld.evaluation.runs import evaluate_run

    test = evaluate_run(out / "runs" / "stage2", "test")["ema"]["miou"]
    val = json.loads((out / "runs" / "stage2" / "results.json").read_text())["val"]["ema"]["miou"]
    assert f"| ICCLD (stage 2) | {test:.2f} | {val:.2f} |" in report
    assert len(list((out / "benchmark" / "target" / "leftImg8bit" / "test").rglob("*.png"))) == 6
    assert (out / "curves.png").stat().st_size > 1000 and (out / "grid.png").stat().st_size > 1000
    for method in ("source_only", "stage1", "stage2"):
        assert json.loads((out / "runs" / method / "results.json").read_text())["iteration"] == 3
    stamp = (out / "runs" / "stage1" / "last.ckpt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["demo", "--quick", "--out", str(out)]) == 0  # second run: nothing retrained
    assert (out / "runs" / "stage1" / "last.ckpt").stat().st_mtime_ns == stamp
    assert "already finished" in capsys.readouterr().err


def test_demo_with_a_pretrained_encoder_says_which_weights_it_used(tmp_path, capsys):
    import torch
    import yaml
    from transformers import MobileNetV2ForImageClassification

    from iccld.models.backbones.mobilenet import mobilenet_v2_config

    torch.manual_seed(0)  # random weights in the layout of google/mobilenet_v2_1.0_224 (no download in tests)
    weights = tmp_path / "mobilenet_v2_1.0_224"
    MobileNetV2ForImageClassification(mobilenet_v2_config("mobilenet-v2")).save_pretrained(weights)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--pretrained", str(weights)]) == 0
    first = (out / "report.md").read_text().splitlines()[:3]
    assert first[2] == (f"Encoder: ImageNet MobileNetV2 1.0 (`mobilenet-v2`), weights from `{weights}`, "
                        "configs in `configs/synthetic_pretrained/`.")
    for method in ("source_only", "stage1", "stage2"):  # beside, never in place of, the from-scratch runs
        saved = yaml.safe_load((out / "runs-pretrained" / method / "config.yaml").read_text())
        assert saved["model"]["backbone"] == "mobilenet-v2" and saved["model"]["pretrained"] == str(weights)
        assert saved["model"]["norm_eval"] is True
    assert not (out / "runs").exists()
