"""The latent diffusion: eps_theta, its two schedulers, the noising, the training target and the
K-step sampler, in one object used by stage 2 (:meth:`LatentDiffusion.loss`) and by inference
(:meth:`LatentDiffusion.sample`).

Symbols follow the paper: ``z0`` the clean latent, ``cond`` the condition eps_theta sees beside
the noised latent (E's own z0 in ICCLD), ``z_t`` the noised latent at timestep ``t``, ``eps`` the
noise, ``z0_hat`` the denoised latent.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch import nn

from .fixed_steps import FixedStepDenoiser, supports_fixed_steps
from .sampling import check_steps, ddim_sample, ddim_timesteps, draw_noise
from .schedule import add_noise, as_timesteps, diffusion_target, output_to_z0, sample_timesteps
from .unet import run_denoiser


class DiffusionLoss(NamedTuple):
    """``loss``: the MSE of eps_theta's raw output against its target (a scalar);
    ``z0_hat``: the one-step clean estimate of every latent, (B, Cz, h, w), with gradients."""

    loss: torch.Tensor
    z0_hat: torch.Tensor


class LatentDiffusion(nn.Module):
    """eps_theta (``self.denoiser``, a ``UNet2DModel`` with 2*Cz inputs and Cz outputs) and the
    schedules around it.

    Args:
        denoiser: eps_theta.
        scheduler: the DDPM scheduler defining alpha_bar for training (noising and targets).
        sampler: the DDIM scheduler for sampling.
        sampling_steps: default K of :meth:`sample`.
        residual: eps_theta's raw output is added to its condition (prediction type "sample"), so a
            zero-initialised denoiser starts at z0_hat = cond.
        fast_sampling: sample without gradients through :class:`FixedStepDenoiser` (the same
            outputs, a fraction of the per-call cost on small latents) where it covers the U-Net;
            off, every step runs the generic ``UNet2DModel.forward``.
    """

    def __init__(self, denoiser: UNet2DModel, scheduler: DDPMScheduler, sampler: DDIMScheduler, *,
                 sampling_steps: int, residual: bool = False, fast_sampling: bool = True) -> None:
        super().__init__()
        self.denoiser = denoiser
        # plain attributes, not modules: schedulers hold no parameters
        self.scheduler = scheduler
        self.sampler = sampler
        check_steps(sampling_steps, self.num_train_timesteps)
        self.sampling_steps = sampling_steps
        self.residual = residual
        self.fast_sampling = fast_sampling
        self._fixed_steps: FixedStepDenoiser | None = None  # reused by sampling while it matches

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler.config.prediction_type)

    # ------------------------------------------------------------------------------------------
    # eps_theta and the schedule

    def denoise(self, z_t: torch.Tensor, cond: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """The raw output of eps_theta on concat(z_t, cond) at timesteps ``t`` (int or (B,)): (B, Cz, h, w)."""
        out = run_denoiser(self.denoiser, z_t, cond, as_timesteps(t, z_t.shape[0], z_t.device))
        return self._residual(out, cond)

    def _residual(self, out: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # residual parameterisation (prediction type "sample"): z0_hat = cond + eps_theta(...)
        return out + cond if self.residual else out

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """z_t = sqrt(alpha_bar[t]) z0 + sqrt(1 - alpha_bar[t]) eps."""
        return add_noise(self.scheduler, z0, noise, as_timesteps(t, z0.shape[0], z0.device))

    def target(self, z0: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """What :meth:`denoise`'s output is regressed on: z0 (sample), eps (epsilon) or v."""
        return diffusion_target(self.scheduler, z0, noise, as_timesteps(t, z0.shape[0], z0.device))

    def estimate_z0(self, z_t: torch.Tensor, cond: torch.Tensor, t: int | torch.Tensor,
                    output: torch.Tensor | None = None) -> torch.Tensor:
        """The one-step estimate z0_hat(t) from concat(z_t, cond). Pass ``output`` (the result of
        :meth:`denoise` for the same inputs) to convert it without running eps_theta again."""
        t = as_timesteps(t, z_t.shape[0], z_t.device)
        if output is None:
            output = self.denoise(z_t, cond, t)
        return output_to_z0(self.scheduler, output, z_t, t)

    # ------------------------------------------------------------------------------------------
    # training and sampling

    def loss(self, z0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None,
             rows: slice = slice(None)) -> DiffusionLoss:
        """The diffusion loss of a batch of clean latents z0 (B, Cz, h, w) under condition ``cond``.

        Every latent is noised at its own timestep t ~ U[0, T) with eps ~ N(0, I), both drawn from
        ``generator`` on its device (the CPU without one; ``schedule.draw_device``), t first, then eps,
        so a seed gives the same draws for a model on any device.
        ``rows`` selects the latents whose error counts in the loss (stage 2 leaves the target
        batch out); ``z0_hat`` is returned for all of them.
        """
        t = sample_timesteps(z0.shape[0], self.num_train_timesteps, z0.device, generator)  # (B,)
        noise = draw_noise(z0, generator)  # (B, Cz, h, w)
        z_t = self.add_noise(z0, noise, t)
        raw = self.denoise(z_t, cond, t)  # (B, Cz, h, w)
        z0_hat = self.estimate_z0(z_t, cond, t, output=raw)  # (B, Cz, h, w)
        target = self.target(z0, noise, t)
        return DiffusionLoss(F.mse_loss(raw[rows].float(), target[rows].float()), z0_hat)

    def sample(self, cond: torch.Tensor, steps: int | None = None, draws: int = 1,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """z0_hat: K deterministic DDIM steps from z_T ~ N(0, I), conditioned on cond (B, Cz, h, w).

        ``draws`` samples per latent in one batched loop: (draws*B, Cz, h, w), draw-major. Draw i's
        noise is the generator's i-th (B, Cz, h, w) draw, so the result equals ``draws`` successive
        one-draw calls, at the per-call cost of one: on the small latent grid a denoiser call costs
        about the same for 1 or 4 draws. K defaults to ``sampling_steps``.
        """
        steps = self.sampling_steps if steps is None else steps
        check_steps(steps, self.num_train_timesteps)
        noise = [draw_noise(cond, generator) for _ in range(draws)]
        z_T = torch.cat(noise) if draws > 1 else noise[0]  # (draws*B, Cz, h, w)
        cond = cond.repeat(draws, 1, 1, 1) if draws > 1 else cond  # (draws*B, Cz, h, w)
        fast = self._fixed_step_denoiser(steps) if self.fast_sampling and not torch.is_grad_enabled() else None

        def denoise(z_t: torch.Tensor, t: int) -> torch.Tensor:
            if fast is None:  # the generic U-Net forward (gradients on, or a U-Net the runner does not cover)
                return self.denoise(z_t, cond, t)
            return self._residual(fast(z_t, cond, t), cond)

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
