"""Loading pretrained (ImageNet) weights into E's backbone, loudly.

A backbone that silently stays randomly initialised is a known trap of DAFormer-style code (users
saw mIoU 26 instead of 68). So :func:`load_backbone_weights` reports what it loaded, logs every
missing and unexpected key, and raises :class:`CheckpointError` when nothing matched or a shape
does not fit (a checkpoint of another size).

The weights load into the backbone's ``pretrained_part()``, a model of its ``hf_class`` (see
:mod:`iccld.models.backbones`). Accepted sources:
- a Hugging Face hub id (``nvidia/mit-b5``, ``facebook/dinov2-small``, ``microsoft/resnet-101``,
  ``google/mobilenet_v2_1.0_224``),
  fetched with ``hf_class.from_pretrained``;
- a local folder written by ``save_pretrained`` (``model.safetensors`` / ``pytorch_model.bin``,
  sharded or not), including an ICCLD ``save_pretrained`` folder (its ``encoder.*`` tensors);
- a state-dict file: ``.safetensors``, ``.bin``, ``.pth`` or ``.pt``.

Key names: the hf_class's own, optionally under wrapper prefixes (``module.``, ``model.``,
``backbone.``, ``encoder.``, or a task model's ``segformer.`` / ``dinov2.`` / ``resnet.`` / ``mobilenet_v2.``).
MobileNetV2's ImageNet folders hold the classifier and its 1280-channel head conv (``conv_1x1``), which
the encoder does not use: they are logged as unused, not an error. For MiT also
transformers 4 / the hub files (``encoder.block.0.0.attention.self.query``) and the original NVIDIA /
mmseg files such as DAFormer's ``pretrained/mit_b5.pth`` (``block1.0.attn.q``, fused ``attn.kv``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
STATE_DICT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


@dataclass
class LoadReport:
    """What :func:`load_backbone_weights` did: ``loaded`` of ``total`` encoder tensors were replaced."""

    source: str
    loaded: int
    total: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# reading


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors, pickle and zip errors have no common base class
        raise CheckpointError(f"{path}: cannot read the weights ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    for key in ("state_dict", "model", "module"):  # mmseg / DAFormer wrap the state dict
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict (a mapping of names to tensors)")
    return obj


def _read_folder(folder: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return _read_file(folder / name)
    for name in WEIGHT_FILES:  # sharded: <name>.index.json lists the shard files
        index = folder / f"{name}.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"{index}: not a valid shard index ({exc})") from None
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_read_file(folder / shard))
            return state
    raise CheckpointError(f"{folder}: no {' or '.join(WEIGHT_FILES)} in this folder; pass a folder written "
                          "by save_pretrained or a .safetensors/.bin/.pth file")


def _looks_like_hub_id(source: str) -> bool:
    return (re.fullmatch(r"[\w.\-]+/[\w.\-]+", source) is not None
            and not source.startswith((".", "/")) and not source.endswith(STATE_DICT_SUFFIXES))


def _read_hub(source: str, hf_class: type) -> dict[str, torch.Tensor]:
    try:
        model = hf_class.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"model.pretrained: '{source}' is not a local path and could not be loaded from the Hugging Face "
            f"hub ({type(exc).__name__}; offline?). Download it once with `hf download {source} "
            f"--local-dir <folder>` and set model.pretrained=<folder>, or pass a local "
            ".safetensors/.bin/.pth file") from None
    return model.state_dict()


def read_backbone_state_dict(source: str | Path, hf_class: type | None = None) -> dict[str, torch.Tensor]:
    """The raw tensors of ``source`` (hub id, folder or file), keys as stored; a hub id is fetched
    with ``hf_class.from_pretrained`` (default: SegformerModel)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_folder(path)
    if path.is_file():
        if path.suffix not in STATE_DICT_SUFFIXES:
            raise CheckpointError(f"{path}: expected a {'/'.join(STATE_DICT_SUFFIXES)} file or a folder")
        return _read_file(path)
    if _looks_like_hub_id(str(source)):
        if hf_class is None:
            from transformers import SegformerModel as hf_class
        return _read_hub(str(source), hf_class)
    raise CheckpointError(f"model.pretrained: '{source}' not found (neither a file, a folder nor a hub id "
                          "like nvidia/mit-b5)")


# ----------------------------------------------------------------------------------------------
# key layouts -> transformers 5 SegformerModel names

