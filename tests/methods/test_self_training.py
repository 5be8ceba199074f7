"""The self-training component both stages hold, the named parts of a stacked batch, and the
method sections' key order (the order of saved config.yaml files)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from iccld.config import load_config, to_dict
from iccld.methods import Stage1, Stage2
from iccld.methods.base import Parts
from iccld.methods.self_training import PseudoLabels, SelfTraining
from iccld.methods.stage1 import Stage1Config
from iccld.methods.stage2 import Stage2Config
from iccld.uda.augment import strong_augment
from iccld.uda.classmix import classmix_masks

from conftest import CONFIGS

SELF_TRAINING_KEYS = ["pseudo_threshold", "pl_crop_top", "pl_crop_bottom", "teacher_norm", "mix",
                      "color_jitter_strength", "color_jitter_p", "blur"]
MIC_KEYS = ["mic_weight", "mic_block_size", "mic_ratio"]


def test_stages_share_the_self_training_component_not_a_base_class():
    assert not issubclass(Stage2, Stage1) and not issubclass(Stage2Config, Stage1Config)
    keys = [f.name for f in dataclasses.fields(Stage2Config)]
    assert "fd_weight" not in keys
    # the shared fields first, in the order saved configs have them, then stage 2's own
    assert keys[4:4 + len(SELF_TRAINING_KEYS) + len(MIC_KEYS)] == SELF_TRAINING_KEYS + MIC_KEYS
    assert keys[15:17] == ["stage1_checkpoint", "stage1_weights"]
    assert [f.name for f in dataclasses.fields(Stage1Config)][4:] == SELF_TRAINING_KEYS + ["fd_weight"] + MIC_KEYS


def test_saved_key_order_keeps_fd_between_the_augmentation_and_mic():
    saved = to_dict(load_config(CONFIGS / "gta5_cityscapes" / "stage1_mic.yaml"))["method"]
    keys = list(saved)
    assert keys[keys.index("blur"):] == ["blur", "fd_weight", "mic_weight"]  # block size and ratio at default
    saved2 = list(to_dict(load_config(CONFIGS / "synthetic" / "stage2_mic.yaml"))["method"])
    assert saved2[saved2.index("blur"):saved2.index("blur") + 4] == ["blur", "mic_weight", "mic_block_size",
                                                                     "stage1_checkpoint"]  # ratio at default


def test_validation_reaches_every_group_of_fields():
    from iccld.errors import ConfigError

    for cls in (Stage1Config, Stage2Config):
        for field, bad in (("mic_ratio", 1.5), ("pseudo_threshold", -0.1), ("ema_alpha", 1.0)):
            cfg = cls(stage1_checkpoint="x") if cls is Stage2Config else cls()
            setattr(cfg, field, bad)
            with pytest.raises(ConfigError, match=f"method.{field}"):
                cfg.validate()
    with pytest.raises(ConfigError, match="method.fd_weight"):
        Stage1Config(fd_weight=-1.0).validate()


def test_mixed_batch_is_classmix_then_strong_augmentation_on_the_same_draws():
    st = SelfTraining(pseudo_threshold=0.5, pl_crop=(0, 0), mix="class", augment=dict(blur=False))
    g = torch.Generator().manual_seed(0)
    x_s, x_t = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    y_s = torch.randint(0, 4, (2, 8, 8), generator=g)
    target = PseudoLabels(torch.full((2, 8, 8), 7), torch.full((2, 8, 8), 0.25))
    mixed = st.mixed(x_s, y_s, x_t, target, torch.Generator().manual_seed(1))
    ref = torch.Generator().manual_seed(1)
    mask = classmix_masks(y_s, ref)
    assert 0 < mask.float().mean() < 1
    assert torch.equal(mixed.label, torch.where(mask, y_s, 7))
    assert torch.equal(mixed.weight, torch.where(mask, 1.0, 0.25))
    assert torch.equal(mixed.image, strong_augment(torch.where(mask[:, None], x_s, x_t), ref, blur=False))
    # pseudo-labels: argmax, and the share of confident pixels as the weight
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 2, 0, 0] = 5.0
    pl = st.pseudo_labels(logits)
    assert pl.label.tolist() == [[[2, 0], [0, 0]]] and pl.weight.tolist() == [[[0.25, 0.25], [0.25, 0.25]]]
    assert pl.confidence() == 0.25


def test_parts_name_the_rows_of_a_stacked_batch():
    images = {k: torch.full((2, 1), float(i)) for i, k in enumerate(("source", "mixed", "target", "masked"))}
    parts, stacked = Parts.stack(images)
    assert parts.names == ("source", "mixed", "target", "masked") and stacked.shape == (8, 1)
    assert parts.rows("source", "mixed") == slice(0, 4) and parts.rows("masked") == slice(6, 8)
    assert parts.take(stacked, "target").flatten().tolist() == [2.0, 2.0]
    labelled = parts.only("source", "mixed")
    assert {k: v.flatten().tolist() for k, v in labelled.split(stacked[:4]).items()} == \
        {"source": [0.0, 0.0], "mixed": [1.0, 1.0]}
    with pytest.raises(ValueError, match="not consecutive"):
        parts.rows("source", "target")
    with pytest.raises(ValueError, match="different sizes"):
        Parts.stack({"source": torch.zeros(2, 1), "target": torch.zeros(3, 1)})
