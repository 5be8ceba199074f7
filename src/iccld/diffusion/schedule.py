"""Noise-schedule glue around ``diffusers`` schedulers.

Symbols follow the paper and DDPM: ``z0`` the clean latent, ``z_t`` the noised latent at timestep
``t``, ``eps`` the Gaussian noise, ``alpha_bar[t]`` the cumulative product of (1 - beta), so that

    z_t = sqrt(alpha_bar[t]) * z0 + sqrt(1 - alpha_bar[t]) * eps.

The network's raw output is regressed on a target that depends on the prediction type:
``sample`` -> z0, ``epsilon`` -> eps, ``v_prediction`` -> v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) z0.
:func:`output_to_z0` inverts each of these to the one-step estimate of z0.

Note: with the cosine schedule alpha_bar[T-1] is ~2e-9, so an ``epsilon`` model's z0 estimate at the
first DDIM step divides by ~5e-5; ``sample`` (the default) and ``v_prediction`` have no such problem.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from ..errors import ConfigError

PREDICTION_TYPES = ("sample", "epsilon", "v_prediction")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def _check(num_train_timesteps: int, beta_schedule: str, prediction_type: str) -> None:
    if num_train_timesteps < 1:
        raise ConfigError(f"model.num_train_timesteps: must be >= 1, got {num_train_timesteps}")
    if beta_schedule not in BETA_SCHEDULES:
        raise ConfigError(f"model.beta_schedule: '{beta_schedule}' is not one of {', '.join(BETA_SCHEDULES)}")
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(f"model.prediction_type: '{prediction_type}' is not one of {', '.join(PREDICTION_TYPES)}")


def build_train_scheduler(num_train_timesteps: int, beta_schedule: str, prediction_type: str) -> DDPMScheduler:
    """The DDPM scheduler that defines alpha_bar for training (noising and targets)."""
    _check(num_train_timesteps, beta_schedule, prediction_type)
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                         prediction_type=prediction_type, clip_sample=False)


def build_sampler(num_train_timesteps: int, beta_schedule: str, prediction_type: str) -> DDIMScheduler:
    """The deterministic DDIM sampler (eta = 0) used at inference.

    [ours] "trailing" timestep spacing, so that K steps start at t = T-1, where z_T ~ N(0, I) is
    actually the marginal (with "leading" spacing and K = 4 the first step would be t = 750).
    """
    _check(num_train_timesteps, beta_schedule, prediction_type)
    return DDIMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                         prediction_type=prediction_type, clip_sample=False, set_alpha_to_one=True,
                         timestep_spacing="trailing")


def as_timesteps(t: int | torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """An int, a 0-d tensor or a (B,) tensor of timesteps -> a long tensor (B,) on ``device``."""
    t = torch.as_tensor(t, device=device).long()
    if t.ndim == 0:
        t = t.expand(batch_size)
    if t.shape != (batch_size,):
        raise ValueError(f"timesteps must be a scalar or have shape ({batch_size},), got {tuple(t.shape)}")
    return t


def draw_device(generator: torch.Generator | None) -> torch.device:
    """Where every noise and timestep draw happens (the one rule of this package): on the generator's
    device, or on the CPU (its global generator) without one; never on the device of the tensors it is
    for. So a seed gives the same draws for a model on any device; a draw is then moved where it is used."""
    return generator.device if generator is not None else torch.device("cpu")


def sample_timesteps(batch_size: int, num_train_timesteps: int, device: torch.device | str = "cpu",
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform random training timesteps (B,) in [0, num_train_timesteps), drawn as
    :func:`draw_device` says, on ``device``."""
    t = torch.randint(0, num_train_timesteps, (batch_size,), generator=generator, device=draw_device(generator))
    return t.to(device)


def alpha_bar(scheduler: DDPMScheduler | DDIMScheduler, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """alpha_bar[t] shaped (B, 1, 1, 1) on ``like``'s device and dtype."""
    ab = scheduler.alphas_cumprod.to(device=like.device)[t.to(like.device)]
    return ab.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def add_noise(scheduler: DDPMScheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_t = sqrt(alpha_bar[t]) z0 + sqrt(1 - alpha_bar[t]) eps; z0, noise (B, Cz, h, w), t (B,)."""
    return scheduler.add_noise(z0, noise, t.to(z0.device))


def diffusion_target(scheduler: DDPMScheduler, z0: torch.Tensor, noise: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
    """What the raw network output is regressed on: z0 (sample), eps (epsilon) or v (v_prediction)."""
    kind = scheduler.config.prediction_type
    if kind == "sample":
        return z0
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(z0, noise, t.to(z0.device))
    raise ConfigError(f"model.prediction_type: '{kind}' is not one of {', '.join(PREDICTION_TYPES)}")


def output_to_z0(scheduler: DDPMScheduler | DDIMScheduler, output: torch.Tensor, z_t: torch.Tensor,
                 t: torch.Tensor) -> torch.Tensor:
    """The one-step estimate of the clean latent from the raw output at timesteps ``t`` (B,)."""
    kind = scheduler.config.prediction_type
    if kind == "sample":
        return output
    ab = alpha_bar(scheduler, t, z_t)  # (B, 1, 1, 1)
    if kind == "epsilon":
        return (z_t - (1 - ab).sqrt() * output) / ab.sqrt()
    if kind == "v_prediction":
        return ab.sqrt() * z_t - (1 - ab).sqrt() * output
    raise ConfigError(f"model.prediction_type: '{kind}' is not one of {', '.join(PREDICTION_TYPES)}")
