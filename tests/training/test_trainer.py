"""The trainer: every shipped config runs, resume is exact, nothing is overwritten, faults are named."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from iccld.config import load_config
from iccld.errors import ConfigError, TrainingError
from iccld.io.checkpoint import load_checkpoint
from iccld.training.commands import run_training
from iccld.training.trainer import Trainer

from conftest import CONFIGS, tiny_overrides

SYNTHETIC = CONFIGS / "synthetic"


def train(config_path: Path, out: Path, overrides: list[str], **kwargs) -> int:
    return run_training(load_config(config_path, overrides), out, progress=False, **kwargs)


@pytest.fixture(scope="module")
def stage1_runs(tiny_benchmark, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stage1")
    runs = {}
    for name in ("stage1", "stage1_no_intercoder"):
        assert train(SYNTHETIC / f"{name}.yaml", root / name, tiny_overrides(tiny_benchmark)) == 0
        runs[name] = root / name
    return runs


# val mIoU (%) of the EMA model and of the trained model after the 2 seeded iterations of
# tiny_overrides, measured with torch 2.13 (CPU); a tolerance far below the gap between the two models
# or between methods, for float differences between CPUs
PINNED_MIOU = {"source_only": {"ema": 0.2110, "model": 0.2548}, "oracle": {"ema": 0.2671, "model": 0.3873},
               "stage1": {"ema": 0.3242, "model": 0.3790}}
MIOU_TOLERANCE = 0.005  # a few val pixels


@pytest.mark.parametrize("name", ["source_only", "oracle", "stage1"])
def test_synthetic_baselines_run_and_write_a_run_folder(name, tiny_benchmark, tmp_path):
    out = tmp_path / name
    assert train(SYNTHETIC / f"{name}.yaml", out, tiny_overrides(tiny_benchmark)) == 0
    for item in ("config.yaml", "last.ckpt", "results.json", "final/config.json", "final/model.safetensors",
                 "final/training.json"):
        assert (out / item).exists(), item
    assert any((out / "logs").iterdir())
    results = json.loads((out / "results.json").read_text())
    assert results["iteration"] == 2 and results["method"] == name
    got = {k: results["val"][k]["miou"] for k in ("ema", "model")}
    assert got == pytest.approx(PINNED_MIOU[name], abs=MIOU_TOLERANCE)
    assert load_checkpoint(out / "last.ckpt")["iteration"] == 2
    assert load_checkpoint(out / "last.ckpt")["method"] == {"name": name, "inference_path": "direct"}


def test_the_trainer_builds_the_data_streams_the_method_declares(tiny_benchmark, tmp_path):
    seen = {}
    for name in ("source_only", "oracle", "stage1"):
        trainer = Trainer(load_config(SYNTHETIC / f"{name}.yaml", tiny_overrides(tiny_benchmark)), tmp_path / name,
                          progress=False)
        data = trainer.datasets
        labelled = "target" in data and bool((data["target"][(0, 0)]["label"] != 255).any())
        seen[name] = (sorted(data), labelled)
    assert seen == {"source_only": (["source", "val"], False), "oracle": (["target", "val"], True),
                    "stage1": (["source", "target", "val"], False)}


@pytest.mark.parametrize("name,stage1", [("stage2", "stage1"), ("stage2_no_adv", "stage1"),
                                         ("stage2_no_intercoder", "stage1_no_intercoder"),
                                         ("stage2_no_intercoder_no_adv", "stage1_no_intercoder")])
def test_synthetic_stage2_configs_run(name, stage1, stage1_runs, tiny_benchmark, tmp_path):
    out = tmp_path / name
    overrides = tiny_overrides(tiny_benchmark) + [f"method.stage1_checkpoint={stage1_runs[stage1]}"]
    assert train(SYNTHETIC / f"{name}.yaml", out, overrides) == 0
    state = load_checkpoint(out / "last.ckpt")
    start = load_checkpoint(stage1_runs[stage1] / "last.ckpt")["ema_model"]
    # E stays exactly the stage-1 EMA weights; eps_theta moves, and so does D (these configs train it)
    assert not state["config"]["method"]["freeze_decoder"]
    for key, value in state["model"].items():
        if key.startswith(("encoder.", "latent_head.")):
            assert torch.equal(value, start[key]), key
    for part in ("diffusion.denoiser.", "decoder."):
        assert [k for k, v in state["model"].items() if k.startswith(part) and not torch.equal(v, start[k])], part
    assert ("discriminator" in state) == ("no_adv" not in name)  # no critic without the adversarial term


@pytest.mark.parametrize("override", ["model.inter_coder=false", "model.denoiser_residual=false"])
def test_stage2_refuses_a_stage1_run_of_another_architecture(override, stage1_runs, tiny_benchmark):
    overrides = tiny_overrides(tiny_benchmark) + [f"method.stage1_checkpoint={stage1_runs['stage1']}", override]
    field = override.split(".")[1].split("=")[0]
    with pytest.raises(ConfigError, match=f"different architecture.*{field}: True vs False"):
        Trainer(load_config(SYNTHETIC / "stage2.yaml", overrides), Path("unused"), progress=False)


def test_both_stages_train_with_the_daformer_decoder(tiny_benchmark, tmp_path):
    daformer = ["model.decoder=daformer", "model.skip_strides=[4,8,16,32]", "model.decoder_channels=16"]
    assert train(SYNTHETIC / "stage1.yaml", tmp_path / "s1", tiny_overrides(tiny_benchmark) + daformer) == 0
    start = load_checkpoint(tmp_path / "s1" / "last.ckpt")["ema_model"]
    assert start["decoder.fuse.bottleneck.1.num_batches_tracked"] > 0  # BatchNorm in the fusion
    stage2 = tiny_overrides(tiny_benchmark) + daformer + [f"method.stage1_checkpoint={tmp_path / 's1'}"]
    for frozen in (False, True):  # the recipe trains D, and the critic reads D's fused features
        out = tmp_path / f"s2_frozen_{frozen}"
        assert train(SYNTHETIC / "stage2.yaml", out, stage2 + [f"method.freeze_decoder={frozen}"]) == 0
        model = load_checkpoint(out / "last.ckpt")["model"]
        moved = [k for k in start if k.startswith("decoder.") and not torch.equal(model[k], start[k])]
        # frozen, D is held in eval mode: its weights and its BatchNorm statistics stay stage 1's
        assert (moved == []) == frozen and (frozen or "decoder.fuse.bottleneck.1.running_mean" in moved)


def test_stage2_refuses_a_stage1_run_with_another_decoder(stage1_runs, tiny_benchmark):
    overrides = tiny_overrides(tiny_benchmark) + [f"method.stage1_checkpoint={stage1_runs['stage1']}",
                                                  "model.decoder=segformer", "model.skip_strides=[4,8,16]"]
    with pytest.raises(ConfigError, match=r"different architecture \(skip_strides: \[4, 8, 16, 32\] vs \[4, 8, 16\]; "
                                          r"decoder: daformer vs segformer\); use the same model settings as stage 1"):
        Trainer(load_config(SYNTHETIC / "stage2.yaml", overrides), Path("unused"), progress=False)


def test_stage2_refuses_an_unfinished_stage1_run_unless_its_checkpoint_is_named(stage1_runs, tiny_benchmark,
                                                                              tmp_path):
    state = load_checkpoint(stage1_runs["stage1"] / "last.ckpt")
    state["config"]["trainer"]["max_iters"] = 5  # the run stopped at iteration 2 of 5
    (tmp_path / "stage1").mkdir()
    torch.save(state, tmp_path / "stage1" / "last.ckpt")
    base = tiny_overrides(tiny_benchmark)
    with pytest.raises(ConfigError, match="not finished.*iteration 2 of 5"):
        Trainer(load_config(SYNTHETIC / "stage2.yaml", base + [f"method.stage1_checkpoint={tmp_path / 'stage1'}"]),
                tmp_path / "run", progress=False)
    ckpt = tmp_path / "stage1" / "last.ckpt"
    Trainer(load_config(SYNTHETIC / "stage2.yaml", base + [f"method.stage1_checkpoint={ckpt}"]),
            tmp_path / "run", progress=False)  # named explicitly: accepted


def test_stage2_trains_the_decoder_at_its_own_lr_when_unfrozen(stage1_runs, tiny_benchmark, tmp_path):
    overrides = tiny_overrides(tiny_benchmark) + [f"method.stage1_checkpoint={stage1_runs['stage1']}",
                                                  "method.freeze_decoder=false", "method.decoder_lr_mult=0.1"]
    trainer = Trainer(load_config(SYNTHETIC / "stage2.yaml", overrides), tmp_path / "run", progress=False)
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert set(lrs) == {"denoiser", "decoder"}  # E and the latent head stay frozen
    assert lrs["decoder"] == pytest.approx(0.1 * lrs["denoiser"])


def test_stage2_default_trains_only_the_denoiser(stage1_runs, tiny_benchmark, tmp_path):
    overrides = tiny_overrides(tiny_benchmark) + [f"method.stage1_checkpoint={stage1_runs['stage1']}",
                                                  "method.freeze_decoder=true"]
    out = tmp_path / "run"
    assert train(SYNTHETIC / "stage2.yaml", out, overrides) == 0
    state = load_checkpoint(out / "last.ckpt")
    start = load_checkpoint(stage1_runs["stage1"] / "last.ckpt")["ema_model"]
    moved = {k for k, v in state["model"].items() if not torch.equal(v, start[k])}
    assert moved and all(k.startswith("diffusion.denoiser.") for k in moved), sorted(moved)[:5]


def test_stage2_refuses_a_missing_stage1_run(tiny_benchmark, tmp_path):
    overrides = tiny_overrides(tiny_benchmark) + [f"method.stage1_checkpoint={tmp_path / 'nope'}"]
    with pytest.raises(ConfigError, match="stage1_checkpoint.*nope"):
        Trainer(load_config(SYNTHETIC / "stage2.yaml", overrides), tmp_path / "run", progress=False)


def _paper_overrides(bench: Path, source_kind: str, source_root: Path) -> list[str]:
    cpu = ["model.backbone=mit-tiny", "model.pretrained=", "model.latent_channels=16", "model.decoder_channels=64",
           "model.unet_channels=[32,64]", "model.unet_layers_per_block=1", "data.source.resize=null",
           "data.target.resize=null", "data.val.resize=null"]
    return tiny_overrides(bench) + cpu + [f"data.source.root={source_root}", f"data.source.kind={source_kind}"]


# val mIoU (%) of each paper config's EMA model at tiny size, 2 seeded iterations (see PINNED_MIOU)
PINNED_PAPER_MIOU = {"gta5_cityscapes": {"source_only": 0.2128, "stage1": 0.3211, "oracle": 0.2472, "stage2": 0.4058},
                     "synthia_cityscapes": {"source_only": 0.2086, "stage1": 0.3030, "oracle": 0.2472,
                                            "stage2": 0.3381}}


@pytest.mark.parametrize("family", ["gta5_cityscapes", "synthia_cityscapes"])
def test_paper_configs_run_with_a_tiny_model(family, tiny_benchmark, tmp_path):
    if family == "synthia_cityscapes":
        from iccld.data.prepare import prepare_dataset

        from data.fixtures import make_synthia

        source_kind, source_root = "synthia", tmp_path / "synthia"
        make_synthia(source_root, 6, (96, 80))
        prepare_dataset("synthia", source_root, workers=1)
    else:
        source_kind, source_root = "gta5", tiny_benchmark / "source"
    overrides = _paper_overrides(tiny_benchmark, source_kind, source_root)
    for name in ("source_only", "stage1", "oracle"):
        assert train(CONFIGS / family / f"{name}.yaml", tmp_path / name, overrides) == 0
    stage2 = overrides + [f"method.stage1_checkpoint={tmp_path / 'stage1'}"]
    assert train(CONFIGS / family / "stage2.yaml", tmp_path / "stage2", stage2) == 0
    got = {name: json.loads((tmp_path / name / "results.json").read_text())["val"]["ema"]["miou"]
           for name in ("source_only", "stage1", "oracle", "stage2")}
    assert got == pytest.approx(PINNED_PAPER_MIOU[family], abs=MIOU_TOLERANCE)
    # stage 2 started from stage 1's EMA weights and kept E (and the latent head) frozen at them
    start = load_checkpoint(tmp_path / "stage1" / "last.ckpt")["ema_model"]
    end = load_checkpoint(tmp_path / "stage2" / "last.ckpt")["ema_model"]
    frozen = [k for k in start if k.startswith(("encoder.", "latent_head."))]
    assert frozen and all(torch.equal(start[k], end[k]) for k in frozen)
    assert not all(torch.equal(start[k], end[k]) for k in start if k.startswith("diffusion.denoiser."))
    if family == "synthia_cityscapes":  # SYNTHIA runs report the 16- and 13-class means too
        from iccld.cli import main

        report = tmp_path / "eval.json"
        assert main(["evaluate", "--checkpoint", str(tmp_path / "stage1"), "--json", str(report)]) == 0
        assert {"miou16", "miou13"} <= set(json.loads(report.read_text()))


# resume and run-folder safety ----------------------------------------------------------------

def _interrupt_at(monkeypatch, iteration: int) -> None:
    original = Trainer.train_step

    def step(self, batch):
        out = original(self, batch)
        if self.iteration + 1 == iteration:  # the loop increments after train_step returns
            self.signals.received = signal.SIGTERM
        return out

    monkeypatch.setattr(Trainer, "train_step", step)


def test_resume_after_3_of_6_iterations_is_bitwise_identical(tiny_benchmark, tmp_path, monkeypatch):
    overrides = tiny_overrides(tiny_benchmark, iters=6) + ["data.num_workers=1"]
    assert train(SYNTHETIC / "stage1.yaml", tmp_path / "straight", overrides) == 0
    with monkeypatch.context() as m:
        _interrupt_at(m, 3)
        code = train(SYNTHETIC / "stage1.yaml", tmp_path / "resumed", overrides)
    assert code == 128 + signal.SIGTERM
    assert load_checkpoint(tmp_path / "resumed" / "last.ckpt")["iteration"] == 3
    assert train(SYNTHETIC / "stage1.yaml", tmp_path / "resumed", overrides, resume=True) == 0
    a = load_checkpoint(tmp_path / "straight" / "last.ckpt")
    b = load_checkpoint(tmp_path / "resumed" / "last.ckpt")
    assert a["iteration"] == b["iteration"] == 6
    for part in ("model", "ema_model"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"


def test_run_folder_is_never_overwritten_silently(tiny_benchmark, tmp_path):
    out = tmp_path / "run"
    overrides = tiny_overrides(tiny_benchmark)
    assert train(SYNTHETIC / "source_only.yaml", out, overrides) == 0
    with pytest.raises(TrainingError, match="already holds this run.*--resume.*--overwrite"):
        train(SYNTHETIC / "source_only.yaml", out, overrides)
    with pytest.raises(TrainingError, match="different config.*method.name"):
        train(SYNTHETIC / "stage1.yaml", out, overrides, resume=True)
    assert train(SYNTHETIC / "source_only.yaml", out, overrides, resume=True) == 0  # finished: no-op
    (out / "notes.txt").write_text("mine")
    assert train(SYNTHETIC / "stage1.yaml", out, overrides, overwrite=True) == 0
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite removes only what a run writes
    assert json.loads((out / "results.json").read_text())["method"] == "stage1"


def test_non_finite_loss_stops_with_the_iteration_and_term(tiny_benchmark, tmp_path, monkeypatch):
    from iccld.methods.supervised import SourceOnly

    original = SourceOnly.training_losses

    def losses(self, batch, step, generator):
        out = original(self, batch, step, generator)
        if step == 1:
            out["seg"] = out["seg"] * float("nan")
        return out

    monkeypatch.setattr(SourceOnly, "training_losses", losses)
    overrides = tiny_overrides(tiny_benchmark, iters=3)
    with pytest.raises(TrainingError, match="iteration 1: non-finite loss in seg"):
        train(SYNTHETIC / "source_only.yaml", tmp_path / "nan", overrides)
    assert load_checkpoint(tmp_path / "nan" / "last.ckpt")["iteration"] == 1  # last good one kept
    assert train(SYNTHETIC / "source_only.yaml", tmp_path / "skip",
                 overrides + ["trainer.skip_nonfinite=1"]) == 0
    assert load_checkpoint(tmp_path / "skip" / "last.ckpt")["skipped_nonfinite"] == 1


def test_config_comparison_resolves_folders(tmp_path):
    from iccld.training.commands import config_differences

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    a = load_config(None, [f"data.source.root={tmp_path / 'real'}"])
    b = load_config(None, [f"data.source.root={tmp_path / 'link'}"])
    c = load_config(None, [f"data.source.root={tmp_path}"])
    assert config_differences(a, b) == []
    assert config_differences(a, c) == ["data.source.root"]


# stage 2: the adaptive adversarial weight, the critic's schedule, the diagnostics -----------------

def test_stage2_resume_with_the_critics_poly_schedule_is_bitwise_identical(stage1_runs, tiny_benchmark, tmp_path,
                                                                          monkeypatch):
    overrides = tiny_overrides(tiny_benchmark, iters=6) + [
        f"method.stage1_checkpoint={stage1_runs['stage1']}", "method.disc_lr_schedule=poly",
        "method.adversarial_weighting=adaptive", "method.adversarial_weight=0.5"]
    assert train(SYNTHETIC / "stage2.yaml", tmp_path / "straight", overrides) == 0
    with monkeypatch.context() as m:
        _interrupt_at(m, 3)
        assert train(SYNTHETIC / "stage2.yaml", tmp_path / "resumed", overrides) == 128 + signal.SIGTERM
    assert train(SYNTHETIC / "stage2.yaml", tmp_path / "resumed", overrides, resume=True) == 0
    a = load_checkpoint(tmp_path / "straight" / "last.ckpt")
    b = load_checkpoint(tmp_path / "resumed" / "last.ckpt")
    for part in ("model", "ema_model", "discriminator"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"
    # AdvSeg's poly decay: lr_D = 1e-4 (1 - 6/6)^0.9 = 0 after the last step, and the state is saved
    assert b["disc_scheduler"]["last_epoch"] == 6
    assert b["disc_optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0)
    last = json.loads((tmp_path / "straight" / "results.json").read_text())["diagnostics"]["last_step"]
    assert last["grad_adv"] == pytest.approx(0.5 * last["grad_seg"], rel=1e-3)  # the adaptive weight's promise
    assert last["adv_weight"] > 0 and 0 <= last["critic_acc"] <= 1


def test_a_stage2_run_that_cannot_move_says_so_at_its_end(stage1_runs, tiny_benchmark, tmp_path, capsys):
    # no adversarial term, D frozen and no segmentation loss: eps_theta's zero-initialised output layer
    # gets no gradient from the diffusion loss, so the latents stay where stage 1 put them
    overrides = tiny_overrides(tiny_benchmark) + [f"method.stage1_checkpoint={stage1_runs['stage1']}",
                                                  "method.adversarial_weight=0", "method.freeze_decoder=true",
                                                  "method.seg_weight=0"]
    assert train(SYNTHETIC / "stage2.yaml", tmp_path / "still", overrides) == 0
    end = json.loads((tmp_path / "still" / "results.json").read_text())["diagnostics"]["end_of_run"]
    assert end["latent_change"] == 0.0 and end["path_agreement"] == 1.0 and not end["changed_latents"]
    assert "stage 2 changed nothing" in capsys.readouterr().err
    # the recipe's run moves them, and the same line says by how much
    moving = tiny_overrides(tiny_benchmark) + [f"method.stage1_checkpoint={stage1_runs['stage1']}"]
    assert train(SYNTHETIC / "stage2.yaml", tmp_path / "moving", moving) == 0
    end = json.loads((tmp_path / "moving" / "results.json").read_text())["diagnostics"]["end_of_run"]
    assert end["latent_change"] > 1e-3 and end["changed_latents"]
    assert "stage 2 moved the latents" in capsys.readouterr().err


def test_the_configs_batch_is_the_global_batch_split_over_the_processes(capsys):
    from types import SimpleNamespace

    from iccld.training.distributed import Processes

    split = Processes.split_batch
    assert split(SimpleNamespace(world_size=1, is_main=True), 2) == 2
    assert split(SimpleNamespace(world_size=4, is_main=True), 8) == 2  # 4 processes x 2 = the config's 8
    assert capsys.readouterr().err == ""
    assert split(SimpleNamespace(world_size=4, is_main=True), 2) == 2  # cannot split: each takes 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "trainer.batch_size=2 does not split over 4 processes" in err
    assert "global batch is 8" in err and "trainer.max_iters" in err
