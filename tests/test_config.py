"""Config: YAML + base chains + dotted overrides, with errors that name the key; each method's section."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from iccld.config import Config, from_dict, load_config, to_dict, to_yaml
from iccld.errors import ConfigError
from iccld.sections import MultiResConfig

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_follow_method_doc():
    c = load_config()
    assert c.model.latent_channels == 32 and c.model.latent_stride == 16
    assert c.model.beta_schedule == "squaredcos_cap_v2" and c.model.prediction_type == "sample"
    assert c.model.num_train_timesteps == 1000 and c.model.sampling_steps == 4
    assert c.method.name == "stage1" and c.method.ema_alpha == 0.999 and c.method.pseudo_threshold == 0.968
    s2 = load_config(None, ["method.name=stage2", "method.stage1_checkpoint=runs/x"]).method
    assert s2.adversarial_weight == 1e-3 and s2.disc_lr == 1e-4 and s2.pseudo_threshold == 0.968
    assert c.optim.lr == 6e-5 and c.optim.head_lr_mult == 10 and c.optim.warmup_iters == 1500
    assert c.trainer.max_iters == 40000 and c.data.crop_size == [512, 512]
    assert c.data.rcs_temperature == 0.01


def test_base_inheritance_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", {"trainer": {"max_iters": 10, "seed": 3}, "optim": {"lr": 1e-3}})
    child = write(tmp_path / "child.yaml", {"base": "base.yaml", "trainer": {"max_iters": 20}})
    c = load_config(child, ["optim.lr=0.5", "data.crop_size=[64,32]"])
    assert c.trainer.max_iters == 20  # child wins over base
    assert c.trainer.seed == 3  # inherited
    assert c.optim.lr == 0.5  # override wins over both
    assert c.data.crop_size == [64, 32]


def test_base_chains_of_any_depth_nearest_file_wins(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "a.yaml", {"trainer": {"seed": 1, "max_iters": 5, "log_interval": 7}})
    write(tmp_path / "sub" / "b.yaml", {"base": "../a.yaml", "trainer": {"seed": 2, "max_iters": 6}})
    c = write(tmp_path / "c.yaml", {"base": "sub/b.yaml", "trainer": {"seed": 3}})  # base: relative to the file
    cfg = load_config(c)
    assert (cfg.trainer.seed, cfg.trainer.max_iters, cfg.trainer.log_interval) == (3, 6, 7)


def test_a_cycle_of_bases_is_refused_naming_the_files(tmp_path):
    write(tmp_path / "a.yaml", {"base": "c.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    c = write(tmp_path / "c.yaml", {"base": "b.yaml"})
    with pytest.raises(ConfigError, match=r"cycle \(.*c\.yaml -> .*b\.yaml -> .*a\.yaml -> .*c\.yaml\)") as err:
        load_config(c)
    assert "\n" not in str(err.value)


def test_relative_paths_in_a_yaml_are_kept_for_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    cfg = write(tmp_path / "configs" / "x.yaml", {"data": {"source": {"root": "data/src"}},
                                                  "model": {"pretrained": "./weights"}})
    monkeypatch.chdir(tmp_path)
    c = load_config(cfg)
    # as written, not rewritten against configs/: they resolve where the command runs, as overrides do
    assert c.data.source.root == "data/src" and c.model.pretrained == "./weights"
    assert load_config(cfg, ["data.source.root=data/src"]) == c


def test_each_method_reads_only_its_own_settings(tmp_path):
    s2 = write(tmp_path / "s2.yaml", {"method": {"name": "stage2", "stage1_checkpoint": "r", "disc_lr": 0.5}})
    assert load_config(s2).method.disc_lr == 0.5
    # the override that changes the method decides which keys the file may hold
    with pytest.raises(ConfigError, match="unknown key 'method.disc_lr' \\(method stage1 has no such "
                                          "setting; stage2 has\\)"):
        load_config(s2, ["method.name=stage1"])
    with pytest.raises(ConfigError, match="override 'method.pl_crop_top=3'.*source_only has no such setting"):
        load_config(None, ["method.name=source_only", "method.pl_crop_top=3"])
    with pytest.raises(ConfigError, match="did you mean 'method.disc_lr'"):
        load_config(s2, ["method.disc_lrr=1"])


def test_runs_saved_with_the_flat_method_section_still_load():
    """Before each method had its own section, every run saved every method's settings."""
    legacy = REPO / "tests" / "fixtures" / "legacy_v0"
    s1 = from_dict(yaml.safe_load((legacy / "stage1" / "config.yaml").read_text()))
    assert s1.method.name == "stage1" and not hasattr(s1.method, "adversarial_weight")
    assert s1.method.pl_crop_top == yaml.safe_load((legacy / "stage1" / "config.yaml").read_text())["method"]["pl_crop_top"]
    s2 = from_dict(yaml.safe_load((legacy / "stage2" / "config.yaml").read_text()))
    assert s2.method.name == "stage2" and s2.method.stage1_checkpoint
    with pytest.raises(ConfigError, match="unknown key 'method.bogus'"):  # only the old keys are dropped
        from_dict({"method": {"name": "stage1", "bogus": 1}})


