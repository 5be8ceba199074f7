"""Loading MiT weights into E: local folders, state-dict files of three key layouts, loud failures."""

import dataclasses
import logging
import re

import pytest
import torch
from safetensors.torch import save_file
from transformers import SegformerModel

from iccld.errors import CheckpointError
from iccld.io import build_model_from_config, save_pretrained
from iccld.io.backbone_weights import load_backbone_weights, normalize_mit_keys
from iccld.models.backbones import build_backbone
from iccld.models.backbones.mit import mit_config
from iccld.presets import preset


def donor() -> SegformerModel:
    torch.manual_seed(123)
    return SegformerModel(mit_config("mit-tiny"))


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def to_original_mit_layout(state: dict) -> dict:
    """transformers-5 keys -> the NVIDIA/mmseg layout (block1.0.attn.kv, ...), the inverse of the loader."""
    out = {}
    for k, v in state.items():
        m = re.match(r"stages\.(\d)\.(.*)", k)
        i, rest = int(m.group(1)) + 1, m.group(2)
        if rest.startswith("patch_embeddings.proj."):
            out[f"patch_embed{i}.proj." + rest.split(".")[-1]] = v
        elif rest.startswith("patch_embeddings.layer_norm."):
            out[f"patch_embed{i}.norm." + rest.split(".")[-1]] = v
        elif rest.startswith("layer_norm."):
            out[f"norm{i}." + rest.split(".")[-1]] = v
        else:
            b = re.match(r"blocks\.(\d+)\.(.*)", rest)
            j, part = b.group(1), b.group(2)
            if ".k_proj." in part or ".v_proj." in part:
                continue
            for new, old in [("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."),
                             ("attention.q_proj.", "attn.q."), ("attention.o_proj.", "attn.proj."),
                             ("attention.sequence_reduction.sequence_reduction.", "attn.sr."),
                             ("attention.sequence_reduction.layer_norm.", "attn.norm."), ("mlp.", "mlp.")]:
                if part.startswith(new):
                    out[f"block{i}.{j}.{old}{part[len(new):]}"] = v
            for suffix in ("weight", "bias"):
                k_ = state[f"stages.{i - 1}.blocks.{j}.attention.k_proj.{suffix}"]
                v_ = state[f"stages.{i - 1}.blocks.{j}.attention.v_proj.{suffix}"]
                out[f"block{i}.{j}.attn.kv.{suffix}"] = torch.cat([k_, v_], 0)
    out["head.weight"] = torch.zeros(10, 128)  # an ImageNet classifier, not part of the encoder
    return out


def test_save_pretrained_folder_loads_with_no_missing_keys(tmp_path):
    src = donor()
    src.save_pretrained(tmp_path / "mit")
    enc = build_backbone("mit-tiny")
    assert not torch.equal(enc.state_dict()["stages.0.patch_embeddings.proj.weight"],
                           src.state_dict()["stages.0.patch_embeddings.proj.weight"])
    report = load_backbone_weights(enc, tmp_path / "mit")
    assert report.missing == [] and report.unexpected == [] and report.loaded == report.total
    assert_same_weights(enc, src)


def test_build_model_loads_cfg_pretrained(tmp_path):
    src = donor()
    src.save_pretrained(tmp_path / "mit")
    model = build_model_from_config(dataclasses.replace(preset("cpu"), pretrained=str(tmp_path / "mit")))
    assert_same_weights(model.encoder, src)


@pytest.mark.parametrize("prefix", ["", "segformer."])
def test_hub_layout_state_dict_file(tmp_path, prefix):
    """A .safetensors file in the transformers-4 / hub layout (encoder.block.0.0.attention.self.query)."""
    src = donor()
    src.save_pretrained(tmp_path / "mit")  # transformers writes the hub layout
    from safetensors.torch import load_file

    hub = load_file(str(tmp_path / "mit" / "model.safetensors"))
    assert any(k.startswith("encoder.block.") for k in hub)
    save_file({prefix + k: v for k, v in hub.items()}, str(tmp_path / "w.safetensors"))
    enc = build_backbone("mit-tiny")
    report = load_backbone_weights(enc, tmp_path / "w.safetensors")
    assert report.missing == []
    assert_same_weights(enc, src)


