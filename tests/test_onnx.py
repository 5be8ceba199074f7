"""`iccld export --onnx`, the ONNX predictors against PyTorch, and evaluate / predict on a .onnx file.

One tiny run is trained and exported once for the module (the export traces two graphs: about
half a minute on a CPU). Its denoiser is perturbed before the export: a 2-iteration run's
zero-initialised eps_theta would make the diffusion path equal the direct one and ignore the noise.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import CONFIGS, tiny_overrides
from iccld import hub
from iccld.cli import main
from iccld.config import load_config
from iccld.data.build import build_val_dataset
from iccld.evaluation.evaluate import evaluate_model
from iccld.evaluation.predict import predict_images
from iccld.io import load_pretrained, save_pretrained
from iccld.io.onnx import DIRECT_ONNX_FILE, ONNX_FILE, load_onnx
from iccld.training.commands import run_training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tiny_benchmark, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnxrun") / "stage1"
    config = load_config(CONFIGS / "synthetic" / "stage1.yaml", tiny_overrides(tiny_benchmark))
    assert run_training(config, out, progress=False) == 0
    model = load_pretrained(out / "final")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # an eps_theta whose output depends on z_t, so the noise matters
        for p in model.diffusion.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    save_pretrained(model, out / "final")
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> tuple[Path, str]:
    """(the export folder, what `iccld export --onnx` printed)."""
    out = tmp_path_factory.mktemp("onnxexport") / "tiny"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["export", str(run), "--out", str(out), "--onnx"]) == 0
    return out, err.getvalue()


@pytest.fixture(scope="module")
def pytorch(run):
    return load_pretrained(run / "final").eval()


def test_export_writes_both_predictors_and_their_check(exported):
    out, printed = exported
    info = json.loads((out / "training.json").read_text())["onnx"]
    assert info["files"] == {"diffusion": ONNX_FILE, "direct": DIRECT_ONNX_FILE}
    assert info["inference_path_file"] == DIRECT_ONNX_FILE  # a stage-1 run predicts with D(z0)
    assert info["opset"] >= 17 and info["steps"] == 4 and info["timesteps"] == [999, 749, 499, 249]
    check = info["check"]
    assert check["on"].startswith("6 images of the cityscapes val split") and check["met"] is True
    assert check["sizes_hw"] == [[64, 128], [49, 97]]
    for path in ("diffusion", "direct"):
        figures = check[path]
        assert figures["images"] == 6 and figures["pixels"] == 6 * 64 * 128
        assert figures["max_abs_logit_diff"] < 1e-4
        assert figures["argmax_identical_percent"] >= 99.9
        assert figures["second_size"]["argmax_identical_percent"] >= 99.9
        assert figures["miou_diff"] <= 0.05 and figures["miou_pytorch"] == pytest.approx(figures["miou_onnx"], abs=0.05)
        assert f"ONNX {path} path on 6 images" in printed
    # the direct path is the run's own: its mIoU is the one the run measured
    assert check["direct"]["miou_pytorch"] == pytest.approx(json.loads((out / "training.json").read_text())["val_miou"], abs=0.01)
    # the diffusion path differs from the direct one here (a perturbed eps_theta)
    assert check["diffusion"]["miou_pytorch"] != check["direct"]["miou_pytorch"]
    assert sorted(hub.check_export(out)) == sorted(hub.EXPORT_FILES + (ONNX_FILE, DIRECT_ONNX_FILE))
    assert "| ONNX | `model.onnx` (diffusion path, K=4" in (out / "README.md").read_text()


@pytest.mark.parametrize("size", [(64, 128), (75, 101)])
def test_onnx_matches_pytorch_at_two_sizes_with_the_same_noise(exported, pytorch, size):
    out, _ = exported
    diffusion, direct = load_onnx(out / ONNX_FILE), load_onnx(out / DIRECT_ONNX_FILE)
    inputs = {i.name: i.shape for i in diffusion.session.get_inputs()}
    assert set(inputs) == {"image", "noise"} and all(isinstance(d, str) for d in inputs["image"][2:])
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))  # a batch of 2, dynamic too
    ours = diffusion.predict(x, samples=2, generator=torch.Generator().manual_seed(7))
    theirs = pytorch.predict(x, samples=2, generator=torch.Generator().manual_seed(7))
    assert ours.logits.shape == (2, 19, *size)
    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.uncertainty, theirs.uncertainty, atol=1e-5, rtol=1e-3)
    assert (ours.logits.argmax(1) == theirs.logits.argmax(1)).float().mean() >= 0.999
    torch.testing.assert_close(direct.predict(x, diffusion=False).logits, pytorch.predict(x, diffusion=False).logits,
                               atol=1e-4, rtol=1e-4)
    # the noise is an input the result depends on: another draw, other logits
    other = diffusion.predict(x, generator=torch.Generator().manual_seed(8)).logits
    assert (other - ours.logits).abs().max() > 1e-3


def test_evaluate_on_onnx_gives_the_pytorch_miou(exported, pytorch, tiny_benchmark, tmp_path):
    out, _ = exported
    results = {}
    for name in (ONNX_FILE, DIRECT_ONNX_FILE):
        report = tmp_path / f"{name}.json"
        assert main(["evaluate", "--checkpoint", str(out / name), "--json", str(report)]) == 0
        results[name] = json.loads(report.read_text())["miou"]
    # the PyTorch model through the same command (its inference path: direct), and the diffusion path
    assert main(["evaluate", "--checkpoint", str(out), "--json", str(tmp_path / "pt.json")]) == 0
    assert results[DIRECT_ONNX_FILE] == pytest.approx(json.loads((tmp_path / "pt.json").read_text())["miou"], abs=0.05)
    config = load_config(CONFIGS / "synthetic" / "stage1.yaml", tiny_overrides(tiny_benchmark))
    cm = evaluate_model(pytorch, build_val_dataset(config.data), path="diffusion", seed=0, progress=False)
    assert results[ONNX_FILE] == pytest.approx(cm.summary()["miou"], abs=0.05)


def test_predict_on_onnx_writes_the_pytorch_pngs(exported, pytorch, tiny_benchmark, tmp_path):
    out, _ = exported
    images = sorted((tiny_benchmark / "target" / "leftImg8bit" / "val").rglob("*.png"))[:3]
    assert main(["predict", "--checkpoint", str(out / ONNX_FILE), *map(str, images), "--out", str(tmp_path / "onnx"),
                 "--samples", "2"]) == 0
    written = predict_images(pytorch, images, tmp_path / "torch", path="diffusion", samples=2, seed=0)
    assert sorted(p.name for p in (tmp_path / "onnx").glob("*.png")) == sorted(p.name for p in written)
    for image in images:
        ours = np.asarray(Image.open(tmp_path / "onnx" / f"{image.stem}_trainid.png"))
        theirs = np.asarray(Image.open(tmp_path / "torch" / f"{image.stem}_trainid.png"))
        assert ours.shape == (64, 128) and (ours == theirs).mean() >= 0.999


def test_onnx_errors_are_one_line(exported, tmp_path, capsys):
    out, _ = exported
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx model")
    assert main(["evaluate", "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "broken.onnx: not a readable ONNX model" in err and err.count("\n") == 1
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(image)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes((out / ONNX_FILE).read_bytes()[:5000])
    assert main(["predict", "--checkpoint", str(cut), str(image), "--out", str(tmp_path / "p")]) == 2
    assert "cut.onnx: not a readable ONNX model" in capsys.readouterr().err
    for flags, message in ((["--steps", "2"], "unrolled for K=4 steps, not 2"),
                           (["--direct"], f"the direct path is in {DIRECT_ONNX_FILE} beside it")):
        assert main(["predict", "--checkpoint", str(out / ONNX_FILE), str(image), "--out", str(tmp_path / "q"), *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_a_missing_onnx_extra_is_one_line_naming_it(exported, run, tmp_path, monkeypatch, capsys):
    out, _ = exported
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    assert main(["evaluate", "--checkpoint", str(out / ONNX_FILE)]) == 2
    err = capsys.readouterr().err
    assert "needs the package onnxruntime" in err and "pip install 'iccld[onnx]'" in err and err.count("\n") == 1
    assert main(["export", str(run), "--out", str(tmp_path / "m"), "--onnx"]) == 2
    assert "pip install 'iccld[onnx]'" in capsys.readouterr().err and not (tmp_path / "m").exists()


@pytest.fixture
def fake_export(exported, monkeypatch):
    """export_onnx copying the module's files instead of tracing again (the check still runs)."""
    import iccld.io.onnx as onnx_io

    def copy(model, folder, steps=None):
        return {path: Path(shutil.copy(exported[0] / name, Path(folder) / name))
                for path, name in (("diffusion", ONNX_FILE), ("direct", DIRECT_ONNX_FILE))}
    monkeypatch.setattr(onnx_io, "export_onnx", copy)


