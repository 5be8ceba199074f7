"""The method registry: a method defined here alone, registered at run time, trains through the normal
``iccld train`` path; the trainer builds only the data it declares and its checkpoints record it."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from iccld.cli import main
from iccld.config import load_config
from iccld.errors import ConfigError
from iccld.evaluation.loading import load_models
from iccld.methods import METHODS, SOURCE, Method, MethodConfig, cross_entropy, method_class, register
from iccld.io.checkpoint import load_checkpoint, save_checkpoint

from conftest import CONFIGS, tiny_overrides


@dataclass
class ToyConfig(MethodConfig):
    scale: float = 1.0  # multiplies the source cross-entropy


class Toy(Method):
    """Source cross-entropy times ``scale``; counts its calls and the batches it saw."""

    name = "toy"
    Config = ToyConfig
    streams = (SOURCE,)
    calls: list[tuple[int, tuple[str, ...]]] = []

    def __init__(self, model, cfg: ToyConfig):
        super().__init__(model, cfg)
        self.scale = cfg.scale

    def training_losses(self, batch, step, generator):
        Toy.calls.append((step, tuple(sorted(batch)), self.scale))
        logits = self.segment(self.model, batch["source"]["image"])
        return {"toy": self.scale * cross_entropy(logits, batch["source"]["label"])}


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(Toy, "calls", [])
    monkeypatch.delitem(METHODS, Toy.name, raising=False)
    register(Toy)
    yield Toy
    METHODS.pop(Toy.name, None)


def test_a_method_registered_at_run_time_trains_through_iccld_train(toy, tiny_benchmark, tmp_path, monkeypatch):
    config = tmp_path / "toy.yaml"
    config.write_text(f"base: {CONFIGS / 'synthetic' / 'base.yaml'}\nmethod:\n  name: toy\n  scale: 0.5\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), *tiny_overrides(tiny_benchmark, 3)]) == 0
    # three steps, each with the one stream the method declared (no target data was built)
    assert Toy.calls == [(0, ("source",), 0.5), (1, ("source",), 0.5), (2, ("source",), 0.5)]
    state = load_checkpoint(out / "last.ckpt")
    assert state["method"] == {"name": "toy", "inference_path": "direct"}
    assert state["config"]["method"] == {"name": "toy", "ema_alpha": 0.99, "scale": 0.5}
    assert json.loads((out / "final" / "training.json").read_text())["method"] == "toy"
    loaded = load_models(str(out / "last.ckpt"), which="both")
    assert (loaded.method, loaded.inference_path) == ("toy", "direct")
    # a checkpoint saved before checkpoints recorded the method: the registry answers for its name
    del state["method"]
    monkeypatch.setattr(Toy, "inference_path", "diffusion")  # to see where the answer came from
    save_checkpoint(tmp_path / "old.ckpt", {k: v for k, v in state.items() if k != "format"})
    assert load_models(str(tmp_path / "old.ckpt")).inference_path == "diffusion"


def test_a_registered_method_gets_its_own_config_section(toy):
    assert load_config(None, ["method.name=toy", "method.scale=2"]).method == ToyConfig(name="toy", scale=2.0)
    with pytest.raises(ConfigError, match="did you mean 'method.scale'"):
        load_config(None, ["method.name=toy", "method.scal=2"])
    with pytest.raises(ConfigError, match="method toy has no such setting; stage1, stage2 have"):
        load_config(None, ["method.name=toy", "method.pseudo_threshold=0.5"])


def test_unknown_method_lists_the_registered_ones_and_names_are_unique(toy):
    with pytest.raises(ConfigError, match="method.name: 'toi' is not one of .*toy.* \\(did you mean 'toy'\\?\\)"):
        method_class("toi")

    class Other(Toy):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register(Other)