def test_original_mit_layout_with_fused_kv(tmp_path, caplog):
    """DAFormer's pretrained/mit_b*.pth layout: block1.0.attn.kv holds k and v stacked."""
    src = donor()
    torch.save({"state_dict": to_original_mit_layout(src.state_dict())}, tmp_path / "mit_tiny.pth")
    enc = build_backbone("mit-tiny")
    with caplog.at_level(logging.INFO, logger="iccld.io.backbone_weights"):
        report = load_backbone_weights(enc, tmp_path / "mit_tiny.pth")
    assert report.missing == [] and report.unexpected == ["head.weight"]
    assert_same_weights(enc, src)
    assert "loaded" in caplog.text and "head.weight" in caplog.text


def test_icc_ld_checkpoint_encoder_tensors_are_found(tmp_path):
    torch.manual_seed(0)
    model = build_model_from_config(preset("cpu"))
    folder = save_pretrained(model, tmp_path / "final")
    enc = build_backbone("mit-tiny")
    report = load_backbone_weights(enc, folder)
    assert report.missing == [] and report.unexpected  # the latent head, decoder, ... are reported
    assert_same_weights(enc, model.encoder)


def test_missing_keys_are_logged(tmp_path, caplog):
    state = dict(donor().state_dict())
    del state["stages.3.layer_norm.weight"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with caplog.at_level(logging.WARNING, logger="iccld.io.backbone_weights"):
        report = load_backbone_weights(build_backbone("mit-tiny"), tmp_path / "partial.safetensors")
    assert report.missing == ["stages.3.layer_norm.weight"]
    assert "stages.3.layer_norm.weight" in caplog.text and "randomly initialised" in caplog.text


def test_nothing_matching_is_an_error(tmp_path):
    save_file({"foo.weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="no tensor"):
        load_backbone_weights(build_backbone("mit-tiny"), tmp_path / "other.safetensors")


def test_other_backbone_size_is_an_error(tmp_path):
    SegformerModel(mit_config("mit-b0")).save_pretrained(tmp_path / "b0")
    with pytest.raises(CheckpointError, match="another backbone"):
        load_backbone_weights(build_backbone("mit-tiny"), tmp_path / "b0")


def test_unreadable_and_missing_sources(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_backbone_weights(build_backbone("mit-tiny"), tmp_path / "bad.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_backbone_weights(build_backbone("mit-tiny"), tmp_path / "empty")
    with pytest.raises(CheckpointError, match="not found"):
        load_backbone_weights(build_backbone("mit-tiny"), tmp_path / "missing.safetensors")


def test_hub_id_offline_gives_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="hf download iccld-test/no-such-mit"):
        load_backbone_weights(build_backbone("mit-tiny"), "iccld-test/no-such-mit")


def test_normalize_keys_strips_wrapper_prefixes():
    t = torch.zeros(1)
    keys = normalize_mit_keys({"module.backbone.patch_embed1.proj.weight": t,
                           "model.segformer.encoder.layer_norm.2.bias": t,
                           "encoder.stages.1.layer_norm.weight": t}).keys()
    assert set(keys) == {"stages.0.patch_embeddings.proj.weight", "stages.2.layer_norm.bias",
                         "stages.1.layer_norm.weight"}


def test_segmentation_finetuned_weights_are_flagged(tmp_path, caplog):
    state = {f"segformer.{k}": v for k, v in donor().state_dict().items()}
    state["decode_head.classifier.weight"] = torch.zeros(19, 8, 1, 1)
    save_file(state, str(tmp_path / "segformer_city.safetensors"))
    with caplog.at_level(logging.WARNING, logger="iccld.io.backbone_weights"):
        report = load_backbone_weights(build_backbone("mit-tiny"), tmp_path / "segformer_city.safetensors")
    assert report.missing == [] and "segmentation-finetuned" in caplog.text