def test_check_is_skipped_with_a_line_when_the_val_set_is_away(fake_export, run, tmp_path, capsys):
    moved = Path(shutil.copytree(run, tmp_path / "run"))
    config = yaml.safe_load((moved / "config.yaml").read_text())
    config["data"]["val"]["root"] = str(tmp_path / "elsewhere")
    (moved / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["export", str(moved), "--out", str(tmp_path / "m"), "--onnx"]) == 0
    err = capsys.readouterr().err
    assert "ONNX check skipped: the config's val set (cityscapes val at" in err and "--check-images" in err
    assert "skipped" in json.loads((tmp_path / "m" / "training.json").read_text())["onnx"]["check"]
    # named images instead: checked without labels, so no mIoU
    image = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(image)
    assert main(["export", str(moved), "--out", str(tmp_path / "m"), "--onnx", "--overwrite",
                 "--check-images", str(image)]) == 0
    check = json.loads((tmp_path / "m" / "training.json").read_text())["onnx"]["check"]
    assert check["on"] == "1 images named by --check-images" and check["sizes_hw"][0] == [70, 90]
    assert check["diffusion"]["miou_diff"] is None and check["diffusion"]["argmax_identical_percent"] >= 99.9
    # exported again without --onnx: the earlier ONNX files go, they would no longer be this export's
    assert main(["export", str(moved), "--out", str(tmp_path / "m"), "--overwrite"]) == 0
    assert not (tmp_path / "m" / ONNX_FILE).exists() and not (tmp_path / "m" / DIRECT_ONNX_FILE).exists()
    assert "onnx" not in json.loads((tmp_path / "m" / "training.json").read_text())


