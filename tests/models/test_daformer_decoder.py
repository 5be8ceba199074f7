"""``model.decoder: daformer``: DAFormer's head by construction, with the latent as one more input."""

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from iccld.config import load_config
from iccld.errors import ConfigError
from iccld.io import build_model_from_config
from iccld.models import DAFormerDecoder
from iccld.presets import preset

REPO = Path(__file__).resolve().parents[2]

# DAFormer's head as its configs daformer_conv1_mitb5 + daformer_sepaspp_mitb5 set it up
MITB5_CHANNELS = [64, 128, 320, 512]  # decode_head.in_channels
EMBED_DIMS = 256  # decoder_params.embed_dims: each level's linear embedding (with bias)
CHANNELS = 256  # decode_head.channels: the fusion's width
DILATIONS = (1, 6, 12, 18)  # fusion_cfg: aspp, sep=True; a branch at dilation 1 is a plain 1x1 conv
POOL = False  # fusion_cfg.pool: no image-pooling branch
NUM_CLASSES = 19


def conv(c_in: int, c_out: int, k: int, groups: int = 1, bias: bool = False) -> int:
    """Parameters of a k x k conv; mmcv's ConvModule drops the bias where a norm follows."""
    return c_out * (c_in // groups) * k * k + (c_out if bias else 0)


def bn(c: int) -> int:
    return 2 * c  # BatchNorm's weight and bias (its running statistics are buffers)


def sep_aspp(c_in: int) -> int:
    """The fusion: separable ASPP branches (depthwise 3x3 + BN, pointwise 1x1 + BN) and the 3x3 bottleneck."""
    branches = sum(conv(c_in, CHANNELS, 1) + bn(CHANNELS) if d == 1
                   else conv(c_in, c_in, 3, groups=c_in) + bn(c_in) + conv(c_in, CHANNELS, 1) + bn(CHANNELS)
                   for d in DILATIONS)
    bottleneck = conv((len(DILATIONS) + int(POOL)) * CHANNELS, CHANNELS, 3) + bn(CHANNELS)
    return branches + bottleneck


def daformer_head_params(in_channels: list[int]) -> int:
    embeddings = sum(conv(c, EMBED_DIMS, 1, bias=True) for c in in_channels)
    classifier = conv(CHANNELS, NUM_CLASSES, 1, bias=True)  # conv_seg
    return embeddings + sep_aspp(len(in_channels) * EMBED_DIMS) + classifier


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_decoder_is_daformers_head_on_mit_b5_plus_the_latent_embedding():
    cfg = load_config(REPO / "configs/gta5_cityscapes/stage1.yaml", ["model.pretrained="]).model
    assert (cfg.backbone, cfg.decoder, cfg.skip_strides) == ("mit-b5", "daformer", [4, 8, 16, 32])
    model = build_model_from_config(cfg)  # random init, offline
    assert list(model.encoder.channels) == MITB5_CHANNELS
    assert isinstance(model.decoder, DAFormerDecoder) and model.decoder.num_skips == 4

    head = DAFormerDecoder(0, list(model.encoder.channels), cfg.decoder_channels, cfg.num_classes)
    # by hand: embeddings 263,168 + ASPP branches 1,084,416 + bottleneck 2,359,808 + classifier 4,883
    assert count(head) == daformer_head_params(MITB5_CHANNELS) == 3_712_275
    # the latent: its embedding, and one more input of EMBED_DIMS channels to every ASPP branch (the
    # concatenation widens the branches' first convs and the depthwise BatchNorms, not the bottleneck)
    four = len(MITB5_CHANNELS) * EMBED_DIMS
    embedding = conv(cfg.latent_channels, EMBED_DIMS, 1, bias=True)
    assert count(model.decoder) - count(head) == embedding + sep_aspp(four + EMBED_DIMS) - sep_aspp(four)
    assert embedding == 8_448 and count(model.decoder) - count(head) == 8_448 + 270_592
    # the same layers under the same names, bar the latent's embedding
    shapes = {k: v.shape for k, v in model.decoder.state_dict().items()}
    head_shapes = {k: v.shape for k, v in head.state_dict().items()}
    assert set(shapes) - set(head_shapes) == {"latent_proj.weight", "latent_proj.bias"}
    widened = {k for k in head_shapes if shapes[k] != head_shapes[k]}
    assert all(k.startswith("fuse.branches.") for k in widened)
    # BatchNorm and ReLU after every conv of the fusion, none with a bias
    fusion_convs = [m for m in model.decoder.fuse.modules() if isinstance(m, nn.Conv2d)]
    assert len(fusion_convs) == 1 + 2 * 3 + 1 and all(c.bias is None for c in fusion_convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.decoder.fuse.modules()) == len(fusion_convs)
    assert [c.dilation[0] for c in fusion_convs if c.groups > 1] == [6, 12, 18]


def test_head_without_the_latent_takes_the_levels_alone():
    head = DAFormerDecoder(0, [8, 16], 16, 5).eval()
    skips = [torch.randn(2, 8, 8, 12), torch.randn(2, 16, 4, 6)]
    assert head(None, skips, (32, 48)).shape == (2, 5, 32, 48)
    assert head.features(None, skips, (30, 45)).shape == (2, 16, 8, 12)  # ceil(H/4), ceil(W/4)
    with pytest.raises(ValueError, match="z must be given exactly"):
        head(torch.randn(2, 4, 2, 3), skips, (32, 48))
    with pytest.raises(ValueError, match="at least one skip"):
        DAFormerDecoder(0, [], 16, 5)


def daformer_cfg(backbone: str, **kw):
    return dataclasses.replace(preset("cpu"), backbone=backbone, decoder="daformer", skip_strides=[4, 8, 16, 32],
                               decoder_channels=16, **kw)


@pytest.mark.parametrize("backbone", ["mit-tiny", "mobilenet-v2-tiny", "dinov2-tiny", "resnet-tiny"])
def test_forward_on_both_paths_for_every_backbone(backbone):
    torch.manual_seed(0)
    model = build_model_from_config(daformer_cfg(backbone))
    x = torch.randn(2, 3, 64, 96)
    for diffusion in (False, True):
        model.eval()
        logits = model.predict(x, diffusion=diffusion).logits
        assert logits.shape == (2, 19, 64, 96) and torch.isfinite(logits).all()
    # training mode (BatchNorm on batch statistics): the loss reaches every level's embedding and z's
    model.train()
    z0, skips = model.encode(x)
    z0_hat = model.sample(z0)
    assert model.decode_features(z0_hat, skips, (64, 96)).shape == (2, 16, 16, 24)
    model.decode(z0_hat, skips, (64, 96)).logsumexp(dim=1).mean().backward()
    for proj in [*model.decoder.skip_projs, model.decoder.latent_proj]:
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0


def test_without_the_inter_coder_connection_d_sees_the_latent_alone():
    cfg = load_config(REPO / "configs/synthetic/stage1_no_intercoder.yaml", ["model.skip_strides=[4,8,16]"]).model
    assert not cfg.inter_coder and cfg.decoder == "daformer"  # the four-level rule is for the skips only
    torch.manual_seed(0)
    model = build_model_from_config(cfg).eval()
    assert model.decoder.num_skips == 0 and len(model.decoder.skip_projs) == 0
    assert model.decoder.fuse.branches[0][0].in_channels == cfg.decoder_channels  # z's embedding alone
    with torch.no_grad():
        z0, skips = model.encode(torch.randn(1, 3, 64, 64))
        ref = model.decode(z0, skips, (64, 64))
        assert ref.shape == (1, 19, 64, 64)
        assert torch.equal(ref, model.decode(z0, [s + 1 for s in skips], (64, 64)))
        assert (ref - model.decode(z0 + torch.randn_like(z0), skips, (64, 64))).abs().max() > 1e-4


def test_decoder_choice_is_checked_with_the_fix():
    assert load_config().model.decoder == "segformer"  # saved runs and configs keep their decoder
    with pytest.raises(ConfigError, match="model.decoder: 'dafomer' is not one of segformer, daformer.*'daformer'"):
        load_config(None, ["model.decoder=dafomer"])
    with pytest.raises(ConfigError, match=r"model.skip_strides: the daformer decoder fuses all four.*"
                                          r"\[4,8,16,32\] \(got \[4, 8, 16\]\)"):
        load_config(None, ["model.decoder=daformer"])
    assert load_config(None, ["model.decoder=daformer", "model.skip_strides=[32,16,8,4]"]).model.decoder == "daformer"


@pytest.mark.parametrize("benchmark", ["gta5_cityscapes", "synthia_cityscapes"])
def test_paper_scale_configs_use_the_daformer_decoder_in_both_stages(benchmark):
    for name in ("source_only", "oracle", "stage1", "stage1_mic", "stage2", "stage2_mic"):
        model = load_config(REPO / "configs" / benchmark / f"{name}.yaml", ["method.stage1_checkpoint=runs/x"]
                            if name.startswith("stage2") else []).model
        assert (model.decoder, model.skip_strides) == ("daformer", [4, 8, 16, 32]), name


@pytest.mark.parametrize("family", ["gta5_cityscapes", "synthia_cityscapes", "cityscapes_acdc",
                                    "cityscapes_darkzurich"])
def test_paper_scale_self_training_uses_daformers_batch_statistics_teacher(family):
    """With DAFormer's BatchNorm decoder the EMA teacher normalises the target batch by itself, as
    DAFormer's train-mode teacher (measured: docs/benchmarks.md, "D's decoder")."""
    for path in sorted((REPO / "configs" / family).glob("*stage*.yaml")):
        overrides = ["method.stage1_checkpoint=runs/x"] if "stage2" in path.stem else []
        assert load_config(path, overrides).method.teacher_norm == "batch", path.name


def test_decoder_norm_swaps_every_norm_layer_and_keeps_the_parameters():
    """model.decoder_norm=group: GroupNorm wherever the daformer decoder has BatchNorm (the same
    parameter count, no running statistics, each image normalised by itself: a batch of two gives
    each image the logits it gets alone, in train mode too); =batch gives the segformer decoder
    SegFormer's BatchNorm; "" keeps each decoder's own."""
    base = preset("cpu")
    assert (base.decoder, base.skip_strides) == ("daformer", [4, 8, 16, 32])

    def build(**changes):
        torch.manual_seed(0)
        return build_model_from_config(dataclasses.replace(base, **changes), load_weights=False)

    def norms(model):
        layers = (nn.BatchNorm2d, nn.GroupNorm)
        return sorted({type(m).__name__ for m in model.decoder.modules() if isinstance(m, layers)})

    bn, gn = build(), build(decoder_norm="group")
    assert norms(bn) == ["BatchNorm2d"] and norms(gn) == ["GroupNorm"]
    assert norms(build(decoder_norm="batch")) == ["BatchNorm2d"]
    count = lambda m: sum(p.numel() for p in m.decoder.parameters())  # noqa: E731
    assert count(gn) == count(bn)
    assert not any("running_" in k for k in gn.decoder.state_dict())
    assert sum(isinstance(m, nn.GroupNorm) for m in gn.decoder.modules()) == 8  # 1 + 3 x 2 + bottleneck
    gn.decoder.train()
    gn.decoder.dropout.p = 0.0
    with torch.no_grad():
        z0, skips = gn.encode(torch.randn(2, 3, 64, 64))
        both = gn.decode(z0, skips, (64, 64))
        one = gn.decode(z0[:1], [s[:1] for s in skips], (64, 64))
    assert torch.allclose(both[:1], one, atol=1e-5)
    seg = dataclasses.replace(base, decoder="segformer", skip_strides=[4, 8, 16])
    assert isinstance(build_model_from_config(seg, load_weights=False).decoder.fuse[1], nn.GroupNorm)
    seg_bn = dataclasses.replace(seg, decoder_norm="batch")
    assert isinstance(build_model_from_config(seg_bn, load_weights=False).decoder.fuse[1], nn.BatchNorm2d)
    with pytest.raises(ConfigError, match="model.decoder_norm: 'layer' is not one of batch, group"):
        load_config(None, ["model.decoder_norm=layer"])
