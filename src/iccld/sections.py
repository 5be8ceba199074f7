"""The typed sections of a run's config that the lower layers read: datasets, the network, the
optimiser and the trainer. Plain dataclasses whose defaults live here and nowhere else.

They are apart from :mod:`iccld.config`, which puts them together with the method's own section
(declared by each method in :mod:`iccld.methods`) and reads YAML files: the networks' builders and
the datasets need these types, and must not depend on the methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .utils import switch


@dataclass
class DatasetConfig:
    """One dataset split. ``kind`` is a kind of :mod:`iccld.data.kinds`: gta5 | synthia | cityscapes |
    acdc | darkzurich | mapillary | bdd100k | folder, or one registered there."""

    kind: str = "cityscapes"
    root: str = ""
    split: str = "train"  # cityscapes: train | val | test; folder datasets: a sub-folder or ""
    # (W, H) the image is resized to before cropping; null keeps the original size.
    resize: Optional[list[int]] = None
    # fit each image into ``resize`` keeping its aspect ratio, as mmcv's keep-ratio Resize in DAFormer,
    # HRDA and MIC's pipelines (GTA5's 1914x1052 -> 1280x704 in [1280, 720]); false stretches to it
    keep_ratio: bool = switch(True)
    # folder datasets only: path of the YAML that describes the layout and label map
    spec: str = ""
    # acdc: the conditions to use (fog, night, rain, snow; null: all four); darkzurich: the times of
    # day (day, twilight, night; null: night)
    conditions: Optional[list[str]] = None


@dataclass
class DataConfig:
    source: DatasetConfig = field(default_factory=lambda: DatasetConfig(kind="gta5", resize=[1280, 720]))
    target: DatasetConfig = field(default_factory=lambda: DatasetConfig(kind="cityscapes", resize=[1024, 512]))
    val: DatasetConfig = field(
        default_factory=lambda: DatasetConfig(kind="cityscapes", split="val", resize=[1024, 512]))
    crop_size: list[int] = field(default_factory=lambda: [512, 512])  # (H, W)
    cat_max_ratio: float = 0.75  # at most this share of a crop may be one class (DAFormer)
    flip: bool = True
    num_workers: int = 4
    skip_bad: bool = False  # skip unreadable image/label pairs instead of stopping, and count them
    # rare class sampling of the source (needs sample_class_stats.json from `iccld prepare`)
    rcs_temperature: float = 0.01  # 0 disables
    rcs_min_pixels: int = 3000
    rcs_min_crop_ratio: float = 0.5
    # HRDA's pseudo-label margins ("crop v2"): [top, bottom, left, right] pixels of each target image
    # (after data.target.resize) whose pseudo-labels weigh 0. Masked on the whole image before it is
    # cropped, so a crop loses them only where it touches the image's border (HRDA: [30, 240, 30, 30]
    # of Cityscapes' 2048x1024). null: off (method.pl_crop_top/bottom cut rows of every crop instead).
    pl_margins: Optional[list[int]] = switch(None)


@dataclass
class MultiResConfig:
    """HRDA's multi-resolution training and inference around the network (docs/method.md, "HRDA
    multi-resolution"). Off unless ``enabled``; the other defaults are HRDA's GTA5/SYNTHIA settings."""

    enabled: bool = False
    # the context: the whole crop (training) or image (inference), resized by this factor
    context_scale: float = 0.5
    # (H, W) of the detail crop, at full resolution: a random one inside the training crop; the
    # window of the detail branch's sliding inference (stride half of it, overlapping as in HRDA)
    detail_crop: list[int] = field(default_factory=lambda: [512, 512])
    # the detail crop's own loss weighs this, the fused prediction's 1 - this (HRDA's lambda_d)
    detail_loss_weight: float = 0.1
    crop_divisible: int = 8  # the detail crop's offsets are multiples of this (full-resolution pixels)
    classwise_attention: bool = True  # one attention map per class (HRDA), or one for all
    attention_channels: int = 256  # width of the scale-attention head (HRDA: 256)