_PREFIXES = ("module.", "model.", "segformer.", "backbone.")

# transformers 4 / hub layout (the table transformers 5 applies itself in from_pretrained)
_HF4_RENAMES = [
    (r"^encoder\.patch_embeddings\.(\d+)\.", r"stages.\1.patch_embeddings."),
    (r"^encoder\.block\.(\d+)\.", r"stages.\1.blocks."),
    (r"^encoder\.layer_norm\.(\d+)\.", r"stages.\1.layer_norm."),
    (r"\.attention\.self\.query\.", ".attention.q_proj."),
    (r"\.attention\.self\.key\.", ".attention.k_proj."),
    (r"\.attention\.self\.value\.", ".attention.v_proj."),
    (r"\.attention\.self\.sr\.", ".attention.sequence_reduction.sequence_reduction."),
    (r"\.attention\.self\.layer_norm\.", ".attention.sequence_reduction.layer_norm."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.mlp\.dense1\.", ".mlp.fc1."),
    (r"\.mlp\.dense2\.", ".mlp.fc2."),
    (r"\.layer_norm_1\.", ".layernorm_before."),
    (r"\.layer_norm_2\.", ".layernorm_after."),
]

# original NVIDIA / mmseg MiT layout; the stage index there starts at 1
_MIT_STAGE = [
    (r"^patch_embed(\d)\.proj\.", "stages.{}.patch_embeddings.proj."),
    (r"^patch_embed(\d)\.norm\.", "stages.{}.patch_embeddings.layer_norm."),
    (r"^norm(\d)\.", "stages.{}.layer_norm."),
]
_MIT_BLOCK = re.compile(r"^block(\d)\.(\d+)\.(.+)$")
_MIT_BLOCK_PARTS = [
    ("norm1.", "layernorm_before."),
    ("norm2.", "layernorm_after."),
    ("attn.q.", "attention.q_proj."),
    ("attn.proj.", "attention.o_proj."),
    ("attn.sr.", "attention.sequence_reduction.sequence_reduction."),
    ("attn.norm.", "attention.sequence_reduction.layer_norm."),
    ("mlp.", "mlp."),  # fc1, dwconv.dwconv, fc2 keep their names
]


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
        if key.startswith("encoder.stages."):  # an ICCLD checkpoint: encoder.<SegformerModel key>
            key, changed = key[len("encoder."):], True
    return key


def _convert_mit_key(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    for pattern, template in _MIT_STAGE:
        m = re.match(pattern, key)
        if m:
            return {template.format(int(m.group(1)) - 1) + key[m.end():]: value}
    m = _MIT_BLOCK.match(key)
    if m:
        stage, block, rest = int(m.group(1)) - 1, m.group(2), m.group(3)
        base = f"stages.{stage}.blocks.{block}."
        if rest.startswith("attn.kv."):  # fused (2C, C): rows [0, C) are k, rows [C, 2C) are v
            k, v = value.chunk(2, dim=0)
            suffix = rest[len("attn.kv."):]
            return {base + "attention.k_proj." + suffix: k, base + "attention.v_proj." + suffix: v}
        for old, new in _MIT_BLOCK_PARTS:
            if rest.startswith(old):
                return {base + new + rest[len(old):]: value}
    return {key: value}


def normalize_mit_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a MiT state dict of any understood layout to transformers-5 ``SegformerModel`` keys.

    Keys that belong to no encoder (classifier heads, decoders) pass through unchanged, so the
    caller can report them as unexpected.
    """
    out: dict[str, torch.Tensor] = {}
    for raw_key, value in state.items():
        key = _strip_prefixes(raw_key)
        if key.startswith("encoder."):
            for pattern, repl in _HF4_RENAMES:
                key = re.sub(pattern, repl, key)
            out[key] = value
        elif key.startswith("stages."):
            out[key] = value
        else:
            out.update(_convert_mit_key(key, value))
    return out


# ----------------------------------------------------------------------------------------------
# loading


def _preview(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


# DINOv2: the hub files (and transformers 5's save_pretrained, which writes the hub layout) -> the
# names of transformers 5's Dinov2Model (the table its from_pretrained applies itself)
_DINOV2_RENAMES = [
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
]


def normalize_dinov2_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a DINOv2 state dict of the hub layout to transformers-5 ``Dinov2Model`` keys; the
    SwiGLU MLP of ViT-g stores its gate and up projections fused (``weights_in``, rows [0, H) the
    gate, [H, 2H) the up projection)."""
    out = {}
    for key, value in state.items():
        for pattern, repl in _DINOV2_RENAMES:
            key = re.sub(pattern, repl, key)
        if ".mlp.weights_in." in key:
            gate, up = value.chunk(2, dim=0)
            out[key.replace(".weights_in.", ".gate_proj.")] = gate
            out[key.replace(".weights_in.", ".up_proj.")] = up
            continue
        out[key.replace(".mlp.weights_out.", ".mlp.down_proj.")] = value
    return out


_WRAPPERS = ("module.", "model.", "backbone.", "encoder.", "segformer.", "dinov2.", "vit.", "resnet.", "mobilenet_v2.",
             "mobilenet.")
# ImageNet classification parts an encoder leaves out: logged, not warned about
_CLASSIFIER_PARTS = ("classifier.", "head.", "conv_1x1.")


def _unwrapped(key: str) -> str:
    """``key`` without its wrapper prefixes (:data:`_WRAPPERS`)."""
    while (prefix := next((p for p in _WRAPPERS if key.startswith(p)), None)) is not None:
        key = key[len(prefix):]
    return key


def match_keys(state: dict[str, torch.Tensor], own: dict) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes (:data:`_WRAPPERS`, one at a time) from each key until it names a
    tensor of ``own``; keys that never do pass through unchanged, to be reported as unexpected."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key
        while k not in own:
            prefix = next((p for p in _WRAPPERS if k.startswith(p)), None)
            if prefix is None:
                break
            k = k[len(prefix):]
        out[k if k in own else key] = value
    return out


def load_backbone_weights(backbone: nn.Module, source: str | Path) -> LoadReport:
    """Copy the weights of ``source`` into ``backbone.pretrained_part()`` (see the module docstring).

    Logs how many tensors were loaded and every missing (left at random init) and unexpected
    (ignored) key. Raises :class:`CheckpointError` when ``source`` cannot be read, when no tensor at
    all matched, or when a matching name has another shape (a checkpoint of a different size).
    """
    from transformers import Dinov2Model, SegformerModel

    target = backbone.pretrained_part()
    state = read_backbone_state_dict(source, backbone.hf_class)
    if isinstance(target, SegformerModel):
        state = normalize_mit_keys(state)
    elif isinstance(target, Dinov2Model):
        state = normalize_dinov2_keys(state)
    own = target.state_dict()
    state = match_keys(state, own)
    matched = {k: v for k, v in state.items() if k in own}
    wrong_shape = [k for k, v in matched.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong_shape:
        k = wrong_shape[0]
        raise CheckpointError(
            f"model.pretrained: '{source}' is for another backbone: {k} has shape {tuple(matched[k].shape)} "
            f"there but {tuple(own[k].shape)} in this model ({len(wrong_shape)} tensors differ); set "
            "model.backbone to the checkpoint's size (e.g. nvidia/mit-b5 needs mit-b5, facebook/dinov2-small "
            "needs dinov2-small)")
    if not matched:
        raise CheckpointError(
            f"model.pretrained: no tensor in '{source}' matches the {type(target).__name__} backbone (its keys "
            f"look like {_preview(sorted(state), 3)}); pass {backbone.hf_class.__name__} weights")
    missing = sorted(k for k in own if k not in matched)
    unexpected = sorted(k for k in state if k not in own)
    with torch.no_grad():
        for k, v in matched.items():
            own[k].copy_(v.to(dtype=own[k].dtype))
    log.info("backbone: loaded %d/%d tensors from %s", len(matched), len(own), source)
    if missing:
        log.warning("backbone: %d tensors missing from %s, left randomly initialised: %s",
                    len(missing), source, _preview(missing))
    if unexpected:
        heads = all(_unwrapped(k).startswith(_CLASSIFIER_PARTS) for k in unexpected)  # ImageNet classifier
        (log.info if heads else log.warning)("backbone: %d tensors in %s are not part of the encoder, "
                                             "ignored: %s", len(unexpected), source, _preview(unexpected))
    if any(k.startswith("decode_head.") for k in unexpected):
        log.warning("backbone: %s holds a SegFormer decode head, i.e. segmentation-finetuned weights, not "
                    "ImageNet MiT weights (nvidia/mit-b*); finetuned on Cityscapes they leak target labels "
                    "into a domain-adaptation run", source)
    return LoadReport(str(source), len(matched), len(own), missing, unexpected)