@pytest.mark.parametrize("data,match", [
    ({"trainer": {"max_iter": 5}}, "did you mean 'trainer.max_iters'"),
    ({"optim": {"lrr": 5}}, "did you mean 'optim.lr'"),
    ({"trainer": {"max_iters": "many"}}, "trainer.max_iters"),
])
def test_yaml_errors_name_the_key(tmp_path, data, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path / "x.yaml", data))


@pytest.mark.parametrize("override,match", [
    ("trainer.max_iters=-5", "trainer.max_iters: must be > 0"),
    ("model.backbone=mit-b9", "model.backbone"),
    ("method.name=stage_1", "did you mean 'stage1'"),
    ("data.crop_size=[2048,2048]", "larger than"),
    ("model.sampling_steps=0", "model.sampling_steps"),
    ("method.name=stage2", "stage1_checkpoint"),
    ("nonsense", "expected key=value"),
    ("trainer.seeed=1", "did you mean 'trainer.seed'"),
    ("method.name=stage2 method.stage1_checkpoint=r method.adversarial_input=fuse", "did you mean 'fused'"),
    ("method.ema_alpha=1", "method.ema_alpha: must be in"),
    # the model section's one check (iccld.io.check_model_config) runs at load time, before any network
    ("model.beta_schedule=linaer", r"model.beta_schedule: 'linaer' is not one of .* \(did you mean 'linear'\?\)"),
    ("model.dropout=1.5", r"model.dropout: must be in \[0, 1\), got 1.5"),
    ("model.decoder_channels=0", "model.decoder_channels: must be >= 1"),
    ("model.skip_strides=[4,4]", "model.skip_strides: repeated strides"),
])
def test_impossible_values_are_refused(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, override.split(" "))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_roundtrip_through_dict_and_yaml():
    c = load_config(None, ["trainer.seed=7", "model.inter_coder=false"])
    again = from_dict(yaml.safe_load(to_yaml(c)))
    assert again == c and isinstance(again, Config)
    assert to_dict(again)["model"]["inter_coder"] is False
    assert dataclasses.asdict(again) == dataclasses.asdict(c) and to_dict(again) == to_dict(c)
    # switches at their off default are left out of the saved form, and come back on loading
    assert "mic_weight" not in to_dict(c)["method"] and again.method.mic_weight == 0.0
    on = load_config(None, ["method.mic_weight=1.0"])
    assert to_dict(on)["method"]["mic_weight"] == 1.0 and from_dict(to_dict(on)) == on


def test_every_shipped_config_loads():
    configs = sorted((REPO / "configs").rglob("*.yaml"))
    configs = [p for p in configs if "datasets" not in p.parts and p.name != "base.yaml"]
    assert len(configs) >= 6
    for path in configs:
        raw = yaml.safe_load(path.read_text())
        overrides = []
        if raw.get("method", {}).get("name") == "stage2" or "stage2" in path.stem:
            overrides = ["method.stage1_checkpoint=runs/stage1"]
        load_config(path, overrides)


def test_synthetic_configs_use_the_cpu_preset_model():
    from iccld.presets import preset

    assert load_config(REPO / "configs/synthetic/stage1.yaml").model == preset("cpu")


