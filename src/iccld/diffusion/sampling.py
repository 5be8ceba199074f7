"""The DDIM sampling loop, written out once."""

from __future__ import annotations

from typing import Callable

import torch
from diffusers import DDIMScheduler

from ..errors import ConfigError
from .schedule import draw_device


def check_steps(steps: int, num_train_timesteps: int) -> None:
    if not isinstance(steps, int) or not 1 <= steps <= num_train_timesteps:
        raise ConfigError(f"sampling steps: must be an integer in 1..{num_train_timesteps} (the number of "
                          f"training timesteps), got {steps!r}")


def draw_noise(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """N(0, I) noise shaped like ``like``, drawn where :func:`~.schedule.draw_device` says (the
    generator's device, or the CPU without one), then moved to ``like``'s device."""
    noise = torch.randn(like.shape, generator=generator, device=draw_device(generator), dtype=like.dtype)
    return noise.to(like.device)


def ddim_timesteps(sampler: DDIMScheduler, steps: int) -> list[int]:
    """The K timesteps a ``steps``-step DDIM loop visits, in order (e.g. [999, 749, 499, 249] for K=4
    with trailing spacing). Resets the sampler's timesteps."""
    check_steps(steps, sampler.config.num_train_timesteps)
    sampler.set_timesteps(steps)  # timesteps stay on the CPU; step() indexes CPU tensors with them
    return sampler.timesteps.tolist()


def ddim_sample(denoise: Callable[[torch.Tensor, int], torch.Tensor], sampler: DDIMScheduler,
                z_T: torch.Tensor, steps: int) -> torch.Tensor:
    """Run ``steps`` deterministic DDIM steps (eta = 0) from z_T and return the clean estimate z0_hat.

    Args:
        denoise: ``denoise(z_t, t)`` -> the raw network output for z_t (B, Cz, h, w) at timestep t, an
            int shared by the whole batch (one of :func:`ddim_timesteps`); the caller closes over the
            condition z0.
        sampler: a DDIMScheduler (its ``timesteps`` are reset here).
        z_T: the starting noise (B, Cz, h, w).
        steps: K, 1..num_train_timesteps.

    Returns:
        z0_hat (B, Cz, h, w): the scheduler's clean-latent estimate at the last step.
    """
    return ddim_loop(denoise, sampler, z_T, ddim_timesteps(sampler, steps))


def ddim_loop(denoise: Callable[[torch.Tensor, int], torch.Tensor], sampler: DDIMScheduler,
              z_T: torch.Tensor, timesteps: list[int]) -> torch.Tensor:
    """The loop of :func:`ddim_sample` over ``timesteps``, which must be :func:`ddim_timesteps` of
    this ``sampler`` (whose ``step`` reads the K they were set for). Split out for tracing: the
    timesteps are plain ints chosen before the trace, so the traced graph holds K unrolled steps."""
    if sampler.num_inference_steps != len(timesteps):
        raise ValueError(f"the sampler is set for {sampler.num_inference_steps} steps, not the {len(timesteps)} given")
    z = z_T
    z0_hat = z_T
    for t in timesteps:
        out = denoise(z, t)  # (B, Cz, h, w)
        z, z0_hat = sampler.step(out, t, z, eta=0.0, return_dict=False)
    return z0_hat
