"""The ICCLD network: E (backbone + latent head), the latent diffusion around eps_theta, D and the
inter-coder connection.

    x --E--> z0 (B, Cz, H/s, W/s) ---------------------------------+ condition
      |                                                            v
      |      z_T ~ N(0, I) --> [ eps_theta(concat(z_t, z0), t) ] x K DDIM steps --> z0_hat
      |                                                                              |
      +-- inter-coder connection: E's features at skip_strides --------------> D(z0_hat, skips) --> logits

Paper symbols are kept: ``z0`` the image latent, ``z_t`` its noised version at timestep ``t``,
``z0_hat`` the denoised latent, ``eps`` the noise. Stage 1 uses the direct path D(z0, skips).
Tensors in, tensors out: saving and loading live in :mod:`iccld.io`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple, Optional

import torch
from torch import nn

from ..diffusion.latent import LatentDiffusion
from .latent_head import LatentHead
from .multires import MultiRes, predict_draws


class Prediction(NamedTuple):
    """``logits`` (B, C, H, W); ``uncertainty`` (B, H, W) or None (a single draw)."""

    logits: torch.Tensor
    uncertainty: Optional[torch.Tensor]


def average_draws(draws: Iterable[torch.Tensor]) -> Prediction:
    """The mean of the logits (B, C, H, W) of several noise draws, and as uncertainty the per-pixel
    population variance across draws averaged over classes, (B, H, W); None for a single draw.
    Welford's running mean and sum of squared deviations, so one draw's logits are held at a time."""
    mean = m2 = None
    count = 0
    for logits in draws:
        count += 1
        if mean is None:
            mean = logits
            continue
        if m2 is None:  # from the second draw on: one draw needs no variance
            m2 = torch.zeros_like(logits)
        delta = logits - mean
        mean = mean + delta / count
        m2 = m2 + delta * (logits - mean)
    if mean is None:
        raise ValueError("average_draws: no draws")
    return Prediction(mean, (m2 / count).mean(dim=1) if m2 is not None else None)


class ICCLD(nn.Module):
    """The network. Build it with :func:`iccld.models.build_model` (plain arguments) or
    :func:`iccld.io.build_model_from_config` (a ``ModelConfig``).

    Args:
        encoder: E's backbone (see :mod:`iccld.models.backbones`): ``encoder(x)`` returns feature
            maps at the strides ``encoder.strides``.
        latent_head: maps E's levels ``latent_levels`` to z0.
        diffusion: the latent diffusion around eps_theta (a ``LatentDiffusion``).
        decoder: D, one of :data:`iccld.models.DECODERS`; built with one skip projection per entry
            of ``skip_levels`` when ``inter_coder`` is true, with none otherwise.
        skip_levels: indices of E's feature levels passed to D.
        inter_coder: the inter-coder connection; off, D sees z alone.
        latent_stride: s, z0 is (B, Cz, ceil(H/s), ceil(W/s)).
        latent_levels: E's levels the latent head reads (the two deepest).
        norm_eval: keep the BatchNorm layers of E's backbone in eval mode (their stored statistics,
            e.g. ImageNet's) also while the network trains, as mmseg's ``norm_eval``; their affine
            weights still train. No effect on a backbone without BatchNorm (MiT, DINOv2).
        multires: HRDA's multi-resolution (:class:`~iccld.models.multires.MultiRes`: its settings
            and scale-attention head); None, the default, is one resolution. With it, :meth:`predict`
            fuses a context and a sliding detail branch, and the methods train both.
        config: what the network was built from, recorded by the builder for saving; the network
            itself never reads it.
    """

    def __init__(self, encoder: nn.Module, latent_head: LatentHead, diffusion: LatentDiffusion,
                 decoder: nn.Module, *, skip_levels: list[int], inter_coder: bool, latent_stride: int,
                 latent_levels: tuple[int, int] = (2, 3), norm_eval: bool = False,
                 multires: MultiRes | None = None, config: Any = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.latent_head = latent_head
        self.diffusion = diffusion
        self.decoder = decoder
        expected = len(skip_levels) if inter_coder else 0
        if decoder.num_skips != expected:
            raise ValueError(f"decoder has {decoder.num_skips} skip projections, expected {expected}")
        self.skip_levels = list(skip_levels)
        self.inter_coder = inter_coder
        self.latent_stride = latent_stride
        self.latent_levels = tuple(latent_levels)
        self.norm_eval = norm_eval
        self.multires = multires  # None: no module registered, so the state dict is the single-scale one
        self.config = config

    def train(self, mode: bool = True) -> "ICCLD":
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.encoder.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    @property
    def denoiser(self) -> nn.Module:
        """eps_theta, owned by :attr:`diffusion`."""
        return self.diffusion.denoiser

    @property
    def sampling_steps(self) -> int:
        return self.diffusion.sampling_steps

    # ------------------------------------------------------------------------------------------
    # the networks

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x (B, 3, H, W), normalised -> (z0 (B, Cz, ceil(H/s), ceil(W/s)), skips).

        ``skips`` are E's features at the configured skip strides, (B, C_i, ceil(H/s_i), ceil(W/s_i));
        they are returned even without the inter-coder connection (then :meth:`decode` ignores them).
        """
        feats = self.encoder(x)  # one map per level, at encoder.strides
        size = (math.ceil(x.shape[-2] / self.latent_stride), math.ceil(x.shape[-1] / self.latent_stride))
        deep, deepest = (feats[i] for i in self.latent_levels)
        z0 = self.latent_head(deep, deepest, size)  # (B, Cz, H/s, W/s)
        return z0, [feats[i] for i in self.skip_levels]

    def decode(self, z: torch.Tensor, skips: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """D(z, skips) -> logits (B, num_classes, *size). Without the inter-coder connection the
        skips are not used at all: D sees z alone."""
        return self.decoder(z, list(skips) if self.inter_coder else [], tuple(size))

    def decode_features(self, z: torch.Tensor, skips: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """D's fused features before its classifier: (B, decoder_channels, H/4, W/4); logits are
        ``self.decoder.classify(features, size)``."""
        return self.decoder.features(z, list(skips) if self.inter_coder else [], tuple(size))

    def sample(self, z0: torch.Tensor, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """z0_hat: K deterministic DDIM steps from z_T ~ N(0, I) (drawn with ``generator``),
        conditioned on z0 (B, Cz, h, w); see :meth:`LatentDiffusion.sample`."""
        return self.diffusion.sample(z0, steps, 1, generator)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, steps: int | None = None, samples: int = 1,
                generator: torch.Generator | None = None, diffusion: bool = True) -> Prediction:
        """Segment a normalised image batch x (B, 3, H, W). Does not change train/eval mode: call
        ``model.eval()`` first for deterministic dropout.

        With ``diffusion`` (the full ICCLD path), each of ``samples`` noise draws gives
        D(sample(z0), skips); the logits are averaged in logit space. The uncertainty map
        (samples > 1) is the per-pixel variance of the logits across draws (population variance),
        averaged over classes: (B, H, W); None for one draw. E runs once per image whatever
        ``samples`` is. ``diffusion=False`` gives the stage-1 path D(z0, skips) (``steps``,
        ``samples`` and ``generator`` are then unused and the uncertainty is None).
        """
        if self.multires is not None:  # the context and sliding detail branches, fused per draw
            if diffusion and (not isinstance(samples, int) or samples < 1):
                raise ValueError(f"samples: the number of noise draws must be an integer >= 1, got {samples!r}")
            return average_draws(predict_draws(self, x, steps, samples, generator, diffusion))
        size = (x.shape[-2], x.shape[-1])
        z0, skips = self.encode(x)
        if not diffusion:
            return Prediction(self.decode(z0, skips, size), None)
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples: the number of noise draws must be an integer >= 1, got {samples!r}")
        b = z0.shape[0]
        z_hat = self.diffusion.sample(z0, steps, samples, generator)  # (samples*B, Cz, h, w)
        # D once per draw, each draw's logits (B, C, H, W) averaged as they come
        return average_draws(self.decode(z_hat[i * b:(i + 1) * b], skips, size) for i in range(samples))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by part; the trainer gives "encoder" (the backbone's part that ImageNet weights
        load into) the base lr and the rest lr x head_lr_mult, "encoder_neck" (a backbone's own new
        layers, such as DINOv2's neck; empty for MiT and ResNet) included."""
        pretrained = list(self.encoder.pretrained_part().parameters())
        ids = {id(p) for p in pretrained}
        return {
            "encoder": pretrained,
            "encoder_neck": [p for p in self.encoder.parameters() if id(p) not in ids],
            "latent_head": list(self.latent_head.parameters()),
            "decoder": list(self.decoder.parameters()),
            "denoiser": list(self.diffusion.parameters()),
        } | ({"scale_attention": list(self.multires.parameters())} if self.multires is not None else {})