@dataclass
class ModelConfig:
    """The ICCLD network (see docs/method.md). Presets fill these in, see iccld.presets."""

    # mit-b0 .. mit-b5, dinov2-small/base/large/giant, resnet-50/101, mobilenet-v2 (depth multiplier 1.0;
    # -0.35/-0.5/-0.75/-1.4 for the others); *-tiny for the CPU benchmark and tests
    backbone: str = "mit-b5"
    # hub id (nvidia/mit-b5, facebook/dinov2-small, google/mobilenet_v2_1.0_224), a local folder or a
    # .safetensors/.bin file
    pretrained: str = ""
    # E's BatchNorm layers (ResNet, MobileNetV2) keep their stored (ImageNet) statistics while training,
    # as mmseg's norm_eval; false: batch statistics in training, stored ones at evaluation
    norm_eval: bool = False
    num_classes: int = 19
    latent_channels: int = 32  # Cz
    latent_stride: int = 16  # s: z0 is (B, Cz, H/s, W/s)
    inter_coder: bool = True  # the inter-coder connection: E's shallow features into D
    skip_strides: list[int] = field(default_factory=lambda: [4, 8, 16])
    # D: segformer (1x1 fusion of the latent and the skips, GroupNorm) | daformer (DAFormer's head:
    # its separable-ASPP fusion of all four levels, strides 4..32, with the latent as one more input)
    decoder: str = "segformer"
    decoder_channels: int = 256  # D's width (daformer: the embeddings' and the fusion's, 256 in DAFormer)
    # D's normalisation layers: "" the decoder's own (segformer: group, daformer: batch as DAFormer) |
    # batch | group (per image, no running statistics; see docs/benchmarks.md, "D's decoder")
    decoder_norm: str = ""
    dropout: float = 0.1
    # denoiser eps_theta (diffusers.UNet2DModel)
    unet_channels: list[int] = field(default_factory=lambda: [128, 256, 256])
    unet_layers_per_block: int = 2
    unet_attention: bool = True  # self-attention in the U-Net's middle block (diffusers' default)
    unet_mid_block: bool = True  # the U-Net's middle block (two ResNet blocks at the lowest resolution)
    # GroupNorm groups in the U-Net; 0: the most (<= 32) that leave every level >= 4 channels per group.
    # One channel per group would erase the per-channel timestep shift: the U-Net could not see t.
    unet_norm_groups: int = 0
    latent_norm: bool = True  # normalise each latent vector of z0 over its Cz channels
    # eps_theta's output is added to its condition z0 (prediction type "sample" only), with a
    # zero-initialised output layer: the diffusion path starts exactly at the stage-1 path D(z0)
    # and stage 2 learns corrections of it
    denoiser_residual: bool = True
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "sample"  # sample | epsilon | v_prediction
    sampling_steps: int = 4  # K, DDIM steps at inference
    # HRDA multi-resolution: context + detail crops fused by a learned scale attention (off by default)
    multires: MultiResConfig = switch(factory=MultiResConfig)


# The fields of ModelConfig that fix what a network's weights are: each changes the shape of some
# weight (tests/test_config.py builds the network with every field changed in turn and compares the
# weights' shapes, so a new field that does is missing here fails it), or what the same weights
# compute: latent_stride (the latent's resolution), unet_norm_groups and latent_norm (the
# normalisations), denoiser_residual (eps_theta's output added to z0). Weights move only between
# networks that agree on these (stage 2 refuses a stage-1 run that differs); the rest (pretrained,
# norm_eval, dropout, the noise schedule, prediction_type, sampling_steps) may differ.
ARCHITECTURE_FIELDS = ("backbone", "num_classes", "latent_channels", "latent_stride", "inter_coder",
                       "skip_strides", "decoder", "decoder_channels", "decoder_norm", "unet_channels",
                       "unet_layers_per_block", "unet_attention", "unet_mid_block", "unet_norm_groups",
                       "latent_norm", "denoiser_residual", "multires")


@dataclass
class OptimConfig:
    lr: float = 6e-5
    head_lr_mult: float = 10.0  # heads (everything but the backbone) train at lr x this
    weight_decay: float = 0.01
    # which parameters skip weight decay: "one_dim" every 1-D parameter (norms and biases), "norms"
    # only normalisation layers' (biases decayed), as DAFormer's paramwise_cfg (norm decay_mult 0)
    no_decay: str = switch("one_dim")
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    poly_power: float = 1.0
    min_lr: float = 0.0
    grad_clip: float = 0.0  # 0 disables


@dataclass
class TrainerConfig:
    max_iters: int = 40000
    batch_size: int = 2  # the global batch, split over the processes; for each of source and target
    seed: int = 0
    eval_interval: int = 4000
    checkpoint_interval: int = 1000
    log_interval: int = 50
    mixed_precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | no | bf16 | fp16
    eval_slide: bool = False  # sliding-window evaluation instead of whole image
    eval_max_images: int = 0  # 0 = the whole split; periodic evaluation only
    skip_nonfinite: int = 0  # skip up to this many batches with a non-finite loss, then stop
    deterministic: bool = False
    # "sum": one backward of the summed losses; "per_term": each term (or group of terms that share a
    # forward pass) is back-propagated as soon as the method has computed it, so its graph is freed
    # before the next forward (DAFormer's order; same gradients, lower peak memory; one process only)
    backward: str = switch("sum")