def test_a_base_cycle_is_one_line_and_exit_status_2_on_the_command_line(tmp_path, capsys):
    from iccld.cli import main

    write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    assert main(["train", "--config", str(tmp_path / "a.yaml"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cycle" in err and "a.yaml" in err and "b.yaml" in err
    assert not (tmp_path / "run").exists()


# what an ablation file may change, besides what the recipe leaves to each config (stage1_checkpoint)
ABLATED_FIELDS = {"no_adv": {"adversarial_weight", "adversarial_input"},
                  "mixed": {"adversarial_mixed"}, "mic": {"mic_weight", "mic_block_size", "mic_ratio"}}
SCALE_FIELDS = {"stage1_checkpoint"}  # the method section's only per-config field; the rest of scale
#                                       lives in the trainer, data and optim sections


def test_every_stage2_config_carries_the_one_recipe():
    recipe = yaml.safe_load((REPO / "configs" / "stage2_recipe.yaml").read_text())["method"]
    configs = sorted(p for p in (REPO / "configs").rglob("stage2*.yaml") if p.name != "stage2_recipe.yaml")
    assert len(configs) >= 20
    for path in configs:
        method = to_dict(load_config(path, ["method.stage1_checkpoint=runs/stage1"]))["method"]
        allowed = set(SCALE_FIELDS)
        for ablation, fields in ABLATED_FIELDS.items():
            if ablation in path.stem:
                allowed |= fields
        drift = {k: (method.get(k), v) for k, v in recipe.items() if method.get(k) != v and k not in allowed}
        assert not drift, f"{path.relative_to(REPO)} drifts from configs/stage2_recipe.yaml: {drift}"


# a value of every ModelConfig field other than the cpu preset's, and the settings it needs besides
MODEL_CHANGES = {
    "backbone": ("resnet-tiny", {}), "pretrained": ("some/weights", {}), "norm_eval": (True, {}),
    "num_classes": (7, {}), "latent_channels": (8, {}), "latent_stride": (32, {}), "inter_coder": (False, {}),
    "skip_strides": ([4, 8], {"decoder": "segformer"}), "decoder": ("segformer", {}),
    "decoder_channels": (32, {}), "decoder_norm": ("group", {}), "dropout": (0.3, {}), "unet_channels": ([32], {}),
    "unet_layers_per_block": (1, {}), "unet_attention": (True, {"unet_mid_block": True}),
    "unet_mid_block": (True, {}), "unet_norm_groups": (2, {}), "latent_norm": (False, {}),
    "denoiser_residual": (False, {}), "num_train_timesteps": (500, {}), "beta_schedule": ("linear", {}),
    "prediction_type": ("epsilon", {"denoiser_residual": False}), "sampling_steps": (2, {}),
    "multires": (MultiResConfig(enabled=True), {}),  # adds the scale-attention head's weights
}


def test_architecture_fields_name_every_field_that_changes_a_weights_shape():
    """Build the network with each ModelConfig field changed in turn: a field that changes the shape
    (or the names) of a weight must be in ARCHITECTURE_FIELDS, or stage 2 would accept a stage-1 run
    whose weights do not fit."""
    import torch

    from iccld.io import build_model_from_config
    from iccld.presets import preset
    from iccld.sections import ARCHITECTURE_FIELDS, ModelConfig

    def shapes(cfg: ModelConfig) -> dict:
        torch.manual_seed(0)
        return {k: tuple(v.shape) for k, v in build_model_from_config(cfg, load_weights=False).state_dict().items()}

    fields = [f.name for f in dataclasses.fields(ModelConfig)]
    assert set(MODEL_CHANGES) == set(fields), "a new ModelConfig field: give it a changed value in MODEL_CHANGES"
    assert set(ARCHITECTURE_FIELDS) <= set(fields)
    changing = set()
    for name in fields:
        value, needs = MODEL_CHANGES[name]
        base = dataclasses.replace(preset("cpu"), **needs)
        changed = dataclasses.replace(base, **{name: value})
        assert getattr(changed, name) != getattr(base, name), name
        if shapes(changed) != shapes(base):
            changing.add(name)
    assert changing - set(ARCHITECTURE_FIELDS) == set()
    # what the fields that keep every shape do is said in sections.py; the list is not just "all"
    assert changing >= {"backbone", "num_classes", "latent_channels", "decoder", "unet_channels", "inter_coder"}
    assert {"pretrained", "dropout", "sampling_steps"} & set(ARCHITECTURE_FIELDS) == set()