def test_onnx_options_need_onnx(run, tmp_path, capsys):
    assert main(["export", str(run), "--out", str(tmp_path / "m"), "--steps", "2"]) == 2
    assert "apply to --onnx only" in capsys.readouterr().err and not (tmp_path / "m").exists()


@pytest.mark.filterwarnings("ignore")  # torch.onnx's own notes (merged axis names, deprecations)
def test_a_multi_level_unet_traced_at_one_latent_size_runs_at_odd_ones(tmp_path):
    """eps_theta with down- and upsampling pads its input to a multiple of 4 and crops the output:
    traced on an 8 x 12 latent (no padding needed), the graph must still pad and crop at 5 x 7."""
    import onnxruntime as ort

    from iccld.diffusion.unet import run_denoiser
    from iccld.models.denoiser import build_denoiser

    torch.manual_seed(0)
    unet = build_denoiser(16, [16, 16, 16], 1, mid_attention=True, mid_block=True).eval()
    for p in unet.parameters():
        torch.nn.init.normal_(p, std=0.1)

    class Denoise(torch.nn.Module):
        def forward(self, z_t, z0):
            return run_denoiser(unet, z_t, z0, torch.full((z_t.shape[0],), 499))

    axes = {0: "batch", 2: "height", 3: "width"}
    example = (torch.randn(2, 16, 8, 12), torch.randn(2, 16, 8, 12))  # two tensors: one would be one input
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(Denoise(), example, tmp_path / "unet.onnx", dynamo=True, input_names=["z_t", "z0"],
                          dynamic_shapes={"z_t": axes, "z0": axes}, verbose=False)
    session = ort.InferenceSession(str(tmp_path / "unet.onnx"), providers=["CPUExecutionProvider"])
    for hw in ((8, 12), (5, 7), (3, 10)):
        z_t, z0 = torch.randn(1, 16, *hw), torch.randn(1, 16, *hw)
        (ours,) = session.run(None, {"z_t": z_t.numpy(), "z0": z0.numpy()})
        with torch.no_grad():
            theirs = Denoise()(z_t, z0)
        assert ours.shape == (1, 16, *hw)
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4, rtol=1e-4)


