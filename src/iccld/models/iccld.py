"""The ICCLD network: E (+ latent head), eps_theta, D and the inter-coder connection.

    x --E--> z0 (B, Cz, H/s, W/s) ---------------------------------+ condition
      |                                                            v
      |      z_T ~ N(0, I) --> [ eps_theta(concat(z_t, z0), t) ] x K DDIM steps --> z0_hat
      |                                                                              |
      +-- inter-coder connection: E's features at skip_strides --------------> D(z0_hat, skips) --> logits

Paper symbols are kept: ``z0`` the image latent, ``z_t`` its noised version at timestep ``t``,
``z0_hat`` the denoised latent, ``eps`` the noise. Stage 1 uses the direct path D(z0, skips).
Tensors in, tensors out: no I/O besides :meth:`save_pretrained` / :meth:`from_pretrained`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import NamedTuple, Optional

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch import nn

from ..config import ModelConfig
from ..diffusion import (
    add_noise,
    as_timesteps,
    check_steps,
    ddim_sample,
    ddim_timesteps,
    diffusion_target,
    draw_noise,
    output_to_z0,
)
from ..errors import CheckpointError, ConfigError
from .decoder import FusionDecoder
from .denoiser import FixedStepDenoiser, run_denoiser, sampling_threads, supports_fixed_steps
from .encoder import encoder_features
from .latent_head import LatentHead

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class Prediction(NamedTuple):
    """``logits`` (B, C, H, W); ``uncertainty`` (B, H, W) or None (a single draw)."""

    logits: torch.Tensor
    uncertainty: Optional[torch.Tensor]


class ICCLD(nn.Module):
    """The network. Build it with :func:`iccld.models.build_model` from a ``ModelConfig``.

    Args:
        encoder: E, a transformers ``SegformerModel`` (MiT) with four feature levels.
        latent_head: maps E's levels ``latent_levels`` to z0.
        denoiser: eps_theta, a ``diffusers.UNet2DModel`` with 2*Cz inputs and Cz outputs.
        decoder: D; built with one skip projection per entry of ``skip_levels`` when
            ``inter_coder`` is true, with none otherwise.
        scheduler: DDPM scheduler (noise and targets for training).
        sampler: DDIM scheduler (inference).
        skip_levels: indices (0..3) of E's feature levels passed to D (strides 4, 8, 16, 32).
        inter_coder: the inter-coder connection; off, D sees z alone.
        latent_stride: s, z0 is (B, Cz, ceil(H/s), ceil(W/s)).
        sampling_steps: default K for :meth:`sample` and :meth:`predict`.
        latent_levels: E's levels the latent head reads (the two deepest by default).
        residual: eps_theta's raw output is added to its condition z0 (prediction type "sample"),
            so a zero-initialised denoiser makes the diffusion path equal the stage-1 path.
        config: the ModelConfig this network was built from; written by :meth:`save_pretrained`.
    """

    def __init__(self, encoder: nn.Module, latent_head: LatentHead, denoiser: UNet2DModel,
                 decoder: FusionDecoder, scheduler: DDPMScheduler, sampler: DDIMScheduler, *,
                 skip_levels: list[int], inter_coder: bool, latent_stride: int, sampling_steps: int,
                 latent_levels: tuple[int, int] = (2, 3), residual: bool = False,
                 config: ModelConfig | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.latent_head = latent_head
        self.denoiser = denoiser
        self.decoder = decoder
        expected = len(skip_levels) if inter_coder else 0
        if decoder.num_skips != expected:
            raise ValueError(f"decoder has {decoder.num_skips} skip projections, expected {expected}")
        # plain attributes, not modules: schedulers hold no parameters
        self.scheduler = scheduler
        self.sampler = sampler
        self.skip_levels = list(skip_levels)
        self.inter_coder = inter_coder
        self.latent_stride = latent_stride
        self.sampling_steps = sampling_steps
        self.latent_levels = tuple(latent_levels)
        self.residual = residual
        self.config = config
        self._fixed_steps: FixedStepDenoiser | None = None  # reused by sampling while it matches

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler.config.prediction_type)

    # ------------------------------------------------------------------------------------------
    # the three networks

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x (B, 3, H, W), normalised -> (z0 (B, Cz, ceil(H/s), ceil(W/s)), skips).

        ``skips`` are E's features at the configured skip strides, (B, C_i, ceil(H/s_i), ceil(W/s_i));
        they are returned even without the inter-coder connection (then :meth:`decode` ignores them).
        """
        feats = encoder_features(self.encoder, x)  # 4 levels, strides 4, 8, 16, 32
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

    def denoise(self, z_t: torch.Tensor, z0: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """The raw output of eps_theta on concat(z_t, z0) at timesteps ``t`` (int or (B,)): (B, Cz, h, w)."""
        out = run_denoiser(self.denoiser, z_t, z0, as_timesteps(t, z_t.shape[0], z_t.device))
        return self._residual(out, z0)

    def _residual(self, out: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        # residual parameterisation (prediction type "sample"): z0_hat = z0 + eps_theta(...)
        return out + z0 if self.residual else out

    # ------------------------------------------------------------------------------------------
    # diffusion glue (see iccld.diffusion)

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """z_t = sqrt(alpha_bar[t]) z0 + sqrt(1 - alpha_bar[t]) noise."""
        return add_noise(self.scheduler, z0, noise, as_timesteps(t, z0.shape[0], z0.device))

    def diffusion_target(self, z0: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """What :meth:`denoise`'s raw output is regressed on: z0 (sample), noise (epsilon) or v."""
        return diffusion_target(self.scheduler, z0, noise, as_timesteps(t, z0.shape[0], z0.device))

    def estimate_z0(self, z_t: torch.Tensor, z0: torch.Tensor, t: int | torch.Tensor,
                    output: torch.Tensor | None = None) -> torch.Tensor:
        """The one-step estimate of the clean latent, z0_hat(t), from concat(z_t, z0).

        Pass ``output`` (the result of :meth:`denoise` for the same inputs) to convert it without
        running the network a second time, e.g. when the same output also feeds the diffusion loss.
        """
        t = as_timesteps(t, z_t.shape[0], z_t.device)
        if output is None:
            output = self.denoise(z_t, z0, t)
        return output_to_z0(self.scheduler, output, z_t, t)

    def sample(self, z0: torch.Tensor, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """z0_hat: K deterministic DDIM steps from z_T ~ N(0, I) (drawn with ``generator``),
        conditioned on z0 (B, Cz, h, w). K defaults to ``sampling_steps``."""
        return self._sample_draws(z0, 1, steps, generator)

    def _sample_draws(self, z0: torch.Tensor, draws: int, steps: int | None,
                      generator: torch.Generator | None) -> torch.Tensor:
        """``draws`` samples per latent of z0 (B, Cz, h, w) in one batched DDIM loop: (draws*B, Cz, h, w),
        draw-major. Draw i's noise is the generator's i-th (B, Cz, h, w) draw, so the result equals
        ``draws`` successive :meth:`sample` calls, at the per-call cost of one: on the small latent
        grid a denoiser call costs about the same for 1 or 4 draws."""
        steps = self.sampling_steps if steps is None else steps
        check_steps(steps, self.num_train_timesteps)
        noise = [draw_noise(z0, generator) for _ in range(draws)]
        z_T = torch.cat(noise) if draws > 1 else noise[0]  # (draws*B, Cz, h, w)
        cond = z0.repeat(draws, 1, 1, 1) if draws > 1 else z0  # (draws*B, Cz, h, w)
        fixed = None if torch.is_grad_enabled() else self._fixed_step_denoiser(steps)

        def denoise(z_t: torch.Tensor, t: int) -> torch.Tensor:
            if fixed is None:  # the generic U-Net forward (gradients on, or a U-Net the runner does not cover)
                return self.denoise(z_t, cond, t)
            return self._residual(fixed(z_t, cond, t), cond)

        with sampling_threads(self.denoiser, z_T):
            return ddim_sample(denoise, self.sampler, z_T, steps)

    def _fixed_step_denoiser(self, steps: int) -> FixedStepDenoiser | None:
        """eps_theta for a K-step DDIM loop without its fixed per-call cost, with the same outputs as
        :meth:`denoise` (see FixedStepDenoiser); reused while the weights stay the same. None for a
        U-Net configuration it does not cover."""
        timesteps = ddim_timesteps(self.sampler, steps)
        cached = self._fixed_steps
        if cached is not None and cached.matches(self.denoiser, timesteps):
            return cached
        if not supports_fixed_steps(self.denoiser):
            return None
        self._fixed_steps = FixedStepDenoiser(self.denoiser, timesteps)
        return self._fixed_steps

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
        size = (x.shape[-2], x.shape[-1])
        z0, skips = self.encode(x)
        if not diffusion:
            return Prediction(self.decode(z0, skips, size), None)
        if not isinstance(samples, int) or samples < 1:
            raise ConfigError(f"--samples: the number of noise draws must be an integer >= 1, got {samples!r}")
        b = z0.shape[0]
        z_hat = self._sample_draws(z0, samples, steps, generator)  # (samples*B, Cz, h, w)
        mean = m2 = None
        for i in range(samples):  # D once per draw, Welford's running mean and sum of squared deviations
            logits = self.decode(z_hat[i * b:(i + 1) * b], skips, size)  # (B, C, H, W)
            if mean is None:
                mean, m2 = logits, (torch.zeros_like(logits) if samples > 1 else None)
                continue
            delta = logits - mean
            mean = mean + delta / (i + 1)
            m2 = m2 + delta * (logits - mean)
        uncertainty = (m2 / samples).mean(dim=1) if samples > 1 else None  # (B, H, W)
        return Prediction(mean, uncertainty)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by part; the trainer gives "encoder" the base lr and the rest lr x head_lr_mult."""
        return {
            "encoder": list(self.encoder.parameters()),
            "latent_head": list(self.latent_head.parameters()),
            "decoder": list(self.decoder.parameters()),
            "denoiser": list(self.denoiser.parameters()),
        }

    # ------------------------------------------------------------------------------------------
    # save / load (weights + ModelConfig, no training state)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` (format version + the ModelConfig) and ``model.safetensors``, each
        atomically. Refuses to overwrite a ``config.json`` that is not an ICCLD one."""
        from safetensors.torch import save

        from ..utils import atomic_write_bytes, atomic_write_text

        if self.config is None:
            raise CheckpointError("this ICCLD was built without a ModelConfig; build it with "
                                  "iccld.models.build_model to save it")
        directory = Path(directory)
        cfg_path = directory / CONFIG_FILE
        if cfg_path.exists() and not _is_iccld_config(cfg_path):
            raise CheckpointError(f"{cfg_path}: exists and is not an ICCLD config; not overwriting it, "
                                  "choose another folder")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(directory / WEIGHTS_FILE, save(state, metadata={"format": "pt"}))
        meta = {"format": "iccld", "format_version": FORMAT_VERSION, "model": dataclasses.asdict(self.config)}
        atomic_write_text(cfg_path, json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "ICCLD":
        """Rebuild a network written by :meth:`save_pretrained`; needs no training state and no
        network access (``model.pretrained`` is recorded but not re-fetched)."""
        from safetensors.torch import load_file

        from . import build_model

        directory = Path(directory)
        cfg = read_model_config(directory)
        model = build_model(dataclasses.replace(cfg, pretrained=""))
        model.config = cfg
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise CheckpointError(f"{weights}: not found; the folder has a config.json but no weights")
        try:
            state = load_file(str(weights), device=str(map_location))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{weights}: cannot read the weights ({type(exc).__name__}); "
                                  "the file is corrupt or truncated") from None
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        bad = [k for k in own if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or bad:
            what = (missing and f"missing {missing[0]}") or (unexpected and f"unexpected {unexpected[0]}") \
                or f"shape of {bad[0]}"
            raise CheckpointError(f"{weights}: does not match the architecture in {directory / CONFIG_FILE} "
                                  f"({len(missing)} missing, {len(unexpected)} unexpected, {len(bad)} "
                                  f"wrong shape; first: {what})")
        model.load_state_dict(state)
        return model.to(map_location)


def _is_iccld_config(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == "iccld"


def read_model_config(directory: str | Path) -> ModelConfig:
    """The ModelConfig stored in a :meth:`ICCLD.save_pretrained` folder."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not found; expected a folder written by save_pretrained "
                              f"({CONFIG_FILE} + {WEIGHTS_FILE})")
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; {directory} is not a save_pretrained folder")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != "iccld" or not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{path}: not an ICCLD config (expected keys format='iccld', format_version, model)")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {version!r} is not supported by this version of "
                              f"iccld (expects {FORMAT_VERSION})")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(data["model"]) - known)
    if unknown:
        raise CheckpointError(f"{path}: unknown model config keys {unknown}; saved by a newer iccld?")
    try:
        return ModelConfig(**data["model"])
    except TypeError as exc:
        raise CheckpointError(f"{path}: bad model config ({exc})") from None
