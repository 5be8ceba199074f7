"""Config: YAML + one level of base + dotted overrides, with errors that name the key."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from iccld.config import Config, from_dict, load_config, to_dict, to_yaml
from iccld.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_follow_method_doc():
    c = load_config()
    assert c.model.latent_channels == 32 and c.model.latent_stride == 16
    assert c.model.beta_schedule == "squaredcos_cap_v2" and c.model.prediction_type == "sample"
    assert c.model.num_train_timesteps == 1000 and c.model.sampling_steps == 4
    assert c.method.ema_alpha == 0.999 and c.method.pseudo_threshold == 0.968
    assert c.method.adversarial_weight == 1e-3 and c.method.disc_lr == 1e-4
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


def test_two_levels_of_base_are_refused(tmp_path):
    write(tmp_path / "a.yaml", {"trainer": {"seed": 1}})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    c = write(tmp_path / "c.yaml", {"base": "b.yaml"})
    with pytest.raises(ConfigError, match="one level"):
        load_config(c)


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
    ("method.adversarial_input=fuse", "did you mean 'fused'"),
])
def test_impossible_values_are_refused(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


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
    assert dataclasses.asdict(again) == to_dict(c)


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