class _Parity(torch.nn.Module):
    """image -> "logits" through a pad chosen from the height's parity: as TensorFlow-style padding
    (MobileNetV2's), computed from a Python int, which the trace fixes to the example's parity."""

    def __init__(self, from_int: bool) -> None:
        super().__init__()
        self.from_int = from_int

    def forward(self, image):
        if self.from_int:
            pad = 1 if int(image.shape[-2]) % 2 else 0
        else:  # the same pad written on the symbolic size, which the trace keeps
            pad = image.shape[-2] % 2
        pooled = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(image, (0, 0, 0, pad), value=5.0), 2)
        return torch.nn.functional.interpolate(pooled, size=image.shape[-2:], mode="nearest")


@pytest.mark.parametrize("from_int, multiple", [(False, 1), (True, 32)])
def test_a_graph_fixed_to_even_sides_is_marked_and_refuses_other_sizes(from_int, multiple, exported):
    from dataclasses import replace

    from iccld.errors import DataError
    from iccld.io.onnx import EXAMPLE_BATCH, EXAMPLE_HW, OnnxPredictor, _size_multiple, _trace

    info = replace(load_onnx(exported[0] / DIRECT_ONNX_FILE).config, num_classes=3)
    module = _Parity(from_int)
    proto = _trace(module, (torch.randn(EXAMPLE_BATCH, 3, *EXAMPLE_HW),), {"image": {0: "batch", 2: "height", 3: "width"}},
                   info)
    data = proto.SerializeToString()
    assert _size_multiple(module, data, info, "parity.onnx") == multiple
    import onnxruntime as ort

    predictor = OnnxPredictor(Path("parity.onnx"), ort.InferenceSession(data, providers=["CPUExecutionProvider"]),
                              replace(info, size_multiple=multiple))
    x = torch.randn(1, 3, 64, 96)
    torch.testing.assert_close(predictor.predict(x, diffusion=False).logits, module(x))
    if multiple > 1:
        with pytest.raises(DataError, match=r"parity.onnx: takes images whose sides are multiples of 32 .*got 97x63"):
            predictor.predict(torch.randn(1, 3, 63, 97), diffusion=False)


def test_a_graph_right_at_no_size_is_refused(exported):
    from iccld.errors import CheckpointError
    from iccld.io.onnx import EXAMPLE_BATCH, EXAMPLE_HW, _size_multiple, _trace

    info = load_onnx(exported[0] / DIRECT_ONNX_FILE).config
    module = _Parity(False)
    data = _trace(module, (torch.randn(EXAMPLE_BATCH, 3, *EXAMPLE_HW),), {"image": {0: "batch", 2: "height", 3: "width"}},
                  info).SerializeToString()
    with pytest.raises(CheckpointError, match="parity.onnx: the traced direct path gives the network's logits neither"):
        _size_multiple(lambda image: module(image) + 1.0, data, info, "parity.onnx")


def test_an_export_beyond_the_targets_exits_1_with_a_line(fake_export, run, tmp_path, monkeypatch, capsys):
    import iccld.evaluation.onnx_check as onnx_check

    monkeypatch.setattr(onnx_check, "ARGMAX_TARGET", 100.5)  # no predictor can meet it
    assert main(["export", str(run), "--out", str(tmp_path / "m"), "--onnx", "--check-max-images", "2"]) == 1
    err = capsys.readouterr().err
    assert "the ONNX predictors differ from PyTorch beyond the targets" in err and "on 2 images" in err
    check = json.loads((tmp_path / "m" / "training.json").read_text())["onnx"]["check"]
    assert check["met"] is False and check["diffusion"]["images"] == 2 and check["targets"]["argmax_identical_percent"] == ">= 100.5"
